"""Config schema of the GPU and platform layer (`sophia:platform`).

Every field has a default, so a stack file needs no `sophia:platform` key at all; a stack
sets only what it changes, e.g.

    sophia:platform:
      postgres: {instances: 3, storageSize: 50Gi}
      monitoring: {retention: 30d}
      quotas:
        sophia-mcp: {cpu: "32", memory: 128Gi}
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal, Optional

from pydantic import Field, StrictFloat, StrictInt, field_validator

from sophia_infra.program.config import chart_crds, names
from sophia_infra.program.config import validators as check
from sophia_infra.program.config.models import Resources, Strict
from sophia_infra.program.config.models import quantity as _quantity

_DURATION = re.compile(r"[0-9]+(ms|s|m|h|d|w|y)")
# Prometheus' --storage.tsdb.retention.size units.
_SIZE = re.compile(r"[0-9]+(B|KB|MB|GB|TB|PB|EB)")
# An LLM model id as OpenRouter names them (provider/model[:variant]).
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9._:-]+)*")


def _duration(v: str, example: str = "15d or 360h") -> str:
    if not _DURATION.fullmatch(v):
        raise ValueError(f"{check.show(v)} is not a Prometheus duration; write it like {example}")
    return v

if TYPE_CHECKING:
    from sophia_infra.program.config.stack import StackConfig


def _res(cpu_request: str, memory_request: str, cpu_limit: str, memory_limit: str) -> Resources:
    return Resources(cpuRequest=cpu_request, memoryRequest=memory_request, cpuLimit=cpu_limit, memoryLimit=memory_limit)


class Quota(Strict):
    """ResourceQuota of one namespace. `gpu` unset = the cluster's GPU capacity (count x sharing)
    for the namespaces that run GPU workloads, 0 elsewhere."""

    cpu: str = "16"
    memory: str = "64Gi"
    gpu: Optional[StrictInt] = Field(default=None, ge=0, le=10000)

    _q = field_validator("cpu", "memory")(classmethod(lambda cls, v: _quantity(v)))


DEFAULT_QUOTAS: dict[str, Quota] = {
    names.APPS: Quota(cpu="16", memory="32Gi"),
    names.MCP: Quota(cpu="32", memory="64Gi"),
    names.DATA: Quota(cpu="16", memory="64Gi"),
    names.MONITORING: Quota(cpu="16", memory="48Gi"),
    names.ARGOCD: Quota(cpu="8", memory="16Gi"),
    names.INGRESS: Quota(cpu="8", memory="8Gi"),
    names.GPU: Quota(cpu="16", memory="32Gi"),
    names.CERT_MANAGER: Quota(cpu="2", memory="2Gi"),
}
# Namespaces whose workloads may request nvidia.com/gpu (the services' kinds live here).
GPU_WORKLOAD_NAMESPACES = (names.APPS, names.MCP)


class LimitDefaults(Strict):
    """LimitRange defaults applied to containers that set no requests/limits."""

    default_cpu: str = Field(default="500m", alias="defaultCpu")
    default_memory: str = Field(default="512Mi", alias="defaultMemory")
    default_request_cpu: str = Field(default="100m", alias="defaultRequestCpu")
    default_request_memory: str = Field(default="128Mi", alias="defaultRequestMemory")
    max_cpu: str = Field(default="16", alias="maxCpu")
    max_memory: str = Field(default="64Gi", alias="maxMemory")

    _q = field_validator("default_cpu", "default_memory", "default_request_cpu", "default_request_memory",
                         "max_cpu", "max_memory")(classmethod(lambda cls, v: _quantity(v)))


class Network(Strict):
    """Addresses the NetworkPolicies need (pod and service ranges: sophia:k3s)."""

    # Where the API server (and the kubelets / webhooks' callers) live. Unset = every node's
    # address from sophia:hosts as /32 (0.0.0.0/0 when a host is given by DNS name).
    node_cidrs: Optional[list[str]] = Field(default=None, alias="nodeCidrs")
    # Ports the pods of apps and MCP servers may reach on the internet (SaaS APIs).
    internet_ports: list[check.Port] = Field(default_factory=lambda: [443], alias="internetPorts")

    # Both become NetworkPolicy `to`/`ports` lists, where an empty list means every address
    # (every port): empty is refused, not read as "none".
    @field_validator("node_cidrs")
    @classmethod
    def _cidrs(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        if v is not None and not v:
            raise ValueError("an empty list would become an empty NetworkPolicy `to`, which Kubernetes reads as every address; "
                             "list the nodes' networks, or leave nodeCidrs out to use every node's address")
        for c in v or []:
            check.network(c, "CIDR", "203.0.113.10/32")
        return v

    @field_validator("internet_ports")
    @classmethod
    def _ports(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("an empty list would become an empty NetworkPolicy `ports`, which Kubernetes reads as every port; "
                             "list the ports (e.g. [443]), or leave internetPorts out for 443 only")
        return v


class DevicePlugin(Strict):
    gpu_feature_discovery: bool = Field(default=False, alias="gpuFeatureDiscovery")
    resources: Resources = Field(default_factory=lambda: _res("50m", "64Mi", "200m", "256Mi"))


class GpuMetrics(Strict):
    resources: Resources = Field(default_factory=lambda: _res("100m", "128Mi", "500m", "512Mi"))
    # Alert thresholds of the GPU PrometheusRule.
    idle_utilization_percent: StrictInt = Field(default=5, ge=0, le=100, alias="idleUtilizationPercent")
    idle_for: str = Field(default="2h", alias="idleFor")
    memory_pressure_ratio: StrictFloat = Field(default=0.9, gt=0, le=1, alias="memoryPressureRatio")

    @field_validator("idle_for")
    @classmethod
    def _for(cls, v: str) -> str:
        return _duration(v, "2h or 30m")


class PostgresBackup(Strict):
    """Backups to S3-compatible storage through the CNPG Barman Cloud plugin (cert-manager
    issues its TLS certificates). Unset `enabled` = on in production, off elsewhere; a
    production stack turns them off only with a reason in `optOut`."""

    enabled: Optional[bool] = None
    # Why a production stack runs without backups (printed by preview and the plan).
    opt_out: Optional[str] = Field(default=None, alias="optOut")
    bucket: Optional[str] = None
    endpoint: Optional[str] = None  # https URL of the S3-compatible endpoint
    path: str = "postgres"
    region: Optional[str] = None
    schedule: check.Cron6 = "0 0 3 * * *"  # CNPG cron: seconds first
    retention: str = "30d"
    # Secret config keys holding the S3 access key pair: a pair of its own (ESC
    # sophia.data.postgres.backup_s3_*), since the database pods hold it.
    access_key_config: str = Field(default="postgresBackupAccessKey", alias="accessKeyConfig")
    secret_key_config: str = Field(default="postgresBackupSecretKey", alias="secretKeyConfig")

    @field_validator("opt_out")
    @classmethod
    def _reason(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and (not v.strip() or len(v) > 200 or any(c in v for c in "\r\n\t")):
            raise ValueError("give the reason for running without backups as one line of at most 200 characters")
        return v

    @field_validator("retention")
    @classmethod
    def _retention(cls, v: str) -> str:
        if not re.fullmatch(r"[1-9][0-9]*[dwm]", v):
            raise ValueError(f"{check.show(v)} is not a retention; write it like 30d, 4w or 3m")
        return v

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else check.s3_bucket(v)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else check.url(v, ("https", "http"), "S3 endpoint")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return check.s3_prefix(v)

    @field_validator("region")
    @classmethod
    def _region(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else check.s3_region(v)

    @field_validator("access_key_config", "secret_key_config")
    @classmethod
    def _key(cls, v: str) -> str:
        return check.secret_key_name(v)


_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})")


class PostgresRecovery(Strict):
    """Bootstrap the Cluster from a backup (bootstrap.recovery through the Barman Cloud plugin)
    instead of initdb: the base backup and WALs the old cluster `serverName` left in the
    object store, replayed up to `targetTime` (unset: the end of the archive)."""

    # The old cluster's name: its folder in the object store (<path>/<serverName>/).
    server_name: str = Field(alias="serverName")
    # Where the old cluster's backups are; unset = sophia:platform.postgres.backup's.
    bucket: Optional[str] = None
    path: Optional[str] = None
    target_time: Optional[str] = Field(default=None, alias="targetTime")

    @field_validator("server_name")
    @classmethod
    def _server(cls, v: str) -> str:
        return check.dns1035_label(v, "CloudNativePG cluster name", check.CNPG_CLUSTER_NAME_MAX)

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else check.s3_bucket(v)

    @field_validator("path")
    @classmethod
    def _path(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else check.s3_prefix(v)

    @field_validator("target_time")
    @classmethod
    def _time(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            from datetime import datetime
            try:
                ok = bool(_RFC3339.fullmatch(v)) and datetime.fromisoformat(v.replace("Z", "+00:00")) is not None
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"{check.show(v)} is not an RFC 3339 time with a zone; write it like 2026-11-23T10:30:00Z")
        return v


class PostgresCluster(Strict):
    """One CloudNativePG cluster the stack keeps (`sophia:platform.postgres.clusters.<name>`):
    initdb, or with `recovery` restored from the backups of another cluster."""

    recovery: Optional[PostgresRecovery] = None


DEFAULT_POSTGRES_CLUSTER = "sophia-postgres"


class Postgres(Strict):
    # The cluster the apps use (postgresHost, the backend's POSTGRES_HOST and NetworkPolicies).
    # CNPG's webhook: a DNS-1035 label of at most 50 (it adds -rw, -ro, -r, -1, ... to it).
    cluster_name: str = Field(default=DEFAULT_POSTGRES_CLUSTER, alias="clusterName")
    # Every cluster the stack keeps, by name; unset = clusterName alone. A cluster is only ever
    # removed by taking it out of this map (production: after `pulumi state unprotect`).
    clusters: Optional[dict[str, PostgresCluster]] = None
    instances: StrictInt = Field(default=2, ge=1, le=9)
    # The application database and its owner: plain config (they are names, not credentials),
    # in the CNPG Cluster's bootstrap and the backend's environment; the password is a secret.
    database: str = "sophia"
    owner: str = "sophia"
    storage_size: str = Field(default="20Gi", alias="storageSize")
    storage_class: check.ClassName = Field(default="local-path", alias="storageClass")
    resources: Resources = Field(default_factory=lambda: _res("500m", "1Gi", "2", "4Gi"))
    operator_resources: Resources = Field(default_factory=lambda: _res("100m", "128Mi", "500m", "512Mi"), alias="operatorResources")
    backup: PostgresBackup = Field(default_factory=PostgresBackup)
    # The old form (a recovery of clusterName itself), refused with where it moved: together with a
    # new clusterName it made Pulumi delete the live cluster.
    recovery: Optional[PostgresRecovery] = None

    _q = field_validator("storage_size")(classmethod(lambda cls, v: _quantity(v)))

    @field_validator("cluster_name")
    @classmethod
    def _cluster_name(cls, v: str) -> str:
        return check.dns1035_label(v, "CloudNativePG cluster name", check.CNPG_CLUSTER_NAME_MAX)

    @field_validator("clusters")
    @classmethod
    def _clusters(cls, v: Optional[dict[str, PostgresCluster]]) -> Optional[dict[str, PostgresCluster]]:
        if v is not None and not v:
            raise ValueError("an empty map would leave no PostgreSQL cluster; list the clusters to keep, or leave clusters out for clusterName alone")
        for name in v or {}:
            check.dns1035_label(name, "CloudNativePG cluster name", check.CNPG_CLUSTER_NAME_MAX)
        return v

    def all_clusters(self) -> dict[str, Optional[PostgresRecovery]]:
        """CNPG cluster name -> its recovery (None: initdb), the serving cluster included."""
        if self.clusters is None:
            return {self.cluster_name: None}
        return {name: c.recovery for name, c in self.clusters.items()}

    @field_validator("database")
    @classmethod
    def _database(cls, v: str) -> str:
        check.postgres_identifier(v, "database")
        if v in ("postgres", "template0", "template1"):
            raise ValueError(f"'{v}' is one of PostgreSQL's own databases; name the application's database, such as sophia")
        return v

    @field_validator("owner")
    @classmethod
    def _owner(cls, v: str) -> str:
        check.postgres_identifier(v, "role")
        if v == "postgres" or v.startswith("pg_") or v in ("streaming_replica", "cnpg_pooler_pgbouncer"):
            raise ValueError(f"'{v}' is a role PostgreSQL or CloudNativePG keeps for itself; name the application's owner, such as sophia")
        return v


class Valkey(Strict):
    replicas: StrictInt = Field(default=2, ge=0, le=8)  # read replicas besides the primary
    # How the primary keeps its data on its PersistentVolume across restarts: the append-only
    # file (every write, fsync each second) or RDB snapshots (`save` points).
    persistence: Literal["aof", "rdb"] = "aof"
    storage_size: str = Field(default="8Gi", alias="storageSize")
    storage_class: check.ClassName = Field(default="local-path", alias="storageClass")
    resources: Resources = Field(default_factory=lambda: _res("100m", "256Mi", "1", "1Gi"))

    _q = field_validator("storage_size")(classmethod(lambda cls, v: _quantity(v)))


class Ingress(Strict):
    replicas: StrictInt = Field(default=2, ge=1, le=check.MAX_REPLICAS)
    resources: Resources = Field(default_factory=lambda: _res("100m", "128Mi", "1", "512Mi"))


class Monitoring(Strict):
    # Host name of a Grafana Ingress behind NGINX (with TLS); no Ingress when unset.
    grafana_host: Optional[str] = Field(default=None, alias="grafanaHost")
    retention: str = "15d"
    retention_size: Optional[str] = Field(default=None, alias="retentionSize")
    storage_size: str = Field(default="50Gi", alias="storageSize")
    storage_class: check.ClassName = Field(default="local-path", alias="storageClass")
    prometheus_resources: Resources = Field(default_factory=lambda: _res("500m", "2Gi", "2", "8Gi"), alias="prometheusResources")
    grafana_resources: Resources = Field(default_factory=lambda: _res("100m", "256Mi", "500m", "1Gi"), alias="grafanaResources")
    alertmanager_resources: Resources = Field(default_factory=lambda: _res("50m", "64Mi", "200m", "256Mi"), alias="alertmanagerResources")
    operator_resources: Resources = Field(default_factory=lambda: _res("100m", "128Mi", "500m", "512Mi"), alias="operatorResources")
    agent_resources: Resources = Field(default_factory=lambda: _res("50m", "64Mi", "250m", "256Mi"), alias="agentResources")

    @field_validator("retention")
    @classmethod
    def _duration(cls, v: str) -> str:
        return _duration(v)

    @field_validator("retention_size")
    @classmethod
    def _size(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not _SIZE.fullmatch(v):
            raise ValueError(f"{check.show(v)} is not a Prometheus retention size; write it like 45GB (B, KB, MB, GB, TB)")
        return v

    _q = field_validator("storage_size")(classmethod(lambda cls, v: _quantity(v)))

    @field_validator("grafana_host")
    @classmethod
    def _host(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else check.ingress_host(v)


class Tls(Strict):
    """ACME (Let's Encrypt) certificates for every Ingress host, through cert-manager's
    HTTP-01 solver on the NGINX ingress class."""

    # The ACME account's contact address (expiry and policy mail from Let's Encrypt).
    email: Optional[str] = None
    server: Literal["staging", "production"] = "staging"

    @field_validator("email")
    @classmethod
    def _email(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and (len(v) > 254 or not re.fullmatch(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+", v)):
            raise ValueError(f"{check.show(v)} is not an e-mail address; give the ACME account's contact, e.g. platform@example.com")
        return v


class CertManager(Strict):
    resources: Resources = Field(default_factory=lambda: _res("50m", "64Mi", "250m", "256Mi"))
    webhook_resources: Resources = Field(default_factory=lambda: _res("20m", "32Mi", "200m", "128Mi"), alias="webhookResources")
    cainjector_resources: Resources = Field(default_factory=lambda: _res("20m", "64Mi", "200m", "256Mi"), alias="cainjectorResources")


class LlmGateway(Strict):
    """Portkey in front of OpenRouter: non-secret routing settings for the backend."""

    portkey_base_url: str = Field(default="https://api.portkey.ai/v1", alias="portkeyBaseUrl")
    openrouter_base_url: str = Field(default="https://openrouter.ai/api/v1", alias="openrouterBaseUrl")
    default_model: str = Field(default="openai/gpt-4o", alias="defaultModel")
    fallback_models: list[str] = Field(default_factory=lambda: ["anthropic/claude-3.5-sonnet"], alias="fallbackModels")
    retries: StrictInt = Field(default=3, ge=0, le=10)
    timeout_seconds: StrictInt = Field(default=60, ge=1, le=3600, alias="timeoutSeconds")

    @field_validator("portkey_base_url", "openrouter_base_url")
    @classmethod
    def _https(cls, v: str) -> str:
        if check.url_has_credentials(v):
            raise ValueError("the URL carries a credential, which would land in a ConfigMap in plain text; remove it (the API keys reach the backend in its Secret)")
        return check.url(v, ("https",), "gateway base URL")

    @field_validator("default_model", "fallback_models")
    @classmethod
    def _models(cls, v):
        for m in [v] if isinstance(v, str) else v:
            if len(m) > 200 or not _MODEL.fullmatch(m):
                raise ValueError(f"{check.show(m)} is not a model id; write it like openai/gpt-4o")
        return v


ISTIO_CHARTS = ("istio-base", "istio-cni", "istiod")


class Istio(Strict):
    """Optional sidecar mesh for apps and MCP servers: istio-base, the Istio CNI node agent
    (so injected pods stay within the restricted Pod Security profile) and istiod, all pinned
    in sophia:charts at one version."""

    enabled: bool = False
    istiod_resources: Resources = Field(default_factory=lambda: _res("100m", "256Mi", "1", "1Gi"), alias="istiodResources")
    cni_resources: Resources = Field(default_factory=lambda: _res("50m", "64Mi", "200m", "256Mi"), alias="cniResources")


class PlatformSettings(Strict):
    quotas: dict[str, Quota] = Field(default_factory=dict)
    limits: LimitDefaults = Field(default_factory=LimitDefaults)
    network: Network = Field(default_factory=Network)
    device_plugin: DevicePlugin = Field(default_factory=DevicePlugin, alias="devicePlugin")
    gpu_metrics: GpuMetrics = Field(default_factory=GpuMetrics, alias="gpuMetrics")
    postgres: Postgres = Field(default_factory=Postgres)
    valkey: Valkey = Field(default_factory=Valkey)
    ingress: Ingress = Field(default_factory=Ingress)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    llm_gateway: LlmGateway = Field(default_factory=LlmGateway, alias="llmGateway")
    istio: Istio = Field(default_factory=Istio)
    tls: Tls = Field(default_factory=Tls)
    cert_manager: CertManager = Field(default_factory=CertManager, alias="certManager")

    def quota(self, namespace: str) -> Quota:
        return self.quotas.get(namespace, DEFAULT_QUOTAS[namespace])


# ----------------------------------------------------------------------------- derived

def total_gpu_capacity(cfg: "StackConfig") -> int:
    """Schedulable nvidia.com/gpu units of the whole cluster: sum over nodes of count x sharing."""
    return sum(n.gpu.capacity for n in cfg.nodes if n.gpu)


def gpu_demand(cfg: "StackConfig", namespace: str) -> int:
    """nvidia.com/gpu the services of one namespace request at peak replicas."""
    kind = {ns: kind for kind, ns in names.SERVICE_NAMESPACES.items()}.get(namespace)
    return sum(s.gpu * s.peak_replicas for s in cfg.services if s.kind == kind)


def gpu_quota(cfg: "StackConfig", namespace: str) -> int:
    """The `requests.nvidia.com/gpu` quota of a namespace."""
    explicit = cfg.platform.quota(namespace).gpu
    if explicit is not None:
        return explicit
    return total_gpu_capacity(cfg) if namespace in GPU_WORKLOAD_NAMESPACES else 0


def postgres_backups(cfg: "StackConfig") -> bool:
    """Whether the PostgreSQL cluster is backed up: as said, else on in production unless opted out."""
    b = cfg.platform.postgres.backup
    if b.enabled is not None:
        return b.enabled
    return cfg.environment == "production" and b.opt_out is None


def postgres_clusters(cfg: "StackConfig") -> dict[str, Optional[PostgresRecovery]]:
    """Every CloudNativePG cluster of the stack -> its recovery (None: initdb)."""
    return cfg.platform.postgres.all_clusters()


def object_store_needed(cfg: "StackConfig") -> bool:
    """Backups, or a recovery that reads the backup's object store (and its keys)."""
    return postgres_backups(cfg) or any(r is not None for r in postgres_clusters(cfg).values())


def tls_hosts(cfg: "StackConfig") -> dict[str, str]:
    """Ingress host -> what serves it, for every Ingress the stack creates."""
    hosts = {}
    if cfg.workloads.frontend_host:
        hosts[cfg.workloads.frontend_host] = "sophia:workloads.frontendHost"
    if cfg.delivery == "argocd" and cfg.argocd.ingress_host:
        hosts[cfg.argocd.ingress_host] = "sophia:argocd.ingressHost"
    if cfg.platform.monitoring.grafana_host:
        hosts[cfg.platform.monitoring.grafana_host] = "sophia:platform.monitoring.grafanaHost"
    return hosts


def required_secrets(cfg: "StackConfig") -> dict[str, str]:
    """Secret config key -> what needs it."""
    needed = {
        "grafanaAdminPassword": "sophia:platform (Grafana admin)",
        "postgresPassword": "sophia:platform.postgres (application owner)",
        "redisPassword": "sophia:platform.valkey (auth)",
    }
    backup = cfg.platform.postgres.backup
    if object_store_needed(cfg):
        needed[backup.access_key_config] = "sophia:platform.postgres.backup"
        needed[backup.secret_key_config] = "sophia:platform.postgres.backup"
    return needed


def cross_check(cfg: "StackConfig") -> list[str]:
    """Problems that span sophia:platform and other keys, one sentence each."""
    p = cfg.platform
    problems: list[str] = []
    known = set(DEFAULT_QUOTAS)
    for ns in p.quotas:
        if ns not in known:
            problems.append(f"sophia:platform.quotas.{ns}: there is no platform namespace '{ns}'; use one of {', '.join(sorted(known))}.")
    capacity = total_gpu_capacity(cfg)
    for ns in sorted(known):
        quota = gpu_quota(cfg, ns)
        demand = gpu_demand(cfg, ns)
        if quota < demand:
            problems.append(f"sophia:platform.quotas.{ns}.gpu: the quota allows {quota} nvidia.com/gpu but the services in {ns} request {demand} at peak replicas; raise the quota to at least {demand} (or leave it unset to use the capacity, {capacity}).")
        if quota > capacity:
            problems.append(f"sophia:platform.quotas.{ns}.gpu: the quota allows {quota} nvidia.com/gpu but the nodes offer only {capacity} (count x sharing); lower it to at most {capacity} or leave it unset.")
    lim = p.limits
    if _cpu(lim.default_request_cpu) > _cpu(lim.default_cpu):
        problems.append("sophia:platform.limits.defaultRequestCpu: the default request is above the default limit; lower it or raise defaultCpu.")
    if _mem(lim.default_request_memory) > _mem(lim.default_memory):
        problems.append("sophia:platform.limits.defaultRequestMemory: the default request is above the default limit; lower it or raise defaultMemory.")

    problems += backup_problems(cfg)
    if "cert-manager" not in cfg.charts:
        problems.append("sophia:charts.cert-manager: the platform installs cert-manager (certificates for the Ingress hosts and the Barman Cloud plugin) but it is not pinned; add {repository: https://charts.jetstack.io, version: v1.21.1} to sophia:charts.")
    hosts = tls_hosts(cfg)
    if hosts and not p.tls.email:
        first = next(iter(hosts.values()))
        problems.append(f"sophia:platform.tls.email: {first} is set, and every Ingress host gets a Let's Encrypt certificate, which needs an ACME account contact; set sophia:platform.tls.email (e.g. platform@example.com).")
    if p.istio.enabled:
        missing = [c for c in ISTIO_CHARTS if c not in cfg.charts]
        for chart in missing:
            problems.append(f"sophia:charts.{chart}: Istio is enabled but the {chart} chart is not pinned; add it to sophia:charts or set sophia:platform.istio.enabled: false.")
        versions = {cfg.charts[c].version for c in ISTIO_CHARTS if c in cfg.charts}
        if not missing and len(versions) > 1:
            problems.append(f"sophia:charts: istio-base, istio-cni and istiod are pinned at different versions ({', '.join(sorted(versions))}); pin them at one Istio release.")

    required_charts = ["nvidia-device-plugin", "dcgm-exporter", "kube-prometheus-stack", "nginx-ingress", "cloudnative-pg", "valkey"]
    for chart in required_charts:
        if chart not in cfg.charts:
            problems.append(f"sophia:charts.{chart}: the platform installs {chart} but it is not pinned; add {{repository, version}} for it to sophia:charts.")
    return problems + chart_crds.problems(cfg)


def backup_problems(cfg: "StackConfig") -> list[str]:
    """PostgreSQL backups and recovery against the environment and each other, one sentence each."""
    pg = cfg.platform.postgres
    backup, recovery = pg.backup, pg.recovery
    key = "sophia:platform.postgres.backup"
    problems: list[str] = []
    if cfg.environment == "production" and backup.enabled is False and backup.opt_out is None:
        problems.append(f"{key}.enabled: a production stack may not run PostgreSQL without backups; set enabled: true (with bucket and endpoint), or say why not in {key}.optOut.")
    if backup.enabled and backup.opt_out is not None:
        problems.append(f"{key}.optOut: backups are enabled, so there is nothing to opt out of; remove optOut or set enabled: false.")
    on = postgres_backups(cfg)
    if object_store_needed(cfg):
        why = "backups are on" if on else "recovery reads the object store"
        if cfg.environment == "production" and on and backup.enabled is None and not (backup.bucket and backup.endpoint):
            why = "backups are on by default in production"
        if not backup.bucket:
            problems.append(f"{key}.bucket: {why} but no bucket is set; set the bucket name, or opt out with {key}.optOut: <reason>.")
        if not backup.endpoint:
            problems.append(f"{key}.endpoint: {why} but the endpoint is not set; set the S3 endpoint as https://host[:port], or opt out with {key}.optOut: <reason>.")
        if "plugin-barman-cloud" not in cfg.charts:
            problems.append(f"sophia:charts.plugin-barman-cloud: {why} but the Barman Cloud plugin chart is not pinned; add it to sophia:charts.")
    if recovery is not None:
        # The old form renamed the one cluster: Pulumi then replaced it (.metadata.name is
        # force-new), deleting the live cluster and its volumes in the same `up`.
        problems.append(f"sophia:platform.postgres.recovery: a recovery now restores into a cluster of its own beside the current one; "
                        f"move it to sophia:platform.postgres.clusters.<new name>.recovery and list the current cluster there too "
                        f"(clusters: {{{pg.cluster_name}: {{}}, {pg.cluster_name}-2: {{recovery: ...}}}}), see docs/operating.md.")
    clusters = postgres_clusters(cfg)
    if pg.clusters is not None and pg.cluster_name not in clusters:
        problems.append(f"sophia:platform.postgres.clusterName: '{pg.cluster_name}' is not one of sophia:platform.postgres.clusters "
                        f"({', '.join(clusters)}); name the cluster the apps use, or add it to clusters.")
    for name, r in clusters.items():
        if r is None:
            continue
        same_store = (r.bucket or backup.bucket) == backup.bucket and (r.path or backup.path) == backup.path
        if r.server_name == name and same_store and on:
            problems.append(f"sophia:platform.postgres.clusters.{name}.recovery.serverName: is the cluster's own name ({name}), whose WAL archive the recovered cluster would write into; recover into a cluster of a new name (e.g. {name}-2).")
    return problems


_CPU = re.compile(r"([0-9.]+)(m?)")
_MEM_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def _cpu(q: str) -> float:
    m = _CPU.fullmatch(q)
    if not m:
        return float("inf")
    return float(m.group(1)) / (1000 if m.group(2) else 1)


def _mem(q: str) -> float:
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", q)
    return float(m.group(1)) * _MEM_UNITS.get(m.group(2), 1) if m else float("inf")
