"""The platform's required network flows, written down as data, and their verdicts.

A required flow names its two ends by namespace and pod labels (or an address outside the
pod network: the API server, the nodes, the internet) and a destination port (a number or
the destination's port name). `evaluate` resolves the ends to the modelled pods
(sophia_infra.tools.plan.cluster_model) and asks the NetworkPolicy model (sophia_infra.tools.plan.traffic)
whether every pair may talk. `unexpected` lists what else crosses a namespace boundary:
each such flow is either required (then listed here) or must be denied.

Prometheus' scrape flows are not written by hand: they follow from every ServiceMonitor and
PodMonitor the plan creates or a chart renders, resolved through the Services to pod ports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Union

from sophia_infra.program.config import names
from sophia_infra.program.config.stack import StackConfig
from sophia_infra.tools.plan import scheduling, traffic
from sophia_infra.tools.plan.cluster_model import ClusterModel, Workload

# An address on the internet for egress checks (TEST-NET-3: a documentation address that the
# policies' "internet" ipBlocks do not exclude, like any public address).
INTERNET_IP = "203.0.113.250"
API_SERVER, NODES, INTERNET = "api-server", "nodes", "internet"
APP = "app.kubernetes.io/name"


@dataclass(frozen=True)
class End:
    """One end of a flow: pods (namespace + labels) or an address class outside the pod network."""

    namespace: Optional[str] = None
    labels: tuple[tuple[str, str], ...] = ()
    outside: Optional[str] = None   # API_SERVER, NODES or INTERNET
    # The chart release and subchart these pods come from, when that subchart may be absent.
    subchart: Optional[tuple[str, str]] = None

    def __str__(self) -> str:
        if self.outside:
            return self.outside
        sel = ",".join(f"{k}={v}" for k, v in self.labels)
        return f"{self.namespace}/{sel or '*'}"


def pods(namespace: str, labels: dict[str, str], subchart: Optional[tuple[str, str]] = None) -> End:
    return End(namespace, tuple(sorted(labels.items())), subchart=subchart)


def app(namespace: str, name: str, subchart: Optional[tuple[str, str]] = None) -> End:
    return End(namespace, ((APP, name),), subchart=subchart)


OUTSIDE = {k: End(outside=k) for k in (API_SERVER, NODES, INTERNET)}


@dataclass(frozen=True)
class Flow:
    name: str
    src: End
    dst: End
    port: Union[int, str]
    protocol: str = "TCP"


@dataclass
class FlowResult:
    flow: Flow
    # "allowed", "denied", "no pod" (an end matches nothing: a wrong selector) or "not rendered".
    status: str
    detail: str = ""
    pairs: list[tuple[str, str, int]] = field(default_factory=list)  # (src, dst, port) checked


# ----------------------------------------------------------------------------- the flows

GRAFANA = ("kube-prometheus-stack", "grafana")
KSM = ("kube-prometheus-stack", "kube-state-metrics")


def required_flows(cfg: StackConfig, model: ClusterModel) -> list[Flow]:
    A, M, D, MON, ARGO, ING, GPU = (names.APPS, names.MCP, names.DATA, names.MONITORING, names.ARGOCD,
                                    names.INGRESS, names.GPU)
    ingress = app(ING, "nginx-ingress")
    prometheus = app(MON, "prometheus")
    api, internet, nodes = OUTSIDE[API_SERVER], OUTSIDE[INTERNET], OUTSIDE[NODES]
    from sophia_infra.program.config.platform import postgres_clusters

    pg = pods(D, {"cnpg.io/cluster": cfg.platform.postgres.cluster_name})  # the cluster the apps use
    all_pg = {c: pods(D, {"cnpg.io/cluster": c}) for c in postgres_clusters(cfg)}
    other_pg = {c: end for c, end in all_pg.items() if end != pg}
    apps = {s.name: s for s in cfg.services if s.kind == "app"}
    mcps = [s for s in cfg.services if s.kind == "mcp"]
    flows: list[Flow] = []

    def add(name, src, dst, port, protocol="TCP"):
        flows.append(Flow(name, src, dst, port, protocol))

    # Users through the ingress controller.
    add("internet -> ingress controller http", internet, ingress, "http")
    add("internet -> ingress controller https", internet, ingress, "https")
    for svc in apps.values():
        add(f"ingress controller -> {svc.name}", ingress, app(A, svc.name), "http")
    if "frontend" in apps and "backend" in apps:
        add("frontend -> backend", app(A, "frontend"), app(A, "backend"), "http")
    if "backend" in apps:
        add("backend -> PostgreSQL", app(A, "backend"), pg, 5432)
        add("backend -> Valkey", app(A, "backend"), app(D, "valkey"), 6379)
        for svc in mcps:
            add(f"backend -> MCP {svc.name}", app(A, "backend"), app(M, svc.name), "http")
    for svc in cfg.services:
        add(f"{svc.name} -> internet APIs 443", app(names.SERVICE_NAMESPACES[svc.kind], svc.name), internet, 443)

    # DNS from every namespace the platform runs pods in.
    for ns in sorted({w.namespace for w in model.workloads if w.namespace != "kube-system"}):
        for proto in ("UDP", "TCP"):
            add(f"{ns} -> kube-dns 53/{proto}", End(ns), pods("kube-system", {"k8s-app": "kube-dns"}), 53, proto)

    # Controllers that watch the API.
    to_api = [
        ("prometheus-operator", app(MON, "kube-prometheus-stack-prometheus-operator")),
        ("Prometheus (service discovery)", prometheus),
        ("CloudNativePG operator", app(D, "cloudnative-pg")),
        ("PostgreSQL instance manager", pg),
        *((f"PostgreSQL instance manager of {c}", end) for c, end in other_pg.items()),
        ("NGINX ingress controller", ingress),
        ("device plugin (per-node config)", app(GPU, "nvidia-device-plugin")),
        ("dcgm-exporter (pod labels)", app(GPU, "dcgm-exporter")),
        ("kube-state-metrics", app(MON, "kube-state-metrics", KSM)),
        ("Grafana dashboard sidecar", app(MON, "grafana", GRAFANA)),
    ]
    for what, src in to_api:
        add(f"{what} -> API server", src, api, 6443)

    # Operators' webhooks, called by the API server; operators reaching their instances.
    add("API server -> CloudNativePG webhook", api, app(D, "cloudnative-pg"), "webhook-server")
    add("API server -> prometheus-operator webhook", api, pods(MON, {"app": "kube-prometheus-stack-operator"}), "https")
    for c, end in all_pg.items():
        of = "" if end == pg else f" of {c}"
        add(f"CloudNativePG operator -> instance status{of}", app(D, "cloudnative-pg"), end, "status")
        add(f"PostgreSQL replication{of}", end, end, "postgresql")
    if cfg.platform.valkey.replicas > 0:
        add("Valkey replica -> primary", app(D, "valkey"), app(D, "valkey"), 6379)
    from sophia_infra.program.config.platform import object_store_needed

    if object_store_needed(cfg):
        for c, end in all_pg.items():
            of = "" if end == pg else f" of {c}"
            add(f"PostgreSQL WAL archive -> object store{of}", end, internet, _endpoint_port(cfg.platform.postgres.backup.endpoint))
        # CNPG-I: the operator calls the Barman Cloud plugin's gRPC Service.
        add("CloudNativePG operator -> Barman Cloud plugin", app(D, "cloudnative-pg"), app(D, "plugin-barman-cloud"), 9090)
        add("Barman Cloud plugin -> API server", app(D, "plugin-barman-cloud"), api, 6443)

    # cert-manager: the API both ways, Let's Encrypt, the HTTP-01 self-check through the
    # ingress, the ingress controller to the solver pods of every namespace with a Certificate.
    from sophia_infra.program.platform import tls

    CM = names.CERT_MANAGER
    cm_controller = app(CM, "cert-manager")
    for what, name in (("controller", "cert-manager"), ("webhook", "webhook"), ("cainjector", "cainjector"),
                       ("startupapicheck", "startupapicheck")):
        add(f"cert-manager {what} -> API server", app(CM, name), api, 6443)
    add("API server -> cert-manager webhook", api, app(CM, "webhook"), "https")
    add("cert-manager -> ACME server 443", cm_controller, internet, 443)
    add("cert-manager HTTP-01 self-check -> ingress controller", cm_controller, ingress, 80)
    # The controller redirects HTTP to HTTPS for every host with TLS, the challenge path
    # included, and the self-check follows the redirect (cert-manager pkg/issuer/acme/http).
    add("cert-manager HTTP-01 self-check -> ingress controller https", cm_controller, ingress, 443)
    for ns in tls.solver_namespaces(cfg):
        add(f"ingress controller -> ACME solver in {ns}", ingress, pods(ns, tls.SOLVER_POD), tls.SOLVER_PORT)
    if cfg.platform.monitoring.grafana_host:
        add("ingress controller -> Grafana", ingress, app(MON, "grafana", GRAFANA), 3000)

    # Monitoring among itself.
    add("Prometheus -> Alertmanager", prometheus, app(MON, "alertmanager"), 9093)
    add("Grafana -> Prometheus", app(MON, "grafana", GRAFANA), prometheus, 9090)

    # Argo CD.
    if cfg.delivery == "argocd":
        server, repo, redis = (app(ARGO, "argocd-server"), app(ARGO, "argocd-repo-server"), app(ARGO, "argocd-redis"))
        controller = app(ARGO, "argocd-application-controller")
        appset = app(ARGO, "argocd-applicationset-controller")
        notifications = app(ARGO, "argocd-notifications-controller")
        if cfg.argocd.ingress_host:
            add("ingress controller -> Argo CD server", ingress, server, "server")
        for name, src in (("server", server), ("application controller", controller),
                          ("applicationset controller", appset), ("notifications controller", notifications)):
            add(f"Argo CD {name} -> repo-server", src, repo, "repo-server")
        for name, src in (("server", server), ("application controller", controller), ("repo-server", repo)):
            add(f"Argo CD {name} -> redis", src, redis, "redis")
        for name, src in (("server", server), ("application controller", controller),
                          ("applicationset controller", appset), ("notifications controller", notifications)):
            add(f"Argo CD {name} -> API server", src, api, 6443)
        add("Argo CD repo-server -> git over 443", repo, internet, 443)
        add("Argo CD application controller -> git over 443", controller, internet, 443)
    # The Istio mesh: sidecars fetch config and certificates from istiod, the API server calls
    # its injection and validation webhooks, istiod and the CNI node agent watch the API.
    if cfg.platform.istio.enabled:
        from sophia_infra.program.platform import istio, namespaces as platform_namespaces

        istiod = pods(names.ISTIO, platform_namespaces.ISTIOD_POD)
        for ns in platform_namespaces.MESHED:
            if any(w.namespace == ns for w in model.workloads):
                add(f"{ns} sidecars -> istiod xDS", End(ns), istiod, platform_namespaces.ISTIOD_XDS_PORT)
        add("API server -> istiod webhooks", api, istiod, istio.ISTIOD_WEBHOOK_PORT)
        add("istiod -> API server", istiod, api, 6443)
        add("istio-cni node agent -> API server", pods(names.ISTIO, {"k8s-app": "istio-cni-node"}), api, 6443)
    flows += scrape_flows(model)
    return flows


def _endpoint_port(url: Optional[str]) -> int:
    from urllib.parse import urlparse

    u = urlparse(url or "https://")
    return u.port or (80 if u.scheme == "http" else 443)


# ----------------------------------------------------------------------------- scraping

# Services the cluster has without a chart rendering them: the API server's and the kubelet
# Service prometheus-operator maintains. Their endpoints are node addresses.
_NODE_SERVICES = [
    ({"component": "apiserver", "provider": "kubernetes"}, "default", {"https": 6443}, API_SERVER),
    ({"app.kubernetes.io/name": "kubelet", "k8s-app": "kubelet"}, "kube-system", {"https-metrics": 10250}, NODES),
]


def _monitor_namespaces(monitor: dict, model: ClusterModel) -> list[str]:
    sel = (monitor.get("spec") or {}).get("namespaceSelector") or {}
    if sel.get("any"):
        return sorted(model.namespaces)
    return list(sel.get("matchNames") or [monitor["metadata"]["namespace"]])


def scrape_flows(model: ClusterModel) -> list[Flow]:
    """Prometheus -> every target port of every ServiceMonitor and PodMonitor."""
    prometheus = app(names.MONITORING, "prometheus")
    flows: list[Flow] = []
    services = model.of_kind("Service")
    for mon in model.of_kind("ServiceMonitor"):
        spec, where = mon.get("spec") or {}, _monitor_namespaces(mon, model)
        title = f"Prometheus -> ServiceMonitor {mon['metadata']['namespace']}/{mon['metadata']['name']}"
        for labels, ns, ports, outside in _NODE_SERVICES:
            if ns in where and traffic.selects(spec.get("selector"), labels):
                for ep in spec.get("endpoints") or []:
                    if ep.get("port") in ports:
                        flows.append(Flow(title, prometheus, OUTSIDE[outside], ports[ep["port"]]))
        for svc in services:
            meta = svc["metadata"]
            if meta.get("namespace") not in where or not traffic.selects(spec.get("selector"), meta.get("labels") or {}):
                continue
            selector = (svc.get("spec") or {}).get("selector") or {}
            dst = End(meta["namespace"], tuple(sorted(selector.items())))
            for ep in spec.get("endpoints") or []:
                if ep.get("port") is None and ep.get("targetPort") is not None:
                    # `targetPort` names the pods' port itself (cert-manager's), whatever the Service's.
                    flows.append(Flow(title, prometheus, dst, ep["targetPort"]))
                    continue
                for p in (svc.get("spec") or {}).get("ports") or []:
                    if ep.get("port") in (p.get("name"), None):
                        flows.append(Flow(title, prometheus, dst, p.get("targetPort", p["port"]), p.get("protocol", "TCP")))
    return list(dict.fromkeys(flows + _pod_monitor_flows(model, prometheus)))  # one row per distinct flow


def _pod_monitor_flows(model: ClusterModel, prometheus: End) -> list[Flow]:
    flows: list[Flow] = []
    for mon in model.of_kind("PodMonitor"):
        spec = mon.get("spec") or {}
        sel = (spec.get("selector") or {}).get("matchLabels") or {}
        title = f"Prometheus -> PodMonitor {mon['metadata']['namespace']}/{mon['metadata']['name']}"
        for ns in _monitor_namespaces(mon, model):
            for ep in spec.get("podMetricsEndpoints") or []:
                port = ep.get("port") or ep.get("portNumber") or ep.get("targetPort")
                flows.append(Flow(title, prometheus, End(ns, tuple(sorted(sel.items()))), port))
    return flows


# ----------------------------------------------------------------------------- evaluation

class Evaluator:
    def __init__(self, cfg: StackConfig, model: ClusterModel):
        self.cfg, self.model = cfg, model
        self.nodes = scheduling.stack_nodes(cfg)
        # Workload (by id) -> its peers: one pod, or a hostNetwork pod per node it runs on.
        self._peers: dict[int, list[traffic.Pod]] = {id(w): self._pods_of(w) for w in model.workloads}
        self.pods: list[traffic.Pod] = [p for peers in self._peers.values() for p in peers]
        self.cluster = traffic.Cluster(model.namespaces, self.pods, model.policies)
        self.outside = {
            # Node addresses as the pod network sees them (scheduling.stack_nodes: the private one
            # when a node has it; none for a DNS name or a host the stack launches).
            API_SERVER: [traffic.External(n.address, "API server") for n in self.nodes if n.server and n.address],
            NODES: [traffic.External(n.address, "node") for n in self.nodes if n.address],
            INTERNET: [traffic.External(INTERNET_IP, "internet")],
        }

    def _pods_of(self, w: Workload) -> list[traffic.Pod]:
        ports = tuple(traffic.Port(n, proto, name) for n, proto, name in w.ports())
        if not w.pod_spec.get("hostNetwork"):
            return [traffic.Pod(namespace=w.namespace, name=w.description, labels=w.labels, ports=ports)]
        # A hostNetwork pod is its node on the network: one peer per node the scheduler would
        # put it on, with that node's InternalIP (none when the stack file does not know it).
        return [traffic.Pod(namespace=w.namespace, name=f"{w.description} on {node}", labels=w.labels, ports=ports,
                            ip=node.address, host_network=True)
                for node in scheduling.nodes_for(w.pod_spec, self.nodes)]

    def workloads(self, end: End) -> list[Workload]:
        return [w for w in self.model.workloads if w.namespace == end.namespace
                and all(w.labels.get(k) == v for k, v in end.labels)]

    def members(self, end: End) -> list[Union[traffic.Pod, traffic.External]]:
        if end.outside:
            return list(self.outside[end.outside])
        return [p for w in self.workloads(end) for p in self._peers[id(w)]]

    def _unrendered(self, end: End) -> bool:
        return bool(end.subchart) and end.subchart[1] in self.model.unrendered.get(end.subchart[0], [])

    def evaluate(self, flow: Flow) -> FlowResult:
        srcs, dsts = self.members(flow.src), self.members(flow.dst)
        for end, found in ((flow.src, srcs), (flow.dst, dsts)):
            if not found:
                if end.subchart and self._unrendered(end):
                    return FlowResult(flow, "not rendered", f"{end.subchart[1]} is absent from the chart source of {end.subchart[0]}")
                return FlowResult(flow, "no pod", f"no pod matches {end}")
        result = FlowResult(flow, "allowed")
        denied = []
        for s in srcs:
            for d in dsts:
                if s is d and flow.src == flow.dst and len(dsts) > 1:
                    continue  # replication flows: between members, not a pod to itself
                port = _resolve(d, flow.port)
                if port is None:
                    denied.append(f"{_name(d)} has no port {flow.port}")
                    continue
                v = self.cluster.flow(s, d, port, flow.protocol)
                result.pairs.append((_name(s), _name(d), port))
                if not v.allowed:
                    denied.append(f"{_name(s)} -> {_name(d)}:{port}: {traffic.explain(v)}")
        if denied:
            result.status, result.detail = "denied", "; ".join(denied)
        return result


def _name(peer) -> str:
    return peer.name if isinstance(peer, traffic.Pod) else f"{peer.name} {peer.ip}"


def _resolve(dst, port: Union[int, str]) -> Optional[int]:
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    if isinstance(dst, traffic.Pod):
        for p in dst.ports:
            if p.name == port:
                return p.number
    return None


def evaluate(cfg: StackConfig, model: ClusterModel) -> tuple[list[FlowResult], Evaluator]:
    ev = Evaluator(cfg, model)
    return [ev.evaluate(f) for f in required_flows(cfg, model)], ev


def unexpected(results: Iterable[FlowResult], ev: Evaluator) -> list[str]:
    """Allowed flows that cross a namespace boundary (or come from the internet) and no required flow covers."""
    covered = {(s, d, p) for r in results for s, d, p in r.pairs}
    # kube-system is K3s's own (CoreDNS, metrics-server, ServiceLB): the platform neither
    # isolates nor owns it, so it is left out as a destination.
    pods = [p for p in ev.pods if not p.host_network]
    destinations = [p for p in pods if p.namespace != "kube-system"]
    out = []
    sources: list = [*pods, *ev.outside[INTERNET]]
    for src in sources:
        for dst in destinations:
            if isinstance(src, traffic.Pod) and src.namespace == dst.namespace:
                continue
            for port in {(p.number, p.protocol) for p in dst.ports}:
                if (_name(src), _name(dst), port[0]) in covered:
                    continue
                if ev.cluster.allows(src, dst, port[0], port[1]):
                    out.append(f"{_name(src)} -> {_name(dst)}:{port[0]}/{port[1]}")
    return sorted(out)


def markdown(results: list[FlowResult], extra: list[str]) -> list[str]:
    """The required-flows table for placement.md."""
    lines = ["## Network flows", "",
             "Required flows, checked against every NetworkPolicy (the program's and the charts') "
             "and the rendered pods' real labels and ports.", "",
             "| flow | from | to | port | verdict |", "|---|---|---|---|---|"]
    for r in results:
        verdict = r.status if not r.detail else f"{r.status}: {r.detail}"
        lines.append(f"| {r.flow.name} | {r.flow.src} | {r.flow.dst} | {r.flow.port}/{r.flow.protocol} | {verdict} |")
    lines += ["", f"Cross-namespace flows allowed but not required: {len(extra)}"]
    lines += [f"- {e}" for e in extra]
    return lines
