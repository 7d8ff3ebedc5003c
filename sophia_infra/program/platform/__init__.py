"""The platform layer: namespaces, secrets, GPU layer, data stores, ingress, monitoring, TLS.

Order (explicit dependencies): namespaces -> secrets -> kube-prometheus-stack (installs the
monitoring CRDs) -> cert-manager (its CRDs) -> ClusterIssuer and Certificates; device plugin,
dcgm-exporter + GPU dashboard/alerts, data-safety alerts; CloudNativePG operator -> Barman
Cloud plugin (after cert-manager: it creates an Issuer and Certificates) -> ObjectStore ->
PostgreSQL Cluster -> ScheduledBackup; Valkey, NGINX ingress, LLM gateway ConfigMap.
"""

from __future__ import annotations

from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from sophia_infra.program.config import chart_crds, names
from sophia_infra.program import secrets as stack_secrets
from sophia_infra.program.config.stack import StackConfig
from sophia_infra.program.platform import alerts, tls
from sophia_infra.program.platform import values as v
from sophia_infra.program.config.platform import DEFAULT_POSTGRES_CLUSTER, postgres_backups, postgres_clusters
from sophia_infra.program.platform.helm import config_map, custom_resource, release
from sophia_infra.program.platform.namespaces import POSTGRES_PORT, Namespaces


class PlatformSecrets(pulumi.ComponentResource):
    """Kubernetes Secrets of the platform components, from ESC-backed secret config."""

    def __init__(self, name: str, cfg: StackConfig, provider: k8s.Provider,
                 namespaces: dict[str, k8s.core.v1.Namespace], opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("sophia:platform:Secrets", name, None, opts)
        self.secrets: dict[str, k8s.core.v1.Secret] = {}
        for m in v.platform_secrets(cfg, lambda key: pulumi.Output.secret(stack_secrets.secret(key))):
            meta = m["metadata"]
            self.secrets[meta["name"]] = k8s.core.v1.Secret(
                f"{name}-{meta['name']}", metadata=meta, type=m["type"], string_data=m["stringData"],
                opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[namespaces[meta["namespace"]]]))
        self.register_outputs({})


def cluster_suffix(cluster: str) -> str:
    """The suffix of a CNPG cluster's Pulumi resource names. A pure function of that cluster's
    name, so adding or retiring a cluster never renames another (a renamed Cluster is replaced,
    and a replaced Cluster is a deleted database); the default cluster keeps the names every
    stack was deployed with."""
    return "" if cluster == DEFAULT_POSTGRES_CLUSTER else f"-{cluster}"


def _store_kind(cfg: StackConfig, cluster: str, store: dict) -> str:
    """The resource-name stem of one of a cluster's ObjectStores."""
    return "object-store" if store["metadata"]["name"] == v.object_store_name(cfg, cluster) else "recovery-object-store"


class Postgres(pulumi.ComponentResource):
    """CloudNativePG operator and the platform's PostgreSQL clusters (backups via Barman Cloud
    plugin): every cluster of sophia:platform.postgres.clusters, each with its ObjectStores,
    PodMonitor and ScheduledBackup; in production every Cluster is protected and retained on delete."""

    def __init__(self, name: str, cfg: StackConfig, provider: k8s.Provider, namespace: k8s.core.v1.Namespace,
                 app_secret: k8s.core.v1.Secret, backup_secret: Optional[k8s.core.v1.Secret],
                 prometheus: k8s.helm.v3.Release, cert_manager: k8s.helm.v3.Release,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("sophia:platform:Postgres", name, None, opts)
        # The operator's PodMonitor needs the monitoring CRDs.
        self.operator = release(f"{name}-operator", cfg, "cloudnative-pg", v.CNPG_RELEASE, names.DATA,
                                v.cnpg_values(cfg), provider, self, depends_on=[namespace, prometheus])
        self.plugin = None
        if v.object_stores(cfg):
            # The plugin's chart creates a cert-manager Issuer and Certificates (its TLS to the operator).
            self.plugin = release(f"{name}-barman-plugin", cfg, "plugin-barman-cloud", v.BARMAN_RELEASE, names.DATA,
                                  v.barman_values(cfg), provider, self, depends_on=[self.operator, cert_manager])
        # Production: Pulumi never deletes a database, neither by a replacement nor by a removal.
        keep = cfg.environment == "production"
        plugin = [self.plugin] if self.plugin is not None else []
        self.clusters: dict[str, pulumi.Resource] = {}
        self.object_stores: list[pulumi.Resource] = []
        for cluster in postgres_clusters(cfg):
            sfx = cluster_suffix(cluster)
            stores = [custom_resource(f"{name}-{_store_kind(cfg, cluster, store)}{sfx}", store, provider, self,
                                      depends_on=plugin + ([backup_secret] if backup_secret else []))
                      for store in v.cluster_object_stores(cfg, cluster)]
            self.object_stores += stores
            self.clusters[cluster] = custom_resource(f"{name}-cluster{sfx}", v.postgres_cluster(cfg, cluster), provider,
                                                     self, depends_on=[self.operator, app_secret, *plugin, *stores], keep=keep)
            custom_resource(f"{name}-pod-monitor{sfx}", v.postgres_pod_monitor(cfg, cluster), provider, self,
                            depends_on=[prometheus, self.clusters[cluster]])
            if postgres_backups(cfg):
                custom_resource(f"{name}-scheduled-backup{sfx}", v.scheduled_backup(cfg, cluster), provider, self,
                                depends_on=[self.clusters[cluster]])
        if not postgres_backups(cfg) and cfg.environment == "production":
            pulumi.log.warn(f"PostgreSQL backups are off in this production stack "
                            f"(sophia:platform.postgres.backup.optOut: {cfg.platform.postgres.backup.opt_out})")
        self.cluster = self.clusters[cfg.platform.postgres.cluster_name]  # the one the apps use
        self.host = v.postgres_host(cfg)
        self.register_outputs({"host": self.host})


class Tls(pulumi.ComponentResource):
    """cert-manager, the ACME ClusterIssuer and a Certificate per Ingress host."""

    def __init__(self, name: str, cfg: StackConfig, provider: k8s.Provider, namespace: k8s.core.v1.Namespace,
                 prometheus: k8s.helm.v3.Release, namespaces: dict[str, k8s.core.v1.Namespace],
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("sophia:platform:Tls", name, None, opts)
        # The ServiceMonitor needs the monitoring CRDs; the CRDs come with the release.
        self.cert_manager = release(f"{name}-cert-manager", cfg, "cert-manager", tls.CERT_MANAGER_RELEASE,
                                    names.CERT_MANAGER, tls.cert_manager_values(cfg, v.PROMETHEUS_RELEASE),
                                    provider, self, depends_on=[namespace, prometheus])
        self.issuer = None
        self.certificates: list[pulumi.Resource] = []
        if cfg.platform.tls.email:
            self.issuer = custom_resource(f"{name}-cluster-issuer", tls.cluster_issuer(cfg), provider, self,
                                          depends_on=[self.cert_manager])
            for cert in tls.certificates(cfg):
                ns = cert["metadata"]["namespace"]
                self.certificates.append(custom_resource(
                    f"{name}-certificate-{cert['metadata']['name']}", cert, provider, self,
                    depends_on=[self.issuer, namespaces[ns]]))
        self.register_outputs({})


class Platform(pulumi.ComponentResource):
    """Everything between the bare K3s cluster and the Sophia services."""

    namespaces: dict[str, k8s.core.v1.Namespace]
    outputs: dict[str, pulumi.Input]

    def __init__(self, name: str, cfg: StackConfig, provider: k8s.Provider,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("sophia:platform:Platform", name, None, opts)
        from sophia_infra.program.platform.gpu.components import DevicePlugin, GpuMetrics # gpu.components imports platform.helm

        child = pulumi.ResourceOptions(parent=self)
        ns = Namespaces(f"{name}-namespaces", cfg, provider, opts=child)
        self.namespaces = ns.namespaces
        self.network_policies = ns.policies
        # The mesh comes first, so that injected namespaces never see a pod without istiod.
        self.istio = None
        if cfg.platform.istio.enabled:
            from sophia_infra.program.platform.istio import Istio
            self.istio = Istio(f"{name}-istio", cfg, provider, opts=child)
        sec = PlatformSecrets(f"{name}-secrets", cfg, provider, ns.namespaces, opts=child)
        self.secrets = sec.secrets

        role = v.grafana_role()
        self.grafana_role = k8s.rbac.v1.Role(f"{name}-{v.GRAFANA_ROLE}", metadata=role["metadata"], rules=role["rules"],
                                             opts=pulumi.ResourceOptions(parent=self, provider=provider,
                                                                         depends_on=[ns.namespaces[names.MONITORING]]))
        self.monitoring = release(f"{name}-kube-prometheus-stack", cfg, "kube-prometheus-stack", v.PROMETHEUS_RELEASE,
                                  names.MONITORING, v.kube_prometheus_stack_values(cfg), provider, self,
                                  depends_on=[ns.namespaces[names.MONITORING], ns.namespaces[names.GPU],
                                              sec.secrets[v.GRAFANA_ADMIN_SECRET], self.grafana_role], timeout=900)

        self.tls = Tls(f"{name}-tls", cfg, provider, ns.namespaces[names.CERT_MANAGER], self.monitoring,
                       ns.namespaces, opts=child)
        self.data_safety_alerts = custom_resource(f"{name}-data-safety-alerts",
                                                  alerts.prometheus_rule(cfg, v.PROMETHEUS_RELEASE), provider, self,
                                                  depends_on=[self.monitoring])

        self.device_plugin = DevicePlugin(f"{name}-device-plugin", cfg, provider,
                                          opts=pulumi.ResourceOptions(parent=self, depends_on=[ns.namespaces[names.GPU]]))
        self.gpu_metrics = GpuMetrics(f"{name}-gpu-metrics", cfg, provider, self.monitoring, v.PROMETHEUS_RELEASE,
                                      opts=pulumi.ResourceOptions(parent=self, depends_on=[ns.namespaces[names.GPU]]))

        self.postgres = Postgres(f"{name}-postgres", cfg, provider, ns.namespaces[names.DATA],
                                 sec.secrets[v.POSTGRES_APP_SECRET], sec.secrets.get(v.BACKUP_S3_SECRET),
                                 self.monitoring, self.tls.cert_manager, opts=child)
        self.valkey = release(f"{name}-valkey", cfg, "valkey", v.VALKEY_RELEASE, names.DATA, v.valkey_values(cfg),
                              provider, self, depends_on=[ns.namespaces[names.DATA], sec.secrets[v.VALKEY_USERS_SECRET],
                                                          self.monitoring])
        # The controller release's CRDs, applied before the chart, which then skips its crds/
        # (Helm would install those once and never upgrade them): see sophia_infra.program.config.chart_crds.
        # From this repository, checked by sha256: nothing is fetched from a URL at deploy time.
        self.ingress_crds = k8s.yaml.v2.ConfigFile(
            f"{name}-nginx-ingress-crds", file=chart_crds.nginx_ingress_crds_file(cfg),
            opts=pulumi.ResourceOptions(parent=self, provider=provider))
        self.ingress = release(f"{name}-nginx-ingress", cfg, "nginx-ingress", v.INGRESS_RELEASE, names.INGRESS,
                               v.nginx_ingress_values(cfg), provider, self,
                               depends_on=[ns.namespaces[names.INGRESS], self.monitoring, self.ingress_crds],
                               skip_crds=True)
        self.llm_gateway = config_map(f"{name}-llm-gateway", v.llm_gateway_configmap(cfg), provider, self,
                                      depends_on=[ns.namespaces[names.APPS]])

        self.outputs = {
            "grafanaUrl": v.grafana_url(),
            "prometheusUrl": v.prometheus_url(),
            "postgresHost": v.postgres_host(cfg),
            "postgresReadHost": v.postgres_host(cfg, read_only=True),
            "postgresPort": POSTGRES_PORT,
            # On, or off with the reason a production stack gave (sophia:platform.postgres.backup.optOut).
            "postgresBackups": "on" if postgres_backups(cfg) else
                               f"off: {cfg.platform.postgres.backup.opt_out or 'not a production stack'}",
            "postgresAppSecret": f"{names.DATA}/{v.POSTGRES_APP_SECRET}",
            "redisHost": v.valkey_host(),
            "redisReadHost": v.valkey_host(read_only=True),
            "redisPort": 6379,
            "ingressClass": v.INGRESS_CLASS,
            "llmGatewayConfigMap": f"{names.APPS}/{v.LLM_GATEWAY_CONFIGMAP}",
            "gpuCapacity": self.device_plugin.capacity,
            "namespaces": {k: r.metadata["name"] for k, r in self.namespaces.items()},
        }
        self.register_outputs(self.outputs)
