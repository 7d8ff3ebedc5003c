"""etcd restore from a named S3 snapshot: the steps K3s documents, shellcheck, the host sandbox, the CLI."""

from __future__ import annotations

import subprocess

import pytest

from sophia_infra import __main__ as cli
from sophia_infra.tools import etcd_restore as restore
from sophia_infra.program.cluster import scripts
from tests.conftest import parse_with
from tests.host_sandbox import Host, requires_sandbox

SNAPSHOT = "etcd-snapshot-sophia-control-1763900000"


def _ha(r):
    """Production with a second and third server (embedded etcd, three members)."""
    r["nodes"] += [{"name": "sophia-control-2", "role": "control-plane", "arch": "amd64"},
                   {"name": "sophia-control-3", "role": "control-plane", "arch": "amd64"}]
    r["hosts"].update({"sophia-control-2": "203.0.113.20", "sophia-control-3": "203.0.113.21"})


def test_steps_follow_the_k3s_procedure():
    steps = restore.restore_plan(parse_with("production", _ha), SNAPSHOT)
    assert [(s.node.name, s.what) for s in steps] == [
        ("sophia-control-2", "stop K3s"), ("sophia-control-3", "stop K3s"),
        ("sophia-control", f"restore etcd from {SNAPSHOT} and start K3s"),
        ("sophia-control-2", "set the old etcd data aside and rejoin"),
        ("sophia-control-3", "set the old etcd data aside and rejoin")]
    reset = steps[2].script
    assert (f"--cluster-reset \\\n  --cluster-reset-restore-path={SNAPSHOT} \\\n  --etcd-s3 \\\n  --etcd-s3-bucket=sophia-ai-backups"
            " \\\n  --etcd-s3-endpoint=s3.us-east-1.amazonaws.com \\\n  --etcd-s3-folder=etcd \\\n  --etcd-s3-region=us-east-1") in reset
    # One server: nothing to stop or rejoin.
    assert [s.what for s in restore.restore_plan(parse_with("production"), SNAPSHOT)] == [
        f"restore etcd from {SNAPSHOT} and start K3s"]


def test_every_restore_script_passes_shellcheck():
    steps = restore.restore_plan(parse_with("production", _ha), SNAPSHOT)
    assert len(steps) == 5
    for step in steps:
        proc = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", "-"], input=step.script,
                              capture_output=True, text=True)
        assert proc.returncode == 0, f"{step.node.name} {step.what}:\n{proc.stdout}"


@pytest.mark.parametrize("name", ["../etc/passwd", "snap shot", "x;reboot", "", "-rf"])
def test_a_bad_snapshot_name_is_refused(name):
    with pytest.raises(restore.RestoreError, match="is not a snapshot name"):
        restore.restore_plan(parse_with("production"), name)


def test_no_s3_snapshots_no_s3_restore():
    with pytest.raises(restore.RestoreError, match=r"sophia:k3s.etcdS3 is not set"):
        restore.restore_plan(parse_with("dev"), SNAPSHOT)


# ----------------------------------------------------------------------------- run for real, with stubs

KEYS = "AWS_ACCESS_KEY_ID=AKIA-sandbox-key\nAWS_SECRET_ACCESS_KEY=sandbox-secret-value\n"


def _host(tmp_path, with_keys=True) -> Host:
    host = Host(tmp_path)
    host.set("installed", "active")
    if with_keys:
        (host.snapshot / "k3s").mkdir()
        (host.snapshot / "k3s" / "etcd-s3.env").write_text(KEYS)
    return host


@requires_sandbox
def test_reset_restores_then_starts_k3s(tmp_path):
    cfg = parse_with("production")
    host = _host(tmp_path)
    proc = host.run(restore.reset_script(cfg, cfg.control_plane, SNAPSHOT))
    assert proc.returncode == 0, proc.stderr
    calls = host.calls()
    stop = calls.index("systemctl stop k3s")
    reset = next(i for i, c in enumerate(calls) if c.startswith("k3s server --cluster-reset"))
    start = calls.index("systemctl restart k3s")
    assert stop < reset < start  # stopped, restored, started again
    assert f"--cluster-reset-restore-path={SNAPSHOT} --etcd-s3 --etcd-s3-bucket=sophia-ai-backups" in calls[reset]
    assert f"timeout {restore.RESET_SECONDS} k3s server --cluster-reset" in calls[reset - 1]
    assert "sandbox-secret-value" not in "\n".join(calls) + proc.stdout + proc.stderr  # keys only via the environment
    assert f"k3s is running from {SNAPSHOT}" in proc.stdout


@requires_sandbox
def test_reset_without_credentials_stops_before_touching_etcd(tmp_path):
    cfg = parse_with("production")
    host = _host(tmp_path, with_keys=False)
    proc = host.run(restore.reset_script(cfg, cfg.control_plane, SNAPSHOT))
    assert proc.returncode == 1 and "no etcd S3 credentials" in proc.stderr
    assert not any(c.startswith("k3s server") for c in host.calls())


@requires_sandbox
def test_reset_that_fails_is_reported_and_k3s_not_started(tmp_path):
    cfg = parse_with("production")
    host = _host(tmp_path)
    (host.bin / "k3s").write_text('#!/bin/bash\necho "k3s $*" >> "$STATE_DIR/calls"\n[ "$1" != server ]\n')
    proc = host.run(restore.reset_script(cfg, cfg.control_plane, SNAPSHOT))
    assert proc.returncode == 1 and f"the restore from {SNAPSHOT} failed" in proc.stderr
    assert "systemctl restart k3s" not in host.calls()


@requires_sandbox
def test_other_servers_set_their_data_aside_and_rejoin(tmp_path):
    cfg = parse_with("production", _ha)
    node = next(n for n in cfg.nodes if n.name == "sophia-control-2")
    host = _host(tmp_path)
    script = restore.rejoin_server_script(node).replace(
        "if [ -d /var/lib/rancher/k3s/server/db ]; then",
        "mkdir -p /var/lib/rancher/k3s/server/db/etcd\nif [ -d /var/lib/rancher/k3s/server/db ]; then")
    proc = host.run(script + 'ls -d /var/lib/rancher/k3s/server/db* >> "$STATE_DIR/calls"\n')
    assert proc.returncode == 0, proc.stderr
    calls = host.calls()
    assert calls.index("systemctl stop k3s") < calls.index("systemctl restart k3s")
    assert any(c.startswith("/var/lib/rancher/k3s/server/db.before-restore-") for c in calls)
    assert "/var/lib/rancher/k3s/server/db" not in calls  # moved, not left in place


# ----------------------------------------------------------------------------- the command

def test_command_prints_the_steps(capsys):
    assert cli.main(["etcd-restore", "--stack", "production", "--snapshot", SNAPSHOT]) == 0
    out = capsys.readouterr().out
    assert f"# step 1: restore etcd from {SNAPSHOT} and start K3s on sophia-control" in out
    assert "k3s server \\\n  --cluster-reset" in out and "placeholder-" not in out


def test_command_refuses_a_bad_name(capsys):
    assert cli.main(["etcd-restore", "--stack", "production", "--snapshot", "a/b"]) == 2
    assert "is not a snapshot name" in capsys.readouterr().err


def test_execute_runs_each_step_over_ssh_with_the_stack_key(monkeypatch, capsys):
    from sophia_infra.tools import outputs

    monkeypatch.setenv(cli.SSH_KEY_ENV, "-----BEGIN OPENSSH PRIVATE KEY-----\nsandbox\n-----END OPENSSH PRIVATE KEY-----")
    monkeypatch.setattr(outputs, "read_outputs", lambda stack, show_secrets=False: {"nodeIps": {"sophia-control": "203.0.113.10"}})
    ran = []

    def runner(user, address, key_file, script):
        with open(key_file) as fh:
            ran.append((user, address, fh.read().startswith("-----BEGIN"), script))
        return 0

    import argparse
    args = argparse.Namespace(stack="production", snapshot=SNAPSHOT, execute=True)
    assert cli._etcd_restore(args, runner=runner) == 0
    (user, address, has_key, script), = ran
    assert (user, address, has_key) == ("ubuntu", "203.0.113.10", True)
    assert "--cluster-reset" in script
    printed = capsys.readouterr()
    assert "BEGIN OPENSSH" not in printed.out + printed.err and "step 1/1" in printed.out


def test_execute_stops_at_the_first_failed_step(monkeypatch):
    from sophia_infra.tools import outputs

    monkeypatch.setenv(cli.SSH_KEY_ENV, "key")
    monkeypatch.setattr(outputs, "read_outputs", lambda stack, show_secrets=False: {"nodeIps": {"sophia-control": "203.0.113.10"}})
    import argparse
    args = argparse.Namespace(stack="production", snapshot=SNAPSHOT, execute=True)
    assert cli._etcd_restore(args, runner=lambda *a: 255) == 1


def test_execute_needs_the_key(monkeypatch, capsys):
    monkeypatch.delenv(cli.SSH_KEY_ENV, raising=False)
    assert cli.main(["etcd-restore", "--stack", "production", "--snapshot", SNAPSHOT, "--execute"]) == 2
    assert cli.SSH_KEY_ENV in capsys.readouterr().err


def test_ssh_command_uses_the_key_file_and_runs_as_root(monkeypatch):
    seen = {}

    def fake_run(cmd, stdin=None):
        seen["cmd"] = cmd
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert cli.run_over_ssh("ubuntu", "203.0.113.10", "/tmp/k", "echo hi\n") == 0
    cmd = seen["cmd"]
    assert cmd[:3] == ["ssh", "-i", "/tmp/k"] and "ubuntu@203.0.113.10" in cmd and "BatchMode=yes" in cmd
    assert cmd[-1] == scripts.as_root("echo hi\n")
