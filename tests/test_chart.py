"""charts/sophia-service: lint, render every workload of both stacks, validate, check behaviour.

Each (stack, service) is rendered once (in parallel) and the tests read the cache.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import jsonschema
import kubernetes_validate
import pytest

from sophia_infra.program.config import names
from sophia_infra.program.config.services import WorkloadSettings
from sophia_infra.program.services import values as values_mod
from sophia_infra.program.services.values import CHART_DIR, namespace, service_values
from tests import helm_cache
from tests.platform_helpers import crd_errors
from tests.conftest import STACKS, parse_with
from tests import yaml_c

HELM = shutil.which("helm")
needs_helm = pytest.mark.skipif(HELM is None, reason="helm is not on PATH (make test puts .tools/bin on PATH; scripts/install-tools.sh installs it)")
SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())


def _helm(*args: str, values: dict | None = None) -> subprocess.CompletedProcess:
    """`helm ARGS CHART [-f values]` (answered from the render cache when the chart, the values
    and helm are as in an earlier run: tests/helm_cache.py)."""
    assert HELM is not None
    extra = ["-f", helm_cache.VALUES] if values is not None else []
    return helm_cache.run(HELM, [*args, helm_cache.CHART, *extra], CHART_DIR, values)


def render(release: str, ns: str, values: dict) -> list[dict]:
    proc = _helm("template", release, "--namespace", ns, values=values)
    if proc.returncode != 0:
        raise AssertionError(f"helm template {release} failed:\n{proc.stderr}")
    return [d for d in yaml_c.load_all(proc.stdout) if d]


@lru_cache(maxsize=None)
def rendered(stack: str) -> dict[str, dict]:
    """service -> {"values", "objects", "lint"} for every workload of the stack."""
    cfg = parse_with(stack)

    def one(svc):
        vals = service_values(cfg, svc)
        objects = render(svc.name, namespace(svc), vals)
        lint = _helm("lint", "--strict", "--namespace", namespace(svc), values=vals)
        return svc.name, {"svc": svc, "values": vals, "objects": objects, "lint": lint}

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(one, cfg.services))


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def pod_spec(objects: list[dict]) -> dict:
    (dep,) = by_kind(objects, "Deployment")
    return dep["spec"]["template"]["spec"]


# ----------------------------------------------------------------------------- schema (no helm)

@pytest.mark.parametrize("stack", STACKS)
def test_generated_values_pass_the_chart_schema(stack):
    cfg = parse_with(stack)
    for svc in cfg.services:
        jsonschema.validate(service_values(cfg, svc), SCHEMA)


@pytest.mark.parametrize("change", [
    ("replicas 0", lambda v: v.update(replicas=0)),
    ("tag latest", lambda v: v["image"].update(tag="latest")),
    ("unknown top-level key", lambda v: v.update(replica=2)),
    ("unknown nested key", lambda v: v["image"].update(digest="x")),
    ("empty repository", lambda v: v["image"].update(repository="")),
    ("privileged port", lambda v: v.update(port=80)),
    ("unknown architecture", lambda v: v["placement"].update(architectures=["s390x"])),
    ("ingress without host", lambda v: v["ingress"].update(enabled=True, host="")),
], ids=lambda c: c[0])
def test_schema_rejects_bad_values_in_python(change):
    cfg = parse_with("dev")
    vals = copy.deepcopy(service_values(cfg, cfg.services[0]))
    change[1](vals)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(vals, SCHEMA)


# ----------------------------------------------------------------------------- helm

@needs_helm
@pytest.mark.parametrize("change,needle", [
    (lambda v: v.update(replicas=0), "replicas"),
    (lambda v: v["image"].update(tag="latest"), "tag"),
    (lambda v: v.update(extraKey=True), "extraKey"),
], ids=["replicas-0", "tag-latest", "unknown-key"])
def test_helm_template_rejects_bad_values(change, needle):
    cfg = parse_with("dev")
    vals = copy.deepcopy(service_values(cfg, cfg.services[0]))
    change(vals)
    proc = _helm("template", "bad", "--namespace", names.APPS, values=vals)
    assert proc.returncode != 0, "helm template accepted invalid values"
    assert needle in proc.stderr


@needs_helm
@pytest.mark.parametrize("image,policy", [
    ({"tag": "1.4.2"}, "Always"),  # a tag can be re-pushed: never run a node's stale copy
    ({"tag": "1.4.2", "digest": "sha256:" + "ab" * 32}, "IfNotPresent"),
    ({"tag": "sha256:" + "ab" * 32}, "IfNotPresent"),
    ({"tag": "1.4.2", "pullPolicy": "Never"}, "Never"),
])
def test_pull_policy_follows_the_digest(image, policy):
    cfg = parse_with("production")
    svc = next(s for s in cfg.services if s.name == "backend")
    vals = service_values(cfg, svc)
    vals["image"] = {"repository": vals["image"]["repository"], **image}
    (container,) = pod_spec(render("backend", namespace(svc), vals))["containers"]
    assert container["imagePullPolicy"] == policy
    assert container["image"].endswith(image.get("digest") or image["tag"])


@needs_helm
def test_helm_template_rejects_a_missing_image():
    proc = _helm("template", "bad", "--namespace", names.APPS)
    assert proc.returncode != 0 and "repository" in proc.stderr


@needs_helm
@pytest.mark.parametrize("stack", STACKS)
def test_lint_every_service(stack):
    for name, r in rendered(stack).items():
        assert r["lint"].returncode == 0, f"{stack}/{name}: helm lint failed:\n{r['lint'].stdout}{r['lint'].stderr}"


@needs_helm
@pytest.mark.parametrize("stack", STACKS)
def test_every_rendered_object_is_valid_kubernetes(stack):
    for name, r in rendered(stack).items():
        kinds = sorted(o["kind"] for o in r["objects"])
        assert {"Deployment", "Service", "ServiceAccount", "NetworkPolicy"} <= set(kinds), (name, kinds)
        for obj in r["objects"]:
            if obj["apiVersion"].startswith("monitoring.coreos.com/"):
                assert not crd_errors(obj), (name, crd_errors(obj))
            else:
                kubernetes_validate.validate(obj, names.KUBERNETES_VERSION, strict=True)


@needs_helm
def test_service_monitor_only_where_metrics_are_served():
    for name, r in rendered("production").items():
        monitors = [o for o in r["objects"] if o["kind"] == "ServiceMonitor"]
        if r["svc"].metrics_path:
            (monitor,) = monitors
            assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
        else:
            assert not monitors, name


@needs_helm
@pytest.mark.parametrize("stack", STACKS)
def test_gpu_only_where_requested(stack):
    for name, r in rendered(stack).items():
        svc, spec = r["svc"], pod_spec(r["objects"])
        (container,) = spec["containers"]
        limits = container["resources"]["limits"]
        tolerations = [t["key"] for t in spec.get("tolerations", [])]
        if svc.gpu:
            assert limits["nvidia.com/gpu"] == svc.gpu, name
            assert spec["runtimeClassName"] == names.NVIDIA_RUNTIME_CLASS, name
            assert "nvidia.com/gpu" in tolerations, name
            assert spec["nodeSelector"][names.GPU_TYPE_LABEL] == svc.placement.gpu_type, name
        else:
            assert "nvidia.com/gpu" not in limits and "nvidia.com/gpu" not in container["resources"]["requests"], name
            assert "runtimeClassName" not in spec and "nvidia.com/gpu" not in tolerations, name
        if svc.placement:
            assert spec["nodeSelector"][names.GPU_TYPE_LABEL] == svc.placement.gpu_type, name
        else:
            assert names.GPU_TYPE_LABEL not in spec["nodeSelector"], name


@needs_helm
def test_gh200_pods_select_arm64():
    r = rendered("production")["ai-memory"]
    spec = pod_spec(r["objects"])
    assert spec["nodeSelector"][names.GPU_TYPE_LABEL] == "GH200"
    assert spec["nodeSelector"][names.ARCH_LABEL] == "arm64"
    assert "affinity" not in spec


@needs_helm
def test_multi_arch_image_without_arch_constraint_gets_affinity():
    cfg = parse_with("production")
    svc = next(s for s in cfg.services if s.name == "ai-memory")
    vals = copy.deepcopy(service_values(cfg, svc))
    vals["placement"] = {"gpuType": "", "architectures": ["amd64", "arm64"]}
    spec = pod_spec(render("ai-memory", names.MCP, vals))
    assert names.ARCH_LABEL not in spec["nodeSelector"]
    (term,) = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [{"key": names.ARCH_LABEL, "operator": "In", "values": ["amd64", "arm64"]}]


@needs_helm
@pytest.mark.parametrize("stack", STACKS)
def test_restricted_security_context_and_probes(stack):
    for name, r in rendered(stack).items():
        svc, spec = r["svc"], pod_spec(r["objects"])
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        (container,) = spec["containers"]
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, name
        assert sc["capabilities"] == {"drop": ["ALL"]}, name
        assert sc["runAsUser"] > 0
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}} in spec["volumes"]
        assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
        assert ":" in container["image"] and not container["image"].endswith(":latest")
        (sa,) = by_kind(r["objects"], "ServiceAccount")
        assert sa["automountServiceAccountToken"] is False
        if svc.kind == "mcp":
            assert container["readinessProbe"]["tcpSocket"] == {"port": "http"}, name
            assert container["livenessProbe"]["tcpSocket"] == {"port": "http"}, name
        else:
            assert container["readinessProbe"]["httpGet"]["path"] == r["values"]["healthPath"], name
        assert spec["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
        if r["values"]["imagePullSecrets"]:
            assert spec["imagePullSecrets"] == [{"name": values_mod.REGISTRY_SECRET}]


@needs_helm
@pytest.mark.parametrize("stack", STACKS)
def test_hpa_pdb_and_replicas(stack):
    for name, r in rendered(stack).items():
        svc, objects = r["svc"], r["objects"]
        (dep,) = by_kind(objects, "Deployment")
        hpas, pdbs = by_kind(objects, "HorizontalPodAutoscaler"), by_kind(objects, "PodDisruptionBudget")
        if svc.max_replicas and svc.max_replicas > svc.replicas:
            (hpa,) = hpas
            assert hpa["apiVersion"] == "autoscaling/v2"
            assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (svc.replicas, svc.max_replicas)
            assert "replicas" not in dep["spec"], f"{name}: the HPA owns replicas"
        else:
            assert not hpas, name
            assert dep["spec"]["replicas"] == svc.replicas
        if svc.replicas > 1:
            (pdb,) = pdbs
            assert pdb["apiVersion"] == "policy/v1"
        else:
            assert not pdbs, name


@needs_helm
@pytest.mark.parametrize("stack", STACKS)
def test_network_policy_and_env(stack):
    for name, r in rendered(stack).items():
        svc = r["svc"]
        (np,) = by_kind(r["objects"], "NetworkPolicy")
        assert np["spec"]["policyTypes"] == ["Ingress"]
        (rule,) = np["spec"]["ingress"]
        assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
        sources = [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in rule["from"]]
        # Prometheus reaches the port only where there is something to scrape.
        assert (names.MONITORING in sources) == bool(svc.metrics_path), name
        if svc.kind == "mcp":
            assert sources == [names.APPS] + ([names.MONITORING] if svc.metrics_path else [])
            assert rule["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "backend"}
        (container,) = pod_spec(r["objects"])["containers"]
        env_from = container.get("envFrom", [])
        if svc.secrets:
            assert {"secretRef": {"name": f"{svc.name}-secrets"}} in env_from
        else:
            assert not any("secretRef" in e for e in env_from)
        if svc.name == "backend":
            assert env_from[:2] == [{"configMapRef": {"name": "mcp-registry"}}, {"configMapRef": {"name": "llm-gateway"}}]
            assert env_from[-1] == {"secretRef": {"name": "backend-secrets"}}
        else:
            assert not any("configMapRef" in e for e in env_from)
        (service,) = by_kind(r["objects"], "Service")
        assert service["spec"]["ports"][0]["port"] == svc.port
        assert not by_kind(r["objects"], "Ingress"), "no Ingress without frontendHost"


@needs_helm
def test_frontend_ingress_behind_nginx(monkeypatch):
    monkeypatch.setattr(values_mod, "workloads", lambda cfg: WorkloadSettings(frontendHost="app.sophia.example.com"))
    cfg = parse_with("production")
    svc = next(s for s in cfg.services if s.name == "frontend")
    objects = render("frontend", names.APPS, service_values(cfg, svc))
    (ing,) = by_kind(objects, "Ingress")
    kubernetes_validate.validate(ing, names.KUBERNETES_VERSION, strict=True)
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["rules"][0]["host"] == "app.sophia.example.com"
    backend = next(s for s in cfg.services if s.name == "backend")
    assert not by_kind(render("backend", names.APPS, service_values(cfg, backend)), "Ingress")
