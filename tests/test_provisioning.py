"""Provisioned nodes: config checks, addresses from the instances into SSH, tls-san, the
firewall and the outputs, the plan's cost lines, and the capacity command."""

from __future__ import annotations

import functools
import json
from datetime import date, timedelta

import pulumi
import pytest
from pulumi.runtime import rpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from sophia_infra import __main__ as cli
from sophia_infra.program.config import stack as config
from sophia_infra.tools.lambda_cloud import cost, prices
from sophia_infra.program import ssh_keys
from sophia_infra.program.lambda_cloud import resources
from sophia_infra.tools.plan import mocks, report, runner, stack_config
from tests.conftest import parse_with, problems_of
from tests.lambda_fake import API_KEY, FakeLambda
from tests.platform_helpers import plan as shared_plan

TYPES = {"RTX6000": "gpu_1x_rtx6000", "GH200": "gpu_1x_gh200", "A6000": "gpu_1x_a6000", "A100": "gpu_1x_a100",
         "A10": "gpu_1x_a10"}
ALL = ("sophia-control", "sophia-ai-core", "sophia-mcp", "sophia-data", "sophia-dev")


def _provision(node: dict) -> dict:
    region = "us-east-3" if node["gpu"]["type"] == "GH200" else "us-east-1"
    return {"provider": "lambda", "instanceType": TYPES[node["gpu"]["type"]], "region": region}


def production_config(provisioned: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """production's config with `provisioned` nodes launched by the stack (a test-only change)."""
    cfg, secrets = stack_config.load("production")
    nodes = json.loads(cfg["sophia:nodes"])
    for n in nodes:
        if n["name"] in provisioned:
            n["provision"] = _provision(n)
    hosts = {k: v for k, v in json.loads(cfg["sophia:hosts"]).items() if k not in provisioned}
    cfg["sophia:nodes"] = json.dumps(nodes)
    if hosts:
        cfg["sophia:hosts"] = json.dumps(hosts)
    else:
        del cfg["sophia:hosts"]
    return cfg, secrets


class CapturingMocks(mocks.PlanMocks):
    """PlanMocks that keeps every resource's unmasked inputs (the recorder masks secrets)."""

    seen: dict[str, dict] = {}

    def new_resource(self, args):
        CapturingMocks.seen[f"{args.typ}::{args.name}"] = dict(args.inputs)
        return super().new_resource(args)


@functools.lru_cache(maxsize=None)
def _planned(provisioned: tuple[str, ...]):
    """Production with `provisioned` launched, and every resource's unmasked inputs; once per
    test process for the same hosts (do not mutate)."""
    CapturingMocks.seen = {}
    cfg, secrets = production_config(provisioned)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "PlanMocks", CapturingMocks)
        return runner.run("production", config=cfg, secret_keys=secrets), CapturingMocks.seen


@pytest.fixture
def plan():
    return _planned


def _plain(value):
    """The value inside a secret envelope (the connection carries the private key)."""
    if isinstance(value, dict) and rpc._special_sig_key in value:
        return _plain(value["value"])
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _commands(seen: dict, suffix: str) -> dict[str, dict]:
    prefix = "command:remote:Command::"
    return {k[len(prefix):-len(suffix)]: _plain(v) for k, v in seen.items()
            if k.startswith(prefix) and k.endswith(suffix)}


def test_all_five_provisioned_use_the_instances_addresses_everywhere(plan):
    result, seen = plan(ALL)
    ips = {n: mocks.fake_instance_address(f"{n}-instance") for n in ALL}
    assert len(set(ips.values())) == 5
    assert "sophia:hosts" not in result.config  # no address in ESC for them
    assert result.outputs["nodeIps"] == ips
    assert result.outputs["controlPlaneIp"] == ips["sophia-control"]
    assert {n: v["address"] for n, v in result.outputs["nodes"].items()} == ips
    for node, inputs in _commands(seen, "-install").items():
        assert inputs["connection"]["host"] == ips[node]  # SSH goes to the node's own instance
    cp_config = _commands(seen, "-config")["sophia-control"]["create"]
    assert f"- {ips['sophia-control']}" in cp_config  # tls-san
    worker_config = _commands(seen, "-config")["sophia-mcp"]["create"]
    assert f"server: https://{ips['sophia-control']}:6443" in worker_config
    firewall = _commands(seen, "-firewall")["sophia-control"]["create"]
    for peer in ("sophia-ai-core", "sophia-mcp", "sophia-data", "sophia-dev"):
        assert f"from {ips[peer]} to any port 6443,10250" in firewall  # ufw peers


def test_provisioned_resources_carry_type_region_name_and_a_secret_key(plan):
    result, seen = plan(ALL)
    by_type: dict[str, list] = {}
    for r in result.resources:
        by_type.setdefault(r.type, []).append(r)
    assert {r.name for r in by_type["sophia:lambda:Instance"]} == set(ALL)
    instances = {r.inputs["name"]: r for r in by_type["pulumi-python:dynamic/lambda:Instance"]}
    assert instances["sophia-ai-core"].inputs["instance_type"] == "gpu_1x_gh200"
    assert instances["sophia-ai-core"].inputs["region"] == "us-east-3"
    assert all(r.inputs["api_key"] == mocks.SECRET for r in instances.values())
    assert all(r.options.get("additionalSecretOutputs") == ["api_key"] for r in instances.values())
    assert all(r.inputs["stack_tag"] == "sophia-infra-production" for r in instances.values())
    # Each boot is awaited by a resource of its own, after its instance is recorded.
    ready = {r.name: r for r in by_type["pulumi-python:dynamic/lambda:InstanceReady"]}
    assert {n: r.inputs["instance_id"] for n, r in ready.items()} == {f"{n}-ready": f"{n}-instance-id" for n in ALL}
    (key,) = by_type["pulumi-python:dynamic/lambda:SshKey"]
    assert "PRIVATE" not in json.dumps(seen[f"{key.type}::{key.name}"].get("public_key"))
    (fw,) = by_type["pulumi-python:dynamic/lambda:FirewallRules"]
    sources = {(r["port_range"][0], r["source_network"]) for r in fw.inputs["rules"]}
    assert (6443, "198.51.100.0/24") in sources  # apiAllowFrom
    assert (10250, f"{mocks.fake_instance_address('sophia-dev-instance')}/32") in sources
    # The SSH connections wait for the firewall: the install commands depend on it.
    install = next(r for r in result.resources if r.name == "sophia-dev-install")
    assert fw.urn in install.dependencies or any("FirewallRules" in d for d in install.dependencies)


def test_a_mixed_stack_takes_some_addresses_from_esc_and_some_from_instances(plan):
    esc = json.loads(stack_config.load("production")[0]["sophia:hosts"])
    result, seen = plan(("sophia-mcp", "sophia-dev"))
    ips = result.outputs["nodeIps"]
    assert ips["sophia-mcp"] == mocks.fake_instance_address("sophia-mcp-instance")
    assert ips["sophia-control"] == esc["sophia-control"]["address"]
    assert ips["sophia-data"] == esc["sophia-data"]["address"]
    assert {r.name for r in result.resources if r.type == "sophia:lambda:Instance"} == {"sophia-mcp", "sophia-dev"}
    assert _commands(seen, "-install")["sophia-dev"]["connection"]["host"] == ips["sophia-dev"]
    assert _commands(seen, "-install")["sophia-data"]["connection"]["host"] == ips["sophia-data"]


def test_existing_hosts_stacks_register_no_lambda_resource():
    result = shared_plan("production")  # planned once per test process
    assert not [r for r in result.resources if "lambda" in r.type]


def test_the_plan_prints_instance_types_prices_and_the_total(plan):
    result, _ = plan(ALL)
    text = report.render(result)
    assert f"offline prices as of {prices.AS_OF}" in text
    assert "sophia-ai-core  gpu_1x_gh200    us-east-3  $1.49/h" in text
    total = sum(prices.CENTS_PER_HOUR[t] for t in TYPES.values()) / 100
    assert f"total: ${total:,.2f}/h, ${total * prices.HOURS_PER_MONTH:,.2f}/month" in text


def _all_provisioned() -> config.StackConfig:
    def launch(raw):
        for n in raw["nodes"]:
            n["provision"] = _provision(n)
        raw["hosts"] = None
    return parse_with("production", launch)


def test_an_old_price_table_is_warned_about_with_its_date_and_age(capsys):
    as_of = date.fromisoformat(prices.AS_OF)
    lines = cost.render_text(_all_provisioned(), today=as_of + timedelta(days=prices.MAX_AGE_DAYS + 30))
    assert any("offline prices as of" in line for line in lines)
    assert capsys.readouterr().err == (
        f"warning: the offline Lambda Cloud price table is dated {prices.AS_OF} ({prices.MAX_AGE_DAYS + 30} days ago), "
        "so these costs may be out of date; `python -m sophia_infra capacity` shows today's prices "
        "(then update prices.py and its AS_OF)\n")


def test_a_recent_price_table_or_an_unused_one_is_not_warned_about(capsys):
    as_of = date.fromisoformat(prices.AS_OF)
    assert cost.render_text(_all_provisioned(), today=as_of + timedelta(days=prices.MAX_AGE_DAYS))
    assert cost.render_text(parse_with("production"), today=as_of + timedelta(days=10_000)) == []  # no provisioned host
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- bad input

def _provisioned(change):
    def edit(raw):
        change(raw)
    return edit


def _set(node_name: str, **provision):
    def change(raw):
        node = next(n for n in raw["nodes"] if n["name"] == node_name)
        node["provision"] = {"provider": "lambda", "region": "us-east-1", **provision}
        raw["hosts"].pop(node_name, None)
    return change


def test_an_unknown_instance_type_is_one_sentence():
    (p,) = problems_of("production", _set("sophia-mcp", instanceType="gpu_1x_h100_nvl"))
    assert p.startswith("sophia:nodes[2].provision.instanceType: 'gpu_1x_h100_nvl' is not a Lambda Cloud instance type")


def test_a_gpu_mismatch_is_one_sentence():
    (p,) = problems_of("production", _set("sophia-mcp", instanceType="gpu_1x_a100"))
    assert p == ("sophia:nodes[2].provision.instanceType: gpu_1x_a100 carries A100 GPUs but node 'sophia-mcp' "
                 "declares gpu.type A6000; set gpu.type: A100 or pick a A6000 instance type.")


def test_an_arch_mismatch_is_one_sentence():
    def change(raw):
        _set("sophia-ai-core", instanceType="gpu_1x_gh200")(raw)
        next(n for n in raw["nodes"] if n["name"] == "sophia-ai-core")["arch"] = "amd64"
    problems = problems_of("production", change)
    assert "sophia:nodes[1].arch: gpu_1x_gh200 runs arm64 but node 'sophia-ai-core' declares amd64; set arch: arm64." in problems


def test_a_missing_api_key_is_one_sentence():
    (p,) = problems_of("production", _set("sophia-mcp", instanceType="gpu_1x_a6000"), drop_secrets=("lambdaLabsApiKey",))
    assert p.startswith("sophia:lambdaLabsApiKey: the secret is missing (needed by sophia:nodes[].provision")


def test_an_esc_address_for_a_provisioned_node_is_refused():
    def change(raw):
        node = next(n for n in raw["nodes"] if n["name"] == "sophia-mcp")
        node["provision"] = {"provider": "lambda", "instanceType": "gpu_1x_a6000", "region": "us-east-1"}
    (p,) = problems_of("production", change)
    assert p.startswith("sophia:hosts.sophia-mcp: node 'sophia-mcp' is provisioned by the stack")


def test_bad_input_registers_nothing(monkeypatch):
    registered = []

    class Counting(mocks.PlanMocks):
        def new_resource(self, args):
            registered.append(args.name)
            return super().new_resource(args)

    monkeypatch.setattr(runner, "PlanMocks", Counting)
    cfg, secrets = production_config(("sophia-mcp",))
    nodes = json.loads(cfg["sophia:nodes"])
    nodes[2]["provision"]["instanceType"] = "gpu_1x_a100"
    cfg["sophia:nodes"] = json.dumps(nodes)
    with pytest.raises(config.ConfigError):
        runner.run("production", config=cfg, secret_keys=secrets)
    assert registered == []


# ----------------------------------------------------------------------------- SSH key

def test_the_public_key_is_derived_from_the_private_key_openssh_and_pem():
    ed = ed25519.Ed25519PrivateKey.generate()
    private = ed.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                               serialization.NoEncryption()).decode()
    public = ed.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    assert ssh_keys.public_key_of(private) == public
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    assert ssh_keys.public_key_of(pem).startswith("ssh-rsa ")
    with pytest.raises(pulumi.RunError, match="is not an OpenSSH or PEM private key"):
        ssh_keys.public_key_of("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n-----END OPENSSH PRIVATE KEY-----\n")


# ----------------------------------------------------------------------------- capacity

def _capacity(monkeypatch, capsys, env: dict[str, str]):
    cfg, _ = production_config(ALL)
    raw = {k.split(":", 1)[1]: v for k, v in cfg.items()}
    validated = config.parse({k: (json.loads(v) if config.TOP_LEVEL_KEYS.get(k) else v)
                              for k, v in raw.items() if k in config.TOP_LEVEL_KEYS}, lambda key: True)
    monkeypatch.setattr(cli, "_validated", lambda stack: validated)
    for k in ("LAMBDA_API_KEY", "LAMBDA_API_BASE_URL"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code = cli.main(["capacity", "--stack", "production"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_capacity_without_a_key_is_one_sentence_and_exit_2(monkeypatch, capsys):
    code, out, err = _capacity(monkeypatch, capsys, {})
    assert code == 2 and out == "" and err.count("\n") == 1 and "LAMBDA_API_KEY is not set" in err


def test_capacity_lists_configured_types_where_they_have_capacity(monkeypatch, capsys):
    with FakeLambda() as fake:
        fake.capacity["gpu_1x_a10"] = ["us-west-1"]
        code, out, _ = _capacity(monkeypatch, capsys, {"LAMBDA_API_KEY": API_KEY, "LAMBDA_API_BASE_URL": fake.base_url})
    assert code == 1  # sophia-dev's region has none
    assert "sophia-ai-core: gpu_1x_gh200 ($1.49/h) has capacity in us-east-3; capacity now in: us-east-3" in out
    assert "sophia-dev: gpu_1x_a10 ($0.75/h) NO capacity in us-east-1; capacity now in: us-west-1" in out


def test_capacity_with_a_wrong_key_exits_2_without_printing_it(monkeypatch, capsys):
    with FakeLambda() as fake:
        code, out, err = _capacity(monkeypatch, capsys, {"LAMBDA_API_KEY": "wrong-key-xyz", "LAMBDA_API_BASE_URL": fake.base_url})
    assert code == 2 and "wrong, revoked or missing" in err and "wrong-key-xyz" not in err + out


# ----------------------------------------------------------------------------- regions without Lambda firewall rules

def test_a_node_in_a_region_without_lambda_firewall_rules_is_warned_about(monkeypatch, caplog):
    import logging
    cfg, secrets = production_config(("sophia-mcp", "sophia-dev"))
    nodes = json.loads(cfg["sophia:nodes"])
    dev = next(i for i, n in enumerate(nodes) if n["name"] == "sophia-dev")
    nodes[dev]["provision"]["region"] = "us-south-1"
    cfg["sophia:nodes"] = json.dumps(nodes)
    with caplog.at_level(logging.WARNING):
        runner.run("production", config=cfg, secret_keys=secrets)
    warned = [r.getMessage() for r in caplog.records if "firewall rules do not apply" in r.getMessage()]
    assert warned == [f"sophia:nodes[{dev}].provision.region: Lambda's firewall rules do not apply in us-south-1, so "
                      "node 'sophia-dev' is open on every port until its host firewall (ufw) is applied and is then "
                      "protected by ufw alone; choose another region to have both."]


# ----------------------------------------------------------------------------- both addresses of a launched host

def test_both_addresses_of_every_launched_peer_are_admitted_and_node_ip_is_chosen_on_the_host(plan):
    result, seen = plan(ALL)
    public = {n: mocks.fake_instance_address(f"{n}-instance") for n in ALL}
    private = {n: mocks.fake_instance_private_address(f"{n}-instance") for n in ALL}
    firewall = _commands(seen, "-firewall")["sophia-control"]["create"]
    for peer in ("sophia-ai-core", "sophia-mcp", "sophia-data", "sophia-dev"):
        for addr in (public[peer], private[peer]):
            assert f"from {addr} to any port 6443,10250" in firewall  # ufw: kubelet and API
            assert f"from {addr} to any port 8472" in firewall or f"from {addr} to any port 51820" in firewall
    (fw,) = [r for r in result.resources if r.type == "pulumi-python:dynamic/lambda:FirewallRules"]
    sources = {(r["protocol"], r["port_range"][0], r["source_network"]) for r in fw.inputs["rules"]}
    for n in ALL:
        for addr in (public[n], private[n]):
            assert ("tcp", 10250, f"{addr}/32") in sources  # the Lambda rules too
    config = _commands(seen, "-config")["sophia-mcp"]["create"]
    assert "node-ip:" not in config.split("SOPHIA_K3S_CONFIG")[1]  # not fixed in the file: chosen on the host
    assert f"candidates=({public['sophia-mcp']} {private['sophia-mcp']})" in config


def test_the_ssh_key_is_named_by_its_fingerprint_and_only_the_control_planes_host_is_protected(plan):
    """Instances take the key's name from config (its fingerprint), not from the key resource:
    a rotated key is never an unknown that the engine re-diffs them with. The control plane's
    host (etcd) is protected: no change replaces it without an operator's explicit unprotect."""
    result, seen = plan(ALL)
    (key,) = [r for r in result.resources if r.type == "pulumi-python:dynamic/lambda:SshKey"]
    public = seen[f"{key.type}::{key.name}"]["public_key"]
    assert key.inputs["name"] == f"sophia-infra-production-{ssh_keys.fingerprint(public)}"
    instances = {r.inputs["name"]: r for r in result.resources if r.type == "pulumi-python:dynamic/lambda:Instance"}
    for name, inst in instances.items():
        assert inst.inputs["ssh_key_name"] == key.inputs["name"]
        # registered after the key through its component's depends_on, never a property dependency
        component = next(r for r in result.resources if r.urn == inst.parent)
        assert key.urn in component.dependencies and key.urn not in inst.dependencies
        assert bool(inst.options.get("protect")) is (name == result.cfg.control_plane.name), name
