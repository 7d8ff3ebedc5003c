"""Pure builders of the platform charts' Helm values and of the objects it creates.

Nothing secret goes into values or ConfigMaps: charts read the Secrets made by
`sophia_infra.program.platform.secrets` (names below) through their existingSecret-style keys.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from sophia_infra.program.config import names
from sophia_infra.program.config.stack import StackConfig
from sophia_infra.program.platform.tls import grafana_ingress_values
from sophia_infra.program.config.platform import Resources, object_store_needed, postgres_backups, postgres_clusters

# Release names (also the prefixes of the Services the charts create).
PROMETHEUS_RELEASE = "kube-prometheus-stack"
CNPG_RELEASE = "cloudnative-pg"
BARMAN_RELEASE = "plugin-barman-cloud"
VALKEY_RELEASE = "valkey"
INGRESS_RELEASE = "nginx-ingress"
INGRESS_CLASS = "nginx"

# Secrets the charts and CRs consume.
GRAFANA_ADMIN_SECRET = "grafana-admin"
GRAFANA_ROLE = "grafana-configmap-reader"
POSTGRES_APP_SECRET = "postgres-app"
VALKEY_USERS_SECRET = "valkey-users"
BACKUP_S3_SECRET = "postgres-backup-s3"
BARMAN_PLUGIN = "barman-cloud.cloudnative-pg.io"

LLM_GATEWAY_CONFIGMAP = "llm-gateway"

RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _svc(name: str, ns: str) -> str:
    return f"{name}.{ns}.svc.cluster.local"


# ----------------------------------------------------------------------------- monitoring

def grafana_url() -> str:
    return f"http://{_svc(PROMETHEUS_RELEASE + '-grafana', names.MONITORING)}:80"


def prometheus_url() -> str:
    return f"http://{_svc(PROMETHEUS_RELEASE + '-prometheus', names.MONITORING)}:9090"


# busybox of kube-prometheus-stack's CRD upgrade Job (it only runs bzcat on the packed CRDs).
CRD_UPGRADE_BUSYBOX_TAG = "1.37.0"


def kube_prometheus_stack_values(cfg: StackConfig) -> dict[str, Any]:
    m = cfg.platform.monitoring
    spec: dict[str, Any] = {
        "retention": m.retention,
        "resources": m.prometheus_resources.k8s(),
        "storageSpec": {"volumeClaimTemplate": {"spec": {
            "storageClassName": m.storage_class, "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": m.storage_size}}}}},
        # Select every ServiceMonitor/PodMonitor/PrometheusRule in the cluster, not just
        # those labelled release=kube-prometheus-stack (dcgm-exporter, CNPG, the services).
        "serviceMonitorSelectorNilUsesHelmValues": False,
        "podMonitorSelectorNilUsesHelmValues": False,
        "ruleSelectorNilUsesHelmValues": False,
        "probeSelectorNilUsesHelmValues": False,
        "scrapeConfigSelectorNilUsesHelmValues": False,
    }
    if m.retention_size:
        spec["retentionSize"] = m.retention_size
    return {
        # The CRDs sit in the `crds` subchart's crds/ folder, which Helm installs on the first
        # install only. The chart's upgrade Job (a pre-install/pre-upgrade/pre-rollback hook)
        # server-side applies the CRDs of the pinned chart version on every upgrade, so they
        # follow the pin. Its pods meet restricted; kubectl's image defaults to the cluster's
        # Kubernetes version (the K3s pin); the busybox one would be `latest`.
        "crds": {"upgradeJob": {
            "enabled": True,
            "image": {"busybox": {"tag": CRD_UPGRADE_BUSYBOX_TAG}},
            "resources": m.agent_resources.k8s(),
        }},
        # K3s runs the control plane inside the k3s process: there are no controller-manager,
        # scheduler, proxy or etcd pods to scrape, so their targets and rules would only alert.
        "kubeControllerManager": {"enabled": False},
        "kubeScheduler": {"enabled": False},
        "kubeProxy": {"enabled": False},
        "kubeEtcd": {"enabled": False},
        # (The chart drops those components' alert rules with them, and Windows monitoring is off by default.)
        "grafana": {
            "admin": {"existingSecret": GRAFANA_ADMIN_SECRET, "userKey": "admin-user", "passwordKey": "admin-password"},
            # Dashboards and datasources from ConfigMaps in monitoring only (the chart's default,
            # searchNamespace ALL with a ClusterRole, lets Grafana read every Secret in the
            # cluster): the chart binds Grafana to GRAFANA_ROLE, which the program writes with
            # read access to ConfigMaps alone; other charts put their dashboards in monitoring.
            "rbac": {"namespaced": True, "useExistingRole": GRAFANA_ROLE},
            "sidecar": {"dashboards": {"resource": "configmap", "searchNamespace": [names.MONITORING]},
                        "datasources": {"resource": "configmap"}},
            "resources": m.grafana_resources.k8s(),  # grafana subchart key
            **grafana_ingress_values(cfg),  # grafana subchart keys, with sophia:platform.monitoring.grafanaHost
        },
        "prometheus": {"prometheusSpec": spec},
        "alertmanager": {"alertmanagerSpec": {"resources": m.alertmanager_resources.k8s()}},
        "prometheusOperator": {
            "resources": m.operator_resources.k8s(),
            "prometheusConfigReloader": {"resources": m.agent_resources.k8s()},
            "admissionWebhooks": {"patch": {"resources": m.agent_resources.k8s()}},
        },
        "kube-state-metrics": {"resources": m.operator_resources.k8s()},  # subchart key
        # node-exporter needs hostNetwork, hostPID and hostPath: it runs in the one privileged
        # namespace, with the other node agents.
        # Every node, the tainted control plane (CriticalAddonsOnly:NoExecute) included: the
        # subchart's default tolerates only NoSchedule taints.
        "prometheus-node-exporter": {"namespaceOverride": names.GPU, "resources": m.agent_resources.k8s(),
                                     "tolerations": [{"operator": "Exists"}]},
    }


# ----------------------------------------------------------------------------- GPU metrics: see sophia_infra.program.platform.gpu

# ----------------------------------------------------------------------------- PostgreSQL

def postgres_host(cfg: StackConfig, read_only: bool = False) -> str:
    return _svc(f"{cfg.platform.postgres.cluster_name}-{'ro' if read_only else 'rw'}", names.DATA)


def cnpg_values(cfg: StackConfig) -> dict[str, Any]:
    return {
        "resources": cfg.platform.postgres.operator_resources.k8s(),
        "monitoring": {
            "podMonitorEnabled": True,
            "podMonitorAdditionalLabels": {"release": PROMETHEUS_RELEASE},
            # Into monitoring, where Grafana's sidecar reads dashboards (and nothing else).
            "grafanaDashboard": {"create": True, "namespace": names.MONITORING},
        },
    }


def barman_values(cfg: StackConfig) -> dict[str, Any]:
    # The chart's Issuer and Certificates (its TLS to the operator) are cert-manager's.
    return {"resources": cfg.platform.postgres.operator_resources.k8s()}


def object_store_name(cfg: StackConfig, cluster: Optional[str] = None) -> str:
    """The ObjectStore a cluster archives into (and reads a recovery from, when in the same place)."""
    return f"{cluster or cfg.platform.postgres.cluster_name}-backups"


RECOVERY_SOURCE = "origin"  # the externalClusters entry a recovery bootstraps from

# Ask pulumi-kubernetes (>= 4.18, pulumi/pulumi-kubernetes#3134) to wait, as `kubectl wait
# --for=condition=Ready` does, for CNPG's Ready condition (cloudnative-pg api/v1
# cluster_types.go: ConditionClusterReady = "Ready"): custom resources are otherwise not awaited,
# and a recovery would be "created" before a single WAL is replayed. A recovery replays WAL for
# as long as it takes: an hour before `pulumi up` gives up (the next `up` waits again).
CLUSTER_AWAIT = {"pulumi.com/waitFor": "condition=Ready", "pulumi.com/timeoutSeconds": "3600"}


def _recovery(cfg: StackConfig, cluster: str):
    return postgres_clusters(cfg).get(cluster)


def recovery_object_store_name(cfg: StackConfig, cluster: Optional[str] = None) -> str:
    """The ObjectStore a recovery reads: the backup's own, unless the old backups lie elsewhere."""
    cluster = cluster or cfg.platform.postgres.cluster_name
    r = _recovery(cfg, cluster)
    b = cfg.platform.postgres.backup
    if r is None or ((r.bucket or b.bucket) == b.bucket and (r.path or b.path) == b.path):
        return object_store_name(cfg, cluster)
    return f"{cluster}-recovery-source"


def _bootstrap(cfg: StackConfig, cluster: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(bootstrap, externalClusters): initdb, or recovery from the Barman Cloud plugin's archive."""
    p = cfg.platform.postgres
    owner = {"database": p.database, "owner": p.owner, "secret": {"name": POSTGRES_APP_SECRET}}
    r = _recovery(cfg, cluster)
    if r is None:
        return {"initdb": owner}, []
    recovery: dict[str, Any] = {"source": RECOVERY_SOURCE, **owner}
    if r.target_time:
        recovery["recoveryTarget"] = {"targetTime": r.target_time}
    external = [{"name": RECOVERY_SOURCE, "plugin": {
        "name": BARMAN_PLUGIN,
        "parameters": {"barmanObjectName": recovery_object_store_name(cfg, cluster), "serverName": r.server_name}}}]
    return {"recovery": recovery}, external


def postgres_cluster(cfg: StackConfig, cluster: Optional[str] = None) -> dict[str, Any]:
    """One CNPG `Cluster` (default: the one the apps use). The database and owner are plain
    config names (sophia:platform.postgres.database/owner); the owner's password is in
    POSTGRES_APP_SECRET. A cluster with a recovery bootstraps from the backups instead of initdb."""
    p = cfg.platform.postgres
    cluster = cluster or p.cluster_name
    bootstrap, external = _bootstrap(cfg, cluster)
    spec: dict[str, Any] = {
        "instances": p.instances,
        "storage": {"size": p.storage_size, "storageClass": p.storage_class},
        "resources": p.resources.k8s(),
        "enablePDB": p.instances > 1,
        "affinity": {"enablePodAntiAffinity": True, "podAntiAffinityType": "preferred",
                     "topologyKey": "kubernetes.io/hostname"},
        "bootstrap": bootstrap,
    }
    if external:
        spec["externalClusters"] = external
    if postgres_backups(cfg):
        # WAL archiving through the plugin, into <path>/<cluster name>/ of the object store.
        spec["plugins"] = [{"name": BARMAN_PLUGIN, "isWALArchiver": True,
                            "parameters": {"barmanObjectName": object_store_name(cfg, cluster)}}]
    return {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
            "metadata": {"name": cluster, "namespace": names.DATA, "annotations": dict(CLUSTER_AWAIT)}, "spec": spec}


def postgres_pod_monitor(cfg: StackConfig, cluster: Optional[str] = None) -> dict[str, Any]:
    """PodMonitor for the instances (the Cluster's enablePodMonitor is deprecated in CNPG 1.30)."""
    name = cluster or cfg.platform.postgres.cluster_name
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
            "metadata": {"name": name, "namespace": names.DATA, "labels": {"release": PROMETHEUS_RELEASE}},
            "spec": {"selector": {"matchLabels": {"cnpg.io/cluster": name, "cnpg.io/podRole": "instance"}},
                     "podMetricsEndpoints": [{"port": "metrics"}]}}


def _object_store(name: str, bucket: str, path: str, cfg: StackConfig, retention: Optional[str]) -> dict[str, Any]:
    b = cfg.platform.postgres.backup
    creds: dict[str, Any] = {
        "accessKeyId": {"name": BACKUP_S3_SECRET, "key": "ACCESS_KEY_ID"},
        "secretAccessKey": {"name": BACKUP_S3_SECRET, "key": "ACCESS_SECRET_KEY"},
    }
    if b.region:
        creds["region"] = {"name": BACKUP_S3_SECRET, "key": "ACCESS_REGION"}  # the CRD takes it from a Secret
    conf: dict[str, Any] = {
        "destinationPath": f"s3://{bucket}/{path.strip('/')}",
        "endpointURL": b.endpoint,
        "s3Credentials": creds,
        "wal": {"compression": "gzip"},
        "data": {"compression": "gzip"},
    }
    spec: dict[str, Any] = {"configuration": conf}
    if retention:
        spec["retentionPolicy"] = retention
    return {"apiVersion": "barmancloud.cnpg.io/v1", "kind": "ObjectStore",
            "metadata": {"name": name, "namespace": names.DATA}, "spec": spec}


def cluster_object_stores(cfg: StackConfig, cluster: str) -> list[dict[str, Any]]:
    """The ObjectStores of one cluster: its backups' (retention from config), and the source of
    its recovery when the old backups lie elsewhere."""
    b, r = cfg.platform.postgres.backup, _recovery(cfg, cluster)
    out = []
    if postgres_backups(cfg) or r is not None:
        out.append(_object_store(object_store_name(cfg, cluster), b.bucket or "", b.path, cfg, b.retention))
    if r is not None and recovery_object_store_name(cfg, cluster) != object_store_name(cfg, cluster):
        # Read only: no retention policy, so the recovery never prunes the old cluster's backups.
        out.append(_object_store(recovery_object_store_name(cfg, cluster), r.bucket or b.bucket or "", r.path or b.path, cfg, None))
    return out


def object_stores(cfg: StackConfig) -> list[dict[str, Any]]:
    """Every ObjectStore of the stack, the serving cluster's first."""
    serving = cfg.platform.postgres.cluster_name
    order = [serving] + [c for c in postgres_clusters(cfg) if c != serving]
    return [store for c in order for store in cluster_object_stores(cfg, c)]


def object_store(cfg: StackConfig) -> dict[str, Any]:
    return object_stores(cfg)[0]


def scheduled_backup(cfg: StackConfig, cluster: Optional[str] = None) -> dict[str, Any]:
    p = cfg.platform.postgres
    cluster = cluster or p.cluster_name
    return {"apiVersion": "postgresql.cnpg.io/v1", "kind": "ScheduledBackup",
            "metadata": {"name": f"{cluster}-scheduled", "namespace": names.DATA},
            "spec": {"schedule": p.backup.schedule, "cluster": {"name": cluster},
                     "method": "plugin", "pluginConfiguration": {"name": BARMAN_PLUGIN},
                     "backupOwnerReference": "self", "immediate": True}}


# ----------------------------------------------------------------------------- Valkey

def valkey_host(read_only: bool = False) -> str:
    return _svc(VALKEY_RELEASE + ("-read" if read_only else ""), names.DATA)


def valkey_values(cfg: StackConfig) -> dict[str, Any]:
    v = cfg.platform.valkey
    small = Resources(cpuRequest="50m", memoryRequest="32Mi", cpuLimit="200m", memoryLimit="128Mi").k8s()
    values: dict[str, Any] = {
        "fullnameOverride": VALKEY_RELEASE,
        "resources": v.resources.k8s(),
        "initResources": small,
        "auth": {
            "enabled": True,
            "usersExistingSecret": VALKEY_USERS_SECRET,
            # Passwords come from the Secret (key = username); only permissions here.
            "aclUsers": {"default": {"permissions": "~* &* +@all", "passwordKey": "default"}},
        },
        "metrics": {
            "enabled": True,
            "exporter": {"resources": small, "securityContext": RESTRICTED_CONTAINER},
            "serviceMonitor": {"enabled": True, "extraLabels": {"release": PROMETHEUS_RELEASE}},
        },
    }
    # The data directory (/data) is a PersistentVolume either way; this says how the primary
    # writes to it, so a restart reloads what it had.
    values["valkeyConfig"] = VALKEY_PERSISTENCE[v.persistence]
    if v.replicas > 0:
        values["replica"] = {"enabled": True, "replicas": v.replicas,
                             "persistence": {"size": v.storage_size, "storageClass": v.storage_class}}
    else:
        values["dataStorage"] = {"enabled": True, "requestedSize": v.storage_size, "className": v.storage_class}
    return values


# valkey.conf lines appended to the chart's own (dir /data): the append-only file, fsync'd
# every second and rewritten as it grows; or RDB snapshots at Valkey's classic save points.
VALKEY_PERSISTENCE = {
    "aof": "appendonly yes\nappendfsync everysec\nauto-aof-rewrite-percentage 100\nauto-aof-rewrite-min-size 64mb\n",
    "rdb": "appendonly no\nsave 900 1 300 10 60 10000\n",
}


# ----------------------------------------------------------------------------- ingress

def nginx_ingress_values(cfg: StackConfig) -> dict[str, Any]:
    i = cfg.platform.ingress
    return {
        "controller": {
            "replicaCount": i.replicas,
            "resources": i.resources.k8s(),
            "ingressClass": {"name": INGRESS_CLASS, "setAsDefaultIngress": True},
            # K3s ServiceLB (klipper) answers type LoadBalancer on the nodes' addresses.
            "service": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"},
        },
        "prometheus": {
            "create": True,
            "service": {"create": True},
            "serviceMonitor": {"create": True, "labels": {"release": PROMETHEUS_RELEASE}},
        },
    }


# ----------------------------------------------------------------------------- LLM gateway

def llm_gateway_configmap(cfg: StackConfig) -> dict[str, Any]:
    """Portkey -> OpenRouter routing for the backend. No keys: they reach the backend in its Secret
    (PORTKEY_API_KEY, OPENROUTER_API_KEY)."""
    g = cfg.platform.llm_gateway
    portkey_config = {
        "strategy": {"mode": "fallback"},
        "retry": {"attempts": g.retries},
        "request_timeout": g.timeout_seconds * 1000,
        "targets": [{"provider": "openrouter", "override_params": {"model": m}}
                    for m in [g.default_model, *g.fallback_models]],
    }
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": LLM_GATEWAY_CONFIGMAP, "namespace": names.APPS,
                         "labels": {"app.kubernetes.io/part-of": "sophia-platform"}},
            "data": {
                "LLM_GATEWAY": "portkey",
                "PORTKEY_BASE_URL": g.portkey_base_url,
                "PORTKEY_PROVIDER": "openrouter",
                "OPENROUTER_BASE_URL": g.openrouter_base_url,
                "LLM_DEFAULT_MODEL": g.default_model,
                "LLM_FALLBACK_MODELS": ",".join(g.fallback_models),
                "PORTKEY_CONFIG": json.dumps(portkey_config, sort_keys=True),
            }}


# ----------------------------------------------------------------------------- secrets

def secret_manifest(name: str, namespace: str, string_data: dict[str, Any], type_: str = "Opaque",
                    labels: Optional[dict[str, str]] = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": type_,
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/part-of": "sophia-platform", **(labels or {})}},
            "stringData": string_data}


def platform_secrets(cfg: StackConfig, value) -> list[dict[str, Any]]:
    """The platform's Secrets; `value(key)` gives the secret config value of `sophia:<key>`."""
    out = [
        secret_manifest(GRAFANA_ADMIN_SECRET, names.MONITORING,
                        {"admin-user": "admin", "admin-password": value("grafanaAdminPassword")}),
        # CNPG's initdb secret: basic-auth with username = the database owner.
        secret_manifest(POSTGRES_APP_SECRET, names.DATA,
                        {"username": cfg.platform.postgres.owner, "password": value("postgresPassword")},
                        type_="kubernetes.io/basic-auth", labels={"cnpg.io/reload": "true"}),
        secret_manifest(VALKEY_USERS_SECRET, names.DATA, {"default": value("redisPassword")}),
    ]
    b = cfg.platform.postgres.backup
    if object_store_needed(cfg):
        keys = {"ACCESS_KEY_ID": value(b.access_key_config), "ACCESS_SECRET_KEY": value(b.secret_key_config)}
        if b.region:
            keys["ACCESS_REGION"] = b.region
        out.append(secret_manifest(BACKUP_S3_SECRET, names.DATA, keys))
    return out


def grafana_role() -> dict[str, Any]:
    """The Role Grafana's sidecars are bound to (grafana chart rbac.useExistingRole): ConfigMaps
    in monitoring, read-only; no Secrets anywhere."""
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": GRAFANA_ROLE, "namespace": names.MONITORING},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]}
