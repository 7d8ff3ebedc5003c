"""Every alert the program ships, through Prometheus' own tool: `promtool check rules` on the
rule groups of both stacks, and `promtool test rules` (tests/data/promtool/alerts.test.yaml)
with synthetic series showing each alert firing when it should and staying quiet when it
should not — the convention of kube-prometheus and the Prometheus docs ("Unit testing for
rules"). The metric names the rules read are checked against what the exporters really
expose, as rendered from the pinned charts with the program's values:

- dcgm-exporter 4.8.2: the counters CSV its ConfigMap `exporter-metrics-config-map` mounts
  as /etc/dcgm-exporter/default-counters.csv (an uncommented line is a metric);
- cloudnative-pg 0.29.0: the `cnpg-default-monitoring` queries (metric
  `cnpg_<query>_<column>` per non-LABEL column, CloudNativePG docs "Monitoring").

promtool comes from Debian's `prometheus` package (scripts/install-tools.sh installs it in CI).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sophia_infra.program.config import names
from sophia_infra.program.platform import alerts
from sophia_infra.program.platform import values as v
from sophia_infra.program.platform.gpu import monitoring
from sophia_infra.program.platform.gpu.values import dcgm_exporter_values
from sophia_infra.tools.plan import render
from tests.conftest import STACKS, parse_with
from tests import yaml_c

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package prometheus; scripts/install-tools.sh installs it)")
UNIT_TESTS = Path(__file__).parent / "data" / "promtool" / "alerts.test.yaml"


def rule_groups(stack: str) -> list[dict]:
    """The rule groups of every PrometheusRule the program ships, as the operator loads them."""
    cfg = parse_with(stack)
    groups: list[dict] = []
    for rule in (alerts.prometheus_rule(cfg, v.PROMETHEUS_RELEASE), monitoring.prometheus_rule(cfg, v.PROMETHEUS_RELEASE)):
        groups.extend(rule["spec"]["groups"])
    return groups


def _alerts(groups: list[dict]) -> dict[str, dict]:
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def _write(path: Path, groups: list[dict], keep_description: bool = True) -> Path:
    if not keep_description:
        groups = [{**g, "rules": [{**r, "annotations": {k: a for k, a in r.get("annotations", {}).items()
                                                         if k != "description"}} for r in g["rules"]]}
                  for g in groups]
    path.write_text(yaml_c.dump({"groups": groups}, sort_keys=False))
    return path


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@needs_promtool
@pytest.mark.parametrize("stack", STACKS)
def test_promtool_checks_the_rules_of_each_stack(stack, tmp_path):
    groups = rule_groups(stack)
    out = _promtool("check", "rules", str(_write(tmp_path / "rules.yaml", groups)), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(_alerts(groups))} rules found" in out.stdout, out.stdout


@needs_promtool
def test_every_alert_fires_and_stays_quiet_as_its_unit_tests_say(tmp_path):
    # Production ships the superset (the PostgreSQL backup alerts need backups on).
    _write(tmp_path / "rules.yaml", rule_groups("production"), keep_description=False)
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    out = _promtool("test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_promtool_test_fails_on_a_wrong_threshold(tmp_path):
    """The unit tests bite: the same tests against a rule whose threshold moved fail."""
    groups = rule_groups("production")
    for g in groups:
        for r in g["rules"]:
            if r.get("alert") == "CertificateExpiringSoon":
                r["expr"] = r["expr"].replace(f"{alerts.CERT_EXPIRY_DAYS} * 86400", "7 * 86400")
    _write(tmp_path / "rules.yaml", groups, keep_description=False)
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    out = _promtool("test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert out.returncode != 0 and "CertificateExpiringSoon" in out.stdout + out.stderr


def test_every_shipped_alert_has_a_firing_and_a_quiet_case():
    shipped = set().union(*(_alerts(rule_groups(s)) for s in STACKS))
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in yaml_c.load(UNIT_TESTS.read_text())["tests"]:
        for t in case.get("alert_rule_test", []):
            (firing if t.get("exp_alerts") else quiet).add(t["alertname"])
    assert shipped - firing == set(), f"no case where these fire: {sorted(shipped - firing)}"
    assert shipped - quiet == set(), f"no case where these stay quiet: {sorted(shipped - quiet)}"
    assert (firing | quiet) - shipped == set(), f"cases for alerts the program does not ship: {sorted((firing | quiet) - shipped)}"


# ----------------------------------------------------------------------------- metric names

_NOT_METRICS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (selectors; not functions, labels or keywords)."""
    expr = re.sub(r'"[^"]*"', '""', expr)
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    found = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        if m.group() not in _NOT_METRICS and not expr[m.end():].lstrip().startswith("("):  # not a function
            found.add(m.group())
    return found


def test_metric_name_parser():
    assert metric_names('max by (Hostname, gpu) (A{x="y"} / (B + C)) > 0.9') == {"A", "B", "C"}
    assert metric_names("absent(DCGM_FI_DEV_GPU_UTIL)") == {"DCGM_FI_DEV_GPU_UTIL"}
    assert metric_names('(sum(increase(k3s_x_count{status="success"}[720m])) or vector(0)) < 1') == {"k3s_x_count"}


def _render_one(chart: str, release: str, namespace: str, values: dict) -> list[dict]:
    cfg = parse_with("production")
    spec = render.ReleaseSpec(resource=release, release=release, namespace=namespace, chart=chart,
                              version=cfg.charts[chart].version, values=values)
    if render.helm_binary() is None:
        pytest.skip("helm is not installed (scripts/install-tools.sh; make test puts it on PATH)")
    if render.missing_sources([spec]):
        pytest.skip(f"no chart source holds {chart} {spec.version}: lay ../shared/charts-src beside the project "
                    "or run python -m sophia_infra charts --pull")
    return render.render(spec).objects


def _configmap(objects: list[dict], name: str) -> dict:
    (cm,) = [o for o in objects if o.get("kind") == "ConfigMap" and o["metadata"]["name"] == name]
    return cm["data"]


def test_gpu_alerts_read_counters_dcgm_exporter_exports():
    cfg = parse_with("production")
    objects = _render_one("dcgm-exporter", "dcgm-exporter", names.GPU, dcgm_exporter_values(cfg, v.PROMETHEUS_RELEASE))
    csv = _configmap(objects, "exporter-metrics-config-map")["metrics"]
    exported = {line.split(",")[0].strip() for line in csv.splitlines() if line.strip() and not line.strip().startswith("#")}
    assert "DCGM_FI_DEV_GPU_UTIL" in exported  # the parse itself
    used = set().union(*(metric_names(r["expr"]) for r in monitoring.prometheus_rule(cfg, "x")["spec"]["groups"][0]["rules"]))
    assert used and used <= exported, f"not in dcgm-exporter's counters: {sorted(used - exported)}"


def test_postgres_alerts_read_metrics_cloudnative_pg_exports():
    cfg = parse_with("production")
    objects = _render_one("cloudnative-pg", v.CNPG_RELEASE, names.DATA, v.cnpg_values(cfg))
    queries = yaml_c.load(_configmap(objects, "cnpg-default-monitoring")["queries"])
    exported = {f"cnpg_{q}_{col}" for q, body in queries.items() for m in body["metrics"] for col, d in m.items()
                if d["usage"] != "LABEL"}
    # The instance manager's own collector (cloudnative-pg pkg/management/postgres/metrics:
    # Namespace "cnpg", subsystem "collector", Name "pg_wal_archive_status", label "value").
    exported |= {"cnpg_collector_pg_wal_archive_status", "cnpg_collector_up"}
    used = {m for r in alerts.rules(cfg) for m in metric_names(r["expr"]) if m.startswith("cnpg_")}
    assert used and used <= exported, f"not exported by CloudNativePG: {sorted(used - exported)}"


def test_k3s_snapshot_metrics_are_scraped_through_the_apiserver_service_monitor():
    """K3s registers its etcd snapshot metrics in the Kubernetes legacy registry
    (k3s-io/k3s pkg/metrics: DefaultRegisterer = legacyregistry.Registerer()), which the API
    server's /metrics serves; kube-prometheus-stack's `apiserver` ServiceMonitor scrapes it, as
    long as it is on and its relabelings keep the k3s_etcd_snapshot_* series."""
    cfg = parse_with("production")
    objects = _render_one("kube-prometheus-stack", v.PROMETHEUS_RELEASE, names.MONITORING, v.kube_prometheus_stack_values(cfg))
    (sm,) = [o for o in objects if o.get("kind") == "ServiceMonitor" and o["metadata"]["name"].endswith("-apiserver")]
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["scheme"] == "https" and sm["spec"]["selector"]["matchLabels"]["component"] == "apiserver"
    for relabel in endpoint.get("metricRelabelings") or []:
        if relabel.get("action") in ("drop", "keep") and relabel.get("sourceLabels") in (["__name__"], ["__name__", "le"]):
            name = "k3s_etcd_snapshot_save_duration_seconds_count"
            joined = name if relabel["sourceLabels"] == ["__name__"] else f"{name};"
            matches = re.fullmatch(relabel["regex"], joined) is not None
            assert matches == (relabel["action"] == "keep"), relabel
    used = {m for r in alerts.rules(cfg) for m in metric_names(r["expr"]) if m.startswith("k3s_")}
    assert used == {"k3s_etcd_snapshot_save_duration_seconds_count"}
