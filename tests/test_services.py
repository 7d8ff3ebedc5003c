"""sophia_infra.program.services under Pulumi mocks (both delivery modes), the values, the settings.

`run_services(stack)` builds the Services component once per stack and delivery mode
under a small Mocks subclass (with the recording monitor of the offline plan, which sees
secrets as "[secret]"); the tests read the cached result. test_argocd.py uses it too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s
import pytest
from pulumi.runtime import rpc
from pulumi.runtime import settings as pulumi_settings

from sophia_infra.program.config.chart_revision import chart_tag
from sophia_infra.program.config import names, services as service_settings
from sophia_infra.program import releases
from sophia_infra.program.config.stack import ConfigError, StackConfig
from sophia_infra.program.config.stack import parse as config_parse
from sophia_infra.tools.plan import runner, stack_config
from sophia_infra.tools.plan.mocks import SECRET, RecordingMonitor, Registration
from sophia_infra.program.services import Services
from sophia_infra.program.services.values import endpoint, mcp_registry, namespace, service_values, structural_values
from tests.conftest import STACKS, parse_with, problems_of, raw_stack

RELEASE = "kubernetes:helm.sh/v3:Release"
SECRET_TYPE = "kubernetes:core/v1:Secret"
CONFIGMAP = "kubernetes:core/v1:ConfigMap"
APPLICATION = "kubernetes:argoproj.io/v1alpha1:Application"
APPPROJECT = "kubernetes:argoproj.io/v1alpha1:AppProject"


def _reveal(value: Any) -> Any:
    """Replace Pulumi's secret envelopes by the values inside them."""
    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            return _reveal(value["value"])
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_reveal(v) for v in value]
    return value


class Mocks(pulumi.runtime.Mocks):
    """Echo the inputs back; keep them unmasked (the real values) for the tests."""

    def __init__(self) -> None:
        self.raw: dict[str, dict] = {}  # resource name -> inputs with secret values revealed

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.raw[args.name] = _reveal(args.inputs)
        state = dict(args.inputs)
        if args.typ == "random:index/randomPassword:RandomPassword":
            state["result"] = "r" * int(args.inputs.get("length", 32))
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}, None


@dataclass
class Run:
    cfg: StackConfig
    component: Services
    registrations: list[Registration]  # what the engine saw (secrets masked)
    raw: dict[str, dict]  # resource name -> inputs with secret values
    outputs: dict[str, Any]

    def of_type(self, typ: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == typ]

    def named(self, name: str) -> Registration:
        (reg,) = [r for r in self.registrations if r.name == name]
        return reg


@lru_cache(maxsize=None)
def run_services(stack: str, delivery: Optional[str] = None, argocd: Optional[str] = None) -> Run:
    """Build Services for `stack` under mocks, optionally with another delivery mode or
    `sophia:argocd` (JSON text). A stand-in for the platform layer is a dependency of it."""
    config, secret_keys = stack_config.load(stack)

    def change(raw: dict) -> None:
        if delivery:
            raw["delivery"] = delivery
        if argocd:
            raw["argocd"] = json.loads(argocd)

    cfg = parse_with(stack, change)
    mocks = Mocks()
    monitor = RecordingMonitor(mocks)
    pulumi_settings.ROOT.set(None)
    pulumi.runtime.set_all_config(config, secret_keys)
    pulumi.runtime.set_mocks(mocks, project="sophia-infra", stack=stack, preview=False, monitor=monitor)
    holder: dict[str, Any] = {}

    @pulumi.runtime.test
    def program():
        provider = k8s.Provider("k8s", kubeconfig="{}")
        platform = k8s.core.v1.ConfigMap("platform-stand-in", metadata={"name": "x", "namespace": names.APPS},
                                         opts=pulumi.ResourceOptions(provider=provider))
        holder["component"] = Services("services", cfg, provider, opts=pulumi.ResourceOptions(depends_on=[platform]))
        return pulumi.Output.from_input(holder["component"].outputs).apply(lambda o: holder.update(outputs=o))

    with runner.as_the_plan_runs():  # a third faster
        program()
    return Run(cfg, holder["component"], list(monitor.registrations), dict(mocks.raw), holder["outputs"])


def _all_secret(masked: Any) -> bool:
    """The engine saw the whole value, or every entry of it, as a secret."""
    return masked == SECRET or (isinstance(masked, dict) and bool(masked) and all(v == SECRET for v in masked.values()))


# ----------------------------------------------------------------------------- pure values

@pytest.mark.parametrize("stack", STACKS)
def test_mcp_registry_has_the_13_servers(stack):
    cfg = parse_with(stack)
    registry = mcp_registry(cfg)
    assert len(registry) == 13
    assert registry["ai-memory"] == "http://ai-memory.sophia-mcp.svc.cluster.local:8000/mcp"
    assert "backend" not in registry and "frontend" not in registry
    assert all(url.endswith("/mcp") and f".{names.MCP}.svc.cluster.local:" in url for url in registry.values())


def test_values_place_gpu_and_arch():
    prod, dev = parse_with("production"), parse_with("dev")
    by = lambda cfg: {s.name: service_values(cfg, s) for s in cfg.services}  # noqa: E731
    p, d = by(prod), by(dev)
    assert p["ai-memory"]["gpu"] == 1 and p["ai-memory"]["placement"] == {"gpuType": "GH200", "architectures": ["arm64"]}
    # dev puts the multi-arch ai-memory on the amd64 A10 node
    assert d["ai-memory"]["placement"] == {"gpuType": "A10", "architectures": ["amd64"]}
    for cfg, vals in ((prod, p), (dev, d)):
        for svc in cfg.services:
            assert vals[svc.name]["gpu"] == svc.gpu
            if not svc.gpu:
                assert vals[svc.name]["gpu"] == 0
    assert p["snowflake-cortex"]["gpu"] == 0 and p["snowflake-cortex"]["placement"]["gpuType"] == "A100"
    assert p["asana"]["placement"] == {"gpuType": "", "architectures": ["amd64"]}
    assert p["backend"]["autoscaling"]["maxReplicas"] == 6 and p["gong"]["autoscaling"]["maxReplicas"] == 0
    assert p["backend"]["env"]["configMapNames"] == ["mcp-registry", "llm-gateway"]
    assert p["gong"]["env"]["configMapNames"] == []
    assert p["frontend"]["env"]["secretName"] == "" and p["slack"]["env"]["secretName"] == "slack-secrets"


def test_llm_gateway_config_map_name_matches_the_platform_layer():
    platform_values = pytest.importorskip("sophia_infra.program.platform.values", reason="the platform layer is not in this tree")
    from sophia_infra.program.services.values import LLM_GATEWAY_CONFIGMAP
    assert LLM_GATEWAY_CONFIGMAP == platform_values.LLM_GATEWAY_CONFIGMAP


def test_values_carry_no_secret_values():
    for stack in STACKS:
        cfg = parse_with(stack)
        text = json.dumps([service_values(cfg, s) for s in cfg.services])
        assert "placeholder-" not in text


# ----------------------------------------------------------------------------- settings

def test_default_settings_need_argocd_and_docker_secrets_only_where_used():
    prod, dev = parse_with("production"), parse_with("dev")
    assert set(service_settings.required_secrets(prod)) == {"argocdAdminPasswordBcrypt", "dockerUsername", "dockerAccessToken",
                                                           "argocdGithubAppId", "argocdGithubAppInstallationId",
                                                           "argocdGithubAppPrivateKey"}
    assert set(service_settings.required_secrets(dev)) == {"dockerUsername", "dockerAccessToken"}
    assert "argocdAdminPasswordBcrypt" in prod.required_secrets()


@pytest.mark.parametrize("rev", ["HEAD", "main", "v0.1.0", "0123456789abcdef0123456789abcdef01234567", "sophia-service-0.0.1"])
def test_a_target_revision_other_than_the_chart_tag_is_refused(rev):
    """Argo CD must read the chart the values are written for: the tag of Chart.yaml's version."""
    problems = problems_of("production", lambda raw: raw.update(argocd={"targetRevision": rev}))
    (problem,) = [p for p in problems if p.startswith("sophia:argocd.targetRevision:")]
    assert f"is not {chart_tag()}" in problem and "remove the key" in problem


def test_the_chart_tag_itself_is_accepted_and_the_default():
    assert parse_with("production").argocd.target_revision is None
    parse_with("production", lambda raw: raw.update(argocd={"targetRevision": chart_tag()}))


def test_dev_ignores_target_revision():
    parse_with("dev", lambda raw: raw.update(argocd={"targetRevision": "HEAD"}))


def test_cross_check_wants_the_argo_cd_chart_pinned():
    problems = problems_of("production", lambda raw: raw["charts"].pop("argo-cd"))
    assert any(p.startswith("sophia:charts.argo-cd:") for p in problems), problems


def test_cross_check_rejects_privileged_ports():
    problems = problems_of("dev", lambda raw: raw["services"][1].update(port=80))
    assert any(p.startswith("sophia:services[1].port:") for p in problems), problems


def test_argocd_bcrypt_secret_is_required_in_production():
    problems = problems_of("production", drop_secrets=("argocdAdminPasswordBcrypt",))
    assert any(p.startswith("sophia:argocdAdminPasswordBcrypt:") and "missing" in p for p in problems), problems
    problems = problems_of("production", plain_secrets=("argocdAdminPasswordBcrypt",))
    assert any(p.startswith("sophia:argocdAdminPasswordBcrypt:") and "plain text" in p for p in problems), problems


@pytest.mark.parametrize("argocd,fragment", [
    ({"repoUrl": "github.com/x"}, "sophia:argocd.repoUrl"),
    ({"ingressHost": "Not A Host"}, "sophia:argocd.ingressHost"),
    ({"adminPasswordMtime": "yesterday"}, "sophia:argocd.adminPasswordMtime"),
    ({"targetRevison": "v1.0.0"}, "sophia:argocd.targetRevison"),
])
def test_bad_argocd_settings_name_the_key(argocd, fragment):
    problems = problems_of("production", lambda raw: raw.update(argocd=argocd))
    assert any(p.startswith(fragment) for p in problems), problems


def test_workload_settings_validate():
    with pytest.raises(ValueError):
        service_settings.WorkloadSettings(frontendHost="not a host")
    with pytest.raises(ValueError):
        service_settings.WorkloadSettings(resources={"backend": {"cpuRequest": "lots", "memoryRequest": "1Gi", "cpuLimit": "1", "memoryLimit": "1Gi"}})
    w = service_settings.WorkloadSettings(privateImages=False, frontendHost="app.example.com")
    assert not w.private_images and w.frontend_host == "app.example.com"


# ----------------------------------------------------------------------------- mocks: both modes

def test_dev_delivers_15_helm_releases_of_the_local_chart():
    run = run_services("dev")
    releases = run.of_type(RELEASE)
    assert len(releases) == 15
    assert not run.of_type(APPLICATION) and not run.of_type(APPPROJECT)
    for reg in releases:
        svc = next(s for s in run.cfg.services if s.name == reg.inputs["name"])
        assert reg.inputs["chart"] == "charts/sophia-service"
        assert reg.inputs["namespace"] == namespace(svc)
        assert run.raw[reg.name]["values"] == service_values(run.cfg, svc)


def test_production_has_15_applications_and_no_workload_releases():
    run = run_services("production")
    assert len(run.of_type(APPLICATION)) == 15
    assert [r.inputs["name"] for r in run.of_type(RELEASE)] == ["argo-cd"]


def test_both_delivery_modes_get_identical_values():
    """What Argo CD renders (release file + valuesObject, merged as Argo CD merges) is what Helm installs."""
    from sophia_infra.tools.plan.render import application_values

    argo, helm = run_services("production"), run_services("production", "helm")
    assert helm.cfg.delivery == "helm" and argo.cfg.delivery == "argocd"
    app_values = {argo.raw[r.name]["metadata"]["name"]: application_values(argo.raw[r.name]["spec"])[1]
                  for r in argo.of_type(APPLICATION)}
    release_values = {helm.raw[r.name]["name"]: helm.raw[r.name]["values"] for r in helm.of_type(RELEASE)}
    assert app_values.keys() == release_values.keys() and len(app_values) == 15
    for name in app_values:
        assert app_values[name] == release_values[name], name


@pytest.mark.parametrize("stack", STACKS)
def test_each_workload_secret_holds_only_its_keys_and_is_secret(stack):
    run = run_services(stack)
    secrets = {r.inputs["metadata"]["name"]: r for r in run.of_type(SECRET_TYPE)}
    for svc in run.cfg.services:
        name = f"{svc.name}-secrets"
        if not svc.secrets:
            assert name not in secrets
            continue
        reg = secrets[name]
        assert reg.inputs["metadata"]["namespace"] == namespace(svc)
        assert _all_secret(reg.inputs["stringData"]), f"{svc.name}: the engine sees a secret value in plain text"
        real = run.raw[reg.name]["stringData"]
        assert set(real) == set(svc.secrets), svc.name
        config, _ = stack_config.load(stack)
        assert real == {env: config[f"sophia:{key}"] for env, key in svc.secrets.items()}, svc.name


@pytest.mark.parametrize("stack", STACKS)
def test_image_pull_secrets_are_secret_dockerconfigjson(stack):
    run = run_services(stack)
    pulls = [r for r in run.of_type(SECRET_TYPE) if r.inputs["metadata"]["name"] == "registry-credentials"]
    assert sorted(r.inputs["metadata"]["namespace"] for r in pulls) == [names.APPS, names.MCP]
    for reg in pulls:
        assert reg.inputs["type"] == "kubernetes.io/dockerconfigjson"
        assert _all_secret(reg.inputs["stringData"])
        auths = json.loads(run.raw[reg.name]["stringData"][".dockerconfigjson"])["auths"]
        assert auths["https://index.docker.io/v1/"]["username"] == f"placeholder-{stack}-infrastructure-docker-username"


@pytest.mark.parametrize("stack", STACKS)
def test_backend_gets_the_mcp_registry_config_map(stack):
    run = run_services(stack)
    (cm,) = [r for r in run.of_type(CONFIGMAP) if r.name != "platform-stand-in"]
    assert cm.inputs["metadata"] == {"name": "mcp-registry", "namespace": names.APPS, "labels": cm.inputs["metadata"]["labels"]}
    registry = json.loads(cm.inputs["data"]["MCP_REGISTRY"])
    assert registry == mcp_registry(run.cfg) and len(registry) == 13


@pytest.mark.parametrize("stack", STACKS)
def test_outputs(stack):
    run = run_services(stack)
    assert run.outputs["mcpRegistry"] == mcp_registry(run.cfg)
    assert len(run.outputs["endpoints"]) == 15
    assert run.outputs["endpoints"]["backend"] == "http://backend.sophia-apps.svc.cluster.local:8000"
    assert all(run.outputs["endpoints"][s.name] == endpoint(s) for s in run.cfg.services)


@pytest.mark.parametrize("stack", STACKS)
def test_no_placeholder_secret_in_helm_values_or_application_specs(stack):
    run = run_services(stack)
    # the check can see secrets: the workloads' Secrets do hold the placeholders
    assert "placeholder-" in json.dumps([run.raw[r.name] for r in run.of_type(SECRET_TYPE)])
    for reg in run.of_type(RELEASE) + run.of_type(APPLICATION) + run.of_type(APPPROJECT) + run.of_type(CONFIGMAP):
        text = json.dumps(run.raw[reg.name], default=str)
        assert "placeholder-" not in text and SECRET not in json.dumps(reg.inputs), reg.name


@pytest.mark.parametrize("stack", STACKS)
def test_every_child_uses_the_provider_and_the_component_as_parent(stack):
    run = run_services(stack)
    (comp,) = [r for r in run.registrations if r.type == "sophia:services:Services"]
    platform = run.named("platform-stand-in")
    # The children wait for the platform through the component (which the engine also counts
    # as each child's dependency when it orders deletes): the component records the platform
    # and registers after it, every child registers after the component.
    assert platform.urn in comp.dependencies
    order = [r.urn for r in run.registrations]
    assert order.index(platform.urn) < order.index(comp.urn)
    for reg in run.registrations:
        if reg.parent == comp.urn:
            assert order.index(comp.urn) < order.index(reg.urn), f"{reg.name} registered before its component"
        if reg.type.startswith("kubernetes:") and reg.name != "platform-stand-in":
            assert reg.parent == comp.urn, reg.name
            assert "pulumi:providers:kubernetes" in reg.provider, reg.name
        if reg.custom and reg.parent == comp.urn:
            assert reg.name.startswith("services-"), reg.name


# ----------------------------------------------------------------------------- release files

def test_dev_installs_the_release_files_image():
    """Dev's Helm values carry the tag of releases/dev/<name>.yaml; the stack file has none."""
    run = run_services("dev")
    for reg in run.of_type(RELEASE):
        name = reg.inputs["name"]
        svc = next(s for s in run.cfg.services if s.name == name)
        assert svc.image.tag is None, f"{name}: a tag in Pulumi.dev.yaml as well as in its release file"
        assert releases.read("dev", name) is not None
        assert run.raw[reg.name]["values"]["image"] == {"repository": svc.image.repository,
                                                        "tag": releases.read("dev", name).tag}


def test_values_merge_the_release_into_the_structural_values():
    cfg = parse_with("production")
    backend = next(s for s in cfg.services if s.name == "backend")
    release = releases.Release("1.4.2", "sha256:" + "ab" * 32)
    full = service_values(cfg, backend, release)
    assert full["image"] == {"repository": "docker.io/scoobyjava15/sophia-backend",
                             "tag": "1.4.2", "digest": "sha256:" + "ab" * 32}
    structural = structural_values(cfg, backend)
    assert "tag" not in structural["image"] and "digest" not in structural["image"]
    assert {k: v for k, v in full.items() if k != "image"} == {k: v for k, v in structural.items() if k != "image"}


def test_argocd_merge_order_is_value_files_then_values_object():
    """Argo CD's precedence: valuesObject over valueFiles, later files over earlier; maps merge, null removes."""
    merged = releases.argocd_values([{"image": {"tag": "1", "digest": "d"}, "a": [1]}, {"image": {"tag": "2"}}],
                                    {"image": {"repository": "r", "digest": None}, "a": [2]})
    assert merged == {"image": {"tag": "2", "repository": "r"}, "a": [2]}


def _tree(tmp_path, stack: str, files: dict[str, str]):
    folder = tmp_path / "releases" / stack
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / f"{name}.yaml").write_text(text)
    return tmp_path


def _valid_files(stack: str) -> dict[str, str]:
    return {s.name: releases.path(stack, s.name).read_text() for s in parse_with(stack).services}


@pytest.mark.parametrize("stack", STACKS)
def test_the_committed_release_files_are_complete(stack):
    assert releases.problems(parse_with(stack), stack) == []
    assert sorted(releases.files(stack)) == sorted(s.name for s in parse_with(stack).services)


@pytest.mark.parametrize("edit,message", [
    (lambda files, raw: files.pop("gong"),
     "releases/dev/gong.yaml: does not exist and sophia:services[4].image.tag is unset, so 'gong' has no image tag; "
     "create it with python -m sophia_infra release gong --stack dev --tag TAG."),
    (lambda files, raw: raw["services"][0]["image"].update(tag="1.0.0"),
     "sophia:services[0].image.tag: '1.0.0' is set in Pulumi.dev.yaml and releases/dev/backend.yaml gives 'backend' "
     "its image too; remove image.tag from the stack file (the release file is the one place an app release writes)."),
    (lambda files, raw: files.update(bakend=files["backend"]),
     "releases/dev/bakend.yaml: there is no service 'bakend' in sophia:services of stack dev; git rm the file or correct its name."),
    (lambda files, raw: files.update(gong='image:\n  tag: latest\n'),
     "releases/dev/gong.yaml: the tag 'latest' is not pinned (latest moves by itself); give the exact version tag the "
     "image was pushed with, such as 1.4.2."),
    (lambda files, raw: files.update(gong='image:\n  tag: "1.0.0"\n  digest: sha256:abc\n'),
     "releases/dev/gong.yaml: 'sha256:abc' is not an image digest; give sha256: followed by 64 lower-case hex digits "
     "(what `docker buildx imagetools inspect IMAGE` prints as Digest)."),
    (lambda files, raw: files.update(gong='image:\n  tag: "1.0.0"\n  replicas: 3\n'),
     "releases/dev/gong.yaml: image.replicas is not a key of a release file (only tag and digest are); structural "
     "settings belong in the stack config."),
    (lambda files, raw: files.update(gong='image: {tag: "1.0.0"\n'),
     None),  # a YAML error: file:line:column: what
])
def test_release_file_problems_are_one_sentence_each(tmp_path, edit, message):
    raw, secrets = raw_stack("dev")
    files = _valid_files("dev")
    edit(files, raw)
    cfg = config_parse(raw, lambda k: True if k in secrets else None)
    found = releases.problems(cfg, "dev", _tree(tmp_path, "dev", files))
    assert len(found) == 1, found
    if message is None:
        assert found[0].startswith("releases/dev/gong.yaml:2:1: expected ',' or '}'"), found
    else:
        assert found == [message]


def test_a_stack_without_release_files_may_pin_tags_in_its_config(tmp_path):
    """One source of truth either way: a stack (e.g. make bench's) without release files keeps image.tag."""
    raw, secrets = raw_stack("production")
    for svc in raw["services"]:
        svc["image"]["tag"] = "2.0.0"
    cfg = config_parse(raw, lambda k: True if k in secrets else None)
    assert releases.problems(cfg, "production", tmp_path) == []
    found = releases.for_stack(cfg, "production", tmp_path)
    assert {r.tag for r in found.values()} == {"2.0.0"} and all(r.file is None for r in found.values())


def test_services_refuse_a_broken_release_file_with_the_config_error(tmp_path, monkeypatch):
    cfg = parse_with("production")
    files = _valid_files("production")
    files["slack"] = "image:\n  tag: latest\n"
    monkeypatch.setattr(releases, "ROOT", _tree(tmp_path, "production", files))
    with pytest.raises(ConfigError) as err:
        releases.for_stack(cfg, "production", releases.ROOT)
    assert err.value.problems == ["releases/production/slack.yaml: the tag 'latest' is not pinned (latest moves by "
                                  "itself); give the exact version tag the image was pushed with, such as 1.4.2."]
