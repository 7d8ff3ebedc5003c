"""Which of the stack's nodes a pod template may be scheduled on, as the scheduler decides it.

The traffic model needs this for hostNetwork pods: such a pod *is* its node on the network
(its address is the node's InternalIP), so a DaemonSet like node-exporter is one peer per node
it runs on, and a NetworkPolicy reaches it only through an ipBlock holding that address.

The nodes are described as K3s registers them: the program's labels (`cluster.scripts.node_labels`),
the kubelet's well-known labels (kubernetes.io/arch, os, hostname), K3s's server role labels, and
the taints (the control plane's CriticalAddonsOnly=true:NoExecute plus the node's own).

The predicates follow the scheduler's (kubernetes/pkg/scheduler/framework/plugins):
- nodeSelector: every pair must be a label of the node (nodeaffinity, `GetRequiredNodeAffinity`);
- requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms: the terms are ORed, each
  term's matchExpressions and matchFields ANDed; an empty term list matches nothing, an empty
  term matches nothing (component-helpers/scheduling/corev1/nodeaffinity);
- taints with effect NoSchedule or NoExecute must each be tolerated (tainttoleration; the
  PreferNoSchedule effect only scores). A toleration matches a taint when its effect is empty or
  equal, and either operator Exists with an empty key (tolerates everything), or keys equal and
  (Exists, or Equal with equal values) — `Toleration.ToleratesTaint` in k8s.io/api/core/v1.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from sophia_infra.program.cluster.scripts import CONTROL_PLANE_TAINT, node_labels
from sophia_infra.program.config.stack import StackConfig

_ENFORCED_EFFECTS = ("NoSchedule", "NoExecute")


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str

    @classmethod
    def parse(cls, text: str) -> "Taint":
        """`key[=value]:Effect`, the form kubectl and K3s's node-taint take."""
        key_value, _, effect = text.rpartition(":")
        key, _, value = key_value.partition("=")
        return cls(key, value, effect)

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"


@dataclass(frozen=True)
class Node:
    name: str
    labels: Mapping[str, str]
    taints: tuple[Taint, ...] = ()
    address: Optional[str] = None  # the InternalIP (K3s's node-ip): private address when it has one
    server: bool = False  # a K3s server: where the API server listens

    def __str__(self) -> str:
        return self.name


def _literal_ip(value: Optional[str]) -> Optional[str]:
    try:
        return str(ipaddress.ip_address(value)) if value else None
    except ValueError:
        return None  # a DNS name: no address to match an ipBlock against


def stack_nodes(cfg: StackConfig) -> list[Node]:
    """The stack's nodes with the labels and taints they register with, and their InternalIP
    when the stack file knows it (not for provisioned hosts or DNS names)."""
    out = []
    for node in cfg.nodes:
        labels = {
            "kubernetes.io/arch": node.arch,
            "kubernetes.io/os": "linux",
            "kubernetes.io/hostname": node.name,
            **node_labels(node),
        }
        taints = [Taint.parse(t) for t in node.taints]
        if node.role == "control-plane":
            # K3s labels servers (pkg/agent/config: node-role labels) and the program taints them.
            labels.update({"node-role.kubernetes.io/control-plane": "true", "node-role.kubernetes.io/master": "true",
                           "node-role.kubernetes.io/etcd": "true"})
            taints.insert(0, Taint.parse(CONTROL_PLANE_TAINT))
        host = cfg.hosts.get(node.name)
        address = _literal_ip(host.private_address or host.address) if host else None
        out.append(Node(node.name, labels, tuple(taints), address, server=node.role == "control-plane"))
    return out


def _tolerates(toleration: Mapping[str, Any], taint: Taint) -> bool:
    effect = toleration.get("effect") or ""
    if effect and effect != taint.effect:
        return False
    operator = toleration.get("operator") or "Equal"
    key = toleration.get("key") or ""
    if not key:
        return operator == "Exists"  # an empty key with Exists tolerates every taint
    if key != taint.key:
        return False
    return operator == "Exists" or (toleration.get("value") or "") == taint.value


def _expression_matches(expr: Mapping[str, Any], value: Optional[str]) -> bool:
    op, values = expr.get("operator"), [str(v) for v in expr.get("values") or []]
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt"):
        try:
            have, want = int(value or ""), int(values[0])
        except (ValueError, IndexError):
            return False
        return have > want if op == "Gt" else have < want
    return False


def _term_matches(term: Mapping[str, Any], node: Node) -> bool:
    exprs, fields = term.get("matchExpressions") or [], term.get("matchFields") or []
    if not exprs and not fields:
        return False  # an empty term selects no node
    if not all(_expression_matches(e, node.labels.get(e.get("key", ""))) for e in exprs):
        return False
    return all(_expression_matches(f, node.name if f.get("key") == "metadata.name" else None) for f in fields)


@dataclass
class Fit:
    node: Node
    fits: bool
    why: list[str] = field(default_factory=list)  # what keeps the pod off the node


def fit(pod_spec: Mapping[str, Any], node: Node) -> Fit:
    """Whether a pod with `pod_spec` may be scheduled on `node`, and if not, why."""
    why = []
    for key, value in (pod_spec.get("nodeSelector") or {}).items():
        if node.labels.get(key) != str(value):
            why.append(f"nodeSelector {key}={value}")
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution")
    if required is not None and not any(_term_matches(t, node) for t in required.get("nodeSelectorTerms") or []):
        why.append("required node affinity")
    tolerations = pod_spec.get("tolerations") or []
    for taint in node.taints:
        if taint.effect in _ENFORCED_EFFECTS and not any(_tolerates(t, taint) for t in tolerations):
            why.append(f"taint {taint} not tolerated")
    return Fit(node, not why, why)


def nodes_for(pod_spec: Mapping[str, Any], nodes: list[Node]) -> list[Node]:
    """The nodes, in the stack's order, that a pod with `pod_spec` may run on."""
    return [n for n in nodes if fit(pod_spec, n).fits]
