"""Every operation docs/operating.md documents, as `pulumi up` would carry it out: the program run
under the mock monitor with the old and the new configuration, and the steps between the two
plans computed with each provider's rules (sophia_infra/tools/plan/transition.py). Each test
asserts the exact steps an operator should see in the preview.

An operation the program gets wrong today is marked xfail(strict=True) with the defect named:
it flips (and fails, so the mark is removed) when the fix lands.
"""

from __future__ import annotations

import functools
import json
import shutil
from typing import Callable

import pytest

from sophia_infra.program import releases
from sophia_infra.tools import release
from sophia_infra.tools.plan import destructive, report, runner, stack_config, transition, transition_report
from tests.conftest import ROOT
from tests.platform_helpers import plan as shared_plan
from tests.test_provisioning import production_config

Change = Callable[[dict], None]
WORKER = "sophia-mcp"
NEW = "sophia-new"
LAUNCHED = "sophia-data"  # the provisioned variant launches this worker on Lambda Cloud
NODE_COMMANDS = ("authorized-keys", "firewall", "secrets", "config", "install", "membership")


def _json(key: str, edit: Callable[[dict], None]) -> Change:
    def change(cfg: dict) -> None:
        value = json.loads(cfg.get(key, "{}"))
        edit(value)
        cfg[key] = json.dumps(value)
    return change


def _nodes(edit: Callable[[list], None]) -> Change:
    def change(cfg: dict) -> None:
        nodes = json.loads(cfg["sophia:nodes"])
        edit(nodes)
        cfg["sophia:nodes"] = json.dumps(nodes)
    return change


def _all(*changes: Change) -> Change:
    def change(cfg: dict) -> None:
        for c in changes:
            c(cfg)
    return change


def _set(**values: str) -> Change:
    return lambda cfg: cfg.update({f"sophia:{k}": v for k, v in values.items()})


NEXT_PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ5dGVzLW9mLXRoZS1uZXh0LWtleS1mb3ItdGVzdHM= next"
PITR_RESTORE = {"clusterName": "sophia-postgres", "clusters": {
    "sophia-postgres": {},
    "sophia-postgres-2": {"recovery": {"serverName": "sophia-postgres", "targetTime": "2026-11-23T10:30:00Z"}}}}
NEW_NODE = {"name": NEW, "role": "worker", "arch": "amd64", "gpu": {"type": "A10", "count": 1, "sharing": 4}}
NEW_LAUNCHED = {**NEW_NODE, "provision": {"provider": "lambda", "instanceType": "gpu_1x_a10", "region": "us-east-1"}}

CHANGES: dict[str, Change] = {
    "base": lambda cfg: None,
    "add worker": _all(_nodes(lambda n: n.append(NEW_NODE)),
                       _json("sophia:hosts", lambda h: h.update({NEW: {"address": "203.0.113.15"}}))),
    "move worker": _json("sophia:hosts", lambda h: h.update({WORKER: {"address": "198.51.100.77"}})),
    "ssh key": _set(sshPrivateKey="placeholder-rotated-ssh-private-key"),
    # docs/operating.md "Rotating the SSH key", step 1: authorize the next key first.
    "ssh authorize": lambda cfg: cfg.update({"sophia:sshAuthorizedKeys": json.dumps([NEXT_PUBLIC_KEY])}),
    "etcd keys": _set(etcdS3AccessKey="placeholder-rotated-access-key", etcdS3SecretKey="placeholder-rotated-secret-key"),
    "k3s": _json("sophia:k3s", lambda k: k.update(version="v1.34.3+k3s1", installerSha256="a" * 64)),
    "chart": _json("sophia:charts", lambda c: c["valkey"].update(version="0.11.1")),
    "tls": _all(_json("sophia:workloads", lambda w: w.update(frontendHost="app.example.com")),
                _json("sophia:argocd", lambda a: a.update(ingressHost="cd.example.com")),
                _json("sophia:platform", lambda p: p.setdefault("monitoring", {}).update(grafanaHost="grafana.example.com"))),
    # docs/operating.md "Point-in-time recovery of PostgreSQL": step 2 (restore beside the live
    # cluster), step 5 (switch the apps), step 6 (retire the old cluster), verbatim.
    "pitr restore": _json("sophia:platform", lambda p: p["postgres"].update(PITR_RESTORE)),
    "pitr switch": _json("sophia:platform", lambda p: p["postgres"].update(PITR_RESTORE, clusterName="sophia-postgres-2")),
    "pitr retire": _json("sophia:platform", lambda p: p["postgres"].update(
        clusterName="sophia-postgres-2", clusters={"sophia-postgres-2": PITR_RESTORE["clusters"]["sophia-postgres-2"]})),
    # What ./deploy.sh rollback --emergency backend 3 production records.
    "rollback": _json("sophia:argocd", lambda a: a.setdefault("rollbacks", {}).update(backend="3")),
}
LAUNCHED_CHANGES: dict[str, Change] = {
    "base": lambda cfg: None,
    "add worker": _nodes(lambda n: n.append(NEW_LAUNCHED)),
    "instance type": _nodes(lambda nodes: [n["provision"].update(instanceType="gpu_1x_a100_sxm4")
                                           for n in nodes if n["name"] == LAUNCHED]),
    "ssh key": _set(sshPrivateKey="placeholder-rotated-ssh-private-key"),
}


@functools.lru_cache(maxsize=None)
def plan(change: str, launched: bool = False) -> dict:
    """plan.json of production (or production with LAUNCHED provisioned) after `change`."""
    if change == "base" and not launched:
        return report.plan_document(shared_plan("production"))  # the stack as it is: run once per process
    config, secrets = production_config((LAUNCHED,)) if launched else stack_config.load("production")
    config = dict(config)
    (LAUNCHED_CHANGES if launched else CHANGES)[change](config)
    return report.plan_document(runner.run("production", config=config, secret_keys=secrets))


def steps(old: str, new: str, launched: bool = False) -> transition.Transition:
    return transition.compute(plan(old, launched), plan(new, launched))


def _kind(step: transition.Step) -> str:
    return step.type.rsplit(":", 1)[-1]


def _node_updates_only(t: transition.Transition, allowed_suffixes: tuple[str, ...]) -> list[str]:
    """Updates other than a node command with one of the suffixes, a NetworkPolicy (they list the
    nodes' addresses) or a ResourceQuota (a namespace's GPU quota is the cluster's GPU capacity)."""
    return [s.name for s in t.steps if s.op == "update" and _kind(s) not in ("NetworkPolicy", "ResourceQuota")
            and not s.name.endswith(allowed_suffixes)]


def _order(t: transition.Transition, *wanted: tuple[str, str]) -> list[int]:
    return [t.sequence.index(w) for w in wanted]


# ----------------------------------------------------------------------------- nodes

def test_adding_a_worker_on_an_esc_host_creates_its_node_and_touches_nothing_else():
    t = steps("base", "add worker")
    created = {s.name for s in t.steps if s.op == "create"}
    assert created == {NEW, f"{NEW}-labels", *(f"{NEW}-{c}" for c in NODE_COMMANDS)}
    assert {s.op for s in t.steps} <= {"create", "update", "same"}
    # The other nodes' ufw admits the new peer; the NetworkPolicies' node addresses grow by one.
    assert _node_updates_only(t, ("-firewall",)) == []
    # It joins: its install runs after its config, its membership waits for it to be Ready.
    config, install, membership = _order(t, ("create", f"{NEW}-config"), ("create", f"{NEW}-install"),
                                         ("create", f"{NEW}-membership"))
    assert config < install < membership


def test_removing_a_worker_drains_it_before_uninstalling_and_replaces_nothing():
    t = steps("add worker", "base")
    deleted = {s.name for s in t.steps if s.op == "delete"}
    assert deleted == {NEW, f"{NEW}-labels", *(f"{NEW}-{c}" for c in NODE_COMMANDS)}
    assert {s.op for s in t.steps} <= {"delete", "update", "same"}
    assert not any(s.destructive for s in t.steps)  # an ESC host is uninstalled, never terminated
    # The membership's delete drains and deletes the Node before the host is uninstalled.
    membership, install = _order(t, ("delete", f"{NEW}-membership"), ("delete", f"{NEW}-install"))
    assert membership < install
    assert t.sequence[-len(deleted):] == [(op, n) for op, n in t.sequence if op == "delete"]  # deletes last


def test_a_workers_new_address_replaces_its_install_and_membership_delete_first():
    t = steps("base", "move worker")
    replaced = {s.name: s.delete_before_replace for s in t.steps if s.op == "replace"}
    assert replaced == {f"{WORKER}-install": True, f"{WORKER}-membership": True}
    assert not any(s.op in ("create", "delete") or s.destructive for s in t.steps)
    # Drain and delete the old Node, uninstall the old host, install the new one, wait for Ready.
    assert [x for x in t.sequence if x[1] in replaced] == [
        ("delete-replaced", f"{WORKER}-membership"), ("delete-replaced", f"{WORKER}-install"),
        ("create-replacement", f"{WORKER}-install"), ("create-replacement", f"{WORKER}-membership")]
    # The moved node's own commands run again on the new host; the others admit the new address.
    assert _node_updates_only(t, ("-firewall", f"{WORKER}-authorized-keys", f"{WORKER}-secrets", f"{WORKER}-config")) == []


def test_authorizing_the_next_ssh_key_rewrites_authorized_keys_only():
    t = steps("base", "ssh authorize")
    assert t.changes() and all(n.endswith("-authorized-keys") and op == "update" for n, op in t.changes().items())


def test_rotating_the_ssh_key_updates_every_command_in_place():
    t = steps("base", "ssh key")
    commands = {s.name for s in t.steps if s.type == "command:remote:Command"}
    assert t.changes() == {name: "update" for name in commands}
    # Every command connects with the new key; each host's authorized_keys is rewritten with it.
    assert {n: t.step(n).keys for n in commands if t.step(n).keys != ["connection"]} == {
        n: ["connection", "create", "update"] for n in commands if n.endswith("-authorized-keys")}


def test_rotating_the_etcd_s3_keys_rewrites_the_control_planes_secrets_only():
    t = steps("base", "etcd keys")
    assert t.changes() == {"sophia-control-secrets": "update"}
    assert t.step("sophia-control-secrets").keys == ["stdin"]


def _ready_check(name: str) -> str:
    """The step that finishes when a node is Ready: the control plane's `registered`, a
    joining node's `membership`."""
    return f"{name}-registered" if name == "sophia-control" else f"{name}-membership"


def test_a_k3s_version_bump_updates_every_install_and_ready_wait_in_place():
    """Each install runs again at the new version; each node's Ready wait runs again too (it
    waits for the kubelet to report the pinned version). Nothing is replaced."""
    t = steps("base", "k3s")
    nodes = [n["name"] for n in json.loads(stack_config.load("production")[0]["sophia:nodes"])]
    expected = {f"{n}-install" for n in nodes} | {_ready_check(n) for n in nodes}
    assert t.changes() == {name: "update" for name in expected} and len(expected) == 10


def test_a_k3s_version_bump_upgrades_one_node_at_a_time_servers_first_each_ready_before_the_next():
    new = plan("k3s")
    t = steps("base", "k3s")
    order = [n for op, n in t.sequence if op == "update" and n.endswith("-install")]
    nodes = [n[:-len("-install")] for n in order]
    roles = {n["name"]: n["role"] for n in json.loads(stack_config.load("production")[0]["sophia:nodes"])}
    assert nodes[0] == "sophia-control"
    assert [roles[n] for n in nodes] == sorted((roles[n] for n in nodes), key=lambda r: r != "control-plane")
    urn = {r["name"]: r["urn"] for r in new["resources"]}
    for before, after in zip(nodes, nodes[1:]):
        assert transition.waits_for(new, urn[f"{after}-install"], urn[_ready_check(before)]), \
            f"{after}'s upgrade does not wait for {before} to be Ready"


# ----------------------------------------------------------------------------- platform

def test_a_chart_pin_bump_upgrades_the_release_in_place():
    t = steps("base", "chart")
    assert t.changes() == {"platform-valkey": "update"}
    assert t.step("platform-valkey").keys == ["version"] and not t.step("platform-valkey").destructive


def test_enabling_tls_hosts_adds_certificates_and_upgrades_releases_without_replacing_anything():
    t = steps("base", "tls")
    assert {s.op for s in t.steps} <= {"create", "update", "same"}
    created = {s.name for s in t.steps if s.op == "create"}
    assert {"platform-tls-certificate-frontend", "platform-tls-certificate-argocd-server",
            "platform-tls-certificate-kube-prometheus-stack-grafana"} <= created
    assert {"services-argo-cd", "platform-kube-prometheus-stack"} <= {s.name for s in t.steps if s.op == "update"}


def _postgres(t: transition.Transition) -> dict[str, str]:
    return {n: op for n, op in t.changes().items() if n.startswith("platform-postgres")}


def test_point_in_time_recovery_restores_beside_the_live_cluster_and_deletes_nothing():
    t = steps("base", "pitr restore")
    new = "sophia-postgres-2"
    assert _postgres(t) == {f"platform-postgres-{what}-{new}": "create"
                            for what in ("cluster", "object-store", "pod-monitor", "scheduled-backup")}
    assert not any(s.op in ("replace", "delete") or s.destructive for s in t.steps)
    created = next(s for s in t.steps if s.name == f"platform-postgres-cluster-{new}")
    assert created.type == destructive.CNPG_CLUSTER


def test_switching_the_apps_to_the_recovered_cluster_changes_neither_cluster():
    t = steps("pitr restore", "pitr switch")
    assert {s.op for s in t.steps} <= {"update", "same"}
    assert not any(s.type == destructive.CNPG_CLUSTER for s in t.steps if s.op != "same")
    # The NetworkPolicies that admit the backend follow the cluster.
    assert "platform-namespaces-sophia-data-networkpolicy-allow-backend-to-postgres" in t.changes()


def test_switching_the_apps_to_the_recovered_cluster_moves_the_backend():
    t = steps("pitr restore", "pitr switch")
    assert t.changes().get("services-app-backend") == "update"


def test_retiring_the_old_cluster_stops_at_its_protection_and_would_not_delete_its_data():
    t = steps("pitr switch", "pitr retire")
    old = t.step("platform-postgres-cluster")
    assert old.op == "delete" and old.protected and not old.destructive  # retained on delete
    assert [s.name for s in transition_report.blocked(t.steps, [])] == ["platform-postgres-cluster"]


# ----------------------------------------------------------------------------- app releases

@pytest.fixture
def release_root(tmp_path, monkeypatch):
    """A copy of the stack files, ESC definitions and release files the program reads releases from."""
    for name in ("Pulumi.production.yaml", "Pulumi.dev.yaml", "esc", "releases"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    for fn in (releases.path, releases.read, releases.files, releases.problems, releases.for_stack, releases.in_force):
        monkeypatch.setattr(fn, "__defaults__", (tmp_path,))
    return tmp_path


def test_an_app_release_through_a_release_file_is_zero_pulumi_steps(release_root):
    before = report.plan_document(shared_plan("production"))  # the same release files, copied
    prepared = release.prepare("backend", "production", tag="1.0.1", digest="sha256:" + "ab" * 32, root=release_root)
    release.write(prepared)
    assert releases.read("production", "backend").tag == "1.0.1"  # the program reads the new file
    t = transition.compute(before, report.plan_document(runner.run("production")))
    assert t.changes() == {}


def test_an_app_release_in_a_helm_delivered_stack_upgrades_that_workload_only(release_root):
    """dev (`delivery: helm`) rolls a release out with its next `pulumi up`: one Release upgraded."""
    before = report.plan_document(shared_plan("dev"))  # the same release files, copied
    release.write(release.prepare("backend", "dev", tag="9.9.9", root=release_root))
    t = transition.compute(before, report.plan_document(runner.run("dev")))
    assert list(t.changes().values()) == ["update"]
    (name,) = t.changes()
    assert t.step(name).type == "kubernetes:helm.sh/v3:Release" and t.step(name).keys == ["values"]


def test_an_emergency_rollback_pauses_one_application_and_resume_restores_it():
    rollback = steps("base", "rollback")
    assert rollback.changes() == {"services-app-backend": "update"}
    resume = steps("rollback", "base")
    assert resume.changes() == {"services-app-backend": "update"}
    assert resume.step("services-app-backend").keys == rollback.step("services-app-backend").keys


# ----------------------------------------------------------------------------- launched hosts

def test_adding_a_provisioned_worker_launches_its_instance_and_replaces_nothing():
    t = steps("base", "add worker", launched=True)
    created = {s.name for s in t.steps if s.op == "create"}
    assert f"{NEW}-instance" in created and {f"{NEW}-{c}" for c in NODE_COMMANDS} <= created
    assert {s.op for s in t.steps} <= {"create", "update", "same"}


def test_changing_a_provisioned_workers_instance_type_replaces_that_worker_only():
    t = steps("base", "instance type", launched=True)
    replaced = {s.name for s in t.steps if s.op == "replace"}
    assert {f"{LAUNCHED}-instance", f"{LAUNCHED}-install", f"{LAUNCHED}-membership"} <= replaced
    assert all(n.startswith(f"{LAUNCHED}-") for n in replaced), replaced
    assert {s.op for s in t.steps} <= {"replace", "update", "same"}
    assert [s.name for s in t.steps if s.destructive] == [f"{LAUNCHED}-instance"]  # needs --allow-destroy


def test_a_new_instance_type_drains_and_uninstalls_the_old_host_before_terminating_it():
    t = steps("base", "instance type", launched=True)
    drain, uninstall, terminate = _order(t, ("delete-replaced", f"{LAUNCHED}-membership"),
                                         ("delete-replaced", f"{LAUNCHED}-install"),
                                         ("delete-replaced", f"{LAUNCHED}-instance"))
    assert drain < uninstall < terminate


def test_rotating_the_ssh_key_of_a_provisioned_stack_replaces_no_instance():
    t = steps("base", "ssh key", launched=True)
    assert not any(s.op == "replace" and s.type == destructive.LAMBDA_INSTANCE for s in t.steps)
    # The new Lambda key is registered before the old one is deleted.
    key = next(s for s in t.steps if s.type == "pulumi-python:dynamic/lambda:SshKey")
    assert key.op == "replace" and not key.delete_before_replace
    assert not any(s.destructive for s in t.steps)
    # Nor is any host reinstalled: the launched host's address is known through the rotation.
    assert [s.name for s in t.steps if s.op == "replace" and s.type == "command:remote:Command"] == []


def test_moving_a_worker_from_an_esc_host_to_a_provisioned_one_drains_and_uninstalls_the_old_host_first():
    """docs/operating.md "Switching a node from an existing host to a provisioned one"."""
    t = transition.compute(plan("base"), plan("base", launched=True))
    replaced = {s.name: s.delete_before_replace for s in t.steps if s.op == "replace"}
    assert replaced == {f"{LAUNCHED}-install": True, f"{LAUNCHED}-membership": True}
    created = {s.name for s in t.steps if s.op == "create"}
    assert f"{LAUNCHED}-instance" in created and {s.type for s in t.steps if s.op == "create"} >= {
        destructive.LAMBDA_INSTANCE, "pulumi-python:dynamic/lambda:SshKey", "pulumi-python:dynamic/lambda:FirewallRules"}
    assert not any(s.op == "delete" or s.destructive for s in t.steps)  # the old host is never terminated
    launch, drain, uninstall, install = _order(t, ("create", f"{LAUNCHED}-instance"),
                                               ("delete-replaced", f"{LAUNCHED}-membership"),
                                               ("delete-replaced", f"{LAUNCHED}-install"),
                                               ("create-replacement", f"{LAUNCHED}-install"))
    assert launch < drain < uninstall < install


def test_removing_a_provisioned_worker_terminates_its_instance_and_is_blocked_without_allow_destroy():
    t = steps("add worker", "base", launched=True)
    instance = t.step(f"{NEW}-instance")
    assert instance.op == "delete" and instance.destructive and "terminates" in instance.why
    # Drained, uninstalled, then terminated.
    drain, uninstall, terminate = _order(t, ("delete", f"{NEW}-membership"), ("delete", f"{NEW}-install"),
                                         ("delete", f"{NEW}-instance"))
    assert drain < uninstall < terminate
    assert [s.name for s in transition_report.blocked(t.steps, [])] == [f"{NEW}-instance"]
    assert transition_report.blocked(t.steps, [f"{NEW}-instance"]) == []


def test_a_second_run_of_the_same_config_proposes_nothing():
    assert steps("base", "base").changes() == {}
    again = report.plan_document(runner.run("production"))
    assert transition.compute(plan("base"), again).changes() == {}
