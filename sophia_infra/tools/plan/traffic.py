"""Which flows the cluster's NetworkPolicies allow, with the semantics of networking.k8s.io/v1.

A pure evaluator: give it namespaces (with labels), pods (labels, container ports, optional IP)
and NetworkPolicy manifests as YAML-loaded dicts, then ask `Cluster.flow(src, dst, port)`.

Semantics (https://kubernetes.io/docs/concepts/services-networking/network-policies/ and the
NetworkPolicy API reference):

- A pod is isolated for ingress (egress) once any policy *in its own namespace* selects it with
  `spec.podSelector` and has Ingress (Egress) in `policyTypes`. Without `policyTypes` the API
  server defaults it to Ingress, plus Egress when `spec.egress` is a non-empty list (exactly
  `len(spec.Egress) != 0` in SetDefaults_NetworkPolicy, so `egress: []` alone does not isolate
  for egress); an empty `policyTypes: []` is defaulted the same way.
- A flow is allowed iff egress is allowed at the source AND ingress at the destination; a side
  that is not isolated allows everything, an isolated side allows the union of the rules of every
  policy that isolates it. External peers have no policies: their side always allows.
- Rules: peers ORed, no/empty `from`/`to` = every peer (External too), no/empty `ports` = every
  port. Peer: `podSelector` alone = pods of the policy's namespace; `namespaceSelector` alone =
  every pod of the matching namespaces; both in one element = AND; `ipBlock` = addresses in
  `cidr` and not in any `except` (IPv4 and IPv6), matching External IPs and pods that have an IP.
- Ports: number, `endPort` range (inclusive), or a named port; a rule port without `port` matches
  every port of its protocol (default TCP). A named port matches when the *destination pod* has a
  container port of that name and the rule's protocol whose number is the flow's port; this holds
  for ingress and egress rules alike, so a named port never matches an External destination.
- hostNetwork pods are not selected by any policy (their own side always allows) and, as peers,
  they are their node: only an `ipBlock` containing their `ip` matches them (the most common
  implementation, which the docs describe for hostNetwork pods).
- No special cases: traffic from a pod to itself or within a namespace is decided by the
  policies like any other flow. (The docs add that a pod's loopback and its own node's traffic
  are always allowed; neither is a flow this model is asked about.)

Policies are evaluated in (namespace, name) order so verdict texts are stable between runs.
Malformed manifests (what the API server would reject) raise PolicyError naming the policy.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Union

PROTOCOLS = ("TCP", "UDP", "SCTP")
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
_IANA_SVC_NAME = re.compile(r"^(?=.*[a-z])(?!.*--)[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")
_Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
_Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


class PolicyError(ValueError):
    """A NetworkPolicy manifest the API server would reject, or a flow that cannot be evaluated."""


class Labels(Mapping[str, str]):
    """An immutable, hashable label map (so Pod stays hashable)."""

    __slots__ = ("_items",)

    def __init__(self, labels: Mapping[str, str] | Iterable[tuple[str, str]] = ()):
        items = dict(labels.items() if isinstance(labels, Mapping) else labels)
        self._items = tuple(sorted((str(k), str(v)) for k, v in items.items()))

    def __getitem__(self, key: str) -> str:
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self._items) == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return f"Labels({dict(self._items)!r})"


def _check_protocol(protocol: str, where: str) -> None:
    if protocol not in PROTOCOLS:
        raise PolicyError(f"{where}: protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")


def _check_port_number(number: Any, where: str) -> int:
    if isinstance(number, bool) or not isinstance(number, int):
        raise PolicyError(f"{where}: port {number!r} is not an integer")
    if not 1 <= number <= 65535:
        raise PolicyError(f"{where}: port {number} is outside 1-65535")
    return number


def _address(ip: str, where: str) -> _Address:
    try:
        return ipaddress.ip_address(ip)
    except ValueError:
        raise PolicyError(f"{where}: {ip!r} is not an IP address") from None


@dataclass(frozen=True)
class Port:
    """A container port of a pod."""

    number: int
    protocol: str = "TCP"
    name: str | None = None

    def __post_init__(self) -> None:
        _check_port_number(self.number, "container port")
        _check_protocol(self.protocol, f"container port {self.number}")


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str  # a description, e.g. "Deployment/argocd-server"
    labels: Mapping[str, str] = field(default_factory=Labels)
    ports: tuple[Port, ...] = ()
    ip: str | None = None
    host_network: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", Labels(self.labels))
        object.__setattr__(self, "ports", tuple(self.ports))
        if self.ip is not None:
            _address(self.ip, f"pod {self.namespace}/{self.name}")

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class External:
    """A peer outside the pod network: the internet, a node, the API server endpoint."""

    ip: str
    name: str = ""

    def __post_init__(self) -> None:
        _address(self.ip, f"external peer {self.name or self.ip}")

    def __str__(self) -> str:
        return self.name or self.ip


Endpoint = Union[Pod, External]


@dataclass
class Verdict:
    """A flow's verdict. Each side reads "not a pod", "not isolated for egress|ingress",
    "allowed by <ns>/<policy> egress|ingress rule N" (N indexes spec.egress/spec.ingress from 0)
    or "denied: isolated by <ns>/<policy>, ... and no rule matches"."""

    allowed: bool
    egress: str  # why egress from the source is allowed or denied
    ingress: str  # why ingress at the destination is allowed or denied


def explain(verdict: Verdict) -> str:
    """One line for reports: the verdict and both sides' reasons."""
    word = "allowed" if verdict.allowed else "denied"
    return f"{word} (egress: {verdict.egress}; ingress: {verdict.ingress})"


# --- label selectors ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Selector:
    """A metav1.LabelSelector: matchLabels AND every matchExpression; empty selects everything."""

    match_labels: tuple[tuple[str, str], ...]
    expressions: tuple[tuple[str, str, frozenset[str]], ...]

    @classmethod
    def parse(cls, raw: Any, where: str) -> _Selector:
        if not isinstance(raw, Mapping):
            raise PolicyError(f"{where}: a label selector must be a mapping, not {raw!r}")
        unknown = set(raw) - {"matchLabels", "matchExpressions"}
        if unknown:
            raise PolicyError(f"{where}: unknown label selector field(s) {', '.join(sorted(unknown))}")
        labels = raw.get("matchLabels") or {}
        if not isinstance(labels, Mapping):
            raise PolicyError(f"{where}: matchLabels must be a mapping")
        expressions = []
        for expr in raw.get("matchExpressions") or []:
            key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
            if not key:
                raise PolicyError(f"{where}: a matchExpression has no key")
            if op in ("In", "NotIn"):
                if not values:
                    raise PolicyError(f"{where}: matchExpression {key} {op} needs values")
            elif op in ("Exists", "DoesNotExist"):
                if values:
                    raise PolicyError(f"{where}: matchExpression {key} {op} must not have values")
            else:
                raise PolicyError(f"{where}: matchExpression operator {op!r} is not In, NotIn, Exists or DoesNotExist")
            expressions.append((str(key), op, frozenset(str(v) for v in values)))
        return cls(tuple(sorted((str(k), str(v)) for k, v in labels.items())), tuple(expressions))

    def matches(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels):
            return False
        for key, op, values in self.expressions:
            present = key in labels
            if op == "In" and not (present and labels[key] in values):
                return False
            if op == "NotIn" and present and labels[key] in values:  # an absent key satisfies NotIn
                return False
            if op == "Exists" and not present:
                return False
            if op == "DoesNotExist" and present:
                return False
        return True


# --- parsed policies ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _IPBlock:
    cidr: _Network
    excepts: tuple[_Network, ...]

    def contains(self, ip: _Address) -> bool:
        return ip in self.cidr and not any(ip in e for e in self.excepts)


@dataclass(frozen=True)
class _Peer:
    pod_selector: _Selector | None
    namespace_selector: _Selector | None
    ip_block: _IPBlock | None


@dataclass(frozen=True)
class _RulePort:
    protocol: str
    port: int | str | None  # None: every port of the protocol
    end_port: int | None


@dataclass(frozen=True)
class _Rule:
    peers: tuple[_Peer, ...]  # empty: every peer
    ports: tuple[_RulePort, ...]  # empty: every port


@dataclass(frozen=True)
class _Policy:
    namespace: str
    name: str
    pod_selector: _Selector
    types: frozenset[str]
    ingress: tuple[_Rule, ...]
    egress: tuple[_Rule, ...]

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def _parse_network(raw: Any, where: str) -> _Network:
    try:
        return ipaddress.ip_network(str(raw), strict=False)
    except ValueError:
        raise PolicyError(f"{where}: {raw!r} is not a CIDR") from None


def _parse_ip_block(raw: Any, where: str) -> _IPBlock:
    if not isinstance(raw, Mapping) or "cidr" not in raw:
        raise PolicyError(f"{where}: ipBlock needs a cidr")
    cidr = _parse_network(raw["cidr"], where)
    excepts = []
    for item in raw.get("except") or []:
        net = _parse_network(item, where)
        # The API server requires each except to be a strict subset of the cidr.
        if net.version != cidr.version or not net.subnet_of(cidr) or net.prefixlen <= cidr.prefixlen:  # type: ignore[arg-type]
            raise PolicyError(f"{where}: except {item} is not a strict subset of cidr {raw['cidr']}")
        excepts.append(net)
    return _IPBlock(cidr, tuple(excepts))


def _parse_peer(raw: Any, where: str) -> _Peer:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}: a peer must be a mapping")
    pod_sel = raw.get("podSelector")
    ns_sel = raw.get("namespaceSelector")
    block = raw.get("ipBlock")
    if block is not None and (pod_sel is not None or ns_sel is not None):
        raise PolicyError(f"{where}: ipBlock cannot be combined with podSelector or namespaceSelector")
    if block is None and pod_sel is None and ns_sel is None:
        raise PolicyError(f"{where}: a peer must set podSelector, namespaceSelector or ipBlock")
    return _Peer(
        _Selector.parse(pod_sel, f"{where} podSelector") if pod_sel is not None else None,
        _Selector.parse(ns_sel, f"{where} namespaceSelector") if ns_sel is not None else None,
        _parse_ip_block(block, where) if block is not None else None,
    )


def _parse_rule_port(raw: Any, where: str) -> _RulePort:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}: a port entry must be a mapping")
    protocol = raw.get("protocol") or "TCP"
    _check_protocol(protocol, where)
    port = raw.get("port")
    end_port = raw.get("endPort")
    if isinstance(port, str):
        if not _IANA_SVC_NAME.match(port):
            raise PolicyError(f"{where}: port {port!r} is neither a number nor a valid port name")
    elif port is not None:
        port = _check_port_number(port, where)
    if end_port is not None:
        if not isinstance(port, int):
            raise PolicyError(f"{where}: endPort needs a numeric port")
        end_port = _check_port_number(end_port, where)
        if end_port < port:
            raise PolicyError(f"{where}: endPort {end_port} is below port {port}")
    return _RulePort(protocol, port, end_port)


def _parse_rules(raw: Any, peers_key: str, where: str) -> tuple[_Rule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise PolicyError(f"{where}: must be a list of rules")
    rules = []
    for i, rule in enumerate(raw):
        rule = rule or {}
        at = f"{where}[{i}]"
        if not isinstance(rule, Mapping):
            raise PolicyError(f"{at}: a rule must be a mapping")
        peers = tuple(_parse_peer(p, f"{at}.{peers_key}[{j}]") for j, p in enumerate(rule.get(peers_key) or []))
        ports = tuple(_parse_rule_port(p, f"{at}.ports[{j}]") for j, p in enumerate(rule.get("ports") or []))
        rules.append(_Rule(peers, ports))
    return tuple(rules)


def parse_policy(manifest: Mapping[str, Any]) -> _Policy:
    """Validate one NetworkPolicy manifest and apply the API server's defaults."""
    meta = manifest.get("metadata") or {}
    name = meta.get("name") or "<unnamed>"
    namespace = meta.get("namespace")
    where = f"NetworkPolicy {namespace}/{name}" if namespace else f"NetworkPolicy {name}"
    if manifest.get("kind") != "NetworkPolicy" or manifest.get("apiVersion") != "networking.k8s.io/v1":
        raise PolicyError(f"{where}: not a networking.k8s.io/v1 NetworkPolicy "
                          f"(apiVersion {manifest.get('apiVersion')!r}, kind {manifest.get('kind')!r})")
    if not meta.get("name"):
        raise PolicyError(f"{where}: metadata.name is missing")
    if not namespace:
        # `helm template` omits it for charts that rely on --namespace; guessing "default" would
        # make the policy select nothing and report blocked flows as allowed.
        raise PolicyError(f"{where}: metadata.namespace is missing; set the namespace the policy is applied in")
    spec = manifest.get("spec") or {}
    types = list(spec.get("policyTypes") or [])
    for t in types:
        if t not in ("Ingress", "Egress"):
            raise PolicyError(f"{where}: policyTypes entry {t!r} is not Ingress or Egress")
    if not types:  # SetDefaults_NetworkPolicy
        types = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
    return _Policy(
        namespace=namespace,
        name=name,
        pod_selector=_Selector.parse(spec.get("podSelector") or {}, f"{where} spec.podSelector"),
        types=frozenset(types),
        ingress=_parse_rules(spec.get("ingress"), "from", f"{where} spec.ingress"),
        egress=_parse_rules(spec.get("egress"), "to", f"{where} spec.egress"),
    )


# --- the cluster -------------------------------------------------------------------------------


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether a metav1.LabelSelector (matchLabels + matchExpressions) selects `labels`; None selects all."""
    return _Selector.parse(selector or {}, "selector").matches(labels)


class Cluster:
    """Namespaces, pods and NetworkPolicies; answers which flows are allowed."""

    def __init__(self, namespaces: Mapping[str, Mapping[str, str]], pods: Iterable[Pod], policies: Iterable[dict]):
        self._namespaces = {ns: self._namespace_labels(ns, labels) for ns, labels in namespaces.items()}
        self._pods = list(pods)
        parsed: dict[tuple[str, str], _Policy] = {}
        for manifest in policies:
            policy = parse_policy(manifest)
            key = (policy.namespace, policy.name)
            if key in parsed:
                raise PolicyError(f"NetworkPolicy {policy.ref} is given twice")
            parsed[key] = policy
        self._policies = [parsed[k] for k in sorted(parsed)]
        # id(pod) -> (pod, direction -> isolating policies): the pod is kept, so its id stays its own.
        self._isolation: dict[int, tuple[Pod, dict[str, list[_Policy]]]] = {}

    @staticmethod
    def _namespace_labels(namespace: str, labels: Mapping[str, str] | None) -> Labels:
        # The API server always sets (and overwrites) this label to the namespace's name.
        return Labels({**(labels or {}), NAMESPACE_NAME_LABEL: namespace})

    def namespace_labels(self, namespace: str) -> Labels:
        """A namespace's labels; a namespace not given has only kubernetes.io/metadata.name."""
        return self._namespaces.get(namespace) or self._namespace_labels(namespace, {})

    @property
    def pods(self) -> list[Pod]:
        return list(self._pods)

    def pods_matching(self, namespace: str | None, selector: dict | None) -> list[Pod]:
        """Pods (hostNetwork ones included) in `namespace` (None: every namespace) whose labels
        match `selector` (None or {}: every pod), in the order given."""
        sel = _Selector.parse(selector or {}, "selector")
        return [p for p in self._pods if (namespace is None or p.namespace == namespace) and sel.matches(p.labels)]

    def isolating_policies(self, pod: Pod, direction: str) -> list[str]:
        """The policies (as "ns/name") that isolate `pod` for "Ingress" or "Egress"."""
        return [p.ref for p in self._isolating(pod, direction)]

    def _isolating(self, pod: Pod, direction: str) -> list[_Policy]:
        if pod.host_network:
            return []
        entry = self._isolation.get(id(pod))
        if entry is None or entry[0] is not pod:
            entry = self._isolation[id(pod)] = (pod, {})
        found = entry[1].get(direction)
        if found is None:  # the policies are fixed: what isolates a pod is worked out once per direction
            found = entry[1][direction] = [
                p for p in self._policies
                if p.namespace == pod.namespace and direction in p.types and p.pod_selector.matches(pod.labels)]
        return found

    def _peer_matches(self, peer: _Peer, policy_namespace: str, endpoint: Endpoint) -> bool:
        if peer.ip_block is not None:
            return endpoint.ip is not None and peer.ip_block.contains(ipaddress.ip_address(endpoint.ip))
        if not isinstance(endpoint, Pod) or endpoint.host_network:
            return False  # selectors pick pod-network pods only; nodes and the outside match by IP
        if peer.namespace_selector is not None:
            if not peer.namespace_selector.matches(self.namespace_labels(endpoint.namespace)):
                return False
        elif endpoint.namespace != policy_namespace:
            return False
        return peer.pod_selector is None or peer.pod_selector.matches(endpoint.labels)

    @staticmethod
    def _port_matches(rule_port: _RulePort, port: int, protocol: str, dst: Endpoint) -> bool:
        if rule_port.protocol != protocol:
            return False
        if rule_port.port is None:
            return True
        if isinstance(rule_port.port, int):
            last = rule_port.end_port if rule_port.end_port is not None else rule_port.port
            return rule_port.port <= port <= last
        if not isinstance(dst, Pod) or dst.host_network:
            return False  # a named port needs a destination pod to resolve against
        return any(cp.name == rule_port.port and cp.protocol == protocol and cp.number == port for cp in dst.ports)

    def _rule_matches(self, rule: _Rule, policy: _Policy, peer: Endpoint, port: int, protocol: str,
                      dst: Endpoint) -> bool:
        if rule.peers and not any(self._peer_matches(p, policy.namespace, peer) for p in rule.peers):
            return False
        return not rule.ports or any(self._port_matches(rp, port, protocol, dst) for rp in rule.ports)

    def _side(self, pod: Endpoint, direction: str, peer: Endpoint, port: int, protocol: str,
              dst: Endpoint) -> tuple[bool, str]:
        if isinstance(pod, External):
            return True, "not a pod"
        if pod.host_network:
            return True, "hostNetwork pod: no NetworkPolicy selects it"
        policies = self._isolating(pod, direction)
        word = direction.lower()
        if not policies:
            return True, f"not isolated for {word}"
        for policy in policies:
            rules = policy.ingress if direction == "Ingress" else policy.egress
            for i, rule in enumerate(rules):
                if self._rule_matches(rule, policy, peer, port, protocol, dst):
                    return True, f"allowed by {policy.ref} {word} rule {i}"
        return False, f"denied: isolated by {', '.join(p.ref for p in policies)} and no rule matches"

    def _resolve_port(self, dst: Endpoint, port: int | str, protocol: str) -> int:
        if isinstance(port, str):
            if not isinstance(dst, Pod):
                raise PolicyError(f"named port {port!r}: the destination {dst} is not a pod")
            for cp in dst.ports:
                if cp.name == port and cp.protocol == protocol:
                    return cp.number
            known = ", ".join(f"{cp.name}={cp.number}/{cp.protocol}" for cp in dst.ports if cp.name) or "none"
            raise PolicyError(f"named port {port!r}/{protocol}: {dst} has no such container port (named: {known})")
        return _check_port_number(port, f"flow to {dst}")

    def allows(self, src: Endpoint, dst: Endpoint, port: int | str, protocol: str = "TCP") -> bool:
        """`flow(...).allowed`, without working out the other side once one side denies."""
        protocol = protocol.upper()
        _check_protocol(protocol, "flow")
        number = self._resolve_port(dst, port, protocol)
        if not self._side(src, "Egress", dst, number, protocol, dst)[0]:
            return False
        return isinstance(dst, External) or self._side(dst, "Ingress", src, number, protocol, dst)[0]

    def flow(self, src: Endpoint, dst: Endpoint, port: int | str, protocol: str = "TCP") -> Verdict:
        """Whether `src` may open a connection to `dst` on `port`/`protocol`.

        `port` is a number or a named container port of `dst`. Egress rules are evaluated at the
        source against the destination, ingress rules at the destination against the source."""
        protocol = protocol.upper()
        _check_protocol(protocol, "flow")
        number = self._resolve_port(dst, port, protocol)
        egress_ok, egress = self._side(src, "Egress", dst, number, protocol, dst)
        if isinstance(dst, External):
            ingress_ok, ingress = True, "not a pod"
        else:
            ingress_ok, ingress = self._side(dst, "Ingress", src, number, protocol, dst)
        return Verdict(egress_ok and ingress_ok, egress, ingress)
