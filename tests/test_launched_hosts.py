"""A launched Lambda host has two addresses (`ip`, `private_ip`) and the API does not say which
one its interface carries: the config script takes K3s's node-ip from the host's interfaces,
and both firewalls admit both addresses of every launched peer. The scripts run for real in
the sandbox (tests/host_sandbox.py, with a stub `ip` listing the addresses a test gives)."""

from __future__ import annotations

import subprocess

import pytest

from sophia_infra.program.cluster import scripts
from sophia_infra.program.cluster.addresses import LaunchedHost
from sophia_infra.program.lambda_cloud import resources
from tests.conftest import parse_with
from tests.host_sandbox import Host, requires_sandbox
from tests import yaml_c

PUBLIC, PRIVATE = "203.0.113.21", "192.0.2.21"


def _launched(address: str = PUBLIC, private: str | None = PRIVATE) -> LaunchedHost:
    return LaunchedHost.model_construct(address=address, private_address=None, flannel_iface=None,
                                        launched_private_ip=private)


def _config_script(private: str | None = PRIVATE) -> str:
    cfg = parse_with("dev")
    node = cfg.workers[0]
    hosts = {**cfg.hosts, node.name: _launched(private=private)}
    text = scripts.render_config(scripts.k3s_config(cfg, node, {}, hosts))
    return scripts.apply_config_script(node, text, scripts.node_ip_candidates(hosts[node.name]))


def _written(host: Host) -> dict:
    return yaml_c.load(host.file("config.yaml").read_text())


def test_the_node_ip_choice_passes_shellcheck():
    for script in (_config_script(), _config_script(private=None)):
        proc = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", "-"], input=script,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


def test_esc_hosts_keep_their_fixed_node_ip_and_no_choice():
    cfg = parse_with("production", lambda raw: raw["hosts"]["sophia-mcp"].update(privateAddress="192.0.2.12"))
    node = next(n for n in cfg.nodes if n.name == "sophia-mcp")
    assert scripts.node_ip_candidates(cfg.hosts[node.name]) == ()
    assert scripts.k3s_config(cfg, node, {})["node-ip"] == "192.0.2.12"
    assert "ip -o addr" not in scripts.apply_config_script(node, "x: 1\n")


@requires_sandbox
@pytest.mark.parametrize("on_host,node_ip,external", [
    ([PRIVATE], PRIVATE, PUBLIC),  # NAT: the public address is not on the host
    ([PUBLIC], PUBLIC, None),
    ([PRIVATE, PUBLIC], PUBLIC, None),  # both: the one every peer reaches, in any region
])
def test_node_ip_is_the_address_the_host_has_on_an_interface(tmp_path, on_host, node_ip, external):
    host = Host(tmp_path)
    (host.state / "addrs").write_text("".join(f"{a}\n" for a in on_host))
    script = _config_script()
    proc = host.run(script)
    assert proc.returncode == 0, proc.stderr
    written = _written(host)
    assert written["node-ip"] == node_ip and written.get("node-external-ip") == external
    assert host.run(script).stdout.strip().endswith("config unchanged")  # the same choice again: no restart


@requires_sandbox
def test_a_host_with_neither_address_fails_in_one_sentence_and_writes_nothing(tmp_path):
    host = Host(tmp_path)
    (host.state / "addrs").write_text("10.0.0.9\n")
    proc = host.run(_config_script())
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"none of the instance's addresses ({PUBLIC}, {PRIVATE}) is on an interface of this "
                                   "host (ip -o addr show), so K3s would advertise an address the other nodes do not "
                                   "admit; check the host's network and run pulumi up again")
    assert not host.file("config.yaml").exists()


def test_ufw_and_the_lambda_rules_admit_both_addresses_of_a_launched_peer():
    cfg = parse_with("dev")
    control, worker = cfg.control_plane, cfg.workers[0]
    hosts = {**cfg.hosts, worker.name: _launched()}
    ufw = scripts.firewall_script(cfg, control, hosts)
    for addr in (PUBLIC, PRIVATE):
        assert f"ufw allow proto tcp from {addr} to any port 6443,10250 comment sophia-nodes" in ufw
    rules = resources.firewall_rules(cfg, {worker.name: [PUBLIC, PRIVATE]}, "t")
    kubelet = {r["source_network"] for r in rules if r["port_range"] == [10250, 10250]}
    assert kubelet == {f"{PUBLIC}/32", f"{PRIVATE}/32"}
    assert scripts.k3s_config(cfg, control, {}, {**hosts, control.name: _launched("203.0.113.20", "192.0.2.20")})[
        "tls-san"][:2] == ["203.0.113.20", "192.0.2.20"]
