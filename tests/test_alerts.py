"""The data-safety alerts: the PrometheusRule against its CRD, thresholds from the schedules,
and every metric an expression reads against what its exporter documents."""

from __future__ import annotations

import re

import pytest

from sophia_infra.tools import backups
from sophia_infra.program.platform import alerts
from sophia_infra.program.platform import values as v
from tests.conftest import parse_with
from tests.platform_helpers import crd_errors

# Where each exporter documents its metrics (the names in alerts.METRICS come from there):
# CloudNativePG "Monitoring" (predefined pg_stat_archiver queries, cnpg_collector_*),
# plugin-barman-cloud "Observability", docs.k3s.io/reference/metrics (etcd snapshot
# histograms with a status label), cert-manager "Prometheus Metrics".
_PROMQL_WORDS = {"time", "max", "by", "sum", "increase", "or", "vector", "and", "pod", "status", "value", "namespace",
                 "label_replace", "cluster"}


def _metrics(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', "", expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # selectors
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    return {w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr) if w not in _PROMQL_WORDS}


def _rules(cfg):
    return {r["alert"]: r for r in alerts.rules(cfg)}


def test_rule_validates_against_its_crd():
    for stack in ("dev", "production"):
        assert crd_errors(alerts.prometheus_rule(parse_with(stack), v.PROMETHEUS_RELEASE)) == []


def test_production_has_the_four_alerts_dev_the_two_without_backups():
    assert set(_rules(parse_with("production"))) == {"PostgresBaseBackupTooOld", "PostgresWalArchivingFailing",
                                                     "EtcdSnapshotTooOld", "CertificateExpiringSoon"}
    assert set(_rules(parse_with("dev"))) == {"EtcdSnapshotTooOld", "CertificateExpiringSoon"}


@pytest.mark.parametrize("alert,exporter", [
    ("PostgresBaseBackupTooOld", "plugin-barman-cloud"),
    ("PostgresWalArchivingFailing", "cloudnative-pg"),
    ("EtcdSnapshotTooOld", "k3s"),
    ("CertificateExpiringSoon", "cert-manager"),
])
def test_each_expression_reads_only_documented_metrics(alert, exporter):
    expr = _rules(parse_with("production"))[alert]["expr"]
    used = _metrics(expr)
    assert used, expr
    assert used <= alerts.METRICS[exporter], f"{alert}: {used - alerts.METRICS[exporter]} not published by {exporter}"


def test_metric_parser_sees_an_unknown_name():
    assert _metrics('time() - max(cnpg_collector_last_available_backup_timestamp{pod=~"x"}) > 3') == {
        "cnpg_collector_last_available_backup_timestamp"}
    # The in-core backup metric stays 0 with the plugin: it is not among the plugin's.
    assert "cnpg_collector_last_available_backup_timestamp" not in alerts.METRICS["plugin-barman-cloud"]


def test_thresholds_follow_the_schedules():
    cfg = parse_with("production")
    r = _rules(cfg)
    # Daily base backup at 03:00: 24 h + 1 h grace, but the configured 26 h is longer.
    assert r["PostgresBaseBackupTooOld"]["expr"].endswith(f"> {26 * 3600}")
    assert r["EtcdSnapshotTooOld"]["expr"].count("[720m]") == 1  # 12 h: the configured etcd limit
    weekly = parse_with("production", lambda raw: raw["platform"]["postgres"]["backup"].update(schedule="0 0 3 * * 0"))
    assert _rules(weekly)["PostgresBaseBackupTooOld"]["expr"].endswith(f"> {(168 + 1) * 3600}")
    assert "14 * 86400" in r["CertificateExpiringSoon"]["expr"]


@pytest.mark.parametrize("schedule,hours", [("0 */6 * * *", 6), ("0 0 3 * * *", 24), ("0 3 * * 1", 168),
                                            ("0 0 0,12 * * *", 12), ("0 0 12 * * 1-5", 72), ("*/15 * * * *", 0.25)])
def test_longest_gap_of_a_schedule(schedule, hours):
    assert backups.longest_gap_hours(schedule) == pytest.approx(hours)


def test_a_cluster_restored_beside_the_live_one_is_watched_too():
    both = {"sophia-postgres": {}, "sophia-postgres-2": {"recovery": {"serverName": "sophia-postgres"}}}
    r = _rules(parse_with("production", lambda raw: raw["platform"]["postgres"].update(clusters=both)))
    for alert in ("PostgresBaseBackupTooOld", "PostgresWalArchivingFailing"):
        assert 'pod=~"(sophia-postgres|sophia-postgres-2)-[0-9]+"' in r[alert]["expr"], alert
    # Per cluster: the live cluster's fresh backup never hides the other's missing one.
    assert r["PostgresBaseBackupTooOld"]["expr"].startswith("time() - max by (cluster) (label_replace(")
    assert 'pod=~"sophia-postgres-[0-9]+"' in _rules(parse_with("production"))["PostgresWalArchivingFailing"]["expr"]
