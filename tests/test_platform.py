"""Platform layer: chart values against the pinned charts, every object against Kubernetes
1.34 / the CRDs, quotas that agree with GPU capacity, network policy, secrets and ordering."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest

from sophia_infra.program.config import names
from sophia_infra.program.platform.gpu import monitoring as gpu_monitoring
from sophia_infra.program.platform.gpu import values as gpu_values
from sophia_infra.program.platform import tls
from sophia_infra.program.platform import values as v
from sophia_infra.program.platform.namespaces import (ALL, POD_SECURITY, namespace_manifest, namespace_objects,
                                                       network_policies, platform_namespaces)
from sophia_infra.program.config.platform import total_gpu_capacity
from tests.conftest import parse_with, problems_of
from tests.platform_helpers import chart_defaults, crd_errors, run_platform, schema_errors, unknown_keys

BACKUPS = {"postgres": {"backup": {"enabled": True, "bucket": "sophia-backups", "endpoint": "https://s3.example.com"}}}


def _merge(base: dict, over: dict) -> dict:
    return {**base, **{k: _merge(base.get(k) or {}, v) if isinstance(v, dict) else v for k, v in over.items()}}


def _with_platform(settings):
    """Settings merged into the stack's own sophia:platform (production's backups stay on)."""
    return lambda raw: raw.__setitem__("platform", _merge(raw.get("platform") or {}, settings))


def _all_values(cfg):
    """chart -> (values, subchart keys the parent's values.yaml does not list)."""
    return {
        "kube-prometheus-stack": (v.kube_prometheus_stack_values(cfg), {"grafana.resources", "kube-state-metrics.resources",
                                                                     "prometheus-node-exporter.resources",
                                                                     "prometheus-node-exporter.tolerations",
                                                                     "grafana.rbac.namespaced", "grafana.rbac.useExistingRole",
                                                                     "grafana.sidecar.dashboards.resource",
                                                                     "grafana.sidecar.datasources.resource"}),
        "cloudnative-pg": (v.cnpg_values(cfg), set()),
        "plugin-barman-cloud": (v.barman_values(cfg), set()),
        "valkey": (v.valkey_values(cfg), set()),
        "nginx-ingress": (v.nginx_ingress_values(cfg), set()),
        "nvidia-device-plugin": (gpu_values.device_plugin_values(cfg), set()),
        "dcgm-exporter": (gpu_values.dcgm_exporter_values(cfg, v.PROMETHEUS_RELEASE), set()),
        "cert-manager": (tls.cert_manager_values(cfg, v.PROMETHEUS_RELEASE), set()),
    }


@pytest.mark.parametrize("chart", ["kube-prometheus-stack", "cloudnative-pg", "plugin-barman-cloud", "valkey",
                                   "nginx-ingress", "nvidia-device-plugin", "dcgm-exporter", "cert-manager"])
def test_every_value_is_a_key_of_the_pinned_chart(chart):
    cfg = parse_with("production", _with_platform(BACKUPS))
    vals, subchart = _all_values(cfg)[chart]
    version = cfg.charts[chart].version
    assert unknown_keys(vals, chart_defaults(chart, version), allow=subchart) == []
    assert schema_errors(vals, chart, version) == []


def test_key_checker_catches_a_typo():
    defaults = chart_defaults("valkey", "0.11.0")
    assert unknown_keys({"auth": {"usersExistingSecrets": "x"}}, defaults) == ["auth.usersExistingSecrets"]
    assert unknown_keys({"podLabels": {"anything": "goes"}}, defaults) == []


def test_every_release_sets_requests_and_limits():
    cfg = parse_with("production", _with_platform(BACKUPS))
    vals = _all_values(cfg)
    found = []

    def walk(node, path):
        if isinstance(node, dict):
            if "requests" in node and "limits" in node:
                assert node["requests"].keys() == {"cpu", "memory"} == node["limits"].keys(), path
                found.append(path)
            for k, x in node.items():
                walk(x, f"{path}.{k}")
    for chart, (values, _) in vals.items():
        before = len(found)
        walk(values, chart)
        assert len(found) > before, f"{chart} sets no resources"
    assert "kube-prometheus-stack.prometheus.prometheusSpec.resources" in found
    assert "kube-prometheus-stack.grafana.resources" in found
    assert v.postgres_cluster(cfg)["spec"]["resources"]["limits"]


def _direct_objects(cfg):
    objs = []
    for ns in ALL:
        objs += [namespace_manifest(cfg, ns), *namespace_objects(cfg, ns)]
    objs += v.platform_secrets(cfg, lambda key: f"value-of-{key}")
    objs += [v.llm_gateway_configmap(cfg), gpu_monitoring.dashboard_configmap()]
    return objs


def test_every_kubernetes_object_validates_for_1_34():
    unique = {}
    for stack in ("dev", "production"):
        for settings in ({}, BACKUPS):
            for obj in _direct_objects(parse_with(stack, _with_platform(settings))):
                unique[json.dumps(obj, sort_keys=True)] = obj
    kinds = {o["kind"] for o in unique.values()}
    assert kinds == {"Namespace", "ResourceQuota", "LimitRange", "NetworkPolicy", "Secret", "ConfigMap"}
    for obj in unique.values():
        kubernetes_validate.validate(obj, names.KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("settings", [{}, BACKUPS], ids=["default", "backups"])
def test_custom_resources_validate_against_their_crds(settings):
    cfg = parse_with("production", _with_platform(settings))
    crs = [v.postgres_cluster(cfg), v.postgres_pod_monitor(cfg),
           gpu_monitoring.prometheus_rule(cfg, v.PROMETHEUS_RELEASE)]
    if settings:
        crs += [v.object_store(cfg), v.scheduled_backup(cfg)]
        assert crs[0]["spec"]["plugins"][0]["parameters"]["barmanObjectName"] == crs[3]["metadata"]["name"]
    for cr in crs:
        assert crd_errors(cr) == [], cr["kind"]


def test_gpu_quota_equals_capacity_with_sharing():
    cfg = parse_with("production")
    capacity = total_gpu_capacity(cfg)
    assert capacity == 1 + 4 + 4 + 2 + 4  # RTX6000 x1, GH200/A6000/A10 x4 slices, A100 x2
    hard = {ns: next(o for o in namespace_objects(cfg, ns) if o["kind"] == "ResourceQuota")["spec"]["hard"] for ns in ALL}
    assert hard[names.MCP]["requests.nvidia.com/gpu"] == str(capacity)
    assert hard[names.APPS]["requests.nvidia.com/gpu"] == str(capacity)
    for ns in (names.DATA, names.MONITORING, names.ARGOCD, names.INGRESS, names.GPU):
        assert hard[ns]["requests.nvidia.com/gpu"] == "0"
    assert all("requests.cpu" in h and "requests.memory" in h for h in hard.values())


def test_pod_security_levels():
    cfg = parse_with("production")
    levels = {ns: namespace_manifest(cfg, ns)["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] for ns in ALL}
    assert levels[names.APPS] == levels[names.MCP] == "restricted"
    assert [ns for ns, lvl in levels.items() if lvl == "privileged"] == [names.GPU]
    assert levels == POD_SECURITY


def _allows(policies, direction):
    return [(p["metadata"]["name"], rule) for p in policies for rule in p["spec"].get(direction, [])]


def test_network_policy_denies_by_default_and_allows_dns(stack):
    cfg = parse_with(stack)
    for ns in ALL:
        pols = {p["metadata"]["name"]: p for p in network_policies(cfg, ns)}
        deny = pols["default-deny"]["spec"]
        assert deny["podSelector"] == {} and deny["ingress"] == [] and deny["egress"] == []
        assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
        dns = pols["allow-dns"]["spec"]["egress"][0]
        assert dns["to"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
        assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}


def test_network_policy_paths_the_services_need():
    cfg = parse_with("production")
    ports = {s.name: s.port for s in cfg.services}
    # ingress controller -> frontend and backend
    apps = {p["metadata"]["name"]: p for p in network_policies(cfg, names.APPS)}
    rule = apps["allow-ingress-controller"]["spec"]["ingress"][0]
    assert rule["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == names.INGRESS
    assert {p["port"] for p in rule["ports"]} == {ports["backend"], ports["frontend"]}
    # backend -> postgres, valkey, MCP servers
    egress = apps["allow-backend-to-data-and-mcp"]["spec"]["egress"]
    assert {p["port"] for r in egress[:2] for p in r["ports"]} == {5432, 6379}
    assert egress[2]["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == names.MCP
    data = {p["metadata"]["name"]: p for p in network_policies(cfg, names.DATA)}
    assert data["allow-backend-to-postgres"]["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 5432}]
    # apps and MCP servers reach SaaS APIs on 443, not the private ranges
    for ns in (names.APPS, names.MCP):
        internet = {p["metadata"]["name"]: p for p in network_policies(cfg, ns)}["allow-internet-apis"]["spec"]["egress"][0]
        assert internet["ports"] == [{"protocol": "TCP", "port": 443}]
        assert "10.0.0.0/8" in internet["to"][0]["ipBlock"]["except"]
    # Prometheus may scrape dcgm-exporter
    gpu = {p["metadata"]["name"]: p for p in network_policies(cfg, names.GPU)}
    # dcgm-exporter's container port is named "metrics" (9400): the policy opens it by name.
    assert {"protocol": "TCP", "port": "metrics"} in gpu["allow-prometheus"]["spec"]["ingress"][0]["ports"]
    # the API server is every node's address
    api = data["allow-api-server"]["spec"]["egress"][0]
    assert {"ipBlock": {"cidr": "203.0.113.10/32"}} in api["to"]


def test_nothing_secret_in_helm_values_or_configmaps_and_secrets_are_secret():
    async def check(platform):
        for secret in platform.secrets.values():
            assert await secret.string_data.is_secret()
        return None

    run = run_platform("production", lambda c: c.__setitem__("sophia:platform", json.dumps(BACKUPS)), check=check)
    releases = run.of_type("kubernetes:helm.sh/v3:Release")
    cms = run.of_type("kubernetes:core/v1:ConfigMap")
    assert len(releases) == 8 and len(cms) == 2  # with cert-manager and the Barman Cloud plugin
    for r in releases + cms:
        text = json.dumps(r.inputs)
        assert "placeholder-" not in text and "[secret]" not in text, r.name
    secrets = run.of_type("kubernetes:core/v1:Secret")
    assert {s.inputs["metadata"]["name"] for s in secrets} == {"grafana-admin", "postgres-app", "valkey-users", "postgres-backup-s3"}
    for s in secrets:
        assert s.inputs["stringData"] and set(s.inputs["stringData"].values()) == {"[secret]"}  # keys shown, values masked
    pg = next(s for s in secrets if s.inputs["metadata"]["name"] == "postgres-app")
    assert pg.inputs["type"] == "kubernetes.io/basic-auth"
    # charts read the Secrets instead
    kps = run.named("platform-kube-prometheus-stack").inputs["values"]
    assert kps["grafana"]["admin"]["existingSecret"] == "grafana-admin"
    assert run.named("platform-valkey").inputs["values"]["auth"]["usersExistingSecret"] == "valkey-users"


def test_ordering_and_providers_under_mocks():
    run = run_platform("production", lambda c: c.__setitem__("sophia:platform", json.dumps(BACKUPS)))
    cluster = run.named("postgres-cluster")
    assert run.urn("postgres-operator") in cluster.dependencies
    assert run.urn("postgres-object-store") in cluster.dependencies
    assert run.urn("secrets-postgres-app") in cluster.dependencies
    assert run.urn("postgres-operator") in run.named("postgres-barman-plugin").dependencies
    kps = run.urn("platform-kube-prometheus-stack")
    assert kps in run.named("gpu-metrics-rule").dependencies
    assert kps in run.named("postgres-pod-monitor").dependencies
    assert kps in run.named("postgres-operator").dependencies  # its PodMonitor needs the CRD
    assert run.urn("secrets-grafana-admin") in run.named("platform-kube-prometheus-stack").dependencies
    # The database and its owner are plain config names; the password stays in the Secret.
    assert cluster.inputs["spec"]["bootstrap"]["initdb"] == {"database": "sophia", "owner": "sophia", "secret": {"name": "postgres-app"}}
    for r in run.resources:
        if r.type.startswith("kubernetes:") and r.custom:
            assert "pulumi:providers:kubernetes::k8s::" in r.provider, r.name
    for r in run.of_type("kubernetes:helm.sh/v3:Release"):
        assert r.inputs["atomic"] is True and r.inputs.get("skipAwait") is not True
    nginx = run.named("platform-nginx-ingress").inputs
    assert nginx["chart"] == "oci://ghcr.io/nginx/charts/nginx-ingress" and "repositoryOpts" not in nginx
    assert nginx["values"]["controller"]["service"]["type"] == "LoadBalancer"
    outputs = run.platform.outputs
    assert outputs["postgresHost"] == "sophia-postgres-rw.sophia-data.svc.cluster.local"
    assert outputs["redisHost"] == "valkey.sophia-data.svc.cluster.local"


def test_backups_are_off_by_default():
    run = run_platform("dev")
    assert not [r for r in run.resources if "barman" in r.name or "backup" in r.name]
    assert "plugins" not in run.named("postgres-cluster").inputs["spec"]


def _in_namespace(run, ns: str) -> list[str]:
    return sorted(r.name for r in run.resources
                  if r.type.startswith("kubernetes:") and (r.inputs.get("metadata") or {}).get("namespace") == ns
                  or r.type == "kubernetes:core/v1:Namespace" and r.inputs["metadata"]["name"] == ns)


def test_helm_delivery_creates_no_argocd_namespace():
    run = run_platform("dev")  # delivery: helm
    assert _in_namespace(run, names.ARGOCD) == []
    assert names.ARGOCD not in run.platform.namespaces
    assert names.ARGOCD not in platform_namespaces(parse_with("dev"))


def test_argocd_delivery_gets_its_namespace_quota_and_policies():
    run = run_platform("dev", lambda c: c.__setitem__("sophia:delivery", "argocd"))
    made = _in_namespace(run, names.ARGOCD)
    assert "platform-namespaces-argocd" in made and "platform-namespaces-argocd-resourcequota-quota" in made
    assert "platform-namespaces-argocd-networkpolicy-default-deny" in made
    assert platform_namespaces(parse_with("production")) == ALL


def test_llm_gateway_routes_portkey_to_openrouter_without_keys():
    cm = v.llm_gateway_configmap(parse_with("production"))
    assert cm["metadata"]["namespace"] == names.APPS and cm["metadata"]["name"] == "llm-gateway"
    assert cm["data"]["PORTKEY_PROVIDER"] == "openrouter"
    assert json.loads(cm["data"]["PORTKEY_CONFIG"])["targets"][0]["provider"] == "openrouter"
    assert not any(k.endswith(("API_KEY", "_TOKEN", "_SECRET")) for k in cm["data"])
    assert not any("placeholder-" in x or "sk-" in x for x in cm["data"].values())


# ----------------------------------------------------------------------------- failures

def test_gpu_quota_below_what_the_services_request():
    problems = problems_of("production", _with_platform({"quotas": {names.MCP: {"gpu": 1}}}))
    assert any(p.startswith("sophia:platform.quotas.sophia-mcp.gpu:") and "request 2" in p for p in problems)


def test_gpu_quota_above_capacity():
    problems = problems_of("dev", _with_platform({"quotas": {names.APPS: {"gpu": 99}}}))
    assert any("offer only 4" in p for p in problems)


def test_backups_without_bucket_or_endpoint():
    problems = problems_of("dev", _with_platform({"postgres": {"backup": {"enabled": True}}}))
    assert any(p.startswith("sophia:platform.postgres.backup.bucket:") for p in problems)
    assert any(p.startswith("sophia:platform.postgres.backup.endpoint:") for p in problems)


def test_unknown_quota_namespace_and_setting_typos():
    problems = problems_of("production", _with_platform({"quotas": {"sophia-app": {"cpu": "4"}}}))
    assert any("there is no platform namespace 'sophia-app'" in p for p in problems)
    problems = problems_of("production", _with_platform({"postgres": {"instance": 3}}))
    assert any(p.startswith("sophia:platform.postgres.instance:") for p in problems)
    problems = problems_of("production", _with_platform({"valkey": {"storageSize": "lots"}}))
    assert any("not a Kubernetes quantity" in p for p in problems)


def test_istio_needs_its_three_charts_at_one_version():
    def unpinned(r):
        _with_istio(r)
        for chart in ("istio-base", "istio-cni", "istiod"):
            r["charts"].pop(chart)
    problems = problems_of("production", unpinned)
    assert [p.split(":")[1] for p in problems] == ["charts.istio-base", "charts.istio-cni", "charts.istiod"]

    def skewed(r):
        _with_istio(r)
        r["charts"]["istiod"]["version"] = "1.27.3"
    (msg,) = problems_of("production", skewed)
    assert msg.startswith("sophia:charts: istio-base, istio-cni and istiod are pinned at different versions")


def _with_istio(r):
    r["platform"] = {**(r.get("platform") or {}), "istio": {"enabled": True}}
    repo = "https://istio-release.storage.googleapis.com/charts"
    r["charts"].update({"istio-base": {"repository": repo, "version": "1.28.0", "chart": "base"},
                        "istio-cni": {"repository": repo, "version": "1.28.0", "chart": "cni"},
                        "istiod": {"repository": repo, "version": "1.28.0"}})


def test_istio_when_enabled():
    from sophia_infra.program.platform.istio import istiod_values
    cfg = parse_with("production", _with_istio)
    for ns in (names.APPS, names.MCP):
        assert namespace_manifest(cfg, ns)["metadata"]["labels"]["istio-injection"] == "enabled"
        assert namespace_manifest(cfg, ns)["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        pols = {p["metadata"]["name"]: p for p in network_policies(cfg, ns)}
        assert pols["allow-istiod"]["spec"]["egress"][0]["ports"] == [{"port": 15012, "protocol": "TCP"}]
    assert "istio-injection" not in namespace_manifest(cfg, names.DATA)["metadata"]["labels"]
    assert istiod_values(cfg)["pilot"]["cni"]["enabled"] is True
    off = parse_with("production")
    assert "istio-injection" not in namespace_manifest(off, names.APPS)["metadata"]["labels"]
    assert "allow-istiod" not in {p["metadata"]["name"] for p in network_policies(off, names.APPS)}


def test_istio_releases_in_order_under_mocks():
    from sophia_infra.tools.plan import runner, stack_config

    config, secret_keys = stack_config.load("production")
    platform = json.loads(config.get("sophia:platform", "{}"))
    charts = json.loads(config["sophia:charts"])
    r = {"platform": platform, "charts": charts}
    _with_istio(r)
    config = {**config, "sophia:platform": json.dumps(r["platform"]), "sophia:charts": json.dumps(r["charts"])}
    result = runner.run("production", config=config, secret_keys=secret_keys)
    by = {x.name: x for x in result.resources}
    assert by["platform-istio-base"].inputs["chart"] == "base"
    assert by["platform-istio-cni"].inputs["chart"] == "cni"
    assert by["platform-istio-base"].urn in by["platform-istio-cni"].dependencies
    assert by["platform-istio-cni"].urn in by["platform-istio-istiod"].dependencies
    assert by["platform-istio-namespace"].inputs["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_platform_secrets_are_required():
    problems = problems_of("production", drop_secrets=("redisPassword",))
    assert any(p.startswith("sophia:redisPassword:") for p in problems)
    problems = problems_of("production", _with_platform(BACKUPS), plain_secrets=("etcdS3SecretKey",))
    assert any(p.startswith("sophia:etcdS3SecretKey:") and "plain text" in p for p in problems)


def test_unpinned_platform_chart():
    problems = problems_of("production", lambda raw: raw["charts"].pop("valkey"))
    assert any(p.startswith("sophia:charts.valkey:") for p in problems)


def test_schema_check_uses_the_kubernetes_definitions_offline():
    assert schema_errors({"controller": {"replicaCount": "two"}}, "nginx-ingress", "2.6.4")
    assert schema_errors({"controller": {"resources": {"limits": "lots"}}}, "nginx-ingress", "2.6.4")
