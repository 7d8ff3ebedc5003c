"""The data-safety PrometheusRule: backups, WAL archiving, etcd snapshots, certificates (pure).

Each expression reads only metrics its exporter documents (the tests check the names
against METRICS):

- CloudNativePG instances (docs "Monitoring", predefined queries from pg_stat_archiver):
  `cnpg_pg_stat_archiver_last_archived_time`, `cnpg_pg_stat_archiver_last_failed_time`
  (epochs, -1 on replicas), `cnpg_collector_pg_wal_archive_status{value="ready"}` (WAL
  segments waiting in archive_status);
- the Barman Cloud plugin, through the instances' exporter (plugin docs "Observability";
  it replaces the cnpg_collector_*backup* metrics, which stay 0 with the plugin):
  `barman_cloud_cloudnative_pg_io_last_available_backup_timestamp`;
- K3s (docs.k3s.io/reference/metrics; k3s-io/k3s etcd snapshot metrics, v1.29+ backports):
  the histogram `k3s_etcd_snapshot_save_duration_seconds` with a `status` label, in the K3s
  process's one registry, which the API server's /metrics serves to kube-prometheus-stack's
  apiserver ServiceMonitor;
- cert-manager (docs "Prometheus Metrics"): `certmanager_certificate_expiration_timestamp_seconds`
  per Certificate (name, namespace).

Thresholds come from the schedules (sophia_infra.program.backup_schedule.allowed_age_hours), so the alerts
and `python -m sophia_infra backups` agree on when a backup is late.
"""

from __future__ import annotations

from typing import Any

from sophia_infra.program import backup_schedule as backups
from sophia_infra.program.config import names
from sophia_infra.program.config.stack import StackConfig
from sophia_infra.program.config.platform import postgres_backups, postgres_clusters

RULE_NAME = "data-safety-alerts"
CERT_EXPIRY_DAYS = 14
# The exporters' documented metric names (module docstring): what an expression may read.
METRICS = {
    "cloudnative-pg": {"cnpg_pg_stat_archiver_last_archived_time", "cnpg_pg_stat_archiver_last_failed_time",
                       "cnpg_collector_pg_wal_archive_status", "cnpg_collector_up"},
    "plugin-barman-cloud": {"barman_cloud_cloudnative_pg_io_last_available_backup_timestamp",
                            "barman_cloud_cloudnative_pg_io_last_failed_backup_timestamp",
                            "barman_cloud_cloudnative_pg_io_first_recoverability_point"},
    "k3s": {"k3s_etcd_snapshot_save_duration_seconds_count", "k3s_etcd_snapshot_save_s3_duration_seconds_count"},
    "cert-manager": {"certmanager_certificate_expiration_timestamp_seconds", "certmanager_certificate_ready_status"},
}


def _hours(h: float) -> str:
    return f"{int(h * 60)}m" if h * 60 == int(h * 60) else f"{int(h * 3600)}s"


def rules(cfg: StackConfig) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    # Every cluster of sophia:platform.postgres.clusters: a recovered one archives and is backed
    # up from its first minute, long before the apps switch to it.
    clusters = sorted(postgres_clusters(cfg))
    pods = clusters[0] if len(clusters) == 1 else f"({'|'.join(clusters)})"
    sel = f'namespace="{names.DATA}", pod=~"{pods}-[0-9]+"'
    # Each instance pod is <cluster>-<n>: the cluster, as a label to group the timestamps by.
    per_cluster = '"cluster", "$1", "pod", "(.+)-[0-9]+"'
    if postgres_backups(cfg):
        allowed = backups.postgres_allowed_age_hours(cfg)
        out.append({
            "alert": "PostgresBaseBackupTooOld",
            # max over the instances: only the primary reports the plugin's backup timestamp.
            "expr": (f"time() - max by (cluster) (label_replace(barman_cloud_cloudnative_pg_io_last_available_backup_timestamp{{{sel}}}, "
                     f"{per_cluster})) > {int(allowed * 3600)}"),
            "for": "15m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": f"No successful PostgreSQL base backup of {{{{ $labels.cluster }}}} for more than {allowed:g} h",
                "description": f"The ScheduledBackup runs on '{cfg.platform.postgres.backup.schedule}'; the newest base "
                               "backup in the object store is older than that allows. Check `kubectl -n sophia-data get backups` "
                               "and the plugin sidecar's logs.",
            },
        })
        out.append({
            "alert": "PostgresWalArchivingFailing",
            "expr": (f"max by (pod) (cnpg_pg_stat_archiver_last_failed_time{{{sel}}}) > "
                     f"max by (pod) (cnpg_pg_stat_archiver_last_archived_time{{{sel}}}) "
                     f"or max by (pod) (cnpg_collector_pg_wal_archive_status{{{sel}, value=\"ready\"}}) > 10"),
            "for": "10m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "WAL archiving of {{ $labels.pod }} is failing",
                "description": "The last WAL archive attempt failed after the last success, or WAL segments pile up "
                               "unarchived: point-in-time recovery stops at the last archived segment, and a full pg_wal "
                               "stops the primary.",
            },
        })
    etcd_allowed = backups.etcd_allowed_age_hours(cfg)
    window = _hours(etcd_allowed)
    out.append({
        "alert": "EtcdSnapshotTooOld",
        # No successful save within the allowed age (or none since K3s started).
        "expr": f'(sum(increase(k3s_etcd_snapshot_save_duration_seconds_count{{status="success"}}[{window}])) or vector(0)) < 1',
        "for": "15m",
        "labels": {"severity": "critical"},
        "annotations": {
            "summary": f"No etcd snapshot for more than {etcd_allowed:g} h",
            "description": f"K3s takes snapshots on '{cfg.k3s.etcd_snapshot_schedule}'; none succeeded within the time "
                           "that allows. Check `k3s etcd-snapshot ls` and journalctl -u k3s on the servers.",
        },
    })
    out.append({
        "alert": "CertificateExpiringSoon",
        "expr": f"certmanager_certificate_expiration_timestamp_seconds - time() < {CERT_EXPIRY_DAYS} * 86400",
        "for": "1h",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "Certificate {{ $labels.namespace }}/{{ $labels.name }} expires within "
                       f"{CERT_EXPIRY_DAYS} days",
            "description": "cert-manager renews 30 days ahead by default: a certificate this close to expiry means "
                           "renewal is failing. Check `kubectl describe certificate` and the ACME challenges.",
        },
    })
    return out


def prometheus_rule(cfg: StackConfig, prometheus_release: str) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
        "metadata": {"name": RULE_NAME, "namespace": names.MONITORING,
                     "labels": {"release": prometheus_release, "app.kubernetes.io/part-of": "sophia-platform"}},
        "spec": {"groups": [{"name": "sophia.data-safety", "rules": rules(cfg)}]},
    }
