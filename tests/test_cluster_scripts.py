"""The scripts sent to hosts: content, shellcheck, and idempotence run for real."""

from __future__ import annotations

import functools
import shlex
import subprocess
from pathlib import Path

import pytest

from sophia_infra.program.cluster import kubeconfig, scripts
from tests.conftest import parse_with
from tests.platform_helpers import plan
from tests.host_sandbox import FAKE_INSTALLER_SHA256, Host, requires_sandbox, trust_fake_installer
from tests import yaml_c


def _with_everything(r):
    r["k3s"].update(etcdS3={"bucket": "sophia-backups", "endpoint": "objects.example.com", "region": "us-east-1"},
                    installNvidiaToolkit=True, firewall=True, apiAllowFrom=["198.51.100.0/24"],
                    apiDnsName="k3s.example.com")
    r["hosts"]["sophia-mcp"] = {"address": "203.0.113.12", "privateAddress": "192.0.2.12", "flannelIface": "eth1"}


def _sent_scripts() -> dict[str, str]:
    """Every script the program sends to a host, taken from the commands it registers."""
    out = {}
    for stack in ("dev", "production"):
        for r in plan(stack).resources:  # the stack's plan, once per test process
            if r.type != "command:remote:Command":
                continue
            for verb in ("create", "update", "delete"):
                text = r.inputs.get(verb)
                if text:
                    argv = shlex.split(text)
                    assert argv[:3] == ["sudo", "bash", "-c"], text
                    out[f"{stack}:{r.name}:{verb}"] = argv[3]
    return out


def _variant_scripts() -> dict[str, str]:
    cfg = parse_with("production", _with_everything)
    out = {}
    for node in cfg.nodes:
        labels = scripts.node_labels(node)
        text = scripts.render_config(scripts.k3s_config(cfg, node, labels))
        out[f"{node.name}:config"] = scripts.apply_config_script(node, text)
        out[f"{node.name}:install"] = scripts.install_script(cfg, node)
        out[f"{node.name}:secrets"] = scripts.write_secrets_script(node, with_etcd_s3=node.cluster_init)
        out[f"{node.name}:firewall"] = scripts.firewall_script(cfg, node)
    return out


@functools.lru_cache(maxsize=None)
def all_scripts() -> dict[str, str]:
    """Every script the program sends (both stacks) and those of the variant with every option."""
    return {**_sent_scripts(), **_variant_scripts()}


def test_every_sent_script_passes_shellcheck(tmp_path):
    """One shellcheck run over every script, each in its own file (one process, not 50)."""
    scripts_by_file = {}
    for i, (name, script) in enumerate(sorted(all_scripts().items())):
        path = tmp_path / f"{i:03d}.sh"
        path.write_text(script)
        scripts_by_file[path.name] = name
    proc = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", "--format=gcc", *sorted(scripts_by_file)],
                          cwd=tmp_path, capture_output=True, text=True)
    findings = [f"{scripts_by_file[line.split(':', 1)[0]]}:{line.split(':', 1)[1]}" for line in proc.stdout.splitlines()]
    assert proc.returncode == 0 and not findings, "\n".join(findings) or proc.stderr
    assert len(all_scripts()) > 50


def test_control_plane_config():
    cfg = parse_with("production", _with_everything)
    cp = cfg.control_plane
    conf = scripts.k3s_config(cfg, cp, scripts.node_labels(cp))
    assert conf["cluster-init"] is True and "server" not in conf
    assert conf["disable"] == ["traefik"]
    assert conf["tls-san"] == ["203.0.113.10", "k3s.example.com"]
    assert conf["secrets-encryption"] is True and conf["write-kubeconfig-mode"] == "0600"
    assert conf["etcd-snapshot-schedule-cron"] == "0 */6 * * *" and conf["etcd-snapshot-retention"] == 28
    assert conf["etcd-s3"] is True and conf["etcd-s3-bucket"] == "sophia-backups"
    assert conf["token-file"] == scripts.TOKEN_PATH
    assert conf["agent-token-file"] == scripts.AGENT_TOKEN_PATH
    assert not any("secret" in k and "encryption" not in k for k in conf)  # S3 keys go via the service env


def test_the_control_plane_registers_tainted_and_workers_do_not():
    def with_taints(r):
        r["nodes"][0]["taints"] = ["dedicated=etcd:NoSchedule"]
        r["nodes"][2]["taints"] = ["team=mcp:NoSchedule"]

    cfg = parse_with("production", with_taints)
    for node in cfg.nodes:
        conf = yaml_c.load(scripts.render_config(scripts.k3s_config(cfg, node, scripts.node_labels(node))))
        if node.role == "control-plane":
            # Workloads never land next to etcd; K3s's own pods and the node agents tolerate it.
            assert conf["node-taint"] == ["CriticalAddonsOnly=true:NoExecute", "dedicated=etcd:NoSchedule"]
            assert conf["agent-token-file"] == scripts.AGENT_TOKEN_PATH
        else:
            assert "CriticalAddonsOnly=true:NoExecute" not in conf.get("node-taint", []), node.name
            assert "agent-token-file" not in conf, node.name
    assert parse_with("production").workers[1].name == "sophia-mcp"
    mcp = scripts.k3s_config(cfg, cfg.workers[1], {})
    assert mcp["node-taint"] == ["team=mcp:NoSchedule"]
    assert "node-taint" not in scripts.k3s_config(cfg, cfg.workers[0], {})


def test_the_node_agents_tolerate_the_control_plane_taint():
    """The device plugin and dcgm-exporter run on the control plane's GPU too."""
    from sophia_infra.program.platform.gpu import values as gpu_values
    cfg = parse_with("production")
    key, effect = "CriticalAddonsOnly", scripts.CONTROL_PLANE_TAINT.rsplit(":", 1)[1]
    for tol in gpu_values.node_tolerations(cfg):
        if tol["key"] == key:
            assert tol["operator"] == "Exists" and tol.get("effect") in (None, effect)
            break
    else:
        raise AssertionError("the node agents do not tolerate the control plane's taint")


def test_worker_config_labels_and_join():
    cfg = parse_with("production", _with_everything)
    node = next(n for n in cfg.nodes if n.name == "sophia-mcp")
    conf = scripts.k3s_config(cfg, node, scripts.node_labels(node))
    assert conf["server"] == "https://203.0.113.10:6443"
    assert set(conf["node-label"]) == {"gpu-type=A6000", "nvidia.com/gpu.present=true", "sophia.ai/role=worker"}
    assert conf["node-ip"] == "192.0.2.12" and conf["node-external-ip"] == "203.0.113.12"
    assert conf["flannel-iface"] == "eth1"
    assert "cluster-init" not in conf and "disable" not in conf


def test_install_pins_the_version_and_role():
    cfg = parse_with("production")
    cp, worker = cfg.control_plane, cfg.workers[0]
    cp_script, worker_script = scripts.install_script(cfg, cp), scripts.install_script(cfg, worker)
    assert "want=v1.34.2+k3s1" in cp_script and "INSTALL_K3S_EXEC=server" in cp_script
    assert "INSTALL_K3S_EXEC=agent" in worker_script
    assert "k3s-io/k3s/v1.34.2%2Bk3s1/install.sh" in cp_script  # the installer of that very release
    assert "nvidia-container-runtime" in worker_script  # GPU nodes check the runtime first


def test_no_script_carries_a_token_or_echoes_one():
    token = plan("production").secret_outputs["kubeconfig"]  # any secret value of the run
    for name, script in all_scripts().items():
        assert "placeholder-" not in script, name
        assert token not in script
        # A secret read from stdin is only ever tested (for emptiness, or on an agent for
        # the server token's form) or written to a file.
        for line in script.splitlines():
            if any(v in line for v in ("$token", "$agent_token", "$access_key", "$secret_key")):
                assert (line.strip().startswith(("if [ -z", 'case "$token" in'))
                        or line.rstrip().endswith('> "$tmp"')), (name, line)


def test_kubeconfig_rewrite_points_at_the_api_and_renames():
    raw = yaml_c.dump({"apiVersion": "v1", "kind": "Config", "current-context": "default",
                          "clusters": [{"name": "default", "cluster": {"server": "https://127.0.0.1:6443", "certificate-authority-data": "x"}}],
                          "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
                          "users": [{"name": "default", "user": {"client-key-data": "k"}}]})
    doc = yaml_c.load(kubeconfig.rewrite(raw, "k3s.example.com", "sophia"))
    assert doc["clusters"][0]["cluster"]["server"] == "https://k3s.example.com:6443"
    assert doc["current-context"] == "sophia" and doc["users"][0]["user"]["client-key-data"] == "k"


def test_empty_kubeconfig_says_what_to_do():
    with pytest.raises(kubeconfig.KubeconfigError, match="pulumi refresh"):
        kubeconfig.rewrite("", "k3s.example.com", "sophia")


# --- idempotence, run for real in a sandbox -------------------------------------------

@requires_sandbox
def test_config_apply_is_idempotent_restarts_on_change_and_rolls_back(tmp_path):
    cfg = parse_with("dev")
    node = cfg.workers[0]
    host = Host(tmp_path)
    first = scripts.apply_config_script(node, "server: https://a:6443\n")
    changed = scripts.apply_config_script(node, "server: https://b:6443\n")

    proc = host.run(first)
    assert proc.returncode == 0 and "not installed yet" in proc.stdout
    assert host.file("config.yaml").read_text() == "server: https://a:6443\n"
    assert oct(host.file("config.yaml").stat().st_mode & 0o777) == "0o600"

    host.set("installed", "active")
    proc = host.run(first)
    assert proc.returncode == 0 and "config unchanged" in proc.stdout
    assert not any("restart" in c for c in host.calls())

    proc = host.run(changed)
    assert proc.returncode == 0, proc.stderr
    assert "systemctl restart k3s-agent" in host.calls()
    assert host.file("config.yaml").read_text() == "server: https://b:6443\n"

    host.set("restart_fails")
    proc = host.run(first)
    assert proc.returncode == 1 and "rolling back" in proc.stderr
    assert host.file("config.yaml").read_text() == "server: https://b:6443\n"  # the previous, working file


@requires_sandbox
def test_install_skips_a_host_at_the_pinned_version_and_upgrades_otherwise(tmp_path):
    cfg = parse_with("dev", trust_fake_installer)
    node = cfg.workers[0]
    host = Host(tmp_path)
    script = scripts.install_script(cfg, node)

    proc = host.run(script)
    assert proc.returncode == 0, proc.stderr
    calls = host.calls()
    # install.sh only installs; the script starts K3s itself, bounded, then waits for it.
    assert "installer v1.34.2+k3s1 agent skip-start=true" in calls
    assert calls.index("installer v1.34.2+k3s1 agent skip-start=true") < calls.index(
        f"timeout {scripts.RESTART_SECONDS} systemctl restart k3s-agent")
    assert "K3s v1.34.2+k3s1 is running" in proc.stdout

    host.set("nvidia_in_containerd")
    proc = host.run(script)
    assert proc.returncode == 0 and "already running" in proc.stdout
    assert not any(c.startswith("installer") or "restart" in c for c in host.calls())

    host.set(version="v1.33.5+k3s1")  # an upgrade: the running unit is restarted on the new binary
    proc = host.run(script)
    assert proc.returncode == 0, proc.stderr
    assert "installer v1.34.2+k3s1 agent skip-start=true" in host.calls()
    assert "systemctl restart k3s-agent" in host.calls()


@requires_sandbox
def test_gpu_node_without_nvidia_runtime_stops_with_a_clear_message(tmp_path):
    cfg = parse_with("dev")
    host = Host(tmp_path, nvidia=False)
    proc = host.run(scripts.install_script(cfg, cfg.workers[0]))
    assert proc.returncode == 1
    assert "NVIDIA container runtime is missing" in proc.stderr and "installNvidiaToolkit" in proc.stderr
    assert not any(c.startswith("installer") for c in host.calls())


@requires_sandbox
def test_token_goes_to_a_0600_file_and_is_never_printed(tmp_path):
    cfg = parse_with("dev")
    host = Host(tmp_path)
    script = scripts.write_secrets_script(cfg.workers[0], with_etcd_s3=False)
    proc = host.run(script, stdin="K10abc::node:s3cr3t\n")
    assert proc.returncode == 0 and "s3cr3t" not in proc.stdout + proc.stderr
    token = host.file("cluster-token")
    assert token.read_text() == "K10abc::node:s3cr3t\n" and oct(token.stat().st_mode & 0o777) == "0o600"
    assert "token unchanged" in host.run(script, stdin="K10abc::node:s3cr3t\n").stdout
    assert host.run(script, stdin="").returncode == 1


@requires_sandbox
def test_gpu_node_restarts_k3s_once_when_containerd_lacks_the_nvidia_runtime(tmp_path):
    cfg = parse_with("dev")
    host = Host(tmp_path)
    host.set("installed", "active", version=cfg.k3s.version)
    proc = host.run(scripts.install_script(cfg, cfg.workers[0]))
    assert proc.returncode == 0 and "picks up the NVIDIA runtime" in proc.stdout
    assert "systemctl restart k3s-agent" in host.calls()
    # A CPU-only control plane never restarts for the runtime.
    host.set(version=cfg.k3s.version)
    proc = host.run(scripts.install_script(cfg, cfg.control_plane))
    assert "restart" not in " ".join(host.calls())


@requires_sandbox
def test_installer_is_fetched_to_a_private_directory_and_removed(tmp_path):
    cfg = parse_with("dev", trust_fake_installer)
    host = Host(tmp_path)
    proc = host.run(scripts.install_script(cfg, cfg.workers[0]))
    assert proc.returncode == 0, proc.stderr
    download = next(c for c in host.calls() if c.startswith("download dir "))
    directory, mode = download.removeprefix("download dir ").split(" mode ")
    assert mode == "700" and directory.startswith("/tmp/tmp.")  # mktemp -d, not a fixed /tmp path
    assert not Path(directory).exists()  # removed on exit
    assert f"--max-time {scripts.DOWNLOAD_SECONDS}" in next(c for c in host.calls() if c.startswith("curl "))
    assert f"timeout {scripts.INSTALLER_SECONDS} sh {directory}/install.sh" in host.calls()


@requires_sandbox
def test_an_agent_that_never_reports_ready_fails_the_install_instead_of_hanging(tmp_path):
    cfg = parse_with("dev", trust_fake_installer)
    host = Host(tmp_path)
    host.set("restart_hangs")  # Type=notify, TimeoutStartSec=0, and the agent cannot join
    proc = host.run(scripts.install_script(cfg, cfg.workers[0]))
    assert proc.returncode == 1
    assert f"did not report ready within {scripts.RESTART_SECONDS}s" in proc.stderr
    assert "did not become ready on sophia-dev-a10; see: journalctl -u k3s-agent" in proc.stderr
    assert f"timeout {scripts.RESTART_SECONDS} systemctl restart k3s-agent" in host.calls()


@requires_sandbox
def test_a_config_restart_that_hangs_is_bounded_and_rolled_back(tmp_path):
    cfg = parse_with("dev")
    node = cfg.workers[0]
    host = Host(tmp_path)
    host.set("installed", "active")
    assert host.run(scripts.apply_config_script(node, "server: https://a:6443\n")).returncode == 0
    host.set("restart_hangs")
    proc = host.run(scripts.apply_config_script(node, "server: https://b:6443\n"))
    assert proc.returncode == 1 and "rolling back" in proc.stderr
    assert host.calls().count(f"timeout {scripts.RESTART_SECONDS} systemctl restart k3s-agent") == 2
    assert host.file("config.yaml").read_text() == "server: https://a:6443\n"


def test_every_restart_in_a_sent_script_is_bounded():
    for name, script in all_scripts().items():
        for line in script.splitlines():
            if "systemctl restart" in line or "systemctl start" in line:
                assert line.strip().startswith(f"if ! timeout {scripts.RESTART_SECONDS} systemctl restart "), (name, line)
            if "curl " in line:
                assert "--max-time" in line, (name, line)
            if "install.sh" in line and line.strip().startswith("INSTALL_K3S_"):
                assert "INSTALL_K3S_SKIP_START=true" in line, (name, line)


@requires_sandbox
def test_uninstall_removes_k3s_from_a_host_that_is_still_this_node(tmp_path):
    cfg = parse_with("dev")
    node = cfg.workers[0]
    host = Host(tmp_path)
    host.set("installed", "active")
    host.run(scripts.apply_config_script(node, scripts.render_config(scripts.k3s_config(cfg, node, {}))))
    proc = host.run(scripts.uninstall_script(node))
    assert proc.returncode == 0 and "K3s uninstalled" in proc.stdout, proc.stderr
    assert "uninstall k3s-agent-uninstall.sh" in host.calls()
    assert f"timeout {scripts.UNINSTALL_SECONDS} /usr/local/bin/k3s-agent-uninstall.sh" in host.calls()


@requires_sandbox
def test_uninstall_leaves_a_host_now_configured_as_another_node(tmp_path):
    """A rename on the same host: the new node's commands ran first; the old node's
    uninstall, run last, must not wipe it."""
    def rename(r):
        next(n for n in r["nodes"] if n["name"] == "sophia-dev-a10")["name"] = "sophia-dev-gpu"
        r["hosts"]["sophia-dev-gpu"] = r["hosts"].pop("sophia-dev-a10")

    old = parse_with("dev").workers[0]
    cfg = parse_with("dev", rename)
    renamed = next(n for n in cfg.nodes if n.name == "sophia-dev-gpu")
    host = Host(tmp_path)
    host.set("installed", "active")
    host.run(scripts.apply_config_script(renamed, scripts.render_config(scripts.k3s_config(cfg, renamed, {}))))
    assert "node-name: sophia-dev-gpu" in host.file("config.yaml").read_text()
    host.run("set -e\nprintf x > /etc/rancher/k3s/cluster-token", "")
    proc = host.run(scripts.uninstall_script(old))
    assert proc.returncode == 0, proc.stderr
    assert "not uninstalling K3s: this host is now configured as node sophia-dev-gpu, not sophia-dev-a10" in proc.stdout
    assert not any(c.startswith("uninstall") or "uninstall.sh" in c for c in host.calls())
    assert host.file("cluster-token").exists()  # the new node's token is kept


@requires_sandbox
def test_removing_a_node_whose_host_is_gone_deletes_it_without_a_drain(tmp_path):
    host = Host(tmp_path)
    script = scripts.drain_and_delete_script("sophia-dev-a10")
    proc = host.run(script)
    assert proc.returncode == 0, proc.stderr
    assert any(" drain sophia-dev-a10 " in c for c in host.calls())
    assert any("delete node sophia-dev-a10" in c and f"--timeout={scripts.NODE_DELETE_SECONDS}s" in c for c in host.calls())

    host.set("node_not_ready")
    proc = host.run(script)
    assert proc.returncode == 0 and "deleting it without a drain" in proc.stdout
    assert not any(" drain " in c or " cordon " in c for c in host.calls())
    assert any("delete node sophia-dev-a10" in c for c in host.calls())

    host.set("node_gone")
    assert "already gone" in host.run(script).stdout


def _peers(cfg, node):
    return sorted({a for n in cfg.nodes if n.name != node.name
                   for a in (cfg.host(n).address, cfg.host(n).private_address) if a})


def test_firewall_opens_node_exporter_to_every_peer_only():
    cfg = parse_with("production", _with_everything)
    for node in cfg.nodes:
        script = scripts.firewall_script(cfg, node)
        opened = {line.split(" from ")[1].split()[0] for line in script.splitlines()
                  if f"to any port {scripts.NODE_EXPORTER_PORT} " in line}
        assert opened == set(_peers(cfg, node)), node.name
        assert "192.0.2.12" in opened or node.name == "sophia-mcp"  # private addresses too


@requires_sandbox
def test_firewall_script_runs_and_opens_9100_from_every_peer(tmp_path):
    cfg = parse_with("production", _with_everything)
    node = next(n for n in cfg.nodes if n.name == "sophia-mcp")
    host = Host(tmp_path)
    proc = host.run(scripts.firewall_script(cfg, node))
    assert proc.returncode == 0 and "firewall rules applied" in proc.stdout, proc.stderr
    calls = host.calls()
    for peer in _peers(cfg, node):
        assert f"ufw allow proto tcp from {peer} to any port 9100 comment sophia-node-exporter" in calls
    assert not any("port 9100" in c and ("from any" in c or "192.0.2.12" in c or "203.0.113.12" in c) for c in calls)
    assert calls[-1] == "ufw --force enable"


@requires_sandbox
def test_nvidia_toolkit_key_and_list_are_readable_by_apt(tmp_path):
    cfg = parse_with("dev", lambda r: r["k3s"].update(installNvidiaToolkit=True, installerSha256=FAKE_INSTALLER_SHA256))
    host = Host(tmp_path, nvidia=False)
    proc = host.run(scripts.install_script(cfg, cfg.workers[0]))
    assert proc.returncode == 0, proc.stderr
    seen = [c for c in host.calls() if c.startswith("apt sees ")]
    assert seen and all(c.endswith(" mode 644") for c in seen), seen
    assert len(seen) == 4  # both files, at `apt-get update` and at `apt-get install`
    assert any(c.startswith("apt-get -o DPkg::Lock::Timeout=") and " install " in c for c in host.calls())


@requires_sandbox
def test_an_installer_that_does_not_match_the_pinned_checksum_never_runs(tmp_path):
    trusted = parse_with("dev", trust_fake_installer)
    host = Host(tmp_path)
    host.set("installer_tampered")  # the download differs from the installer that was pinned
    proc = host.run(scripts.install_script(trusted, trusted.workers[0]))
    assert proc.returncode == 1
    assert "not running install.sh of K3s v1.34.2+k3s1" in proc.stderr and "sophia:k3s.installerSha256" in proc.stderr
    assert not any(c.startswith("installer") for c in host.calls())
    assert not (host.state / "tampered_installer_ran").exists()
    assert not any("restart" in c for c in host.calls())

    # The stack files' unpinned value (all zeros) matches no installer at all.
    unpinned = parse_with("dev")
    assert unpinned.k3s.installer_sha256 == scripts.UNPINNED_INSTALLER_SHA256
    (host.state / "installer_tampered").unlink()
    proc = host.run(scripts.install_script(unpinned, unpinned.workers[0]))
    assert proc.returncode == 1 and f"its SHA-256 is {FAKE_INSTALLER_SHA256}" in proc.stderr
    assert not any(c.startswith("installer") for c in host.calls())

    # The installer that was pinned runs.
    proc = host.run(scripts.install_script(trusted, trusted.workers[0]))
    assert proc.returncode == 0 and "installer v1.34.2+k3s1 agent skip-start=true" in host.calls(), proc.stderr


@requires_sandbox
def test_the_ready_wait_waits_for_the_pinned_version(tmp_path):
    """After an upgrade, the next node starts only once this one is Ready *and* its kubelet
    reports the new version; an upgrade that did not take stops the rollout with one sentence."""
    host = Host(tmp_path)
    host.set("active", version="v1.34.2+k3s1")
    ok = host.run(scripts.wait_registered_script("sophia-mcp", seconds=3, version="v1.34.2+k3s1"))
    assert ok.returncode == 0 and "node sophia-mcp is Ready at v1.34.2+k3s1" in ok.stdout
    (host.state / "kubelet_version").write_text("v1.33.5+k3s1\n")
    # No time left: the first check decides (the 5 s poll would only repeat it).
    stuck = host.run(scripts.wait_registered_script("sophia-mcp", seconds=0, version="v1.34.2+k3s1"))
    assert stuck.returncode == 1
    assert stuck.stderr.strip().splitlines()[-1] == "node sophia-mcp did not become Ready at v1.34.2+k3s1"


def test_authorized_keys_hold_exactly_the_stack_keys_and_rewrite_only_on_change(tmp_path):
    """The file the stack owns: the connecting key first, then sophia:sshAuthorizedKeys, once
    each, 0600 in a 0700 .ssh; a key that is no longer listed (the old key after a rotation)
    is gone; a second run changes nothing."""
    from sophia_infra.program import ssh_keys

    current = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMcurrentkeymaterial0000000000000000000000000 ops@a"
    nxt = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINnextkeymaterial000000000000000000000000000000 ops@b"
    home = tmp_path / "home"
    home.mkdir()
    (home / ".ssh").mkdir()
    (home / ".ssh" / "authorized_keys").write_text("ssh-rsa AAAAB3Nzaold launch-time key\n")

    def run(keys):
        script = ssh_keys.authorized_keys_script("ubuntu", keys, home=str(home))
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)

    keys = ssh_keys.authorized_keys(current, [nxt, current + " duplicate"])
    assert keys == [current, nxt]
    first = run(keys)
    assert first.returncode == 0 and "written (2 key(s))" in first.stdout, first.stderr
    text = (home / ".ssh" / "authorized_keys").read_text()
    assert text.splitlines()[1:] == [current, nxt] and "launch-time" not in text
    assert oct((home / ".ssh" / "authorized_keys").stat().st_mode & 0o777) == "0o600"
    assert oct((home / ".ssh").stat().st_mode & 0o777) == "0o700"
    assert run(keys).stdout.strip() == "authorized keys unchanged"
    # After the rotation the stack connects with the next key; the old one is not authorized.
    assert run(ssh_keys.authorized_keys(nxt, [])).returncode == 0
    assert current not in (home / ".ssh" / "authorized_keys").read_text()


def test_authorized_keys_script_is_shellcheck_clean():
    from sophia_infra.program import ssh_keys

    script = ssh_keys.authorized_keys_script("ubuntu", ["ssh-ed25519 AAAAC3Nza x"])
    proc = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", "-"], input=script, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout
