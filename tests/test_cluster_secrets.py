"""The `<node>-secrets` commands run for real, with the script and the standard input the
program registers: pulumi-command sends stdin as given, so its last line has no newline."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

import pytest

from sophia_infra.cluster import scripts
from sophia_infra.plan import mocks, runner, stack_config
from tests.host_sandbox import Host, requires_sandbox

ROTATED_SECRET_KEY = "rotated-etcd-s3-secret-key"


@dataclass
class SentSecrets:
    script: str  # the create command's script
    stdin: str  # exactly what the program passes as the command's stdin


def _sent(stack: str, change=None) -> dict[str, SentSecrets]:
    """Each node's secrets command, as the program registers it (secrets unmasked)."""
    stdin_of: dict[str, str] = {}

    def capture(name: str, inputs: dict) -> str:
        if name.endswith("-secrets"):
            value = inputs.get("stdin")
            stdin_of[name] = value["value"] if isinstance(value, dict) else value  # a secret's envelope
        return mocks.default_command_stdout(name, inputs)

    config, secret_keys = stack_config.load(stack)
    if change:
        config = dict(config)
        change(config)
    result = runner.run(stack, config=config, secret_keys=secret_keys, command_stdout=capture)
    out = {}
    for r in result.resources:
        if r.type == "command:remote:Command" and r.name.endswith("-secrets"):
            out[r.name.removesuffix("-secrets")] = SentSecrets(shlex.split(r.inputs["create"])[3], stdin_of[r.name])
    return out


@pytest.fixture(scope="module")
def production() -> dict[str, SentSecrets]:
    return _sent("production")


@pytest.fixture(scope="module")
def dev() -> dict[str, SentSecrets]:
    return _sent("dev")


def test_stdin_is_sent_without_a_final_newline(production, dev):
    cp = production["sophia-control"]
    assert cp.stdin.count("\n") == 2 and not cp.stdin.endswith("\n")  # token, access key, secret key
    assert "\n" not in dev["sophia-dev-control"].stdin
    worker = production["sophia-mcp"]
    assert worker.stdin.startswith("K10") and "\n" not in worker.stdin  # the secure join token
    # The program builds it with the same function the tests document.
    token, access_key, secret_key = cp.stdin.split("\n")
    assert scripts.secrets_stdin(token, (access_key, secret_key)) == cp.stdin


@requires_sandbox
def test_control_plane_with_etcd_s3(tmp_path, production):
    sent = production["sophia-control"]
    token, access_key, secret_key = sent.stdin.split("\n")
    host = Host(tmp_path)
    proc = host.run(sent.script, stdin=sent.stdin)
    assert proc.returncode == 0, proc.stderr
    assert "token written" in proc.stdout and "etcd S3 credentials written" in proc.stdout
    assert host.file("cluster-token").read_text() == token + "\n"
    assert host.file("etcd-s3.env").read_text() == (
        f"AWS_ACCESS_KEY_ID={access_key}\nAWS_SECRET_ACCESS_KEY={secret_key}\n")
    for name in ("cluster-token", "etcd-s3.env"):
        assert oct(host.file(name).stat().st_mode & 0o777) == "0o600"
    dropin = host.systemd / "system/k3s.service.d/10-etcd-s3.conf"
    assert dropin.read_text() == f"[Service]\nEnvironmentFile=-{scripts.S3_ENV_PATH}\n"
    assert oct(dropin.stat().st_mode & 0o777) == "0o644"
    for value in (token, access_key, secret_key):
        assert value not in proc.stdout + proc.stderr
    assert not any("restart" in c for c in host.calls())  # K3s is not installed yet


@requires_sandbox
def test_control_plane_without_etcd_s3(tmp_path, dev):
    sent = dev["sophia-dev-control"]
    host = Host(tmp_path)
    proc = host.run(sent.script, stdin=sent.stdin)
    assert proc.returncode == 0, proc.stderr
    assert host.file("cluster-token").read_text() == sent.stdin + "\n"
    assert not host.file("etcd-s3.env").exists()
    assert "token unchanged" in host.run(sent.script, stdin=sent.stdin).stdout


@requires_sandbox
def test_worker(tmp_path, production):
    sent = production["sophia-mcp"]
    host = Host(tmp_path)
    proc = host.run(sent.script, stdin=sent.stdin)
    assert proc.returncode == 0, proc.stderr
    assert host.file("cluster-token").read_text() == sent.stdin + "\n"
    assert oct(host.file("cluster-token").stat().st_mode & 0o777) == "0o600"
    assert sent.stdin not in proc.stdout + proc.stderr


@requires_sandbox
def test_missing_input_fails_with_a_message(tmp_path, production):
    host = Host(tmp_path)
    proc = host.run(production["sophia-mcp"].script, stdin="")
    assert proc.returncode == 1 and "no cluster token on standard input" in proc.stderr
    token_only = production["sophia-control"].stdin.split("\n")[0]
    proc = host.run(production["sophia-control"].script, stdin=token_only)
    assert proc.returncode == 1 and "no etcd S3 access key and secret key" in proc.stderr


def _rotate(config):
    config["sophia:etcdS3SecretKey"] = ROTATED_SECRET_KEY


@requires_sandbox
def test_rotating_the_etcd_s3_keys_restarts_k3s_once(tmp_path, production):
    sent = production["sophia-control"]
    host = Host(tmp_path)
    host.set("installed", "active")
    assert host.run(sent.script, stdin=sent.stdin).returncode == 0
    # Unchanged keys on a running server: nothing restarts.
    proc = host.run(sent.script, stdin=sent.stdin)
    assert proc.returncode == 0 and "etcd S3 credentials unchanged" in proc.stdout
    assert not any("restart" in c or "daemon-reload" in c for c in host.calls())

    rotated = _sent("production", _rotate)["sophia-control"]
    assert rotated.stdin != sent.stdin and rotated.script == sent.script  # only stdin changes: an update
    proc = host.run(rotated.script, stdin=rotated.stdin)
    assert proc.returncode == 0, proc.stderr
    assert "restarting k3s so etcd snapshots use the new S3 credentials" in proc.stdout
    assert f"timeout {scripts.RESTART_SECONDS} systemctl restart k3s" in host.calls()
    assert ROTATED_SECRET_KEY in host.file("etcd-s3.env").read_text()
    assert ROTATED_SECRET_KEY not in proc.stdout + proc.stderr


def test_rotation_is_an_update_of_the_secrets_command_only():
    before = {r.name: r for r in runner.run("production").resources}
    config, secret_keys = stack_config.load("production")
    config = dict(config)
    _rotate(config)
    after = {r.name: r for r in runner.run("production", config=config, secret_keys=secret_keys).resources}
    # stdin is secret in the plan; the command text (and so every other command) is unchanged,
    # and the secrets command has an `update`, so the engine updates it in place.
    assert after["sophia-control-secrets"].inputs["update"] == after["sophia-control-secrets"].inputs["create"]
    for name in ("sophia-control-config", "sophia-control-install"):
        assert json.dumps(before[name].inputs, sort_keys=True) == json.dumps(after[name].inputs, sort_keys=True)
