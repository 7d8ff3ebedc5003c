"""The cluster a plan would produce, as objects: what the charts render, what the program
creates directly, and the pods that operators and K3s create from them.

Pods come from three places, each marked in `Workload.origin`:

- `chart <release>` / `program`: pod templates of rendered or direct workload objects (real);
- `operator`: pods an operator creates from a custom resource (Prometheus, Alertmanager,
  CloudNativePG `Cluster`); their labels, ports and security context follow the operator's
  documented behaviour (sources cited below), since no chart renders them;
- `k3s`: CoreDNS, which K3s ships (`k8s-app: kube-dns` in kube-system).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable, Optional

from sophia_infra.tools.plan.render import Rendered

WORKLOAD_KINDS = ("Pod", "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicationController")


@dataclass
class Workload:
    kind: str
    namespace: str
    name: str
    pod_metadata: dict
    pod_spec: dict
    origin: str

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.pod_metadata.get("labels") or {})

    @property
    def description(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    def ports(self) -> list[tuple[int, str, Optional[str]]]:
        """(number, protocol, name) of every container port."""
        out = []
        for c in self.pod_spec.get("containers") or []:
            for p in c.get("ports") or []:
                out.append((int(p["containerPort"]), p.get("protocol", "TCP"), p.get("name")))
        return out


@dataclass
class ClusterModel:
    namespaces: dict[str, dict[str, str]]          # name -> labels
    workloads: list[Workload]
    policies: list[dict]                           # every NetworkPolicy, program's and charts'
    objects: list[dict] = field(default_factory=list)  # every object (rendered + direct)
    unrendered: dict[str, list[str]] = field(default_factory=dict)  # release -> subcharts not rendered

    def of_kind(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o.get("kind") == kind]


def pod_template(obj: dict) -> Optional[tuple[dict, dict]]:
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "Pod":
        return obj.get("metadata") or {}, spec
    if kind == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    elif kind not in WORKLOAD_KINDS:
        return None
    template = spec.get("template") or {}
    return template.get("metadata") or {}, template.get("spec") or {}


# --------------------------------------------------------------------------- operator pods

# prometheus-operator v0.93 (kube-prometheus-stack 88.5.3): pkg/prometheus/server/statefulset.go and
# pkg/alertmanager/statefulset.go label pods app.kubernetes.io/{name,instance,managed-by} and
# <prometheus|alertmanager>: <name>; every container gets allowPrivilegeEscalation false,
# readOnlyRootFilesystem true and drops ALL; the pod takes spec.securityContext.
_OPERATOR_CONTAINER_SC = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                          "capabilities": {"drop": ["ALL"]}}


def _monitoring_pod(obj: dict, app: str, ports: list[dict]) -> Workload:
    name, spec = obj["metadata"]["name"], obj.get("spec") or {}
    labels = {"app.kubernetes.io/name": app, "app.kubernetes.io/instance": name,
              "app.kubernetes.io/managed-by": "prometheus-operator", app: name,
              **((spec.get("podMetadata") or {}).get("labels") or {})}
    if app == "prometheus":
        labels.update({"operator.prometheus.io/name": name, "operator.prometheus.io/shard": "0"})
    containers = [
        {"name": app, "ports": ports, "securityContext": _OPERATOR_CONTAINER_SC},
        {"name": "config-reloader", "ports": [{"name": "reloader-web", "containerPort": 8080}],
         "securityContext": _OPERATOR_CONTAINER_SC},
    ]
    pod = {"securityContext": spec.get("securityContext") or {}, "containers": containers,
           "initContainers": [{"name": "init-config-reloader", "securityContext": _OPERATOR_CONTAINER_SC}]}
    return Workload("StatefulSet", obj["metadata"]["namespace"], f"{app}-{name}", {"labels": labels}, pod, "operator")


# CloudNativePG 1.30 (docs: "Labels and annotations", "Security"): instance pods carry
# cnpg.io/cluster, cnpg.io/podRole=instance, cnpg.io/instanceRole (and the legacy `role`);
# containers run as the postgres user with a restricted security context and expose
# postgresql 5432, metrics 9187 and status 8000.
_CNPG_SC = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}, "privileged": False}


def _cnpg_instances(obj: dict) -> list[Workload]:
    name, ns = obj["metadata"]["name"], obj["metadata"]["namespace"]
    out = []
    for role in ("primary", "replica"):
        labels = {"cnpg.io/cluster": name, "cnpg.io/podRole": "instance", "cnpg.io/instanceRole": role, "role": role}
        pod = {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
               "containers": [{"name": "postgres", "securityContext": _CNPG_SC, "ports": [
                   {"name": "postgresql", "containerPort": 5432}, {"name": "metrics", "containerPort": 9187},
                   {"name": "status", "containerPort": 8000}]}],
               "initContainers": [{"name": "bootstrap-controller", "securityContext": _CNPG_SC}]}
        out.append(Workload("Pod", ns, f"{name}-{role}", {"labels": labels}, pod, "operator"))
    return out


# cert-manager v1.21 (pkg/issuer/acme/http/pod.go): an HTTP-01 challenge of a Certificate
# starts an acmesolver pod in the Certificate's namespace, labelled
# acme.cert-manager.io/http01-solver=true, serving 8089 ("http"), non-root with seccomp
# RuntimeDefault, a read-only root, no privilege escalation and every capability dropped,
# annotated sidecar.istio.io/inject: "false" so that a mesh never delays the challenge.
def _acme_solver(obj: dict) -> Workload:
    sc = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    pod = {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
           "containers": [{"name": "acmesolver", "securityContext": sc,
                           "ports": [{"name": "http", "containerPort": 8089}]}]}
    ns = obj["metadata"]["namespace"]
    return Workload("Pod", ns, f"cm-acme-http-solver-{obj['metadata']['name']}",
                    {"labels": {"acme.cert-manager.io/http01-solver": "true"},
                     "annotations": {"sidecar.istio.io/inject": "false"}}, pod, "operator")


# K3s ships CoreDNS in kube-system (manifests/coredns.yaml): k8s-app=kube-dns, dns 53/UDP, dns-tcp 53/TCP.
KUBE_DNS = Workload("Deployment", "kube-system", "coredns", {"labels": {"k8s-app": "kube-dns"}}, {"containers": [
    {"name": "coredns", "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                  {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                  {"name": "metrics", "containerPort": 9153}]}]}, "k3s")


# Istio 1.28 sidecar injection (istiod chart files/injection-template.yaml, which istiod executes
# at admission with the `values` of the rendered istio-sidecar-injector ConfigMap): a pod created
# in a namespace labelled istio-injection=enabled, unless annotated sidecar.istio.io/inject
# "false", gains the istio-proxy container (port 15090 http-envoy-prom) and, with the CNI node
# agent (pilot.cni.enabled), the istio-validation init container instead of the NET_ADMIN
# istio-init. With CNI and global.proxy.privileged false both run as 1337, non-root, read-only
# root, no privilege escalation, every capability dropped, and take global.proxy.seccompProfile
# (empty: none of their own, so the pod's decides). Whether istio-proxy is a native sidecar
# (an init container with restartPolicy Always) does not change what Pod Security sees.
INJECTOR_CONFIGMAP = "istio-sidecar-injector"


def _sidecar_containers(values: dict) -> tuple[dict, Optional[dict]]:
    """(istio-proxy, the init container) as the injection template writes them for `values`."""
    proxy_values = (values.get("global") or {}).get("proxy") or {}
    privileged = bool(proxy_values.get("privileged"))
    cni = bool(((values.get("pilot") or {}).get("cni") or {}).get("enabled"))
    sc: dict = {"allowPrivilegeEscalation": privileged, "privileged": privileged,
                "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True,
                "runAsNonRoot": True, "runAsUser": 1337, "runAsGroup": 1337}
    if proxy_values.get("seccompProfile"):
        sc["seccompProfile"] = proxy_values["seccompProfile"]
    proxy = {"name": "istio-proxy", "securityContext": sc,
             "ports": [{"containerPort": 15090, "protocol": "TCP", "name": "http-envoy-prom"}]}
    if cni:
        init = {"name": "istio-validation", "securityContext": dict(sc)}
    else:  # istio-init rewrites iptables itself: root with NET_ADMIN and NET_RAW
        init = {"name": "istio-init", "securityContext": {
            "allowPrivilegeEscalation": privileged, "privileged": privileged, "readOnlyRootFilesystem": False,
            "runAsNonRoot": False, "runAsUser": 0, "runAsGroup": 0,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}}}
    return proxy, init


def _inject_sidecars(workloads: list[Workload], namespaces: dict[str, dict[str, str]], objects: list[dict]) -> list[Workload]:
    injector = next((o for o in objects if o.get("kind") == "ConfigMap"
                     and (o.get("metadata") or {}).get("name") == INJECTOR_CONFIGMAP), None)
    if injector is None:
        return workloads  # no istiod, no webhook: nothing is injected
    proxy, init = _sidecar_containers(json.loads((injector.get("data") or {}).get("values") or "{}"))
    out = []
    for w in workloads:
        annotations = w.pod_metadata.get("annotations") or {}
        if (namespaces.get(w.namespace) or {}).get("istio-injection") != "enabled" or w.origin == "k3s" \
                or str(annotations.get("sidecar.istio.io/inject", "")).lower() == "false":
            out.append(w)
            continue
        spec = dict(w.pod_spec)
        spec["containers"] = [*(spec.get("containers") or []), proxy]
        spec["initContainers"] = [init, *(spec.get("initContainers") or [])] if init else spec.get("initContainers")
        meta = {**w.pod_metadata, "labels": {**w.labels, "security.istio.io/tlsMode": "istio"}}
        out.append(Workload(w.kind, w.namespace, w.name, meta, spec, w.origin))
    return out


def _derived(objects: Iterable[dict]) -> list[Workload]:
    out = []
    for obj in objects:
        kind, api = obj.get("kind"), obj.get("apiVersion", "")
        if api.startswith("monitoring.coreos.com/") and kind == "Prometheus":
            port = obj.get("spec", {}).get("portName") or "web"
            out.append(_monitoring_pod(obj, "prometheus", [{"name": port, "containerPort": 9090}]))
        elif api.startswith("monitoring.coreos.com/") and kind == "Alertmanager":
            port = obj.get("spec", {}).get("portName") or "web"
            out.append(_monitoring_pod(obj, "alertmanager", [
                {"name": port, "containerPort": 9093}, {"name": "mesh-tcp", "containerPort": 9094},
                {"name": "mesh-udp", "containerPort": 9094, "protocol": "UDP"}]))
        elif api.startswith("postgresql.cnpg.io/") and kind == "Cluster":
            out += _cnpg_instances(obj)
        elif api.startswith("cert-manager.io/") and kind == "Certificate" \
                and ((obj.get("spec") or {}).get("issuerRef") or {}).get("kind") == "ClusterIssuer":
            out.append(_acme_solver(obj))  # the ACME ClusterIssuer's (a chart's self-signed ones start none)
    return out


def build(rendered: Iterable[Rendered], direct: Iterable[dict]) -> ClusterModel:
    """The model of a plan: `rendered` releases plus the program's `direct` objects (plan manifests)."""
    rendered = list(rendered)
    direct = list(direct)
    objects: list[dict] = list(direct)
    workloads: list[Workload] = []
    for r in rendered:
        # `helm test` pods run only when someone runs helm test, never on install.
        installed = [o for o in r.objects if "test" not in
                     ((o.get("metadata") or {}).get("annotations") or {}).get("helm.sh/hook", "").split(",")]
        objects += installed
        for obj in installed:
            t = pod_template(obj)
            if t:
                workloads.append(Workload(obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"], *t,
                                          origin=f"chart {r.spec.release}"))
    for obj in direct:
        t = pod_template(obj)
        if t:
            workloads.append(Workload(obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"], *t, "program"))
    workloads += _derived(objects)
    workloads.append(KUBE_DNS)

    namespaces: dict[str, dict[str, str]] = {"kube-system": {}, "default": {}}
    for obj in objects:
        if obj.get("kind") == "Namespace":
            namespaces[obj["metadata"]["name"]] = dict(obj["metadata"].get("labels") or {})
    for w in workloads:
        namespaces.setdefault(w.namespace, {})
    for name, labels in namespaces.items():
        labels.setdefault("kubernetes.io/metadata.name", name)
    workloads = _inject_sidecars(workloads, namespaces, objects)
    policies = [o for o in objects if o.get("kind") == "NetworkPolicy"]
    unrendered = {r.spec.release: r.missing_subcharts for r in rendered if r.missing_subcharts}
    return ClusterModel(namespaces, workloads, policies, objects, unrendered)
