"""sophia_infra.services under Pulumi mocks (both delivery modes), the values, the settings.

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

from sophia_infra import names, service_settings
from sophia_infra.config import StackConfig
from sophia_infra.plan import stack_config
from sophia_infra.plan.mocks import SECRET, RecordingMonitor, Registration
from sophia_infra.services import Services
from sophia_infra.services.values import endpoint, mcp_registry, namespace, service_values
from tests.conftest import STACKS, parse_with, problems_of

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
    platform_values = pytest.importorskip("sophia_infra.platform.values", reason="the platform layer is not in this tree")
    from sophia_infra.services.values import LLM_GATEWAY_CONFIGMAP
    assert LLM_GATEWAY_CONFIGMAP == platform_values.LLM_GATEWAY_CONFIGMAP


def test_values_carry_no_secret_values():
    for stack in STACKS:
        cfg = parse_with(stack)
        text = json.dumps([service_values(cfg, s) for s in cfg.services])
        assert "placeholder-" not in text


# ----------------------------------------------------------------------------- settings

def test_default_settings_need_argocd_and_docker_secrets_only_where_used():
    prod, dev = parse_with("production"), parse_with("dev")
    assert set(service_settings.required_secrets(prod)) == {"argocdAdminPasswordBcrypt", "dockerUsername", "dockerAccessToken"}
    assert set(service_settings.required_secrets(dev)) == {"dockerUsername", "dockerAccessToken"}
    assert "argocdAdminPasswordBcrypt" in prod.required_secrets()


@pytest.mark.parametrize("rev", ["HEAD", "head", "main", "release/1.0", "v1"])
def test_cross_check_rejects_unpinned_target_revision(rev):
    problems = problems_of("production", lambda raw: raw.update(argocd={"targetRevision": rev}))
    assert any(p.startswith("sophia:argocd.targetRevision:") and "not pinned" in p for p in problems), problems


@pytest.mark.parametrize("rev", ["v0.2.0", "1.4.2-rc1", "0123456789abcdef0123456789abcdef01234567"])
def test_pinned_target_revisions_pass(rev):
    cfg = parse_with("production", lambda raw: raw.update(argocd={"targetRevision": rev}))
    assert cfg.argocd.target_revision == rev


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
    argo, helm = run_services("production"), run_services("production", "helm")
    assert helm.cfg.delivery == "helm" and argo.cfg.delivery == "argocd"
    app_values = {argo.raw[r.name]["metadata"]["name"]: argo.raw[r.name]["spec"]["source"]["helm"]["valuesObject"]
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
    for reg in run.registrations:
        if reg.parent == comp.urn:
            assert platform.urn in reg.dependencies, f"{reg.name} does not wait for the component's dependencies"
        if reg.type.startswith("kubernetes:") and reg.name != "platform-stand-in":
            assert reg.parent == comp.urn, reg.name
            assert "pulumi:providers:kubernetes" in reg.provider, reg.name
        if reg.custom and reg.parent == comp.urn:
            assert reg.name.startswith("services-"), reg.name
