"""What Argo CD may do in the cluster: the AppProject's destinations and kinds, nothing more (pure).

The argo-cd chart's default binds the application controller to a ClusterRole of `*` on `*`
(cluster-admin) and the server to delete/get/patch on everything. Here:

- `createClusterRoles: false`: none of the chart's ClusterRoles (controller, server,
  notifications); each component keeps the chart's Role in `argocd` (its Applications,
  AppProjects, Secrets, ConfigMaps there);
- the in-cluster destination is a cluster Secret limited to the AppProject's namespaces
  (`namespaces`, no `clusterResources`): the controller watches and syncs those namespaces
  only, with namespaced calls (Argo CD docs "Declarative Setup", Clusters);
- `resource.respectRBAC: normal`: the controller watches only the kinds it may list;
- per destination namespace, program-written Roles: the controller may manage exactly the
  kinds charts/sophia-service renders (the AppProject's namespaceResourceWhitelist) and read
  what those own (Pods, ReplicaSets, EndpointSlices, Events) for health and the resource
  tree; the server may read the same and pod logs (the UI), and write nothing.
"""

from __future__ import annotations

from typing import Any, Iterable

from sophia_infra.program.config import names

IN_CLUSTER = "https://kubernetes.default.svc"
# The ServiceAccounts the argo-cd chart creates (release `argo-cd` in `argocd`).
CONTROLLER_ACCOUNT = "argocd-application-controller"
SERVER_ACCOUNT = "argocd-server"
DESTINATIONS = (names.APPS, names.MCP)

# kind -> resource (the API's plural) of every kind charts/sophia-service renders.
_RESOURCE = {"ServiceAccount": "serviceaccounts", "Service": "services", "Deployment": "deployments",
             "HorizontalPodAutoscaler": "horizontalpodautoscalers", "PodDisruptionBudget": "poddisruptionbudgets",
             "NetworkPolicy": "networkpolicies", "Ingress": "ingresses", "ServiceMonitor": "servicemonitors"}
# What the managed objects own or emit: read for health and the resource tree.
_OWNED = (("", ("pods", "endpoints", "events")), ("apps", ("replicasets",)), ("discovery.k8s.io", ("endpointslices",)))
MANAGE = ["create", "get", "list", "watch", "update", "patch", "delete"]
READ = ["get", "list", "watch"]


def resource_of(kind: str) -> str:
    return _RESOURCE[kind]


def _by_group(kinds: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for group, kind in kinds:
        groups.setdefault(group, []).append(resource_of(kind))
    return {g: sorted(r) for g, r in sorted(groups.items())}


def controller_rules(kinds: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
    manage = [{"apiGroups": [g], "resources": r, "verbs": MANAGE} for g, r in _by_group(kinds).items()]
    return manage + [{"apiGroups": [g], "resources": list(r), "verbs": READ} for g, r in _OWNED]


def server_rules(kinds: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
    read = [{"apiGroups": [g], "resources": r, "verbs": READ} for g, r in _by_group(kinds).items()]
    return read + [{"apiGroups": [g], "resources": list(r), "verbs": READ} for g, r in _OWNED] + [
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}]


def role_manifests(kinds: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
    """A Role and its RoleBinding per destination namespace, for the controller and the server."""
    kinds = list(kinds)
    out: list[dict[str, Any]] = []
    for ns in DESTINATIONS:
        for account, rules in ((CONTROLLER_ACCOUNT, controller_rules(kinds)), (SERVER_ACCOUNT, server_rules(kinds))):
            meta = {"name": account, "namespace": ns, "labels": {"app.kubernetes.io/part-of": "argocd"}}
            out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta, "rules": rules})
            out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
                        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": names.ARGOCD}]})
    return out


def chart_values() -> dict[str, Any]:
    """The argo-cd chart values that confine Argo CD to the destinations (merged into argocd_values)."""
    return {
        "createClusterRoles": False,
        "configs": {
            # The in-cluster destination, limited to the AppProject's namespaces. An empty
            # credential on https://kubernetes.default.svc is Argo CD's in-cluster config (the
            # pod's ServiceAccount).
            "clusterCredentials": {"in-cluster": {"server": IN_CLUSTER, "namespaces": ",".join(DESTINATIONS),
                                                  "config": {"tlsClientConfig": {"insecure": False}}}},
            "cm": {"resource.respectRBAC": "normal"},
        },
    }
