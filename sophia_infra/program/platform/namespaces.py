"""Namespaces with Pod Security labels, quotas, limit ranges and network policies.

Pure manifest builders (`namespace_manifests(cfg)` and friends) plus the component that
creates them. Network policy: every namespace denies all traffic, then allows exactly
  - DNS to kube-system's CoreDNS, from every namespace;
  - the ingress controller -> the app services (frontend, backend) on their ports;
  - backend -> PostgreSQL 5432 and Valkey 6379 in the data namespace, and -> MCP servers;
  - Prometheus (monitoring) -> the metrics ports of each namespace;
  - apps and MCP servers -> the internet on 443 (SaaS and LLM APIs; private ranges excluded);
  - Argo CD, the operators and node agents -> the API server; Argo CD -> git/Helm repos;
  - the API server -> admission webhooks (CNPG, prometheus-operator, cert-manager);
  - cert-manager -> Let's Encrypt (443) and its HTTP-01 self-check through the ingress (80, and
    443 where the controller redirects it);
    the ingress controller -> cert-manager's HTTP-01 solver pods in namespaces with a Certificate;
  - traffic inside data, monitoring, argocd and cert-manager (replication, operator <-> instances).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Iterable, Optional

import pulumi
import pulumi_kubernetes as k8s

from sophia_infra.program.config import names
from sophia_infra.program.config.stack import StackConfig
from sophia_infra.program.platform import tls
from sophia_infra.program.config.platform import gpu_quota, object_store_needed, postgres_clusters

ALL = (names.APPS, names.MCP, names.DATA, names.MONITORING, names.ARGOCD, names.INGRESS, names.GPU, names.CERT_MANAGER)


def platform_namespaces(cfg: StackConfig) -> tuple[str, ...]:
    """The namespaces a stack gets: Argo CD's only when Argo CD delivers the workloads (with
    helm delivery it would hold nothing, its quota and policies selecting nothing)."""
    return tuple(ns for ns in ALL if ns != names.ARGOCD or cfg.delivery == "argocd")

# Pod Security Admission level enforced per namespace: the strictest every pod there meets,
# checked on the rendered charts (tests/test_rendered.py). Monitoring's pods (Prometheus,
# Alertmanager, the operator, Grafana with its sidecar, kube-state-metrics, the admission
# Jobs) all meet restricted; node-exporter, which needs hostNetwork, hostPID and hostPath,
# runs in the one privileged namespace with the other node agents (device plugin, dcgm-exporter).
POD_SECURITY = {
    names.APPS: "restricted",
    names.MCP: "restricted",
    names.DATA: "restricted",
    names.MONITORING: "restricted",
    names.ARGOCD: "restricted",
    names.INGRESS: "restricted",
    names.GPU: "privileged",
    names.CERT_MANAGER: "restricted",  # the chart's pods set runAsNonRoot, seccomp and drop ALL
}
PSA_VERSION = "v" + ".".join(names.KUBERNETES_VERSION.split(".")[:2])

# Pod labels other layers' workloads carry (the services chart labels pods with
# app.kubernetes.io/name: <service name>; charts label theirs as below).
APP_LABEL = "app.kubernetes.io/name"
BACKEND = "backend"
FRONTEND = "frontend"
NS_LABEL = "kubernetes.io/metadata.name"
PROMETHEUS_POD = {APP_LABEL: "prometheus"}
VALKEY_POD = {APP_LABEL: "valkey"}
CNPG_OPERATOR_POD = {APP_LABEL: "cloudnative-pg"}
PROMETHEUS_OPERATOR_POD = {"app": "kube-prometheus-stack-operator"}
POSTGRES_PORT, VALKEY_PORT = 5432, 6379
PRIVATE_RANGES = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16"]

# Container port names Prometheus may scrape, per namespace (apps and MCP: the service port of
# workloads with a metricsPath). Named ports resolve per pod, so "metrics" opens each pod's own
# metrics port and nothing else (Argo CD's server serves its UI on 8080, its applicationset
# controller its metrics). Names as the rendered charts declare them: CNPG instances, operator
# and Valkey's exporter, Argo CD's components and dcgm-exporter call theirs "metrics"; the
# NGINX ingress controller "prometheus". node-exporter runs on the host network, out of reach
# of NetworkPolicies.
METRICS_PORT_NAMES = {
    names.DATA: ["metrics"],
    names.ARGOCD: ["metrics"],
    names.INGRESS: ["prometheus"],
    names.GPU: ["metrics"],
    names.CERT_MANAGER: ["http-metrics"],  # controller, webhook and cainjector (9402)
}
CERT_MANAGER_POD = {APP_LABEL: "cert-manager"}  # the controller (webhook: webhook, cainjector: cainjector)
CERT_MANAGER_WEBHOOK_POD = {APP_LABEL: "webhook"}
INGRESS_POD = {APP_LABEL: "nginx-ingress"}
GRAFANA_POD = {APP_LABEL: "grafana"}
GRAFANA_PORT = 3000
ARGOCD_SERVER_POD = {APP_LABEL: "argocd-server"}
ARGOCD_SERVER_PORT = "server"  # argocd-server's container port name (8080; plain HTTP behind the ingress)


def _ns_peer(ns: str, pods: Optional[dict] = None) -> dict:
    peer: dict[str, Any] = {"namespaceSelector": {"matchLabels": {NS_LABEL: ns}}}
    if pods is not None:
        peer["podSelector"] = {"matchLabels": pods}
    return peer


def _ports(ports: Iterable[int | str], protocol: str = "TCP") -> list[dict]:
    return [{"protocol": protocol, "port": p} for p in sorted(set(ports), key=str)]


def _policy(ns: str, name: str, pod_selector: dict, ingress: Optional[list] = None, egress: Optional[list] = None) -> dict:
    spec: dict[str, Any] = {"podSelector": pod_selector, "policyTypes": []}
    if ingress is not None:
        spec["policyTypes"].append("Ingress")
        spec["ingress"] = ingress
    if egress is not None:
        spec["policyTypes"].append("Egress")
        spec["egress"] = egress
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns, "labels": _labels()}, "spec": spec}


def dns_rule() -> dict:
    """Egress to K3s's CoreDNS, UDP and TCP 53."""
    return {"to": [_ns_peer("kube-system", {"k8s-app": "kube-dns"})], "ports": _ports([53], "UDP") + _ports([53], "TCP")}


def _labels() -> dict[str, str]:
    return {"app.kubernetes.io/part-of": "sophia-platform", "app.kubernetes.io/managed-by": "pulumi"}


def node_cidrs(cfg: StackConfig) -> list[str]:
    """Where the API server, kubelets and webhook callers are: every node's address as /32."""
    if cfg.platform.network.node_cidrs is not None:
        return list(cfg.platform.network.node_cidrs)
    out: list[str] = []
    for node in cfg.nodes:
        if node.provision is not None:
            return ["0.0.0.0/0"]  # launched by the stack: its address is not known here
        host = cfg.hosts.get(node.name)
        for addr in ([host.address, host.private_address] if host else []):
            if addr is None:
                continue
            try:
                ip = ipaddress.ip_address(addr)
            except ValueError:
                return ["0.0.0.0/0"]  # a DNS name: its address is not known here
            cidr = f"{ip}/{ip.max_prefixlen}"
            if cidr not in out:
                out.append(cidr)
    return out


def webhook_callers(cfg: StackConfig) -> list[dict]:
    """Where the API server calls admission webhooks from: the node addresses, and the pod
    network's gateway, which flannel gives the host's traffic to a pod."""
    return [{"ipBlock": {"cidr": c}} for c in node_cidrs(cfg)] + [{"ipBlock": {"cidr": cfg.k3s.cluster_cidr}}]


def _internet(ports: Iterable[int]) -> dict:
    return {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": PRIVATE_RANGES}}], "ports": _ports(ports)}


def _api_server(cfg: StackConfig) -> dict:
    # The kubernetes Service (443 on the first service IP) DNATs to the servers' 6443.
    svc_ip = str(next(ipaddress.ip_network(cfg.k3s.service_cidr).hosts()))
    return {"to": [{"ipBlock": {"cidr": c}} for c in node_cidrs(cfg)] + [{"ipBlock": {"cidr": f"{svc_ip}/32"}}],
            "ports": _ports([6443, 443])}


def _in_names(services) -> dict:
    return {"matchExpressions": [{"key": APP_LABEL, "operator": "In", "values": sorted(s.name for s in services)}]}


def _services(cfg: StackConfig, kind: str):
    return [s for s in cfg.services if s.kind == kind]


# Namespaces whose pods get an Istio sidecar when the mesh is on.
MESHED = (names.APPS, names.MCP)
ISTIOD_POD = {"app": "istiod"}
ISTIOD_XDS_PORT = 15012


def network_policies(cfg: StackConfig, ns: str) -> list[dict]:
    net = cfg.platform.network
    everything: dict = {}
    pols = [
        _policy(ns, "default-deny", everything, ingress=[], egress=[]),
        _policy(ns, "allow-dns", everything, egress=[dns_rule()]),
    ]
    from_prometheus = [_ns_peer(names.MONITORING, PROMETHEUS_POD)]
    apps, mcps = _services(cfg, "app"), _services(cfg, "mcp")
    backend = next((s for s in apps if s.name == BACKEND), None)
    same_ns = [{"podSelector": {}}]

    if ns == names.APPS:
        if apps:
            pols.append(_policy(ns, "allow-ingress-controller",
                                {"matchExpressions": [{"key": APP_LABEL, "operator": "In", "values": sorted(s.name for s in apps)}]},
                                ingress=[{"from": [_ns_peer(names.INGRESS)], "ports": _ports(s.port for s in apps)}]))
        scraped = [s for s in apps if s.metrics_path]
        if scraped:
            pols.append(_policy(ns, "allow-prometheus", _in_names(scraped),
                                ingress=[{"from": from_prometheus, "ports": _ports(s.port for s in scraped)}]))
        frontend = next((s for s in apps if s.name == FRONTEND), None)
        if frontend and backend:
            pols.append(_policy(ns, "allow-frontend-to-backend", {"matchLabels": {APP_LABEL: FRONTEND}}, egress=[{
                "to": [{"podSelector": {"matchLabels": {APP_LABEL: BACKEND}}}], "ports": _ports([backend.port])}]))
        if backend:
            egress = [
                {"to": [_ns_peer(names.DATA, {"cnpg.io/cluster": cfg.platform.postgres.cluster_name})], "ports": _ports([POSTGRES_PORT])},
                {"to": [_ns_peer(names.DATA, VALKEY_POD)], "ports": _ports([VALKEY_PORT])},
            ]
            if mcps:
                egress.append({"to": [_ns_peer(names.MCP)], "ports": _ports(s.port for s in mcps)})
            pols.append(_policy(ns, "allow-backend-to-data-and-mcp", {"matchLabels": {APP_LABEL: BACKEND}}, egress=egress))
        pols.append(_policy(ns, "allow-internet-apis", everything, egress=[_internet(net.internet_ports)]))
    elif ns == names.MCP:
        if mcps:
            if backend:
                pols.append(_policy(ns, "allow-backend", everything, ingress=[{
                    "from": [_ns_peer(names.APPS, {APP_LABEL: BACKEND})], "ports": _ports(s.port for s in mcps)}]))
            scraped = [s for s in mcps if s.metrics_path]
            if scraped:
                pols.append(_policy(ns, "allow-prometheus", _in_names(scraped),
                                    ingress=[{"from": from_prometheus, "ports": _ports(s.port for s in scraped)}]))
        pols.append(_policy(ns, "allow-internet-apis", everything, egress=[_internet(net.internet_ports)]))
    elif ns == names.DATA:
        pols.append(_policy(ns, "allow-same-namespace", everything, ingress=[{"from": same_ns}], egress=[{"to": same_ns}]))
        if backend:
            pols.append(_policy(ns, "allow-backend-to-postgres", {"matchLabels": {"cnpg.io/cluster": cfg.platform.postgres.cluster_name}},
                                ingress=[{"from": [_ns_peer(names.APPS, {APP_LABEL: BACKEND})], "ports": _ports([POSTGRES_PORT])}]))
            pols.append(_policy(ns, "allow-backend-to-valkey", {"matchLabels": VALKEY_POD},
                                ingress=[{"from": [_ns_peer(names.APPS, {APP_LABEL: BACKEND})], "ports": _ports([VALKEY_PORT])}]))
        pols.append(_policy(ns, "allow-prometheus", everything, ingress=[{"from": from_prometheus, "ports": _ports(METRICS_PORT_NAMES[ns])}]))
        pols.append(_policy(ns, "allow-api-server", everything, egress=[_api_server(cfg)]))
        pols.append(_policy(ns, "allow-webhooks", {"matchLabels": CNPG_OPERATOR_POD},
                            ingress=[{"from": webhook_callers(cfg),
                                      "ports": _ports([9443])}]))
        backup = cfg.platform.postgres.backup
        if object_store_needed(cfg) and backup.endpoint:
            from urllib.parse import urlparse
            u = urlparse(backup.endpoint)
            port = u.port or (443 if u.scheme == "https" else 80)
            # Every cluster: each archives its WAL, and a recovering one reads the old archive.
            clusters = {"matchExpressions": [{"key": "cnpg.io/cluster", "operator": "In", "values": sorted(postgres_clusters(cfg))}]}
            pols.append(_policy(ns, "allow-backups-to-object-store", clusters,
                                egress=[{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": _ports([port])}]))
    elif ns == names.MONITORING:
        pols.append(_policy(ns, "allow-same-namespace", everything, ingress=[{"from": same_ns}], egress=[{"to": same_ns}]))
        pols.append(_policy(ns, "allow-scrape", {"matchLabels": PROMETHEUS_POD}, egress=[
            {"to": [{"namespaceSelector": {}}]},
            {"to": [{"ipBlock": {"cidr": c}} for c in node_cidrs(cfg)], "ports": _ports([10250, 9100, 6443])},
        ]))
        pols.append(_policy(ns, "allow-api-server", everything, egress=[_api_server(cfg)]))
        pols.append(_policy(ns, "allow-webhooks", {"matchLabels": PROMETHEUS_OPERATOR_POD},
                            ingress=[{"from": webhook_callers(cfg),
                                      "ports": _ports([10250])}]))
        if cfg.platform.monitoring.grafana_host:
            pols.append(_policy(ns, "allow-ingress-controller", {"matchLabels": GRAFANA_POD}, ingress=[{
                "from": [_ns_peer(names.INGRESS, INGRESS_POD)], "ports": _ports([GRAFANA_PORT])}]))
    elif ns == names.ARGOCD:
        pols.append(_policy(ns, "allow-same-namespace", everything, ingress=[{"from": same_ns}], egress=[{"to": same_ns}]))
        pols.append(_policy(ns, "allow-api-server", everything, egress=[_api_server(cfg)]))
        pols.append(_policy(ns, "allow-git-and-helm-repos", everything, egress=[_internet([443, 22])]))
        if cfg.argocd.ingress_host:
            pols.append(_policy(ns, "allow-ingress-controller", {"matchLabels": ARGOCD_SERVER_POD}, ingress=[{
                "from": [_ns_peer(names.INGRESS)], "ports": _ports([ARGOCD_SERVER_PORT])}]))
        pols.append(_policy(ns, "allow-prometheus", everything, ingress=[{"from": from_prometheus, "ports": _ports(METRICS_PORT_NAMES[ns])}]))
    elif ns == names.INGRESS:
        pols.append(_policy(ns, "allow-http-from-anywhere", everything,
                            ingress=[{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": _ports([80, 443])}]))
        if apps:
            pols.append(_policy(ns, "allow-to-apps", everything, egress=[{
                "to": [_ns_peer(names.APPS, None) | {"podSelector": {"matchExpressions": [
                    {"key": APP_LABEL, "operator": "In", "values": sorted(s.name for s in apps)}]}}],
                "ports": _ports(s.port for s in apps)}]))
        if cfg.delivery == "argocd" and cfg.argocd.ingress_host:
            pols.append(_policy(ns, "allow-to-argocd-server", everything, egress=[{
                "to": [_ns_peer(names.ARGOCD, ARGOCD_SERVER_POD)], "ports": _ports([ARGOCD_SERVER_PORT])}]))
        pols.append(_policy(ns, "allow-api-server", everything, egress=[_api_server(cfg)]))
        pols.append(_policy(ns, "allow-prometheus", everything, ingress=[{"from": from_prometheus, "ports": _ports(METRICS_PORT_NAMES[ns])}]))
        solvers = tls.solver_namespaces(cfg)
        if solvers:
            pols.append(_policy(ns, "allow-to-acme-solvers", everything, egress=[{
                "to": [_ns_peer(n, tls.SOLVER_POD) for n in solvers], "ports": _ports([tls.SOLVER_PORT])}]))
        if cfg.platform.monitoring.grafana_host:
            pols.append(_policy(ns, "allow-to-grafana", everything, egress=[{
                "to": [_ns_peer(names.MONITORING, GRAFANA_POD)], "ports": _ports([GRAFANA_PORT])}]))
        # cert-manager's HTTP-01 self-check reaches the controller through the node address (80),
        # and follows the controller's redirect of every TLS host to HTTPS (443).
        pols.append(_policy(ns, "allow-acme-self-check", everything, ingress=[{
            "from": [_ns_peer(names.CERT_MANAGER, CERT_MANAGER_POD)], "ports": _ports(tls.SELF_CHECK_PORTS)}]))
    elif ns == names.CERT_MANAGER:
        pols.append(_policy(ns, "allow-same-namespace", everything, ingress=[{"from": same_ns}], egress=[{"to": same_ns}]))
        pols.append(_policy(ns, "allow-api-server", everything, egress=[_api_server(cfg)]))
        pols.append(_policy(ns, "allow-webhooks", {"matchLabels": CERT_MANAGER_WEBHOOK_POD},
                            ingress=[{"from": webhook_callers(cfg),
                                      "ports": _ports([tls.WEBHOOK_PORT])}]))
        # The ACME API (443) and the HTTP-01 self-check (80, then 443 after the redirect), to the
        # ingress controller's pods when the node address is translated to them, else to the
        # public address.
        pols.append(_policy(ns, "allow-acme", {"matchLabels": CERT_MANAGER_POD}, egress=[
            _internet([80, 443]),
            {"to": [_ns_peer(names.INGRESS, INGRESS_POD)], "ports": _ports(tls.SELF_CHECK_PORTS)}]))
        pols.append(_policy(ns, "allow-prometheus", everything, ingress=[{"from": from_prometheus, "ports": _ports(METRICS_PORT_NAMES[ns])}]))
    if ns in tls.solver_namespaces(cfg):
        # cert-manager's HTTP-01 solver pods answer Let's Encrypt through the ingress controller.
        pols.append(_policy(ns, "allow-ingress-to-acme-solver", {"matchLabels": tls.SOLVER_POD}, ingress=[{
            "from": [_ns_peer(names.INGRESS, INGRESS_POD)], "ports": _ports([tls.SOLVER_PORT])}]))
    if cfg.platform.istio.enabled and ns in MESHED:
        # Sidecars fetch config and certificates from istiod; mesh traffic keeps the ports above.
        pols.append(_policy(ns, "allow-istiod", everything, egress=[{
            "to": [_ns_peer(names.ISTIO, ISTIOD_POD)], "ports": _ports([ISTIOD_XDS_PORT])}]))
    if ns == names.GPU:
        pols.append(_policy(ns, "allow-prometheus", everything, ingress=[{"from": from_prometheus, "ports": _ports(METRICS_PORT_NAMES[ns])}]))
        pols.append(_policy(ns, "allow-api-server", everything, egress=[_api_server(cfg)]))
    return pols


def namespace_manifest(cfg: StackConfig, ns: str) -> dict:
    level = POD_SECURITY[ns]
    labels = {
        **_labels(),
        "pod-security.kubernetes.io/enforce": level,
        "pod-security.kubernetes.io/enforce-version": PSA_VERSION,
        "pod-security.kubernetes.io/warn": "restricted" if level != "privileged" else "privileged",
        "pod-security.kubernetes.io/warn-version": PSA_VERSION,
        "pod-security.kubernetes.io/audit": "restricted" if level != "privileged" else "privileged",
        "pod-security.kubernetes.io/audit-version": PSA_VERSION,
    }
    if cfg.platform.istio.enabled and ns in MESHED:
        labels["istio-injection"] = "enabled"
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}


def resource_quota(cfg: StackConfig, ns: str) -> dict:
    q = cfg.platform.quota(ns)
    return {"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": "quota", "namespace": ns, "labels": _labels()},
            "spec": {"hard": {"requests.cpu": q.cpu, "requests.memory": q.memory,
                              # Extended resources take only requests.*; with time-slicing it counts slices.
                              "requests.nvidia.com/gpu": str(gpu_quota(cfg, ns))}}}


def limit_range(cfg: StackConfig, ns: str) -> dict:
    lim = cfg.platform.limits
    return {"apiVersion": "v1", "kind": "LimitRange",
            "metadata": {"name": "defaults", "namespace": ns, "labels": _labels()},
            "spec": {"limits": [{"type": "Container",
                                 "default": {"cpu": lim.default_cpu, "memory": lim.default_memory},
                                 "defaultRequest": {"cpu": lim.default_request_cpu, "memory": lim.default_request_memory},
                                 "max": {"cpu": lim.max_cpu, "memory": lim.max_memory}}]}}


def namespace_objects(cfg: StackConfig, ns: str) -> list[dict]:
    """Everything created inside one namespace (not the Namespace itself)."""
    return [resource_quota(cfg, ns), limit_range(cfg, ns), *network_policies(cfg, ns)]


_CLASSES = {
    "ResourceQuota": k8s.core.v1.ResourceQuota,
    "LimitRange": k8s.core.v1.LimitRange,
    "NetworkPolicy": k8s.networking.v1.NetworkPolicy,
}


class Namespaces(pulumi.ComponentResource):
    """The platform's namespaces, each with its quota, limit range and network policies."""

    namespaces: dict[str, k8s.core.v1.Namespace]

    def __init__(self, name: str, cfg: StackConfig, provider: k8s.Provider, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("sophia:platform:Namespaces", name, None, opts)
        self.namespaces = {}
        self.policies: dict[str, list[pulumi.CustomResource]] = {}
        for ns in platform_namespaces(cfg):
            m = namespace_manifest(cfg, ns)
            res = k8s.core.v1.Namespace(f"{name}-{ns}", metadata=m["metadata"],
                                        opts=pulumi.ResourceOptions(parent=self, provider=provider))
            self.namespaces[ns] = res
            children = []
            for obj in namespace_objects(cfg, ns):
                cls = _CLASSES[obj["kind"]]
                args = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
                children.append(cls(f"{name}-{ns}-{obj['kind'].lower()}-{obj['metadata']['name']}", **args,
                                    opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[res])))
            self.policies[ns] = children
        self.register_outputs({"namespaces": {ns: r.metadata["name"] for ns, r in self.namespaces.items()}})


# The policy builders other platform modules (istio.py) share.
policy, namespace_peer, ports, api_server_rule = _policy, _ns_peer, _ports, _api_server
