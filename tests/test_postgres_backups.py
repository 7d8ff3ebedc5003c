"""PostgreSQL backups on by default in production, the named opt-out, point-in-time recovery,
Valkey persistence: objects against the CNPG and Barman CRDs, keys only in a Secret."""

from __future__ import annotations

import json

import pytest

from sophia_infra.program.config import names
from sophia_infra.program.platform import values as v
from sophia_infra.program.config.platform import postgres_backups
from sophia_infra.tools.plan import runner, stack_config
from tests.conftest import parse_with, problems_of
from tests.platform_helpers import chart_defaults, crd_errors, plan as shared_plan, schema_errors, unknown_keys

RECOVERY = {"serverName": "sophia-postgres", "targetTime": "2026-11-23T10:30:00Z"}


def _backup(**settings):
    return lambda r: r["platform"]["postgres"]["backup"].update(settings)


def _recover(recovery=RECOVERY, cluster="sophia-postgres-2"):
    def change(r):
        r["platform"]["postgres"].update(clusterName=cluster, recovery=recovery)
    return change


def test_production_backs_up_by_default_and_dev_does_not():
    prod, dev = parse_with("production"), parse_with("dev")
    assert prod.platform.postgres.backup.enabled is None and postgres_backups(prod)
    assert not postgres_backups(dev)
    cluster = v.postgres_cluster(prod)
    assert cluster["spec"]["plugins"] == [{"name": "barman-cloud.cloudnative-pg.io", "isWALArchiver": True,
                                           "parameters": {"barmanObjectName": "sophia-postgres-backups"}}]
    store, backup = v.object_store(prod), v.scheduled_backup(prod)
    assert store["spec"]["configuration"]["destinationPath"] == "s3://sophia-ai-backups/postgres"
    assert store["spec"]["retentionPolicy"] == "30d"
    assert backup["spec"]["method"] == "plugin" and backup["spec"]["schedule"] == "0 0 3 * * *"
    for obj in (cluster, store, backup):
        assert crd_errors(obj) == [], obj["kind"]
    assert "plugins" not in v.postgres_cluster(dev)["spec"]


def test_production_plan_keeps_the_s3_keys_in_a_secret_only():
    result = shared_plan("production")  # planned once per test process
    by_type: dict[str, list] = {}
    for r in result.resources:
        by_type.setdefault(r.type, []).append(r)
    assert any(r.name.endswith("postgres-scheduled-backup") for r in by_type["kubernetes:postgresql.cnpg.io/v1:ScheduledBackup"])
    assert by_type["kubernetes:postgresql.cnpg.io/v1:Cluster"][0].inputs["spec"]["plugins"][0]["isWALArchiver"] is True
    (secret,) = [s for s in by_type["kubernetes:core/v1:Secret"] if s.inputs["metadata"]["name"] == "postgres-backup-s3"]
    assert secret.inputs["stringData"]["ACCESS_KEY_ID"] == "[secret]" == secret.inputs["stringData"]["ACCESS_SECRET_KEY"]
    assert "ACCESS_REGION" in secret.inputs["stringData"]  # the CRD reads the region from the Secret too
    keys = [k for k in ("placeholder-production-data-postgres-backup-s3-access-key-id",
                        "placeholder-production-data-postgres-backup-s3-secret-access-key")]
    others = [r for r in result.resources if r is not secret]
    text = json.dumps([r.inputs for r in others]) + json.dumps(result.outputs)
    assert not any(k in text for k in keys)
    assert result.outputs["postgresBackups"] == "on"


def test_production_without_backups_is_refused_naming_the_key():
    (msg,) = problems_of("production", _backup(enabled=False))
    assert msg.startswith("sophia:platform.postgres.backup.enabled: a production stack may not run PostgreSQL without backups")
    problems = problems_of("production", lambda r: r["platform"].pop("postgres"))
    assert any(p.startswith("sophia:platform.postgres.backup.bucket: backups are on by default in production") for p in problems)


def test_a_named_opt_out_turns_them_off_and_the_plan_says_why():
    cfg = parse_with("production", _backup(enabled=False, optOut="restored nightly from the upstream CRM"))
    assert not postgres_backups(cfg) and "plugins" not in v.postgres_cluster(cfg)["spec"]
    config, secret_keys = stack_config.load("production")
    platform = json.loads(config["sophia:platform"])
    platform["postgres"]["backup"] = {"optOut": "restored nightly from the upstream CRM"}
    result = runner.run("production", config={**config, "sophia:platform": json.dumps(platform)}, secret_keys=secret_keys)
    assert result.outputs["postgresBackups"] == "off: restored nightly from the upstream CRM"
    assert not [r for r in result.resources if "scheduled-backup" in r.name or "barman" in r.name]


@pytest.mark.parametrize("reason", ["", "  ", "two\nlines", "x" * 201])
def test_an_opt_out_needs_a_one_line_reason(reason):
    problems = problems_of("production", _backup(enabled=False, optOut=reason))
    assert any(p.startswith("sophia:platform.postgres.backup.optOut:") for p in problems)


def test_recovery_bootstraps_from_the_backup_instead_of_initdb():
    cfg = parse_with("production", _recover())
    spec = v.postgres_cluster(cfg)["spec"]
    assert "initdb" not in spec["bootstrap"]
    assert spec["bootstrap"]["recovery"] == {"source": "origin", "database": "sophia", "owner": "sophia",
                                             "secret": {"name": "postgres-app"},
                                             "recoveryTarget": {"targetTime": "2026-11-23T10:30:00Z"}}
    assert spec["externalClusters"] == [{"name": "origin", "plugin": {
        "name": "barman-cloud.cloudnative-pg.io",
        "parameters": {"barmanObjectName": "sophia-postgres-2-backups", "serverName": "sophia-postgres"}}}]
    # The new cluster archives its own WALs under its own name.
    assert spec["plugins"][0]["parameters"] == {"barmanObjectName": "sophia-postgres-2-backups"}
    assert crd_errors(v.postgres_cluster(cfg)) == []
    no_time = v.postgres_cluster(parse_with("production", _recover({"serverName": "sophia-postgres"})))
    assert "recoveryTarget" not in no_time["spec"]["bootstrap"]["recovery"]


def test_recovery_from_another_bucket_reads_a_store_of_its_own():
    cfg = parse_with("production", _recover({"serverName": "sophia-postgres", "bucket": "old-backups", "path": "pg"}))
    stores = v.object_stores(cfg)
    assert [s["metadata"]["name"] for s in stores] == ["sophia-postgres-2-backups", "sophia-postgres-2-recovery-source"]
    assert stores[1]["spec"]["configuration"]["destinationPath"] == "s3://old-backups/pg"
    assert "retentionPolicy" not in stores[1]["spec"]  # never prunes the old cluster's backups
    for s in stores:
        assert crd_errors(s) == []
    ext = v.postgres_cluster(cfg)["spec"]["externalClusters"][0]["plugin"]["parameters"]
    assert ext["barmanObjectName"] == "sophia-postgres-2-recovery-source"


def test_recovery_into_the_same_cluster_name_is_refused():
    (msg,) = problems_of("production", _recover(cluster="sophia-postgres"))
    assert msg.startswith("sophia:platform.postgres.recovery.serverName: is the cluster's own name (sophia-postgres)")
    assert "sophia-postgres-2" in msg


@pytest.mark.parametrize("when", ["2026-11-23 10:30:00", "yesterday", "2026-13-01T00:00:00Z", "2026-11-23T10:30:00"])
def test_target_time_is_rfc3339_with_a_zone(when):
    problems = problems_of("production", _recover({"serverName": "sophia-postgres", "targetTime": when}))
    assert any(p.startswith("sophia:platform.postgres.recovery.targetTime:") for p in problems)


@pytest.mark.parametrize("mode,line", [("aof", "appendonly yes"), ("rdb", "save 900 1")])
def test_valkey_keeps_its_data_on_the_volume(mode, line):
    cfg = parse_with("production", lambda r: r["platform"].__setitem__("valkey", {"persistence": mode}))
    vals = v.valkey_values(cfg)
    assert line in vals["valkeyConfig"]
    assert vals["replica"]["persistence"]["size"] == "8Gi"  # /data is a PersistentVolume
    assert unknown_keys(vals, chart_defaults("valkey", "0.11.0")) == []
    assert schema_errors(vals, "valkey", "0.11.0") == []
    single = v.valkey_values(parse_with("dev", lambda r: r["platform"].__setitem__("valkey", {"replicas": 0})))
    assert single["dataStorage"]["enabled"] is True and "appendonly yes" in single["valkeyConfig"]
    assert problems_of("dev", lambda r: r["platform"].__setitem__("valkey", {"persistence": "none"}))
