"""The `<node>-secrets` commands run for real, with the script and the standard input the
program registers: pulumi-command sends stdin as given, so its last line has no newline."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

import pytest

from sophia_infra.program.cluster import scripts
from sophia_infra.tools.plan import mocks, runner, stack_config
from tests.host_sandbox import Host, requires_sandbox
from tests.platform_helpers import plan as shared_plan

ROTATED_SECRET_KEY = "rotated-etcd-s3-secret-key"


@dataclass
class SentSecrets:
    script: str  # the create command's script
    stdin: str  # exactly what the program passes as the command's stdin


def _sent(stack: str, change=None, printed: dict[str, str] | None = None) -> dict[str, SentSecrets]:
    """Each node's secrets command, as the program registers it (secrets unmasked);
    `printed` collects what each command printed (the control plane's read commands)."""
    stdin_of: dict[str, str] = {}

    def capture(name: str, inputs: dict) -> str:
        if name.endswith("-secrets"):
            value = inputs.get("stdin")
            stdin_of[name] = value["value"] if isinstance(value, dict) else value  # a secret's envelope
        out = mocks.default_command_stdout(name, inputs)
        if printed is not None:
            printed[name] = out
        return out

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
    # server token, agent token, access key, secret key
    assert cp.stdin.count("\n") == 3 and not cp.stdin.endswith("\n")
    assert dev["sophia-dev-control"].stdin.count("\n") == 1  # server token, agent token
    worker = production["sophia-mcp"]
    assert worker.stdin.startswith("K10") and "\n" not in worker.stdin  # the secure agent token
    # The program builds it with the same function the tests document.
    token, agent_token, access_key, secret_key = cp.stdin.split("\n")
    assert scripts.secrets_stdin(token, agent_token, (access_key, secret_key)) == cp.stdin


@requires_sandbox
def test_control_plane_with_etcd_s3(tmp_path, production):
    sent = production["sophia-control"]
    token, agent_token, access_key, secret_key = sent.stdin.split("\n")
    host = Host(tmp_path)
    proc = host.run(sent.script, stdin=sent.stdin)
    assert proc.returncode == 0, proc.stderr
    assert "token written" in proc.stdout and "etcd S3 credentials written" in proc.stdout
    assert host.file("cluster-token").read_text() == token + "\n"
    assert host.file("agent-token").read_text() == agent_token + "\n"
    assert host.file("etcd-s3.env").read_text() == (
        f"AWS_ACCESS_KEY_ID={access_key}\nAWS_SECRET_ACCESS_KEY={secret_key}\n")
    for name in ("cluster-token", "agent-token", "etcd-s3.env"):
        assert oct(host.file(name).stat().st_mode & 0o777) == "0o600"
    dropin = host.systemd / "system/k3s.service.d/10-etcd-s3.conf"
    assert dropin.read_text() == f"[Service]\nEnvironmentFile=-{scripts.S3_ENV_PATH}\n"
    assert oct(dropin.stat().st_mode & 0o777) == "0o644"
    for value in (token, agent_token, access_key, secret_key):
        assert value not in proc.stdout + proc.stderr
    assert not any("restart" in c for c in host.calls())  # K3s is not installed yet


@requires_sandbox
def test_control_plane_without_etcd_s3(tmp_path, dev):
    sent = dev["sophia-dev-control"]
    host = Host(tmp_path)
    proc = host.run(sent.script, stdin=sent.stdin)
    assert proc.returncode == 0, proc.stderr
    token, agent_token = sent.stdin.split("\n")
    assert host.file("cluster-token").read_text() == token + "\n"
    assert host.file("agent-token").read_text() == agent_token + "\n"
    assert not host.file("etcd-s3.env").exists()
    again = host.run(sent.script, stdin=sent.stdin).stdout
    assert "token unchanged" in again and "agent token unchanged" in again


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
    lines = production["sophia-control"].stdin.split("\n")
    proc = host.run(production["sophia-control"].script, stdin=lines[0])
    assert proc.returncode == 1 and "no agent token (line 2) on standard input" in proc.stderr
    proc = host.run(production["sophia-control"].script, stdin="\n".join(lines[:2]))
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
    assert "restarting k3s so it uses the new etcd S3 credentials" in proc.stdout
    assert f"timeout {scripts.RESTART_SECONDS} systemctl restart k3s" in host.calls()
    assert ROTATED_SECRET_KEY in host.file("etcd-s3.env").read_text()
    assert ROTATED_SECRET_KEY not in proc.stdout + proc.stderr


def test_rotation_is_an_update_of_the_secrets_command_only():
    before = {r.name: r for r in shared_plan("production").resources}  # the stack as it is, planned once per test process
    config, secret_keys = stack_config.load("production")
    config = dict(config)
    _rotate(config)
    after = {r.name: r for r in runner.run("production", config=config, secret_keys=secret_keys).resources}
    # stdin is secret in the plan; the command text (and so every other command) is unchanged,
    # and the secrets command has an `update`, so the engine updates it in place.
    assert after["sophia-control-secrets"].inputs["update"] == after["sophia-control-secrets"].inputs["create"]
    for name in ("sophia-control-config", "sophia-control-install"):
        assert json.dumps(before[name].inputs, sort_keys=True) == json.dumps(after[name].inputs, sort_keys=True)


# --- the agent token: agents never hold the server token ---------------------------------

def _with_extra_server(config):
    nodes = json.loads(config["sophia:nodes"])
    nodes.insert(1, {"name": "sophia-server-2", "role": "control-plane", "arch": "amd64"})
    config["sophia:nodes"] = json.dumps(nodes)
    hosts = json.loads(config["sophia:hosts"])
    hosts["sophia-server-2"] = "203.0.113.20"
    config["sophia:hosts"] = json.dumps(hosts)


def test_agents_join_with_the_agent_token_and_only_servers_get_the_server_token():
    printed: dict[str, str] = {}
    sent = _sent("production", _with_extra_server, printed)
    server_token = printed["sophia-control-read-token"].strip()
    agent_token = printed["sophia-control-read-agent-token"].strip()
    assert "::server:" in server_token and "::node:" in agent_token
    first_token, first_agent_password = sent["sophia-control"].stdin.split("\n")[:2]
    assert first_token != first_agent_password  # two generated passwords
    for agent in ("sophia-ai-core", "sophia-mcp", "sophia-data", "sophia-dev"):
        assert sent[agent].stdin == agent_token, agent
        assert server_token not in sent[agent].stdin and first_token not in sent[agent].stdin
    # An extra server joins with the server token and keeps the agent password K3s needs on
    # every server (a server without it would reset the agent password to the server token's).
    assert sent["sophia-server-2"].stdin == f"{server_token}\n{first_agent_password}"


def test_the_agent_token_stays_secret_and_agents_wait_for_it():
    result = runner.run("production", **_loaded("production", _with_extra_server))
    names = {r.name: r for r in result.resources}
    reader = names["sophia-control-read-agent-token"]
    assert reader.inputs["logging"] == "none"
    assert "stdout" in reader.options["additionalSecretOutputs"]
    assert reader.inputs["triggers"] == [mocks.SECRET]  # a new agent password reads it again
    assert shlex.split(reader.inputs["create"])[3] == scripts.read_agent_token_script()
    for agent in ("sophia-ai-core", "sophia-mcp"):
        secrets_cmd = names[f"{agent}-secrets"]
        assert secrets_cmd.inputs["stdin"] == mocks.SECRET
        assert reader.urn in secrets_cmd.dependencies
        assert names["sophia-control-read-token"].urn not in secrets_cmd.dependencies
    server = names["sophia-server-2-secrets"]
    assert server.inputs["stdin"] == mocks.SECRET
    assert names["sophia-control-read-token"].urn in server.dependencies
    assert names["sophia-agent-token"].type == "random:index/randomPassword:RandomPassword"


def _loaded(stack: str, change=None) -> dict:
    config, secret_keys = stack_config.load(stack)
    config = dict(config)
    if change:
        change(config)
    return {"config": config, "secret_keys": secret_keys}


@requires_sandbox
def test_an_agent_refuses_the_server_token(tmp_path, production):
    host = Host(tmp_path)
    server_token = mocks.fake_k3s_token("sophia-control-read-token")
    proc = host.run(production["sophia-mcp"].script, stdin=server_token)
    assert proc.returncode == 1 and "refusing the server token on an agent" in proc.stderr
    assert server_token not in proc.stdout + proc.stderr
    assert not host.file("cluster-token").exists()
    proc = host.run(production["sophia-mcp"].script, stdin=production["sophia-mcp"].stdin)
    assert proc.returncode == 0 and "::node:" in host.file("cluster-token").read_text()


@requires_sandbox
def test_a_new_agent_token_restarts_a_running_server_once_its_config_names_the_file(tmp_path, dev):
    sent = dev["sophia-dev-control"]
    token = sent.stdin.split("\n")[0]
    host = Host(tmp_path)
    host.set("installed", "active")
    # An existing server, before this program named agent-token-file: the config step
    # (which restarts K3s) brings it in; the secrets step must not restart K3s for nothing.
    assert host.run(sent.script, stdin=sent.stdin).returncode == 0
    assert not any("restart" in c for c in host.calls())
    host.run("set -e\nprintf 'agent-token-file: /etc/rancher/k3s/agent-token\\n' > /etc/rancher/k3s/config.yaml")
    proc = host.run(sent.script, stdin=f"{token}\nrotated-agent-password")
    assert proc.returncode == 0, proc.stderr
    assert "restarting k3s so it uses the new agent token" in proc.stdout
    assert host.calls().count(f"timeout {scripts.RESTART_SECONDS} systemctl restart k3s") == 1
    assert "rotated-agent-password" not in proc.stdout + proc.stderr
    proc = host.run(sent.script, stdin=f"{token}\nrotated-agent-password")
    assert "agent token unchanged" in proc.stdout and not any("restart" in c for c in host.calls())


@requires_sandbox
def test_the_agent_token_is_read_back_only_once_k3s_made_it_an_agent_token(tmp_path):
    host = Host(tmp_path)
    server = mocks.fake_k3s_token("x")
    agent = mocks.fake_k3s_token("x", user="node")
    setup = "set -e\nmkdir -p /var/lib/rancher/k3s/server\ncd /var/lib/rancher/k3s/server\n"
    # No agent token configured: K3s links agent-token to the server token.
    proc = host.run(setup + f"printf '%s\\n' '{server}' > token\nln -s token agent-token\n"
                    + scripts.read_agent_token_script())
    assert proc.returncode == 1 and "holds no agent token" in proc.stderr
    assert server not in proc.stdout + proc.stderr
    proc = host.run(setup + f"printf '%s\\n' '{agent}' > agent-token\n" + scripts.read_agent_token_script())
    assert proc.returncode == 0 and proc.stdout == agent + "\n"
