"""The stack configuration: one typed schema, loaded and checked once.

Everything the program reads from Pulumi config passes through `load()`. Problems are
collected, not raised one at a time, and reported as one sentence each, naming the
config key path (`sophia:nodes[2].gpu.type`) and the fix. Under the engine the program
raises it as a `pulumi.RunError` (sophia_infra.program.errors.EngineConfigError), so
`pulumi preview` prints the sentences without a traceback, and since loading happens before
any resource is registered, nothing is half-applied. The schema itself does not import the Pulumi SDK: the command-line
tools that only read the config (describe, release, outputs, ...) start without it.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import types
import typing
from collections import Counter
from typing import Annotated, Any, Callable, Iterable, Literal, Optional

from pydantic import AfterValidator, BaseModel, Field, PrivateAttr, StrictFloat, StrictInt, ValidationError, field_validator

from sophia_infra.program.config import platform as platform_settings, services as service_settings
from sophia_infra.program.config import validators as check
from sophia_infra.program.config import provision as lambda_config
from sophia_infra.program.config.models import Strict as _Strict
# The cluster layer's settings, which the root schema below composes with the other layers'.
from sophia_infra.program.config.cluster import GPU_TYPES, Host, K3s, Node

NAMESPACE = "sophia"
# Pulumi.yaml's name: the namespace of a stack-file key written without one.
PROJECT = "sophia-infra"

PLATFORMS = ("linux/amd64", "linux/arm64")

ENVIRONMENTS = ("dev", "staging", "production")


class ConfigError(Exception):
    """Invalid stack configuration: one sentence per problem."""

    def __init__(self, problems: list[str]):
        # One line each, whatever a value held.
        self.problems = [p.replace("\r", "\\r").replace("\n", "\\n") for p in problems]
        problems = self.problems
        super().__init__(
            "The stack configuration is invalid:\n" + "\n".join(f"  - {p}" for p in problems)
        )


def _pinned_tag(value: str) -> str:
    return check.image_tag(value)


# The secrets the program itself uses to run the hosts, the cluster, its backups and its
# delivery. A workload never gets one: with them it could take the cluster over.
INFRASTRUCTURE_SECRETS = {
    "sshPrivateKey": "SSH to the hosts",
    "etcdS3AccessKey": "etcd snapshots",
    "etcdS3SecretKey": "etcd snapshots",
    "argocdAdminPasswordBcrypt": "the Argo CD admin",
    "dockerUsername": "the image pull Secret",
    "dockerAccessToken": "the image pull Secret",
    "grafanaAdminPassword": "the Grafana admin",
}
# Names that used to be ESC secrets: the database and its owner are plain config.
POSTGRES_NAMES = {"postgresUser": "sophia:platform.postgres.owner", "postgresDatabase": "sophia:platform.postgres.database"}


def infrastructure_secret(key: str) -> Optional[str]:
    """What the program uses the secret config key `key` for, if it is an infrastructure secret."""
    if key in INFRASTRUCTURE_SECRETS:
        return INFRASTRUCTURE_SECRETS[key]
    repo = getattr(service_settings, "REPO_CREDENTIAL_SECRETS", {})  # Argo CD's repository access
    if any(key in keys.values() for keys in repo.values()):
        return "Argo CD's repository credentials"
    return None


# ----------------------------------------------------------------------------- releases

class ChartPin(_Strict):
    repository: str
    version: str
    # The chart's name in its repository, when the key differs (istio-base -> base).
    chart: Optional[str] = None

    @field_validator("version")
    @classmethod
    def _pinned(cls, v: str) -> str:
        return check.chart_version(v)

    @field_validator("repository")
    @classmethod
    def _repository(cls, v: str) -> str:
        return check.url(v, ("https", "oci"), "chart repository")

    @field_validator("chart")
    @classmethod
    def _chart(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else check.dns_label(v, "chart name")


class Image(_Strict):
    repository: str
    # Normally unset: an app release writes the tag (and digest) into the workload's release
    # file, releases/<stack>/<name>.yaml (sophia_infra.program.releases). A stack without release files
    # may pin it here instead; both at once is refused, so a tag lives in one place only.
    tag: Optional[str] = None
    # Platforms the image is built for; a workload on an arm64 node needs linux/arm64.
    platforms: list[str] = Field(default_factory=lambda: ["linux/amd64"], min_length=1)

    @field_validator("tag")
    @classmethod
    def _pinned(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else _pinned_tag(v)

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, v: list[str]) -> list[str]:
        for p in v:
            if p not in PLATFORMS:
                raise ValueError(f"unknown platform '{p}'; use {' or '.join(PLATFORMS)}")
        return v

    @property
    def ref(self) -> str:
        if not self.tag:
            return self.repository
        sep = "@" if self.tag.startswith("sha256:") else ":"
        return f"{self.repository}{sep}{self.tag}"


class Placement(_Strict):
    gpu_type: str = Field(alias="gpuType")


class Service(_Strict):
    name: str
    kind: Literal["app", "mcp"]
    image: Image
    # int32 in the API; bounded lower than that, since more is a typo, not a plan.
    replicas: StrictInt = Field(ge=1, le=check.MAX_REPLICAS)
    # With maxReplicas an HPA scales between replicas and maxReplicas.
    max_replicas: Optional[StrictInt] = Field(default=None, ge=1, le=check.MAX_REPLICAS, alias="maxReplicas")
    # nvidia.com/gpu per pod; 0 = no GPU (a placement alone is just a nodeSelector).
    gpu: StrictInt = Field(default=0, ge=0, le=16)
    placement: Optional[Placement] = None
    port: StrictInt = Field(default=8000, ge=1, le=65535)
    # Path of Prometheus metrics on the port; a ServiceMonitor is created when set.
    metrics_path: Optional[check.UrlPath] = Field(default=None, alias="metricsPath")
    # Environment variable -> secret config key: the only secrets this workload gets.
    secrets: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _dns_label(cls, v: str) -> str:
        return check.service_name(v)

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, v: dict[str, str]) -> dict[str, str]:
        for env, key in v.items():
            check.env_var_name(env)
            check.secret_key_name(key)
            why = infrastructure_secret(key)
            if why:
                raise ValueError(f"'{key}' is one of the cluster's infrastructure secrets ({why}), "
                                 f"which no workload is handed; give {env} a credential of its own in ESC")
            if key in POSTGRES_NAMES:
                raise ValueError(f"'{key}' is plain config now ({POSTGRES_NAMES[key]}), which the backend receives as "
                                 f"{'POSTGRES_USER' if key == 'postgresUser' else 'POSTGRES_DB'}; remove {env} from secrets")
        return v

    @property
    def peak_replicas(self) -> int:
        return max(self.replicas, self.max_replicas or 0)


class BackupLimits(_Strict):
    """How old the newest backup may be before `python -m sophia_infra backups` fails."""

    etcd_max_age_hours: StrictFloat = Field(default=12, gt=0, le=8760, allow_inf_nan=False, alias="etcdMaxAgeHours")
    postgres_max_age_hours: StrictFloat = Field(default=26, gt=0, le=8760, allow_inf_nan=False, alias="postgresMaxAgeHours")


# ----------------------------------------------------------------------------- the stack

class StackConfig(_Strict):
    # What the stack is for; production gets the stricter checks (apiAllowFrom said explicitly).
    environment: Literal["dev", "staging", "production"]
    k3s: K3s
    nodes: list[Node] = Field(min_length=1)
    # Addresses of the existing hosts; a provisioned node has none (its instance's is used).
    hosts: dict[str, Host] = Field(default_factory=dict)
    ssh_user: str = Field(alias="sshUser")
    # Public keys authorized on every host besides the one the stack connects with (a rotation's
    # next key, an operator's own): ~sshUser/.ssh/authorized_keys holds exactly these and that one.
    ssh_authorized_keys: list[Annotated[str, AfterValidator(check.ssh_public_key)]] = Field(
        default_factory=list, alias="sshAuthorizedKeys")
    charts: dict[str, ChartPin] = Field(default_factory=dict)
    services: list[Service] = Field(default_factory=list)
    delivery: Literal["helm", "argocd"] = "helm"
    platform: platform_settings.PlatformSettings = Field(default_factory=platform_settings.PlatformSettings)
    argocd: service_settings.ArgoCDSettings = Field(default_factory=service_settings.ArgoCDSettings)
    backups: BackupLimits = Field(default_factory=BackupLimits)
    workloads: service_settings.WorkloadSettings = Field(default_factory=service_settings.WorkloadSettings)
    # Top-level keys whose value came as a secret (fn::secret), e.g. hosts: set by parse().
    _secret_keys: frozenset[str] = PrivateAttr(default_factory=frozenset)

    def is_secret(self, key: str) -> bool:
        """Whether the top-level key `key` (hosts, ...) was given as a secret."""
        return key in self._secret_keys

    @field_validator("ssh_user")
    @classmethod
    def _login(cls, v: str) -> str:
        return check.login_name(v)

    @field_validator("hosts", mode="before")
    @classmethod
    def _short_hosts(cls, v: Any) -> Any:
        # `name: 203.0.113.10` is short for `name: {address: 203.0.113.10}`.
        if isinstance(v, dict):
            return {k: ({"address": h} if isinstance(h, str) else h) for k, h in v.items()}
        return v

    # --- derived views used by the components and the plan
    @property
    def control_plane(self) -> Node:
        return next(n for n in self.nodes if n.cluster_init)

    @property
    def workers(self) -> list[Node]:
        return [n for n in self.nodes if not n.cluster_init]

    def host(self, node: Node) -> Host:
        return self.hosts[node.name]

    def nodes_with_gpu(self, gpu_type: str) -> list[Node]:
        return [n for n in self.nodes if n.gpu and n.gpu.type == gpu_type]

    def gpu_capacity(self, gpu_type: str) -> int:
        return sum(n.gpu.capacity for n in self.nodes_with_gpu(gpu_type) if n.gpu)

    def required_secrets(self) -> dict[str, str]:
        """Secret config key -> the config path that needs it."""
        needed = {"sshPrivateKey": "SSH to the hosts"}
        if any(n.provision for n in self.nodes):
            needed[lambda_config.API_KEY_SECRET] = "sophia:nodes[].provision (the Lambda Cloud API)"
        if self.k3s.etcd_s3:
            needed["etcdS3AccessKey"] = "sophia:k3s.etcdS3"
            needed["etcdS3SecretKey"] = "sophia:k3s.etcdS3"
        for i, svc in enumerate(self.services):
            for env, key in svc.secrets.items():
                needed.setdefault(key, f"sophia:services[{i}].secrets.{env}")
        for key, why in {**platform_settings.required_secrets(self), **service_settings.required_secrets(self)}.items():
            needed.setdefault(key, why)
        return needed


# Top-level config keys and whether they hold structured (object/array) values.
TOP_LEVEL_KEYS = {
    "environment": False, "k3s": True, "nodes": True, "hosts": True, "sshUser": False, "sshAuthorizedKeys": True,
    "charts": True, "services": True, "delivery": False,
    "platform": True, "argocd": True, "backups": True, "workloads": True,
}


def _path(loc: tuple) -> str:
    out = f"{NAMESPACE}:{loc[0]}" if loc else f"{NAMESPACE}"
    for part in loc[1:]:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


_FIXES = {
    "missing": "add it to the stack file (or to the ESC environment for addresses and secrets)",
    "extra_forbidden": "remove it or correct its spelling",
    "greater_than_equal": "raise it",
    "less_than_equal": "lower it",
    "too_short": "add at least one entry",
    "literal_error": "use one of the allowed values",
    # Integers and numbers are strict: pydantic would read true as 1 and "3" as 3.
    "int_type": "write a whole number, without quotes (true and false are not numbers)",
    "float_type": "write a number, without quotes (true and false are not numbers)",
}


_MISSING: dict[tuple[str | int, ...], str] = {("environment",): "add `sophia:environment: production` (or dev, staging) to the stack file"}


def _closest(key: str, candidates: Iterable[str], cutoff: float = 0.6) -> Optional[str]:
    """The candidate `key` most likely misspells (case does not count), if any is close."""
    by_lower = {c.lower(): c for c in candidates}
    match = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=cutoff)
    return by_lower[match[0]] if match else None


def _model_of(tp: Any) -> Optional[type[BaseModel]]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = next((a for a in typing.get_args(tp) if a is not type(None)), None)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _keys_at(loc: tuple) -> list[str]:
    """The keys the schema reads at a location (top-level key, then fields, indexes, map keys)."""
    tp: Any = StackConfig
    for part in loc:
        model = _model_of(tp)
        if model is not None:
            field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
            if field is None:
                return []
            tp = field.annotation
        elif typing.get_origin(tp) in (list, dict):
            tp = typing.get_args(tp)[-1]
        else:
            return []
    model = _model_of(tp)
    return [f.alias or n for n, f in model.model_fields.items()] if model else []


def _unknown_key(loc: tuple) -> str:
    guess = _closest(str(loc[-1]), _keys_at(loc[:-1]))
    fix = f"did you mean {_path(loc[:-1] + (guess,))}?" if guess else "remove it or correct its spelling."
    return f"{_path(loc)}: is not a key this program reads; {fix}"


def _unknown_top_level_keys(raw: dict[str, Any], lookup: "SecretLookup", secrets: Optional[set[str]]) -> list[str]:
    """Plain `sophia:` keys outside the schema, which a typo would otherwise drop silently.

    Secret keys (fn::secret) are read one by one where something needs them, and every
    needed one is checked by name, so a secret is never "unknown". `secrets` are the
    secret keys this configuration needs (a plain one is reported as plain text instead);
    it is None when the schema did not validate, and then only near-misses of schema keys
    are reported (a plain key might be a needed secret we cannot tell yet)."""
    problems = []
    for key in sorted(k for k, v in raw.items() if k not in TOP_LEVEL_KEYS and v is not None):
        if lookup(key) or (secrets is not None and key in secrets):
            continue
        guess = _closest(key, list(TOP_LEVEL_KEYS) + sorted(secrets or ()))
        if secrets is None and guess not in TOP_LEVEL_KEYS:
            continue
        fix = (f"did you mean {NAMESPACE}:{guess}?" if guess else
               "remove it or correct its spelling (a secret belongs in the ESC environment, with fn::secret).")
        problems.append(f"{NAMESPACE}:{key}: is not a key this program reads; {fix}")
    return problems


# Namespaces whose keys configure something else: the engine and the providers the program uses.
OTHER_NAMESPACES = ("pulumi", "kubernetes", "command", "random")


def misplaced_keys(keys: Iterable[str]) -> list[str]:
    """Config keys the program would never read because their namespace is not `sophia:`
    yet looks meant to be (sophai:nodes, Sophia:nodes, sophia-infra:nodes: the project's own
    namespace, where a key written without one lands). Other namespaces are left alone:
    they configure providers and the engine."""
    problems = []
    for key in sorted(keys):
        namespace, sep, name = key.partition(":")
        if not sep:  # offline, a stack file key written without a namespace
            problems.append(f"{key}: has no namespace, so Pulumi files it under the project's ({PROJECT}:{key}), "
                            f"which this program does not read; write it as {NAMESPACE}:{key}.")
        elif namespace != NAMESPACE and namespace not in OTHER_NAMESPACES and _closest(namespace, [NAMESPACE], 0.65):
            problems.append(f"{key}: the namespace '{namespace}' is not one this program reads; did you mean {NAMESPACE}:{name}?")
    return problems


def _strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):  # the keys (node names) are not the secret part
        return [s for v in value.values() for s in _strings_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings_in(v)]
    return [str(value)] if value is not None else []


def _redact(message: str, secret_value: Any) -> str:
    """`message` without any text of a secret value (quoted as shown, or bare)."""
    for text in sorted(set(_strings_in(secret_value)), key=len, reverse=True):
        message = message.replace(check.show(text), "the secret value").replace(check.show(text, 10**6), "the secret value")
        if len(text) >= 3:
            message = message.replace(text, "[secret]")
    return message


def _pydantic_problems(err: ValidationError, aliases: dict[str, str],
                       secret_values: Optional[dict[str, Any]] = None) -> list[str]:
    """One sentence per pydantic error. For a key given as a secret (`secret_values`: top-level
    key -> its value), the value is never shown: no `(got ...)`, and redacted from the text."""
    problems = []
    secret_values = secret_values or {}
    for e in err.errors():
        loc = tuple(e["loc"])
        if loc and isinstance(loc[0], str):
            loc = (aliases.get(loc[0], loc[0]),) + loc[1:]
        top = str(loc[0]) if loc else ""
        secret = top in secret_values
        msg = e["msg"]
        if e["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
            problem = f"{_path(loc)}: {msg}."
        elif e["type"] == "extra_forbidden":
            problem = _unknown_key(loc)
        else:
            fix = _MISSING.get(loc, _FIXES["missing"]) if e["type"] == "missing" else _FIXES.get(e["type"], "correct the value")
            got = "" if e["type"] == "missing" or secret else f" (got {json.dumps(e.get('input'), default=str)[:60]})"
            problem = f"{_path(loc)}: {msg[0].lower() + msg[1:]}{got}; {fix}."
        problems.append(_redact(problem, secret_values[top]) if secret else problem)
    return problems


def api_exposure(cfg: StackConfig) -> list[str]:
    """Who may reach the Kubernetes API (6443): production must say it; the firewall enforces it."""
    k3s, problems = cfg.k3s, []
    if cfg.environment == "production" and not k3s.api_allow_from:
        problems.append("sophia:k3s.apiAllowFrom: is empty, which would open the Kubernetes API (6443) of this production stack to every address; list the networks CI and operators connect from (e.g. [198.51.100.0/24]), or write apiAllowFrom: [any] to open it on purpose.")
    if not k3s.api_open_to_any and not k3s.firewall:
        problems.append("sophia:k3s.apiAllowFrom: lists sources, but sophia:k3s.firewall is false, so nothing limits the API to them; set firewall: true or remove apiAllowFrom.")
    return problems


def address_check(cfg: StackConfig) -> list[str]:
    """Addresses against what consumes them: K3s's node-ip, ufw rules, the pod and service
    ranges. Messages name the host, never its address (sophia:hosts may be a secret)."""
    problems: list[str] = []
    k3s = cfg.k3s
    ranges = {"clusterCidr": ipaddress.ip_network(k3s.cluster_cidr), "serviceCidr": ipaddress.ip_network(k3s.service_cidr)}
    for _, key in check.overlapping(ranges.items()):
        problems.append(f"sophia:k3s.{key}: {k3s.service_cidr} overlaps clusterCidr {k3s.cluster_cidr}, so pod and "
                        "service addresses would collide; give them disjoint ranges (K3s's defaults are "
                        "10.42.0.0/16 and 10.43.0.0/16).")
    for name, host in sorted(cfg.hosts.items()):
        path = f"sophia:hosts.{name}"
        if host.private_address is not None:
            if not check.is_ip(host.private_address):
                problems.append(f"{path}.privateAddress: K3s's node-ip takes an IP address, not a DNS name; give the host's private IP address.")
            elif not check.is_ip(host.address):
                problems.append(f"{path}.address: with a privateAddress, the address becomes K3s's node-external-ip, which takes an IP address; give the host's public IP address.")
        for field, addr in (("address", host.address), ("privateAddress", host.private_address)):
            if addr is None or (field == "privateAddress" and not check.is_ip(addr)):
                continue  # said above
            if not check.is_ip(addr):
                if k3s.firewall:
                    problems.append(f"{path}.{field}: sophia:k3s.firewall is on and ufw rules take IP addresses only (`ufw allow from` refuses a DNS name); give the host's IP address.")
                elif cfg.platform.network.node_cidrs is None:
                    problems.append(f"{path}.{field}: a DNS name leaves the NetworkPolicies without the node's address, so they would allow every address (0.0.0.0/0); give the host's IP address or list the nodes' networks in sophia:platform.network.nodeCidrs.")
                continue
            ip = ipaddress.ip_address(addr)
            for key, net in ranges.items():
                if ip.version == net.version and ip in net:
                    problems.append(f"{path}.{field}: the host's address lies inside sophia:k3s.{key} ({net}), where K3s gives out pod or service addresses; pick a {key} that no host is in.")
    return problems + shared_addresses(cfg) + address_families(cfg)


def address_families(cfg: StackConfig) -> list[str]:
    """A server's node-ip (its privateAddress, else its address) in the family of the pod and
    service ranges: K3s does not start an IPv6 server in an IPv4-only cluster."""
    k3s = cfg.k3s
    if any(ipaddress.ip_network(c).version == 6 for c in (k3s.cluster_cidr, k3s.service_cidr)):
        return []
    problems = []
    for node in cfg.nodes:
        host = cfg.hosts.get(node.name)
        if node.role != "control-plane" or host is None:
            continue
        field, addr = ("privateAddress", host.private_address) if host.private_address else ("address", host.address)
        if check.is_ip(addr) and ipaddress.ip_address(addr).version == 6:
            problems.append(f"sophia:hosts.{node.name}.{field}: the control plane's node address is IPv6, but "
                            "sophia:k3s.clusterCidr and serviceCidr are IPv4 ranges, so K3s would not start; give the "
                            "node an IPv4 address, or set IPv6 ranges as clusterCidr and serviceCidr.")
    return problems


def _same_address_key(addr: str) -> str:
    """One spelling per address: 2001:DB8::1 and 2001:db8:0::1 are one host, as are DNS names in any case."""
    try:
        return str(ipaddress.ip_address(addr))
    except ValueError:
        return addr.lower().rstrip(".")


def shared_addresses(cfg: StackConfig) -> list[str]:
    """Two nodes given one address (public or private): K3s would see one host join twice,
    and SSH would set both up on the same machine. Names the keys, never the address."""
    first: dict[str, str] = {}
    problems = []
    for name, host in sorted(cfg.hosts.items()):
        for field, addr in (("address", host.address), ("privateAddress", host.private_address)):
            if addr is None:
                continue
            key, path = _same_address_key(addr), f"sophia:hosts.{name}.{field}"
            other = first.setdefault(key, path)
            if other != path and not other.startswith(f"sophia:hosts.{name}."):
                problems.append(f"{path}: is the same address as {other}, so two nodes would be one host; give each node its own address.")
    return problems


def placement_check(cfg: StackConfig) -> list[str]:
    """The control plane is tainted (CriticalAddonsOnly=true:NoExecute) so that workloads never
    run next to etcd: a placement must name a GPU type some worker has."""
    problems = []
    worker_types = {n.gpu.type for n in cfg.nodes if n.gpu and n.role == "worker"}
    for i, svc in enumerate(cfg.services):
        gpu_type = svc.placement.gpu_type if svc.placement else None
        if gpu_type and cfg.nodes_with_gpu(gpu_type) and gpu_type not in worker_types:
            problems.append(f"sophia:services[{i}].placement.gpuType: only control-plane nodes have a {gpu_type} GPU, and the control plane is tainted CriticalAddonsOnly=true:NoExecute so that workloads never run next to etcd; place '{svc.name}' on a worker's GPU type ({', '.join(sorted(worker_types)) or 'this stack has none'}) or add a {gpu_type} worker.")
    return problems


def cross_check(cfg: StackConfig) -> list[str]:
    """Checks that span several keys: inventory, placement, capacity, architectures."""
    problems: list[str] = api_exposure(cfg) + address_check(cfg) + cfg.k3s.host_exposure(cfg)

    for kind, names in (("node", [n.name for n in cfg.nodes]), ("service", [s.name for s in cfg.services])):
        for name, count in Counter(names).items():
            if count > 1:
                problems.append(f"sophia:{kind}s: the {kind} name '{name}' is used {count} times; give each {kind} a unique name.")

    inits = [i for i, n in enumerate(cfg.nodes) if n.cluster_init]
    if not inits:
        problems.append("sophia:nodes: no node has clusterInit: true; mark exactly one control-plane node as the first server.")
    elif len(inits) > 1:
        paths = ", ".join(f"sophia:nodes[{i}]" for i in inits)
        problems.append(f"sophia:nodes: {len(inits)} nodes have clusterInit: true ({paths}); keep it on exactly one control-plane node.")
    for i, n in enumerate(cfg.nodes):
        if n.cluster_init and n.role != "control-plane":
            problems.append(f"sophia:nodes[{i}].clusterInit: a {n.role} cannot start the cluster; set role: control-plane or remove clusterInit.")
        if n.name not in cfg.hosts and n.provision is None:
            problems.append(f"sophia:hosts.{n.name}: node '{n.name}' has no address; add it to the ESC environment under sophia:hosts, or provision it (sophia:nodes[{i}].provision).")
    for name in cfg.hosts:
        if name not in {n.name for n in cfg.nodes}:
            problems.append(f"sophia:hosts.{name}: there is no node named '{name}'; remove the address or add the node to sophia:nodes.")

    # Workloads run on the workers (the control plane is tainted), unless there are none.
    schedulable = [n for n in cfg.nodes if n.role == "worker"] or list(cfg.nodes)
    cluster_platforms = {n.platform for n in schedulable}
    demand: Counter[str] = Counter()
    for i, svc in enumerate(cfg.services):
        path = f"sophia:services[{i}]"
        if svc.max_replicas is not None and svc.max_replicas < svc.replicas:
            problems.append(f"{path}.maxReplicas: {svc.max_replicas} is below replicas ({svc.replicas}); raise maxReplicas or lower replicas.")
        if svc.placement is None:
            if svc.gpu:
                problems.append(f"{path}.placement: '{svc.name}' requests {svc.gpu} GPU(s) but has no placement; set placement.gpuType.")
            if not cluster_platforms & set(svc.image.platforms):
                problems.append(f"{path}.image.platforms: no node runs {', '.join(svc.image.platforms)}; build the image for {', '.join(sorted(cluster_platforms))}.")
            continue
        gpu_type = svc.placement.gpu_type
        targets = [n for n in cfg.nodes_with_gpu(gpu_type) if n in schedulable]
        if gpu_type not in GPU_TYPES:
            problems.append(f"{path}.placement.gpuType: unknown GPU type '{gpu_type}'; use one of {', '.join(GPU_TYPES)}.")
            continue
        if not targets:
            if cfg.nodes_with_gpu(gpu_type):
                continue  # only the tainted control plane has it: placement_check says so
            have = sorted({n.gpu.type for n in cfg.nodes if n.gpu})
            problems.append(f"{path}.placement.gpuType: no node has a {gpu_type} GPU (this stack has {', '.join(have) or 'none'}); place '{svc.name}' on one of those or add a {gpu_type} node.")
            continue
        missing = sorted({n.platform for n in targets} - set(svc.image.platforms))
        if missing:
            problems.append(f"{path}.image.platforms: '{svc.name}' is placed on {gpu_type} nodes, which run {', '.join(missing)}, but its image declares only {', '.join(svc.image.platforms)}; build and declare a {', '.join(missing)} image.")
        if svc.gpu:
            shared = any(n.gpu.sharing > 1 for n in targets if n.gpu)
            largest = max(n.gpu.capacity for n in targets if n.gpu)
            if shared and svc.gpu > 1:
                problems.append(f"{path}.gpu: {gpu_type} GPUs are time-sliced, where a pod may request only 1 GPU; request 1 or turn sharing off for {gpu_type}.")
            elif svc.gpu > largest:
                problems.append(f"{path}.gpu: one pod requests {svc.gpu} GPUs but the largest {gpu_type} node offers {largest}; request at most {largest}.")
            demand[gpu_type] += svc.gpu * svc.peak_replicas

    for gpu_type, wanted in sorted(demand.items()):
        have = sum(n.gpu.capacity for n in cfg.nodes_with_gpu(gpu_type) if n.gpu and n in schedulable)
        if wanted > have:
            users = ", ".join(s.name for s in cfg.services if s.gpu and s.placement and s.placement.gpu_type == gpu_type)
            problems.append(f"sophia:services: {users} request {wanted} {gpu_type} GPUs at peak replicas but the {gpu_type} nodes offer {have} (counting sharing); lower gpu or replicas, raise sharing, or add {gpu_type} nodes.")
    return (problems + placement_check(cfg) + image_check(cfg) + lambda_config.cross_check(cfg)
            + platform_settings.cross_check(cfg) + service_settings.cross_check(cfg))


def image_check(cfg: StackConfig) -> list[str]:
    """Image repositories in Docker's reference grammar (they land in the chart's values)."""
    problems = []
    for i, svc in enumerate(cfg.services):
        try:
            check.image_repository(svc.image.repository)
        except ValueError as why:
            problems.append(f"sophia:services[{i}].image.repository: {why}.")
    return problems


SecretLookup = Callable[[str], Optional[bool]]
"""Given a secret config key: None when unset, else whether it is marked secret."""
SecretValue = Callable[[str], Optional[str]]
"""Given a secret config key: its value (None when unset). Only ever tested, never shown."""


def check_secrets(cfg: StackConfig, lookup: SecretLookup, secret_value: Optional[SecretValue] = None) -> list[str]:
    problems = []
    for key, needed_by in sorted(cfg.required_secrets().items()):
        state = lookup(key)
        if state is None:
            problems.append(f"sophia:{key}: the secret is missing (needed by {needed_by}); add it to the stack's ESC environment under values.pulumiConfig with fn::secret.")
        elif state is False:
            problems.append(f"sophia:{key}: the value is stored in plain text; store it with fn::secret in ESC (or `pulumi config set --secret`).")
        elif secret_value is not None and not (secret_value(key) or "").strip():
            problems.append(f"sophia:{key}: the secret is empty or only whitespace (needed by {needed_by}); store the real value with fn::secret in ESC.")
    return problems


def parse(raw: dict[str, Any], lookup: SecretLookup, secret_value: Optional[SecretValue] = None,
          other_keys: Iterable[str] = ()) -> StackConfig:
    """Validate raw config values (top-level key -> value) into a StackConfig.

    `raw` holds every plain `sophia:` key that was passed (None = unset); keys outside the
    schema are refused by name, as are `other_keys` (the passed keys of other namespaces)
    whose namespace misspells `sophia`. Secrets are not in `raw`: `lookup` answers for them, and
    `secret_value` (when given) lets an empty secret be refused. A schema key given as a
    secret (sophia:hosts with fn::secret) is in `raw` and `lookup` says it is secret: its
    value is never shown in a message, and `cfg.is_secret(key)` keeps it secret in outputs."""
    aliases = {name: f.alias or name for name, f in StackConfig.model_fields.items()}
    given = {k: v for k, v in raw.items() if k in TOP_LEVEL_KEYS and v is not None}
    secret_values = {k: v for k, v in given.items() if lookup(k)}
    misplaced = misplaced_keys(other_keys)
    try:
        cfg = StackConfig.model_validate(given)
    except ValidationError as err:
        raise ConfigError(misplaced + _unknown_top_level_keys(raw, lookup, None)
                          + _pydantic_problems(err, aliases, secret_values)) from None
    cfg._secret_keys = frozenset(secret_values)
    problems = (misplaced + _unknown_top_level_keys(raw, lookup, set(cfg.required_secrets()))
                + cross_check(cfg) + check_secrets(cfg, lookup, secret_value))
    for value in secret_values.values():
        problems = [_redact(p, value) for p in problems]
    if problems:
        raise ConfigError(problems)
    return cfg


def _passed_config() -> dict[str, Any]:
    """Every key the engine passed (`namespace:key`). The language host hands the program all
    of its config at start (pulumi.runtime.config), which is where pulumi.Config reads from
    too; PULUMI_CONFIG is the older way of passing it."""
    from pulumi.runtime import config as runtime_config

    return {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}


def _passed_keys() -> dict[str, Any]:
    """Every `sophia:` key the engine passed, without the namespace."""
    prefix = f"{NAMESPACE}:"
    return {k[len(prefix):]: v for k, v in _passed_config().items() if k.startswith(prefix)}


def _other_namespace_keys() -> list[str]:
    return [k for k in _passed_config() if not k.startswith(f"{NAMESPACE}:")]


def _read_pulumi_config() -> tuple[dict[str, Any], SecretLookup]:
    import pulumi

    config = pulumi.Config(NAMESPACE)
    raw: dict[str, Any] = {}
    problems = []
    for key, structured in TOP_LEVEL_KEYS.items():
        text = config.get(key)
        if text is None or not structured:
            raw[key] = text
            continue
        try:
            raw[key] = json.loads(text)
        except json.JSONDecodeError:
            problems.append(f"sophia:{key}: the value is not structured YAML (an object or a list); write it as a YAML mapping or list in the stack file.")
    if problems:
        raise ConfigError(problems)

    def lookup(key: str) -> Optional[bool]:
        full = f"{NAMESPACE}:{key}"
        if pulumi.runtime.get_config(full) is None:
            return None
        return pulumi.runtime.is_config_secret(full)

    for key, value in _passed_keys().items():
        if key not in raw and not lookup(key):
            raw[key] = value  # not read by the schema: kept (plain only) so parse can name it

    return raw, lookup


def check_stack_name(cfg: StackConfig, stack: str) -> list[str]:
    """A stack named like an environment must be that environment (a copied stack file)."""
    if stack in ENVIRONMENTS and stack != cfg.environment:
        return [f"sophia:environment: the stack is named '{stack}' but its configuration says {cfg.environment}; set sophia:environment: {stack} in Pulumi.{stack}.yaml."]
    return []


def _secret_value(key: str) -> Optional[str]:
    import pulumi

    return pulumi.runtime.get_config(f"{NAMESPACE}:{key}")


def load() -> StackConfig:
    """Read and validate the current stack's configuration, or raise ConfigError."""
    import pulumi

    raw, lookup = _read_pulumi_config()
    cfg = parse(raw, lookup, _secret_value, _other_namespace_keys())
    problems = check_stack_name(cfg, pulumi.get_stack())
    if problems:
        raise ConfigError(problems)
    return cfg
