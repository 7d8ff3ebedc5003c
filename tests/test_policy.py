"""Every policy rule with one passing and one failing case; the pack wires them all."""

from __future__ import annotations

import copy
import importlib.util
import sys
from types import SimpleNamespace

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "policy"))
rules = importlib.import_module("rules")
policies = importlib.import_module("policies")

DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def deployment(**container) -> dict:
    base = {"name": "app", "image": "docker.io/sophia/app:1.0.0",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "100m", "memory": "128Mi"}}}
    base.update(container)
    return {"metadata": {"name": "app", "namespace": "sophia-apps"},
            "spec": {"template": {"spec": {"containers": [base]}}}}


def gpu_deployment(runtime=True, selector=True) -> dict:
    d = deployment(resources={"limits": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": 1}})
    spec = d["spec"]["template"]["spec"]
    if runtime:
        spec["runtimeClassName"] = "nvidia"
    if selector:
        spec["nodeSelector"] = {"gpu-type": "GH200"}
    return d


def chart_release(**values) -> dict:
    base = {"name": "ai-memory", "image": {"repository": "docker.io/sophia/m", "tag": "1.0.0"}, "gpu": 1,
            "placement": {"gpuType": "GH200"}, "resources": {"limits": {"cpu": "2", "memory": "8Gi"}}}
    base.update(values)
    return {"name": "ai-memory", "chart": "charts/sophia-service", "namespace": "sophia-mcp", "values": base}


def chart_application(**values) -> dict:
    release = chart_release(**values)
    return {"metadata": {"name": "ai-memory", "namespace": "argocd"},
            "spec": {"source": {"path": "charts/sophia-service", "helm": {"valuesObject": release["values"]}}}}


RELEASE, APPLICATION = "kubernetes:helm.sh/v3:Release", "kubernetes:argoproj.io/v1alpha1:Application"


def release_file_application(release_file: str) -> dict:
    """An Application as the program writes it: the image comes from a release file ($values/...)."""
    values = {k: v for k, v in chart_release()["values"].items() if k != "image"}
    values["image"] = {"repository": "docker.io/sophia/m"}
    return {"metadata": {"name": "ai-memory", "namespace": "argocd"},
            "spec": {"sources": [{"path": "charts/sophia-service",
                                  "helm": {"valueFiles": [f"$values/{release_file}"], "valuesObject": values}},
                                 {"repoURL": "https://github.com/sophia-ai/sophia-infra.git", "ref": "values"}]}}


@pytest.fixture(autouse=True)
def release_files(tmp_path, monkeypatch):
    """Release files as `python -m sophia_infra release` writes them, in a repository root of their own."""
    d = tmp_path / "releases" / "production"
    d.mkdir(parents=True)
    (d / "with-digest.yaml").write_text('# header\nimage:\n  tag: "1.0.0"\n  digest: sha256:' + "b" * 64 + "\n")
    (d / "tag-only.yaml").write_text('# header\nimage:\n  tag: "1.0.0"\n')
    monkeypatch.setattr(rules, "REPO_ROOT", tmp_path)

CASES = {
    "containers-have-limits": [
        (DEPLOYMENT, deployment(), 0),
        (DEPLOYMENT, deployment(resources={"limits": {"cpu": "1"}}), 1),
        ("kubernetes:batch/v1:CronJob", {"metadata": {"name": "j"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "a:1"}]}}}}}}, 1),
        (RELEASE, chart_release(), 0),
        (RELEASE, chart_release(resources={"requests": {"cpu": "1"}}), 1),
        (APPLICATION, chart_application(resources={"limits": {"cpu": "1"}}), 1),
    ],
    "gpu-pods-use-nvidia-runtime": [
        (DEPLOYMENT, gpu_deployment(), 0),
        (DEPLOYMENT, gpu_deployment(runtime=False), 1),
        (DEPLOYMENT, gpu_deployment(selector=False), 1),
        (DEPLOYMENT, deployment(), 0),
        (APPLICATION, chart_application(), 0),
        (APPLICATION, chart_application(placement=None), 1),
    ],
    "images-pinned": [
        (DEPLOYMENT, deployment(image="ghcr.io/org/app@sha256:" + "a" * 64), 0),
        (DEPLOYMENT, deployment(image="docker.io/sophia/app:latest"), 1),
        (DEPLOYMENT, deployment(image="registry.example.com:5000/app"), 1),
        (RELEASE, chart_release(image={"repository": "docker.io/sophia/m", "tag": "latest"}), 1),
    ],
    "images-by-digest": [
        (APPLICATION, chart_application(image={"repository": "docker.io/sophia/m", "tag": "1.0.0", "digest": "sha256:" + "a" * 64}), 0),
        (APPLICATION, chart_application(image={"repository": "docker.io/sophia/m", "tag": "sha256:" + "a" * 64}), 0),
        (APPLICATION, chart_application(), 1),
        (APPLICATION, release_file_application("releases/production/with-digest.yaml"), 0),
        (APPLICATION, release_file_application("releases/production/tag-only.yaml"), 1),
        (APPLICATION, release_file_application("releases/production/absent.yaml"), 1),
        (RELEASE, chart_release(), 0),  # Helm delivery (dev): not production's delivery
        (DEPLOYMENT, deployment(), 0),  # third-party and other workloads: images-pinned covers them
    ],
    "no-load-balancer-but-ingress": [
        ("kubernetes:core/v1:Service", {"metadata": {"name": "nginx", "namespace": "nginx-ingress"}, "spec": {"type": "LoadBalancer"}}, 0),
        ("kubernetes:core/v1:Service", {"metadata": {"name": "api", "namespace": "sophia-apps"}, "spec": {"type": "LoadBalancer"}}, 1),
        ("kubernetes:helm.sh/v3:Release", {"name": "grafana", "namespace": "monitoring", "values": {"grafana": {"service": {"type": "LoadBalancer"}}}}, 1),
        ("kubernetes:helm.sh/v3:Release", {"name": "ingress", "namespace": "nginx-ingress", "values": {"controller": {"service": {"type": "LoadBalancer"}}}}, 0),
    ],
    "no-secrets-in-configmaps": [
        ("kubernetes:core/v1:ConfigMap", {"metadata": {"name": "llm"}, "data": {"routing.json": "{}"}}, 0),
        ("kubernetes:core/v1:ConfigMap", {"metadata": {"name": "llm"}, "data": {"OPENAI_API_KEY": "x"}}, 1),
        ("kubernetes:core/v1:ConfigMap", {"metadata": {"name": "db"}, "data": {"db_password": "x"}}, 1),
    ],
    "no-address-literals": [
        ("kubernetes:core/v1:ConfigMap", {"metadata": {"name": "c"}, "data": {"url": "http://backend.sophia-apps.svc:8000"}}, 0),
        ("kubernetes:networking.k8s.io/v1:NetworkPolicy", {"metadata": {"name": "n"}, "spec": {"egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}]}}, 0),
        ("kubernetes:core/v1:ConfigMap", {"metadata": {"name": "c"}, "data": {"url": "http://" + ".".join(["10", "9", "8", "7"]) + ":8000"}}, 1),
        ("command:remote:Command", {"create": "echo " + ".".join(["10", "9", "8", "7"])}, 0),  # hosts come from ESC
    ],
}


@pytest.mark.parametrize("rule", [r.name for r in rules.RULES])
def test_each_rule_passes_and_fails(rule):
    check = next(r for r in rules.RULES if r.name == rule).check
    cases = CASES[rule]
    assert any(n == 0 for *_, n in cases) and any(n > 0 for *_, n in cases)
    for resource_type, props, expected in cases:
        found = check(resource_type, copy.deepcopy(props))
        assert len(found) == expected, (resource_type, props, found)


def test_pack_has_every_rule_and_reports_through_pulumi_policy():
    assert [p.name for p in policies.POLICIES] == [r.name for r in rules.RULES]
    reported = []
    gpu = next(p for p in policies.POLICIES if p.name == "gpu-pods-use-nvidia-runtime")
    # pulumi_policy.ReportViolation is Callable[[str, Optional[str]], None]: message and urn.
    report_violation = lambda message, urn: reported.append(message)  # noqa: E731
    gpu.validate(SimpleNamespace(resource_type=DEPLOYMENT, props=gpu_deployment(runtime=False)), report_violation)
    assert reported and "runtimeClassName" in reported[0]


def test_advisory_rules_are_advisory_in_the_pack_and_apart_in_evaluate():
    level = {p.name: p.enforcement_level for p in policies.POLICIES}
    assert level["images-by-digest"] == policies.EnforcementLevel.ADVISORY
    assert level["images-pinned"] is None  # the pack's MANDATORY
    props = chart_application()
    assert rules.evaluate(APPLICATION, props) == []
    assert [r for r, _ in rules.evaluate(APPLICATION, props, advisory=True)] == ["images-by-digest"]


def test_the_shipped_production_release_files_are_judged_as_they_are():
    """Today's production release files name tags only: the advisory reports each of them."""
    from tests.test_argocd import applications

    apps = applications()
    found = {name: rules.images_by_digest(APPLICATION, app, root=ROOT) for name, app in apps.items()}
    tag_only = {n for n, f in found.items() if f}
    with_digest = {p.stem for p in (ROOT / "releases" / "production").glob("*.yaml") if "digest:" in p.read_text()}
    assert tag_only == set(apps) - with_digest


def test_pack_entry_point_is_mandatory():
    text = (ROOT / "policy" / "__main__.py").read_text()
    assert "EnforcementLevel.MANDATORY" in text and "policies=POLICIES" in text


# ----------------------------------------------------------------------------- the stacks' policy pack configs
# policy/config/<stack>.json is what `pulumi preview/up --policy-pack policy --policy-pack-config`
# reads (preview.yml, deploy.yml) and what the offline plan reads: judged here through
# pulumi-policy's own analyzer servicer, as the engine drives it.

def _analyzer():
    from pulumi_policy.policy import EnforcementLevel, _PolicyAnalyzerServicer

    return _PolicyAnalyzerServicer("sophia-infra", "0.1.0", policies.POLICIES, EnforcementLevel.MANDATORY)


def _configure(servicer, parsed: dict) -> None:
    """Configure as the CLI sends a parsed config file: one PolicyConfig per named policy."""
    from google.protobuf import struct_pb2
    from pulumi.runtime import proto

    request = proto.ConfigureAnalyzerRequest()
    for name, (level, props) in parsed.items():
        config = proto.PolicyConfig(enforcementLevel=getattr(proto, level.upper()))
        config.properties.CopyFrom(struct_pb2.Struct())
        config.properties.update(props)
        request.policyConfig[name].CopyFrom(config)
    servicer.Configure(request, None)


def _analyze(servicer, resource_type: str, props: dict) -> list[tuple[str, str]]:
    """(policy, level) of each diagnostic the analyzer reports for one resource."""
    from google.protobuf import struct_pb2
    from pulumi.runtime import proto

    properties = struct_pb2.Struct()
    properties.update(props)
    response = servicer.Analyze(proto.AnalyzeRequest(type=resource_type, urn="urn:pulumi:production::sophia-infra::x",
                                                     name="x", properties=properties), None)
    return [(d.policyName, proto.EnforcementLevel.Name(d.enforcementLevel)) for d in response.diagnostics]


def test_production_enforces_digests_but_for_the_listed_workloads_through_the_sdk_analyzer():
    from tests.test_argocd import applications

    shipped = rules.pack_config("production")
    level, props = shipped["images-by-digest"]
    assert level == "mandatory" and set(props["tagOnlyAllowed"]) <= set(applications())
    tag_only = chart_application()  # service 'ai-memory', its image by tag in valuesObject
    fresh = _analyzer()  # no config: the rule's own level, advisory
    assert _analyze(fresh, APPLICATION, tag_only) == [("images-by-digest", "ADVISORY")]

    listed = {"images-by-digest": ("mandatory", {"tagOnlyAllowed": ["ai-memory", "backend"]})}
    allowed = _analyzer()
    _configure(allowed, listed)
    assert _analyze(allowed, APPLICATION, tag_only) == []
    assert rules.evaluate(APPLICATION, tag_only, pack_config=listed) == []

    # A workload not on the list (a new one, or one taken off it) must run by digest.
    unlisted = {"images-by-digest": ("mandatory", {"tagOnlyAllowed": ["backend"]})}
    enforced = _analyzer()
    _configure(enforced, unlisted)
    assert _analyze(enforced, APPLICATION, tag_only) == [("images-by-digest", "MANDATORY")]
    assert [r for r, _ in rules.evaluate(APPLICATION, tag_only, pack_config=unlisted)] == ["images-by-digest"]
    # ... and does once released by digest.
    by_digest = chart_application(image={"repository": "docker.io/sophia/m", "tag": "1.0.0", "digest": "sha256:" + "a" * 64})
    assert _analyze(enforced, APPLICATION, by_digest) == []
    # The shipped file goes through the analyzer as it is (pulumi validates it against the schema first).
    shipped_analyzer = _analyzer()
    _configure(shipped_analyzer, shipped)
    assert _analyze(shipped_analyzer, APPLICATION, tag_only) == \
        ([] if "ai-memory" in props["tagOnlyAllowed"] else [("images-by-digest", "MANDATORY")])


def test_each_stack_has_a_policy_config_valid_against_the_schema_the_pack_publishes():
    import jsonschema
    from google.protobuf import json_format
    from pulumi.runtime import proto

    info = _analyzer().GetAnalyzerInfo(proto.AnalyzerInfo(), None)
    schemas = {p.name: json_format.MessageToDict(p.configSchema) for p in info.policies}
    assert schemas["images-by-digest"]["properties"] == rules.IMAGES_BY_DIGEST_CONFIG["properties"]
    stacks = sorted(p.stem.split(".", 1)[1] for p in ROOT.glob("Pulumi.*.yaml"))
    assert stacks == ["dev", "production"]
    for stack in stacks:
        path = ROOT / "policy" / "config" / f"{stack}.json"
        parsed = rules.pack_config(stack)
        assert path.is_file()  # and it parses (pack_config raises on a mistake)
        for name, (_, props) in parsed.items():
            jsonschema.validate(props, {"type": "object", **schemas[name]})


@pytest.mark.parametrize("text, says", [
    ("{", "not JSON"),
    ("[]", "JSON object"),
    ('{"images-by-digests": "mandatory"}', "'images-by-digests' is no policy of this pack"),
    ('{"all": "mandatory"}', "'all' is no policy of this pack"),
    ('{"images-by-digest": "strict"}', "needs an enforcement level"),
    ('{"images-by-digest": {"tagOnlyAllowed": ["backend"]}}', "needs an enforcement level"),
    ('{"images-by-digest": {"enforcementLevel": "mandatory", "allow": ["backend"]}}', "takes no property 'allow'; it takes tagOnlyAllowed"),
    ('{"images-by-digest": {"enforcementLevel": "mandatory", "tagOnlyAllowed": "backend"}}', "must be a list of names"),
    ('{"images-pinned": {"enforcementLevel": "mandatory", "tagOnlyAllowed": []}}', "takes no property 'tagOnlyAllowed'"),
])
def test_a_policy_config_mistake_is_one_sentence(text, says):
    with pytest.raises(rules.PackConfigError) as err:
        rules.parse_pack_config(text, "policy/config/production.json")
    message = str(err.value)
    assert says in message and message.startswith("policy/config/production.json: ") and "\n" not in message


def test_levels_follow_the_config_as_the_analyzer_resolves_them():
    props = chart_application()  # tag only: images-by-digest finds it
    for config, mandatory, advisory in [
        ({}, [], ["images-by-digest"]),
        ({"images-by-digest": ("mandatory", {})}, ["images-by-digest"], []),
        ({"images-by-digest": ("remediate", {})}, ["images-by-digest"], []),
        ({"images-by-digest": ("disabled", {})}, [], []),
    ]:
        assert [r for r, _ in rules.evaluate(APPLICATION, props, pack_config=config)] == mandatory
        assert [r for r, _ in rules.evaluate(APPLICATION, props, advisory=True, pack_config=config)] == advisory
        servicer = _analyzer()
        _configure(servicer, config)
        levels = dict(_analyze(servicer, APPLICATION, props))
        expected = "MANDATORY" if mandatory else "ADVISORY" if advisory else None
        assert levels.get("images-by-digest") == expected, config
