"""Production delivery through Argo CD: the release, argocd-secret, AppProject, Applications.

Custom resources are validated against the CRDs and the argo-cd values against the chart's
own values.yaml, both from the pinned argo-cd chart (../shared/charts-src, or .cache/charts
after `python -m sophia_infra charts --pull`; skipped with a reason when neither has it).
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from sophia_infra.program.config import names
from sophia_infra.program.services import ROLLBACK_ANNOTATION, app_project_spec, argocd_values, paused_for_rollback, rollback_warning
from sophia_infra.program.services.values import has_hpa, namespace
from tests.conftest import parse_with, problems_of
from tests.platform_helpers import chart_dir, crd_errors, crd_schema
from tests.test_services import APPLICATION, APPPROJECT, RELEASE, SECRET, SECRET_TYPE, run_services
from tests import yaml_c

ARGO_API = "argoproj.io/v1alpha1"
# The chart's own Chart.yaml, read independently of the program (sophia_infra.program.config.chart_revision).
CHART_YAML = Path(__file__).resolve().parents[1] / "charts" / "sophia-service" / "Chart.yaml"


@lru_cache(maxsize=None)
def crd_validator(kind: str) -> jsonschema.protocols.Validator:
    """One validator per CRD (jsonschema.validate would re-check the big schema every call)."""
    schema = crd_schema(ARGO_API, kind)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls.check_schema(schema)
    return cls(schema)


def applications() -> dict[str, dict]:
    run = run_services("production")
    return {run.raw[r.name]["metadata"]["name"]: run.raw[r.name] for r in run.of_type(APPLICATION)}


# ----------------------------------------------------------------------------- Applications

def test_applications_validate_against_the_crd():
    apps = applications()
    assert len(apps) == 15
    validator = crd_validator("Application")
    for name, app in apps.items():
        assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
        validator.validate(app)


def test_an_invalid_application_fails_the_crd_schema():
    """The validation above can fail: a misspelt sync policy is caught."""
    app = dict(next(iter(applications().values())))
    app["spec"] = {**app["spec"], "syncPolicy": {"automated": {"prune": "yes"}}}
    with pytest.raises(jsonschema.ValidationError):
        crd_validator("Application").validate(app)


def test_applications_sync_automatically_from_the_pinned_chart_and_the_release_branch():
    cfg = parse_with("production")
    for name, app in applications().items():
        svc = next(s for s in cfg.services if s.name == name)
        spec = app["spec"]
        assert app["metadata"]["namespace"] == names.ARGOCD
        assert spec["project"] == "sophia"
        assert "source" not in spec
        chart, values = spec["sources"]
        assert chart["repoURL"] == values["repoURL"] == cfg.argocd.repo_url
        assert chart["targetRevision"] == f"sophia-service-{yaml_c.load(CHART_YAML.read_text())['version']}"
        assert chart["path"] == "charts/sophia-service"
        assert chart["helm"]["releaseName"] == name
        # The release file, from the release branch: the only place the image tag is.
        assert values == {"repoURL": cfg.argocd.repo_url, "targetRevision": "main", "ref": "values"}
        assert chart["helm"]["valueFiles"] == [f"$values/releases/production/{name}.yaml"]
        assert chart["helm"]["valuesObject"]["image"] == {"repository": svc.image.repository}
        assert spec["destination"] == {"server": "https://kubernetes.default.svc", "namespace": namespace(svc)}
        policy = spec["syncPolicy"]
        assert policy["automated"] == {"prune": True, "selfHeal": True}
        # No CreateNamespace: Argo CD manages nothing cluster-scoped (the platform creates the namespaces).
        assert policy["syncOptions"][0] == "ServerSideApply=true" and "CreateNamespace=true" not in policy["syncOptions"]
        assert policy["retry"]["backoff"] == {"duration": "10s", "factor": 2, "maxDuration": "3m"}
        if has_hpa(svc):
            assert spec["ignoreDifferences"] == [{"group": "apps", "kind": "Deployment", "name": name, "jsonPointers": ["/spec/replicas"]}]
            assert "RespectIgnoreDifferences=true" in policy["syncOptions"]
        else:
            assert "ignoreDifferences" not in spec, name
    hpa_apps = {n for n, a in applications().items() if "ignoreDifferences" in a["spec"]}
    assert hpa_apps == {"backend", "frontend"}


def test_applications_depend_on_the_argo_cd_release_and_their_secrets():
    run = run_services("production")
    (release,) = run.of_type(RELEASE)
    (project,) = run.of_type(APPPROJECT)
    assert release.urn in project.dependencies
    for reg in run.of_type(APPLICATION):
        assert release.urn in reg.dependencies, reg.name
        assert project.urn in reg.dependencies, reg.name
    backend = run.named("services-app-backend")
    secret_urns = {r.urn for r in run.of_type(SECRET_TYPE) if r.inputs["metadata"]["name"] == "backend-secrets"}
    assert secret_urns <= set(backend.dependencies)


# ----------------------------------------------------------------------------- AppProject

def test_app_project_limits_sources_and_destinations():
    run = run_services("production")
    (reg,) = run.of_type(APPPROJECT)
    project = run.raw[reg.name]
    crd_validator("AppProject").validate(project)
    spec = project["spec"]
    assert spec["sourceRepos"] == ["https://github.com/sophia-ai/sophia-infra.git"]
    # Both sources of every Application (chart and release files) are repositories it allows.
    for app in applications().values():
        assert len(app["spec"]["sources"]) == 2
        assert all(src["repoURL"] in spec["sourceRepos"] for src in app["spec"]["sources"])
    assert sorted(d["namespace"] for d in spec["destinations"]) == sorted([names.APPS, names.MCP])
    assert all(d["server"] == "https://kubernetes.default.svc" for d in spec["destinations"])
    assert spec["clusterResourceWhitelist"] == []
    kinds = {k["kind"] for k in spec["namespaceResourceWhitelist"]}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "NetworkPolicy", "Ingress"} <= kinds


# ----------------------------------------------------------------------------- argo-cd itself

def test_argo_cd_release_is_pinned_and_keeps_the_password_out_of_values():
    run = run_services("production")
    (reg,) = run.of_type(RELEASE)
    inputs = run.raw[reg.name]
    assert inputs["chart"] == "argo-cd" and inputs["version"] == "10.1.1"
    assert inputs["repositoryOpts"]["repo"] == "https://argoproj.github.io/argo-helm"
    assert inputs["namespace"] == names.ARGOCD
    values = inputs["values"]
    assert values["configs"]["secret"] == {"createSecret": False}
    assert values["dex"]["enabled"] is False
    assert "argocdServerAdminPassword" not in str(values) and SECRET not in str(reg.inputs)
    secret = run.named("services-argocd-secret")
    assert secret.urn in reg.dependencies
    assert secret.inputs["metadata"]["name"] == "argocd-secret"
    assert secret.inputs["metadata"]["namespace"] == names.ARGOCD
    assert secret.inputs["metadata"]["labels"]["app.kubernetes.io/part-of"] == "argocd"
    masked = secret.inputs["stringData"]
    assert masked == SECRET or (masked["admin.password"] == SECRET and masked["server.secretkey"] == SECRET)
    real = run.raw[secret.name]["stringData"]
    assert real["admin.password"] == "placeholder-production-infrastructure-argocd-admin-password-bcrypt"
    assert real["admin.passwordMtime"] == "2026-01-01T00:00:00Z"
    assert set(real) == {"admin.password", "admin.passwordMtime", "server.secretkey"}


def _missing_keys(ours: Any, upstream: Any, path: str = "") -> list[str]:
    """Keys we set that the chart's values.yaml does not have (free-form maps excepted)."""
    if not isinstance(ours, dict):
        return []
    if not isinstance(upstream, dict):
        return [path]
    if not upstream:  # {} upstream: a free-form map (resources, annotations, ...)
        return []
    missing = []
    for key, value in ours.items():
        if key not in upstream:
            missing.append(f"{path}.{key}".lstrip("."))
        else:
            missing += _missing_keys(value, upstream[key], f"{path}.{key}")
    return missing


FREE_FORM = ("configs.cm.", "configs.params.")


@pytest.mark.parametrize("argocd", [{}, {"dex": True, "ingressHost": "argocd.sophia.example.com"}])
def test_argo_cd_values_are_keys_of_the_chart(argocd):
    upstream = yaml_c.load((chart_dir("argo-cd", "10.1.1") / "values.yaml").read_text())
    cfg = parse_with("production", lambda raw: raw.update(argocd=argocd))
    values = argocd_values(cfg)
    missing = [k for k in _missing_keys(values, upstream) if not k.startswith(FREE_FORM)]
    assert not missing, f"not keys of argo-cd 10.1.1: {missing}"
    assert upstream["configs"]["secret"]["createSecret"] is True  # the option we turn off exists
    if argocd:
        assert values["dex"]["enabled"] is True
        # The Ingress takes its host from global.domain (server.ingress.hostname defaults to it).
        # TLS from argocd-server-tls, the Secret of the platform's Certificate for the host.
        assert values["server"]["ingress"] == {"enabled": True, "ingressClassName": "nginx", "tls": True}
        assert values["global"]["domain"] == "argocd.sophia.example.com"
        assert values["configs"]["params"]["server.insecure"] is True


def test_every_argo_cd_component_has_requests_and_limits():
    values = argocd_values(parse_with("production"))
    for component in ("controller", "server", "repoServer", "applicationSet", "notifications", "redis", "redisSecretInit"):
        res = values[component]["resources"]
        assert res["requests"]["cpu"] and res["limits"]["memory"], component
    # Dex's resources only when Dex runs (without it they would be a value with no effect).
    assert "resources" not in values["dex"]
    with_dex = argocd_values(parse_with("production", lambda raw: raw.__setitem__("argocd", {**(raw.get("argocd") or {}), "dex": True})))
    assert with_dex["dex"]["resources"]["limits"]["memory"]


def test_app_project_spec_follows_settings():
    cfg = parse_with("production", lambda raw: raw.update(argocd={"repoUrl": "https://git.example.com/sophia/infra.git"}))
    assert app_project_spec(cfg)["sourceRepos"] == ["https://git.example.com/sophia/infra.git"]


def test_argocd_namespace_only_when_asked():
    """The platform layer creates `argocd`; Services creates it only with createNamespace."""
    assert not [r for r in run_services("production").of_type("kubernetes:core/v1:Namespace")]
    run = run_services("production", None, '{"createNamespace": true, "ingressHost": "argocd.sophia.example.com"}')
    (ns,) = run.of_type("kubernetes:core/v1:Namespace")
    assert ns.inputs["metadata"]["name"] == names.ARGOCD
    assert ns.urn in run.named("services-argocd-secret").dependencies
    (release,) = run.of_type(RELEASE)
    assert run.raw[release.name]["values"]["global"]["domain"] == "argocd.sophia.example.com"


# ----------------------------------------------------------------------------- rollbacks in force

ROLLBACK = '{"rollbacks": {"backend": 3, "gong": "2"}}'  # what `pulumi config set --path` writes


def _apps_with(argocd: str) -> dict[str, dict]:
    run = run_services("production", None, argocd)
    return {run.raw[r.name]["metadata"]["name"]: run.raw[r.name] for r in run.of_type(APPLICATION)}


@pytest.mark.parametrize("argocd", [None, ROLLBACK])
def test_applications_with_and_without_a_rollback_meet_the_crd_strictly(argocd):
    apps = _apps_with(argocd) if argocd else applications()
    assert len(apps) == 15
    for name, app in apps.items():
        assert crd_errors(app) == [], name


def test_an_application_under_rollback_is_not_synced_automatically():
    apps = _apps_with(ROLLBACK)
    usual = applications()
    for name in ("backend", "gong"):
        policy = apps[name]["spec"]["syncPolicy"]
        assert "automated" not in policy, name
        # Everything else of the sync policy stays: a manual sync behaves as before.
        assert {k: x for k, x in usual[name]["spec"]["syncPolicy"].items() if k != "automated"} == policy
        assert {k: x for k, x in usual[name]["spec"].items() if k != "syncPolicy"} == \
               {k: x for k, x in apps[name]["spec"].items() if k != "syncPolicy"}
    assert apps["backend"]["metadata"]["annotations"] == {ROLLBACK_ANNOTATION: "3"}
    assert apps["gong"]["metadata"]["annotations"] == {ROLLBACK_ANNOTATION: "2"}
    for name in set(apps) - {"backend", "gong"}:
        assert apps[name]["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}, name
        assert "annotations" not in apps[name]["metadata"], name


def test_preview_warns_which_workloads_are_paused_and_how_to_resume(caplog):
    cfg = parse_with("production", lambda raw: raw.update(argocd=json.loads(ROLLBACK)))
    assert paused_for_rollback(cfg) == {"backend": "3", "gong": "2"}
    text = rollback_warning(cfg, "production")
    assert text == ("Argo CD auto-sync is paused for a rollback of: backend (rolled back to 3), gong (rolled back to 2); "
                    "this update keeps it paused (sophia:argocd.rollbacks). Once a fixed release is out, run "
                    "./deploy.sh resume SERVICE production for each, which clears the entry and turns auto-sync back on.")
    assert rollback_warning(parse_with("production"), "production") is None
    # pulumi.log.warn: the engine's warning channel (under the plan's mocks, a logging warning).
    build = run_services.__wrapped__  # run_services is cached: build again so the warning is logged here
    with caplog.at_level(logging.WARNING):
        build("production", None, ROLLBACK)
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "auto-sync" in r.getMessage()] == [text]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        build("production")
    assert not [r for r in caplog.records if "auto-sync is paused" in r.getMessage()]


def test_preview_warns_of_production_workloads_run_by_tag_only(caplog):
    from sophia_infra.program import releases

    cfg = parse_with("production")
    text = releases.tag_only_warning(cfg, "production", releases.for_stack(cfg, "production"))
    assert text is not None
    with caplog.at_level(logging.WARNING):
        run_services.__wrapped__("production")
    assert [r.getMessage() for r in caplog.records if "by image tag only" in r.getMessage()] == [text]


@pytest.mark.parametrize("change,message", [
    (lambda raw: raw.update(argocd={"rollbacks": {"bakend": "3"}}),
     "sophia:argocd.rollbacks.bakend: there is no service 'bakend' in sophia:services; remove the entry (pulumi config rm --path 'sophia:argocd.rollbacks.bakend') or correct its spelling."),
    (lambda raw: raw.update(delivery="helm", argocd={"rollbacks": {"backend": "3"}}),
     "sophia:argocd.rollbacks: this stack delivers with helm (sophia:delivery), which has no auto-sync to pause (roll back with ./deploy.sh rollback SERVICE REVISION STACK); remove it with pulumi config rm --path sophia:argocd.rollbacks."),
])
def test_a_rollback_of_something_that_cannot_be_paused_is_refused(change, message):
    assert problems_of("production", change) == [message]


def test_an_empty_rollback_entry_is_refused():
    assert problems_of("production", lambda raw: raw.update(argocd={"rollbacks": {"backend": " "}})) == [
        "sophia:argocd.rollbacks: the rollback of 'backend' is empty; give the Argo CD history id it was rolled back to "
        "(or a reason), or remove it with ./deploy.sh resume backend."]


# ----------------------------------------------------------------------------- release files, repository access

def test_no_application_input_carries_an_image_tag():
    """Pulumi's inputs hold nothing an app release changes: no tag, no digest, no release file content."""
    for name, app in applications().items():
        text = json.dumps(app)
        assert '"tag"' not in text and '"digest"' not in text, name


def test_the_release_branch_follows_the_setting():
    run = run_services("production", None, '{"releaseBranch": "release/prod"}')
    for reg in run.of_type(APPLICATION):
        assert run.raw[reg.name]["spec"]["sources"][1]["targetRevision"] == "release/prod"


@pytest.mark.parametrize("branch", ["HEAD", "0123456789abcdef0123456789abcdef01234567", "a..b", "main/", "x.lock", "-x"])
def test_a_release_branch_must_be_a_branch(branch):
    problems = problems_of("production", lambda raw: raw.update(argocd={"releaseBranch": branch}))
    assert problems == [f"sophia:argocd.releaseBranch: '{branch}' is not a branch name; give the branch app releases are committed to, such as main."]


REPO_LABEL = "argocd.argoproj.io/secret-type"


def _repository_secrets(run):
    return [r for r in run.of_type(SECRET_TYPE) if (r.inputs["metadata"].get("labels") or {}).get(REPO_LABEL) == "repository"]


def test_argo_cd_reads_this_repository_with_a_github_app_from_esc():
    run = run_services("production")
    (reg,) = _repository_secrets(run)
    assert reg.inputs["metadata"]["name"] == "sophia-infra-repository" and reg.inputs["metadata"]["namespace"] == names.ARGOCD
    masked = reg.inputs["stringData"]
    assert masked == SECRET or all(masked[k] == SECRET for k in ("githubAppID", "githubAppInstallationID", "githubAppPrivateKey"))
    real = run.raw[reg.name]["stringData"]
    assert real == {"type": "git", "url": "https://github.com/sophia-ai/sophia-infra.git",
                    "githubAppID": "placeholder-production-infrastructure-argocd-github-app-id",
                    "githubAppInstallationID": "placeholder-production-infrastructure-argocd-github-app-installation-id",
                    "githubAppPrivateKey": "placeholder-production-infrastructure-argocd-github-app-private-key"}
    # Every Application waits for it: the first sync must not fail on an unreadable repository.
    for app in run.of_type(APPLICATION):
        assert reg.urn in app.dependencies, app.name
    assert "placeholder-" not in json.dumps(reg.inputs)


def test_argo_cd_reads_this_repository_with_a_deploy_key():
    run = run_services("production", None, '{"repoCredentials": "sshKey", "repoUrl": "git@github.com:sophia-ai/sophia-infra.git"}')
    (reg,) = _repository_secrets(run)
    assert set(run.raw[reg.name]["stringData"]) == {"type", "url", "sshPrivateKey"}
    assert run.raw[reg.name]["stringData"]["sshPrivateKey"] == "placeholder-production-infrastructure-argocd-repo-ssh-private-key"
    assert reg.inputs["stringData"] == SECRET or reg.inputs["stringData"]["sshPrivateKey"] == SECRET


def test_a_public_repository_needs_no_credentials():
    run = run_services("production", None, '{"repoCredentials": "none"}')
    assert _repository_secrets(run) == []
    assert not {"argocdGithubAppId", "argocdRepoSshKey"} & set(run.cfg.required_secrets())


@pytest.mark.parametrize("argocd,message", [
    ({"repoCredentials": "sshKey"},
     "sophia:argocd.repoCredentials: sshKey (a deploy key) needs an SSH repoUrl, but sophia:argocd.repoUrl is "
     "'https://github.com/sophia-ai/sophia-infra.git'; write it as git@github.com:ORG/REPO.git, or use repoCredentials: githubApp."),
    ({"repoUrl": "git@github.com:sophia-ai/sophia-infra.git"},
     "sophia:argocd.repoCredentials: githubApp needs an https repoUrl, but sophia:argocd.repoUrl is "
     "'git@github.com:sophia-ai/sophia-infra.git'; write it as https://github.com/ORG/REPO.git, or use repoCredentials: sshKey."),
])
def test_credentials_that_do_not_fit_the_url_are_refused(argocd, message):
    assert problems_of("production", lambda raw: raw.update(argocd=argocd)) == [message]


def test_repository_credentials_must_be_secrets_in_esc():
    problems = problems_of("production", drop_secrets=("argocdGithubAppPrivateKey",))
    assert [p for p in problems if p.startswith("sophia:argocdGithubAppPrivateKey:")] == [p for p in problems]
    assert "missing" in problems[0]
    problems = problems_of("production", plain_secrets=("argocdGithubAppId",))
    assert problems and problems[0].startswith("sophia:argocdGithubAppId:") and "plain text" in problems[0]


def test_a_workload_pinned_in_the_stack_config_keeps_its_tag_in_values(tmp_path, monkeypatch):
    """Without a release file (a tag in the stack config, e.g. make bench's generated servers), the
    Application has the chart source only and its values carry the tag: still one place."""
    from sophia_infra.program import releases
    from sophia_infra.program.services import application_spec, structural_values, service_values

    cfg = parse_with("production", lambda raw: raw["services"][0]["image"].update(tag="2.0.0"))
    backend = cfg.services[0]
    values = service_values(cfg, backend, releases.Release("2.0.0"))
    spec = application_spec(cfg, backend, values, "production", release_file=False)
    (chart,) = spec["sources"]
    assert "valueFiles" not in chart["helm"] and chart["helm"]["valuesObject"]["image"]["tag"] == "2.0.0"
    assert crd_errors({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
                       "metadata": {"name": "backend", "namespace": "argocd"}, "spec": spec}) == []
    assert structural_values(cfg, backend)["image"].get("tag") is None


def test_the_policy_pack_still_checks_multi_source_applications():
    """The policy rules read the chart source's valuesObject; the tag from a release file passes."""
    from sophia_infra.tools.plan import report

    rules = report._policy_rules()
    apps = applications()
    assert all(rules.evaluate(APPLICATION, app) == [] for app in apps.values())
    broken = json.loads(json.dumps(apps["ai-memory"]))
    broken["spec"]["sources"][0]["helm"]["valuesObject"]["placement"]["gpuType"] = ""
    broken["spec"]["sources"][0]["helm"]["valuesObject"]["image"]["tag"] = "latest"
    found = {rule for rule, _ in rules.evaluate(APPLICATION, broken)}
    assert {"images-pinned"} <= found and len(found) >= 2, found


# ----------------------------------------------------------------------------- cert-manager in the frontend Ingress

def _with_frontend_host(r):
    r["workloads"] = {"frontendHost": "app.example.com"}


def _challenge(ingress: dict, token: str = "Xk3_token-1") -> dict:
    """The Ingress as cert-manager leaves it while it solves HTTP-01 in place
    (pkg/issuer/acme/http/ingress.go addChallengePathToIngress): the solver's path first in the
    host's rule, ImplementationSpecific, to its Service on 8089."""
    live = json.loads(json.dumps(ingress))
    path = {"path": f"/.well-known/acme-challenge/{token}", "pathType": "ImplementationSpecific",
            "backend": {"service": {"name": "cm-acme-http-solver-4xk2p", "port": {"number": 8089}}}}
    rule = next(r for r in live["spec"]["rules"] if r["host"] == "app.example.com")
    rule["http"]["paths"].insert(0, path)
    return live


def _argo_cd_normalizes(obj: dict, expressions: list[str]) -> dict:
    """What Argo CD diffs: each jqPathExpression deleted, del(<expression>), by a real jq (libjq)."""
    import jq

    for expression in expressions:
        obj = jq.compile(f"del({expression})").input_value(obj).first()
    return obj


def test_argo_cd_leaves_cert_managers_challenge_paths_in_the_frontend_ingress():
    from sophia_infra.program.services import application_metadata, application_spec
    from sophia_infra.program.services.values import service_values, structural_values
    from tests.test_chart import HELM, by_kind, render

    if HELM is None:
        pytest.skip("helm is not on PATH (make test puts .tools/bin on PATH)")
    cfg = parse_with("production", _with_frontend_host)
    frontend = next(s for s in cfg.services if s.name == "frontend")
    spec = application_spec(cfg, frontend, structural_values(cfg, frontend), "production")
    app = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
           "metadata": application_metadata(cfg, frontend), "spec": spec}
    assert crd_errors(app) == []
    assert spec["syncPolicy"]["syncOptions"].count("RespectIgnoreDifferences=true") == 1
    (entry,) = [d for d in spec["ignoreDifferences"] if d["kind"] == "Ingress"]

    (ingress,) = by_kind(render("frontend", namespace(frontend), service_values(cfg, frontend)), "Ingress")
    assert (entry["group"], entry["name"]) == (ingress["apiVersion"].split("/")[0], ingress["metadata"]["name"])
    live = _challenge(ingress)
    assert live != ingress
    # The challenge path, and nothing else: the rendered Ingress is what remains of the live one,
    # and an Ingress without a challenge is left as it is.
    assert _argo_cd_normalizes(live, entry["jqPathExpressions"]) == ingress
    assert _argo_cd_normalizes(ingress, entry["jqPathExpressions"]) == ingress
    other = json.loads(json.dumps(ingress))
    other["spec"]["rules"][0]["http"]["paths"].append({"path": "/.well-known/security.txt", "pathType": "Exact",
                                                       "backend": ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]})
    assert _argo_cd_normalizes(other, entry["jqPathExpressions"]) == other


def test_only_a_workload_with_an_ingress_ignores_challenge_paths():
    cfg = parse_with("production", _with_frontend_host)
    from sophia_infra.program.services import application_spec
    from sophia_infra.program.services.values import structural_values

    for svc in cfg.services:
        spec = application_spec(cfg, svc, structural_values(cfg, svc), "production")
        kinds = [d["kind"] for d in spec.get("ignoreDifferences", [])]
        assert ("Ingress" in kinds) == (svc.name == "frontend"), svc.name
