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
from tests.platform_helpers import chart_defaults, crd_errors, crd_schema, plan as shared_plan, run_platform, schema_errors, unknown_keys
from tests import yaml_c

RECOVERY = {"serverName": "sophia-postgres", "targetTime": "2026-11-23T10:30:00Z"}


def _backup(**settings):
    return lambda r: r["platform"]["postgres"]["backup"].update(settings)


def _recover(recovery=RECOVERY, cluster="sophia-postgres-2", serve="sophia-postgres"):
    """The documented PITR, step 2: a recovery cluster beside the current one, which stays listed."""
    def change(r):
        r["platform"]["postgres"].update(clusterName=serve, clusters={"sophia-postgres": {}, cluster: {"recovery": recovery}})
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
    spec = v.postgres_cluster(cfg, "sophia-postgres-2")["spec"]
    assert "initdb" not in spec["bootstrap"]
    assert spec["bootstrap"]["recovery"] == {"source": "origin", "database": "sophia", "owner": "sophia",
                                             "secret": {"name": "postgres-app"},
                                             "recoveryTarget": {"targetTime": "2026-11-23T10:30:00Z"}}
    assert spec["externalClusters"] == [{"name": "origin", "plugin": {
        "name": "barman-cloud.cloudnative-pg.io",
        "parameters": {"barmanObjectName": "sophia-postgres-2-backups", "serverName": "sophia-postgres"}}}]
    # The new cluster archives its own WALs under its own name; the current one is untouched.
    assert spec["plugins"][0]["parameters"] == {"barmanObjectName": "sophia-postgres-2-backups"}
    assert v.postgres_cluster(cfg, "sophia-postgres") == v.postgres_cluster(parse_with("production"))
    for name in ("sophia-postgres", "sophia-postgres-2"):
        assert crd_errors(v.postgres_cluster(cfg, name)) == []
        assert crd_errors(v.scheduled_backup(cfg, name)) == []
    no_time = v.postgres_cluster(parse_with("production", _recover({"serverName": "sophia-postgres"})), "sophia-postgres-2")
    assert "recoveryTarget" not in no_time["spec"]["bootstrap"]["recovery"]


def test_every_cluster_is_awaited_until_cnpg_says_ready():
    """pulumi-kubernetes awaits a custom resource only when told how (pulumi.com/waitFor, as
    kubectl wait's --for): CNPG's Cluster reports readiness as the condition Ready."""
    cfg = parse_with("production", _recover())
    for name in ("sophia-postgres", "sophia-postgres-2"):
        meta = v.postgres_cluster(cfg, name)["metadata"]
        assert meta["annotations"]["pulumi.com/waitFor"] == "condition=Ready"
        assert int(meta["annotations"]["pulumi.com/timeoutSeconds"]) >= 1800  # WAL replay takes its time
    # The condition lives where the CRD says a Cluster's conditions are.
    status = crd_schema("postgresql.cnpg.io/v1", "Cluster")["properties"]["status"]
    assert set(status["properties"]["conditions"]["items"]["required"]) >= {"type", "status"}


def test_recovery_from_another_bucket_reads_a_store_of_its_own():
    cfg = parse_with("production", _recover({"serverName": "sophia-postgres", "bucket": "old-backups", "path": "pg"}))
    stores = v.object_stores(cfg)
    assert [s["metadata"]["name"] for s in stores] == ["sophia-postgres-backups", "sophia-postgres-2-backups",
                                                       "sophia-postgres-2-recovery-source"]
    assert stores[2]["spec"]["configuration"]["destinationPath"] == "s3://old-backups/pg"
    assert "retentionPolicy" not in stores[2]["spec"]  # never prunes the old cluster's backups
    for s in stores:
        assert crd_errors(s) == []
    ext = v.postgres_cluster(cfg, "sophia-postgres-2")["spec"]["externalClusters"][0]["plugin"]["parameters"]
    assert ext["barmanObjectName"] == "sophia-postgres-2-recovery-source"


def test_recovery_into_the_same_cluster_name_is_refused():
    (msg,) = problems_of("production", _recover(cluster="sophia-postgres", serve="sophia-postgres"))
    assert msg.startswith("sophia:platform.postgres.clusters.sophia-postgres.recovery.serverName: is the cluster's own name (sophia-postgres)")
    assert "sophia-postgres-2" in msg


def test_the_old_rename_and_recover_form_is_refused_with_where_it_moved():
    """clusterName: new + recovery: the documented PITR that made Pulumi delete the live cluster."""
    def old_form(r):
        r["platform"]["postgres"].update(clusterName="sophia-postgres-2", recovery=RECOVERY)
    (msg,) = problems_of("production", old_form)
    assert msg.startswith("sophia:platform.postgres.recovery: a recovery now restores into a cluster of its own beside the current one")
    assert "sophia:platform.postgres.clusters.<new name>.recovery" in msg


def test_the_apps_must_use_a_listed_cluster():
    (msg,) = problems_of("production", _recover(serve="sophia-postgres-3"))
    assert msg.startswith("sophia:platform.postgres.clusterName: 'sophia-postgres-3' is not one of sophia:platform.postgres.clusters")
    problems = problems_of("production", lambda r: r["platform"]["postgres"].update(clusters={}))
    assert any(p.startswith("sophia:platform.postgres.clusters:") for p in problems)
    problems = problems_of("production", lambda r: r["platform"]["postgres"].update(clusters={"Sophia_PG": {}}))
    assert any(p.startswith("sophia:platform.postgres.clusters:") and "DNS-1035" in p for p in problems)


CLUSTER = "kubernetes:postgresql.cnpg.io/v1:Cluster"


def _postgres(**settings):
    """A change of the flat stack config (what run_platform takes): sophia:platform.postgres keys."""
    def change(config):
        platform = json.loads(config["sophia:platform"])
        platform["postgres"].update(settings)
        config["sophia:platform"] = json.dumps(platform)
    return change


def _clusters(run) -> dict[str, object]:
    return {r.inputs["metadata"]["name"]: r for r in run.of_type(CLUSTER)}


def _backend_policy(run) -> dict:
    (pol,) = [r for r in run.resources if r.name.endswith("sophia-data-networkpolicy-allow-backend-to-postgres")]
    return pol.inputs["spec"]["podSelector"]


def test_the_documented_pitr_never_lets_pulumi_touch_the_live_cluster():
    """docs/operating.md, step by step, under the mock monitor with the real registration
    options: restore beside, switch, and each step leaves the live cluster's resource as it was."""
    both = {"sophia-postgres": {}, "sophia-postgres-2": {"recovery": RECOVERY}}
    before = run_platform("production")
    beside = run_platform("production", _postgres(clusters=both))
    switched = run_platform("production", _postgres(clusters=both, clusterName="sophia-postgres-2"))

    live = _clusters(before)["sophia-postgres"]
    assert live.options == {"protect": True, "retainOnDelete": True}
    for later in (beside, switched):
        same = _clusters(later)["sophia-postgres"]
        assert (same.urn, same.inputs, same.options) == (live.urn, live.inputs, live.options)
    # The recovery is a resource of its own, protected in turn, and never renames the first.
    new = _clusters(beside)["sophia-postgres-2"]
    assert new.urn != live.urn and new.name == "platform-postgres-cluster-sophia-postgres-2"
    assert new.options == {"protect": True, "retainOnDelete": True}
    assert "recovery" in new.inputs["spec"]["bootstrap"]
    assert (new.urn, new.inputs) == ((s := _clusters(switched)["sophia-postgres-2"]).urn, s.inputs)
    # The apps move only at the switch: the output, the backend's policies.
    assert before.platform.outputs["postgresHost"] == beside.platform.outputs["postgresHost"] \
        == "sophia-postgres-rw.sophia-data.svc.cluster.local"
    assert switched.platform.outputs["postgresHost"] == "sophia-postgres-2-rw.sophia-data.svc.cluster.local"
    assert _backend_policy(beside) == {"matchLabels": {"cnpg.io/cluster": "sophia-postgres"}}
    assert _backend_policy(switched) == {"matchLabels": {"cnpg.io/cluster": "sophia-postgres-2"}}
    # Each cluster keeps its own ObjectStore, PodMonitor and ScheduledBackup, named after it.
    names = {r.name for r in beside.resources}
    for sfx in ("", "-sophia-postgres-2"):
        assert {f"platform-postgres-object-store{sfx}", f"platform-postgres-pod-monitor{sfx}",
                f"platform-postgres-scheduled-backup{sfx}"} <= names
    kept = {r.name: r for r in before.resources if r.name.startswith("platform-postgres-")}
    assert all((r.urn, r.inputs) == (kept[r.name].urn, kept[r.name].inputs)
               for r in switched.resources if r.name in kept), "a resource of the live cluster changed"


def test_dev_clusters_are_not_protected():
    (cluster,) = run_platform("dev").of_type(CLUSTER)
    assert cluster.name == "platform-postgres-cluster" and cluster.options == {}


@pytest.mark.parametrize("when", ["2026-11-23 10:30:00", "yesterday", "2026-13-01T00:00:00Z", "2026-11-23T10:30:00"])
def test_target_time_is_rfc3339_with_a_zone(when):
    problems = problems_of("production", _recover({"serverName": "sophia-postgres", "targetTime": when}))
    assert any(p.startswith("sophia:platform.postgres.clusters.sophia-postgres-2.recovery.targetTime:") for p in problems), problems


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


def test_the_documented_procedure_is_the_config_the_program_takes():
    """docs/operating.md's step 2 is accepted as written, recovers beside the live cluster, and
    its step 5 (the switch) is accepted too."""
    from tests.conftest import ROOT

    doc = (ROOT / "docs" / "operating.md").read_text()
    section = doc[doc.index("### Point-in-time recovery of PostgreSQL"):doc.index("### Restoring etcd")]
    block = section[section.index("```yaml") + len("```yaml"):]
    documented = yaml_c.load(block[:block.index("```")])["sophia:platform"]["postgres"]

    def step(serve):
        return lambda r: r["platform"].__setitem__("postgres", {**documented, "clusterName": serve})
    cfg = parse_with("production", step("sophia-postgres"))
    assert v.postgres_cluster(cfg, "sophia-postgres") == v.postgres_cluster(parse_with("production"))
    assert "recovery" in v.postgres_cluster(cfg, "sophia-postgres-2")["spec"]["bootstrap"]
    assert v.postgres_host(parse_with("production", step("sophia-postgres-2"))).startswith("sophia-postgres-2-rw.")
    assert "clusterName: sophia-postgres-2" in section and "pulumi state unprotect" in section


def test_every_cluster_reaches_the_object_store_and_only_the_apps_one_admits_the_backend():
    from sophia_infra.program.platform.namespaces import network_policies

    pols = {p["metadata"]["name"]: p["spec"] for p in network_policies(parse_with("production", _recover()), names.DATA)}
    assert pols["allow-backups-to-object-store"]["podSelector"] == {"matchExpressions": [
        {"key": "cnpg.io/cluster", "operator": "In", "values": ["sophia-postgres", "sophia-postgres-2"]}]}
    assert pols["allow-backend-to-postgres"]["podSelector"] == {"matchLabels": {"cnpg.io/cluster": "sophia-postgres"}}
