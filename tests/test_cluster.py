"""The cluster under Pulumi's mock monitor: shape, ordering, secrecy, change and removal."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from sophia_infra.program.cluster import nodes
from sophia_infra.tools.plan import runner, stack_config
from sophia_infra.tools.plan.mocks import SECRET
from tests import yaml_c
from tests.platform_helpers import plan_with


def _run(stack: str, change=None):
    """The stack's plan after `change` to its config, once per test process (do not mutate)."""
    config, secret_keys = stack_config.load(stack)
    if change:
        config = dict(config)
        change(config)
    return plan_with(stack, config, secret_keys)


def _edit(key: str, fn):
    def change(config):
        value = json.loads(config[key])
        fn(value)
        config[key] = json.dumps(value)
    return change


@pytest.fixture(scope="module")
def production():
    return _run("production")


def _by_name(result):
    return {r.name: r for r in result.resources}


def _urns_of(result, component_name: str) -> set[str]:
    parent = next(r.urn for r in result.resources if r.name == component_name and r.type.startswith("sophia:k3s:"))
    return {r.urn for r in result.resources if r.parent == parent} | {parent}


def test_one_control_plane_and_four_workers(production):
    types = [r.type for r in production.resources]
    assert types.count("sophia:k3s:ControlPlane") == 1
    assert types.count("sophia:k3s:Worker") == 4
    assert types.count("kubernetes:core/v1:NodePatch") == 5


def test_nodes_roll_one_at_a_time_servers_first_each_ready_at_the_pin(production):
    """A K3s upgrade (or any change to the nodes' commands) goes one node at a time, the control
    plane first, then the extra servers, then the agents (k3s-ansible's serial upgrade,
    system-upgrade-controller's server plan before its agent plan): each node's first command
    waits for the previous node's Ready wait, and that wait names the pinned version, so a new
    pin re-runs it as an update and the rollout stops at a node that does not come back."""
    names = _by_name(production)
    cfg = production.cfg
    chain = [n.name for n in cfg.workers if n.role == "control-plane"] + [n.name for n in cfg.workers if n.role == "worker"]
    previous = names[f"{cfg.control_plane.name}-registered"]
    for node in chain:
        # (the firewall rules are added in parallel: nothing restarts for them)
        assert previous.urn in names[f"{node}-secrets"].dependencies, (node, previous.name)
        wait = names[f"{node}-membership"]
        assert f"= {cfg.k3s.version}" in wait.inputs["create"] and wait.inputs["update"] == wait.inputs["create"]
        previous = wait
    assert f"= {cfg.k3s.version}" in names[f"{cfg.control_plane.name}-registered"].inputs["create"]
    # a pinned version change touches the Ready waits' scripts, never their triggers (no drain)
    assert cfg.k3s.version not in json.dumps(names[f"{chain[0]}-membership"].inputs.get("triggers"))


def test_node_chain_order(production):
    names = _by_name(production)
    for node in ("sophia-control", "sophia-mcp"):
        assert names[f"{node}-secrets"].urn in names[f"{node}-config"].dependencies
        assert names[f"{node}-config"].urn in names[f"{node}-install"].dependencies
    assert names["sophia-mcp-install"].urn in names["sophia-mcp-membership"].dependencies
    assert names["sophia-mcp-membership"].urn in names["sophia-mcp-labels"].dependencies
    assert names["sophia-control-registered"].urn in names["sophia-control-labels"].dependencies


def test_token_and_kubeconfig_are_secret(production):
    names = _by_name(production)
    assert production.outputs["kubeconfig"] == SECRET
    kube = yaml_c.load(production.secret_outputs["kubeconfig"])
    assert kube["clusters"][0]["cluster"]["server"] == "https://203.0.113.10:6443"
    for w in ("sophia-ai-core", "sophia-mcp"):
        assert names[f"{w}-secrets"].inputs["stdin"] == SECRET  # the join token
    assert names["sophia-control-secrets"].inputs["stdin"] == SECRET
    for reader in ("sophia-control-read-token", "sophia-control-read-agent-token", "sophia-control-read-kubeconfig"):
        assert names[reader].inputs["logging"] == "none"
        assert "stdout" in names[reader].options["additionalSecretOutputs"]
    assert names["sophia-k8s"].inputs["kubeconfig"] == SECRET
    assert names["sophia-k8s"].inputs["clusterIdentifier"] == "k3s-sophia-control"


def test_no_secret_in_command_text_or_plain_outputs(production):
    secrets = [v for k, v in production.config.items() if "placeholder-" in v]
    secrets.append(production.secret_outputs["kubeconfig"].split("client-key-data: ")[1].split()[0])
    plain = json.dumps({k: v for k, v in production.outputs.items() if v != SECRET})
    commands = json.dumps([r.inputs for r in production.resources if r.type == "command:remote:Command"])
    for value in secrets:
        assert value not in plain and value not in commands


def test_every_resource_uses_the_cluster_provider(production):
    k8s = [r for r in production.resources if r.type.startswith("kubernetes:")]
    assert k8s and all(r.provider.startswith(next(x.urn for x in production.resources if x.name == "sophia-k8s")) for r in k8s)


def test_changing_a_workers_labels_does_not_touch_its_install(production):
    changed = _run("production", _edit("sophia:nodes", lambda nodes: nodes[2].update(labels={"team": "mcp"})))
    before, after = _by_name(production), _by_name(changed)
    assert before["sophia-mcp-install"].inputs == after["sophia-mcp-install"].inputs  # no diff: not replaced, not rerun
    assert before["sophia-mcp-config"].inputs != after["sophia-mcp-config"].inputs  # config.yaml re-applied (update)
    assert after["sophia-mcp-config"].inputs["update"]  # an update command exists, so a change is not a replace
    assert after["sophia-mcp-labels"].inputs["metadata"]["labels"]["team"] == "mcp"  # enforced through the API
    assert after["sophia-mcp-labels"].urn == before["sophia-mcp-labels"].urn


def test_new_k3s_pin_reruns_installs_with_servers_first(production):
    changed = _run("production", _edit("sophia:k3s", lambda k3s: k3s.update(version="v1.34.3+k3s1")))
    after = _by_name(changed)
    assert "want=v1.34.3+k3s1" in after["sophia-control-install"].inputs["update"]
    assert after["sophia-control-install"].urn in after["sophia-mcp-secrets"].dependencies


def test_removing_a_worker_plans_drain_node_deletion_and_uninstall(production):
    def drop(config):
        nodes = json.loads(config["sophia:nodes"])
        config["sophia:nodes"] = json.dumps([n for n in nodes if n["name"] != "sophia-dev"])
        hosts = json.loads(config["sophia:hosts"])
        hosts.pop("sophia-dev")
        config["sophia:hosts"] = json.dumps(hosts)
        services = json.loads(config["sophia:services"])
        for s in services:
            if s.get("placement", {}).get("gpuType") == "A10":
                s.pop("placement")
        config["sophia:services"] = json.dumps(services)

    smaller = _run("production", drop)
    before = _by_name(production)
    removed = set(before) - set(_by_name(smaller))
    assert removed == {"sophia-dev", "sophia-dev-authorized-keys", "sophia-dev-firewall", "sophia-dev-secrets", "sophia-dev-config",
                       "sophia-dev-install", "sophia-dev-membership", "sophia-dev-labels"}
    # What the engine runs for the removed resources, from their last state:
    membership, install = before["sophia-dev-membership"], before["sophia-dev-install"]
    assert "kubectl drain sophia-dev" in membership.inputs["delete"]
    assert "kubectl delete node sophia-dev" in membership.inputs["delete"]
    assert "k3s-agent-uninstall.sh" in install.inputs["delete"]
    # Dependents are deleted first: labels, then drain + node deletion, then uninstall.
    assert install.urn in membership.dependencies
    assert membership.urn in before["sophia-dev-labels"].dependencies
    # A change to the membership script updates it in place: replacing it would drain the node.
    assert membership.inputs["update"] == membership.inputs["create"]


def test_control_plane_delete_uninstalls_the_server(production):
    assert "k3s-uninstall.sh" in _by_name(production)["sophia-control-install"].inputs["delete"]


def _private_hosts_without_firewall(config):
    """Dev on a private network (a VPN or the provider's LAN): the one way to go without ufw."""
    config["sophia:hosts"] = json.dumps({"sophia-dev-control": "10.0.0.10", "sophia-dev-a10": "10.0.0.11"})
    k3s = json.loads(config["sophia:k3s"])
    k3s.update(firewall=False)
    k3s.pop("apiAllowFrom")
    config["sophia:k3s"] = json.dumps(k3s)


def test_firewall_only_when_enabled():
    assert {"sophia-dev-control-firewall", "sophia-dev-a10-firewall"} <= set(_by_name(_run("dev")))
    without = _by_name(_run("dev", _private_hosts_without_firewall))
    assert not any(n.endswith("-firewall") for n in without)


def test_workloads_wait_for_labelled_nodes():
    from sophia_infra.tools.plan import ordering
    run = _run("dev")
    dev = _by_name(run)
    release = dev["services-ai-memory"]  # placed on the A10 worker by gpu-type
    waits = ordering.waits_for(run.resources)[release.urn]  # through the Services component
    assert dev["sophia-dev-a10-labels"].urn in waits
    assert dev["sophia-dev-control-labels"].urn in waits


# --- issue 13: what a first real `pulumi up` needs ---------------------------------------

def _resources_by_name(result):
    return {r.name: r for r in result.resources}


def _move_host(node: str, address: str):
    def change(config):
        hosts = json.loads(config["sophia:hosts"])
        entry = hosts[node]
        if isinstance(entry, dict):
            entry["address"] = address
        else:
            hosts[node] = address
        config["sophia:hosts"] = json.dumps(hosts)
    return change


def test_a_workers_new_address_replaces_install_and_membership_deleting_first(production):
    moved = _run("production", _move_host("sophia-mcp", "198.51.100.77"))
    before, after = _resources_by_name(production), _resources_by_name(moved)
    for name in ("sophia-mcp-install", "sophia-mcp-membership"):
        old, new = before[name], after[name]
        # pulumi-command 1.2.1: only triggers replace (the SDK adds replaceOnChanges triggers[*]);
        # a changed connection alone would just run `update` on the new host.
        assert "triggers[*]" in new.options["replaceOnChanges"]
        assert old.inputs["triggers"][0] != new.inputs["triggers"][0] == "198.51.100.77"
        assert new.options.get("deleteBeforeReplace") is True, name
    # The other workers are untouched.
    assert before["sophia-data-install"].inputs == after["sophia-data-install"].inputs


def test_a_replaced_install_deletes_the_membership_first(monkeypatch):
    """The engine deletes, before a delete-before-replace, the dependents whose *inputs*
    depend on it (not mere depends_on): the membership's triggers carry the install's id,
    so the old Node is drained and deleted before its host is uninstalled."""
    property_deps: dict[str, dict[str, list[str]]] = {}

    class Monitor(runner.RecordingMonitor):
        def RegisterResource(self, request):
            property_deps[request.name] = {k: list(v.urns) for k, v in request.propertyDependencies.items()}
            return super().RegisterResource(request)

    monkeypatch.setattr(runner, "RecordingMonitor", Monitor)
    names = _by_name(runner.run("production"))  # a run of its own: Monitor sees its requests
    for worker in ("sophia-ai-core", "sophia-mcp", "sophia-data", "sophia-dev"):
        membership = names[f"{worker}-membership"]
        assert membership.inputs["triggers"][1] == f"{worker}-install-id"
        assert names[f"{worker}-install"].urn in property_deps[f"{worker}-membership"]["triggers"]


def test_the_control_plane_install_is_never_replaced_by_an_address(production):
    # Replacing it would uninstall the only etcd; moving the control plane is a restore.
    cp = _by_name(production)["sophia-control-install"]
    assert "triggers" not in cp.inputs and "deleteBeforeReplace" not in cp.options


def test_no_command_passes_its_previous_output_as_environment(production):
    commands = [r for r in production.resources if r.type == "command:remote:Command"]
    assert len(commands) > 20
    for r in commands:
        assert r.inputs.get("addPreviousOutputInEnv") is False, r.name


_BOUNDS = re.compile(r"timeout (\d+) |--max-time (\d+)|SECONDS \+ (\d+)|--timeout=(\d+)s|Lock::Timeout=(\d+)")
_FUNCTION = re.compile(r"^(\w+)\(\) \{$(.*?)^\}$", re.M | re.S)


def _bound_seconds(script: str) -> int:
    """The longest a script can wait: its literal bounds, each function's counted at every call."""
    functions: dict[str, int] = {}

    def literal(text: str) -> int:
        own = sum(int(next(g for g in m.groups() if g)) for m in _BOUNDS.finditer(text))
        return own + sum(b * len(re.findall(rf"\b{f}\b", text)) for f, b in functions.items())

    for m in _FUNCTION.finditer(script):
        functions[m.group(1)] = literal(m.group(2))
    return literal(_FUNCTION.sub("", script))


def _seconds(duration: str) -> int:
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600}[duration[-1]]


def test_every_command_times_out_after_its_scripts_own_bounds(monkeypatch):
    timeouts: dict[str, tuple[str, str, str]] = {}

    class Monitor(runner.RecordingMonitor):
        def RegisterResource(self, request):
            t = request.customTimeouts
            timeouts[request.name] = (t.create, t.update, t.delete)
            return super().RegisterResource(request)

    monkeypatch.setattr(runner, "RecordingMonitor", Monitor)
    result = runner.run("production")  # a run of its own: Monitor sees its requests
    checked = 0
    for r in result.resources:
        if r.type != "command:remote:Command":
            continue
        dial = nodes.DIAL_ERROR_LIMIT * nodes.PER_DIAL_TIMEOUT  # before the script even starts
        create, update, delete = (_seconds(t) for t in timeouts[r.name])
        for verb, limit in (("create", create), ("update", update), ("delete", delete)):
            if r.inputs.get(verb):
                bound = _bound_seconds(shlex.split(r.inputs[verb])[3])
                assert bound + dial < limit, (r.name, verb, bound, limit)
                checked += 1
    assert checked > 40
    # The install's bound counts the installer, the restart and the wait for ready.
    install = _by_name(result)["sophia-mcp-install"]
    assert _bound_seconds(shlex.split(install.inputs["create"])[3]) >= 1500


def _ancestry(result, urn: str) -> set[str]:
    """Everything a resource waits for: its dependencies and its parents', transitively
    (a child registers only once its parent has; a component, once its depends_on are done)."""
    by_urn = {r.urn: r for r in result.resources}
    seen: set[str] = set()
    todo = [urn]
    while todo:
        r = by_urn.get(todo.pop())
        if r is None:
            continue
        for nxt in [*r.dependencies, r.parent]:
            if nxt and nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@pytest.mark.parametrize("stack", ["dev", "production"])
def test_the_platform_waits_for_every_node(stack, production):
    result = production if stack == "production" else _run("dev")
    names = _by_name(result)
    nodes = [n.name for n in result.cfg.nodes]
    must = {names[f"{n}-labels"].urn for n in nodes}
    must |= {names[f"{n.name}-membership"].urn for n in result.cfg.workers}
    platform = next(r for r in result.resources if r.type == "sophia:platform:Platform")
    assert {names[f"{n}-labels"].urn for n in nodes} <= set(platform.dependencies)
    releases = [r for r in result.resources if r.type == "kubernetes:helm.sh/v3:Release"]
    stateful = {"platform-kube-prometheus-stack", "platform-valkey", "platform-postgres-operator"}
    assert stateful <= {r.name for r in releases}
    for release in releases:  # the platform's (Prometheus, Valkey, CNPG, ...) and Argo CD's
        assert must <= _ancestry(result, release.urn), release.name
    postgres = names["platform-postgres-cluster"]
    assert must <= _ancestry(result, postgres.urn)


def test_renaming_a_worker_adds_the_new_node_and_retires_the_old_one_safely(production):
    def rename(config):
        nodes = json.loads(config["sophia:nodes"])
        next(n for n in nodes if n["name"] == "sophia-dev")["name"] = "sophia-dev-2"
        config["sophia:nodes"] = json.dumps(nodes)
        hosts = json.loads(config["sophia:hosts"])
        hosts["sophia-dev-2"] = hosts.pop("sophia-dev")
        config["sophia:hosts"] = json.dumps(hosts)

    before, after = _by_name(production), _by_name(_run("production", rename))
    assert {"sophia-dev-2-install", "sophia-dev-2-membership"} <= set(after)
    assert "sophia-dev-install" not in after  # deleted at the end of the update, from its last state:
    old_install, old_membership = before["sophia-dev-install"], before["sophia-dev-membership"]
    assert "kubectl drain sophia-dev " in old_membership.inputs["delete"]  # the old Node object goes
    # ...and the old uninstall leaves the host alone once its config.yaml names sophia-dev-2.
    assert '[ "$current" != sophia-dev ]' in shlex.split(old_install.inputs["delete"])[3]
    assert "node-name: sophia-dev-2" in after["sophia-dev-2-config"].inputs["create"]


# --- issue 14: least privilege on the hosts -------------------------------------------------

def _problems(stack: str, change) -> list[str]:
    from sophia_infra.program.config.stack import ConfigError
    from tests.conftest import parse_with
    with pytest.raises(ConfigError) as err:
        parse_with(stack, change)
    return err.value.problems


def _k3s(**values):
    return lambda r: r["k3s"].update(values)


def test_no_firewall_on_public_addresses_is_refused_naming_the_exposed_ports():
    (msg,) = [p for p in _problems("dev", _k3s(firewall=False, apiAllowFrom=[]))
              if p.startswith("sophia:k3s.firewall:")]
    assert "nodes sophia-dev-control, sophia-dev-a10 have a public address" in msg
    for port in ("10250", "9100", "2379-2380", "6443"):
        assert port in msg
    assert "set firewall: true" in msg and "\n" not in msg
    assert "198.51.100" not in msg  # addresses may be secrets: nodes are named, never addresses


def test_a_private_address_does_not_stand_in_for_the_firewall():
    # The kubelet, node-exporter and the flannel port listen on every address.
    def private_too(r):
        r["k3s"].update(firewall=False, apiAllowFrom=[])
        r["hosts"] = {n: {"address": a["address"] if isinstance(a, dict) else a, "privateAddress": f"10.0.0.{i}"}
                      for i, (n, a) in enumerate(r["hosts"].items(), start=10)}
    assert any(p.startswith("sophia:k3s.firewall: is false") for p in _problems("dev", private_too))


def test_hosts_on_a_private_network_may_go_without_the_firewall():
    from tests.conftest import parse_with

    def private(r):
        r["k3s"].update(firewall=False, apiAllowFrom=[], flannelBackend="vxlan")
        r["hosts"] = {"sophia-dev-control": "10.0.0.10", "sophia-dev-a10": "100.64.0.11"}
    assert parse_with("dev", private).k3s.firewall is False


def test_vxlan_between_public_addresses_is_refused_and_wireguard_or_private_addresses_pass():
    from tests.conftest import parse_with
    (msg,) = _problems("dev", _k3s(flannelBackend="vxlan"))
    assert msg.startswith("sophia:k3s.flannelBackend: vxlan carries pod traffic unencrypted")
    assert "8472/udp" in msg and "wireguard-native" in msg

    def vxlan_over_private(r):
        r["k3s"].update(flannelBackend="vxlan")
        r["hosts"] = {n: {"address": a["address"] if isinstance(a, dict) else a, "privateAddress": f"10.0.0.{i}"}
                      for i, (n, a) in enumerate(r["hosts"].items(), start=10)}
    assert parse_with("dev", vxlan_over_private).k3s.flannel_backend == "vxlan"
    assert parse_with("dev").k3s.flannel_backend == "wireguard-native"  # what dev ships


@pytest.mark.parametrize("value", ["", "abc", "g" * 64, "0" * 63, "0" * 65, "0" * 64 + "\n", " " + "0" * 64])
def test_an_installer_checksum_that_is_not_a_sha256_is_refused(value):
    (msg,) = _problems("production", _k3s(installerSha256=value))
    assert msg.startswith("sophia:k3s.installerSha256: is not a SHA-256 (64 hexadecimal digits)")
    assert "install.sh.sha256sum" in msg and "\n" not in msg


def test_the_installer_checksum_is_required():
    (msg,) = _problems("production", lambda r: r["k3s"].pop("installerSha256"))
    assert msg.startswith("sophia:k3s.installerSha256:")


def test_the_pinned_checksum_reaches_every_install_lowercased():
    from tests.conftest import parse_with
    digest = "AB" * 32
    cfg = parse_with("production", _k3s(installerSha256=digest))
    assert cfg.k3s.installer_sha256 == digest.lower()
    changed = _run("production", _edit("sophia:k3s", lambda k3s: k3s.update(installerSha256=digest)))
    installs = [r for r in changed.resources if r.name.endswith("-install")]
    assert len(installs) == 5
    for r in installs:
        assert f"want_sha={digest.lower()}" in r.inputs["create"]


def test_the_unpinned_checksum_is_announced_in_preview(caplog):
    with caplog.at_level("WARNING"):
        runner.run("dev")  # a run of its own: the warning is logged while it runs
    assert any("installerSha256 is not pinned yet" in r.getMessage() for r in caplog.records)
