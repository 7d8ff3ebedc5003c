"""The stack schema: both stacks load; every kind of bad input is refused by key path."""

from __future__ import annotations

import pytest

from sophia_infra.program.config import stack as config
from tests.conftest import parse_with, problems_of


def test_both_stacks_load(stack):
    cfg = parse_with(stack)
    assert cfg.control_plane.role == "control-plane"
    assert len(cfg.services) == 15


def test_production_is_the_plans_five_hosts():
    cfg = parse_with("production")
    got = {n.name: (n.role, n.arch, n.gpu.type if n.gpu else None) for n in cfg.nodes}
    assert got == {
        "sophia-control": ("control-plane", "amd64", "RTX6000"),
        "sophia-ai-core": ("worker", "arm64", "GH200"),
        "sophia-mcp": ("worker", "amd64", "A6000"),
        "sophia-data": ("worker", "amd64", "A100"),
        "sophia-dev": ("worker", "amd64", "A10"),
    }


def _only(problems: list[str]) -> str:
    assert len(problems) == 1, problems
    return problems[0]


def test_unknown_gpu_type():
    msg = _only(problems_of("production", lambda r: r["nodes"][2]["gpu"].update(type="H100")))
    assert msg.startswith("sophia:nodes[2].gpu.type:")
    assert "unknown GPU type 'H100'" in msg and "GH200" in msg


def test_duplicate_node_names():
    def dup(r):
        r["nodes"][2]["name"] = "sophia-ai-core"
        r["hosts"].pop("sophia-mcp")
    msg = _only(problems_of("production", dup))
    assert msg.startswith("sophia:nodes:") and "'sophia-ai-core' is used 2 times" in msg


def test_duplicate_service_names():
    msg = _only(problems_of("production", lambda r: r["services"][5].update(name="gong")))
    assert msg.startswith("sophia:services:") and "'gong' is used 2 times" in msg


def test_no_first_control_plane():
    msg = _only(problems_of("production", lambda r: r["nodes"][0].pop("clusterInit")))
    assert msg.startswith("sophia:nodes:") and "clusterInit: true" in msg


def test_several_first_control_planes():
    def two(r):
        r["nodes"][3].update(role="control-plane", clusterInit=True)
        r["services"][3].pop("placement")  # snowflake-cortex would be left on a tainted A100 server
    msg = _only(problems_of("production", two))
    assert "2 nodes have clusterInit: true (sophia:nodes[0], sophia:nodes[3])" in msg


def test_worker_cannot_start_the_cluster():
    def worker_init(r):
        r["nodes"][0]["clusterInit"] = False
        r["nodes"][1]["clusterInit"] = True
    msg = _only(problems_of("production", worker_init))
    assert msg.startswith("sophia:nodes[1].clusterInit:")


@pytest.mark.parametrize("address", ["300.1.2.3", "not an address", "http://203.0.113.10", ""])
def test_bad_address(address):
    msg = _only(problems_of("production", lambda r: r["hosts"].update({"sophia-mcp": {"address": address}})))
    assert msg.startswith("sophia:hosts.sophia-mcp.address:")


@pytest.mark.parametrize("address", ["203.0.113.20", "2001:db8::10"])
def test_good_addresses(address):
    cfg = parse_with("production", lambda r: r["hosts"].update({"sophia-mcp": address}))
    assert cfg.hosts["sophia-mcp"].address == address


@pytest.mark.parametrize("mcp,data", [
    ({"address": "203.0.113.13"}, {"address": "203.0.113.13"}),                      # one public address
    ({"address": "2001:db8::7"}, {"address": "2001:DB8:0::7"}),                      # spelled differently
    ({"address": "203.0.113.12", "privateAddress": "10.0.0.5"},
     {"address": "203.0.113.13", "privateAddress": "10.0.0.5"}),                     # one private address
])
def test_two_nodes_with_one_address(mcp, data):
    field = "privateAddress" if "privateAddress" in mcp else "address"
    msg = _only(problems_of("production", lambda r: r["hosts"].update({"sophia-mcp": mcp, "sophia-data": data})))
    assert msg == (f"sophia:hosts.sophia-mcp.{field}: is the same address as sophia:hosts.sophia-data.{field}, "
                   "so two nodes would be one host; give each node its own address.")


def test_one_nodes_public_address_as_anothers_private_one():
    def clash(r):
        r["hosts"]["sophia-mcp"] = {"address": "203.0.113.12", "privateAddress": "10.0.0.5"}
        r["hosts"]["sophia-data"] = {"address": "10.0.0.5"}
    msg = _only(problems_of("production", clash))
    assert msg.startswith("sophia:hosts.sophia-mcp.privateAddress: is the same address as sophia:hosts.sophia-data.address")


def test_a_duplicate_address_is_named_by_its_keys_not_shown():
    # sophia:hosts may be a secret: the message names keys only.
    problems = problems_of("production", lambda r: r["hosts"].update({"sophia-mcp": "203.0.113.13"}))
    assert problems == ["sophia:hosts.sophia-mcp.address: is the same address as sophia:hosts.sophia-data.address, "
                        "so two nodes would be one host; give each node its own address."]
    assert not any("203.0.113" in p for p in problems)


def _set(raw: dict, path: tuple, value) -> None:
    node = raw
    for part in path[:-1]:
        node = node.setdefault(part, {}) if isinstance(node, dict) else node[part]
    node[path[-1]] = value


# Pydantic's lax mode reads true as 1 and "3" as 3: a `gpu: true` would request one GPU.
@pytest.mark.parametrize("path,value", [
    (("services", 2, "gpu"), True),
    (("services", 0, "replicas"), True),
    (("services", 0, "maxReplicas"), False),
    (("services", 0, "port"), True),
    (("nodes", 1, "gpu", "count"), True),
    (("nodes", 1, "gpu", "sharing"), "4"),
    (("k3s", "etcdSnapshotRetention"), False),
    (("platform", "valkey", "replicas"), True),
    (("platform", "network", "internetPorts"), [True]),
    (("services", 0, "replicas"), 1.5),
])
def test_a_bool_or_string_for_an_integer_is_refused(path, value):
    msg = _only(problems_of("dev", lambda r: _set(r, path, value)))
    key = "sophia:" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)[1:]
    if path[-1] == "internetPorts":
        key += "[0]"
    assert msg.startswith(f"{key}: input should be a valid integer (got ")
    assert msg.endswith("; write a whole number, without quotes (true and false are not numbers).")


def test_a_bool_for_a_number_is_refused():
    msg = _only(problems_of("dev", lambda r: r.update(backups={"etcdMaxAgeHours": True})))
    assert msg == ("sophia:backups.etcdMaxAgeHours: input should be a valid number (got true); "
                   "write a number, without quotes (true and false are not numbers).")


def test_a_whole_number_for_a_number_is_kept():
    assert parse_with("dev", lambda r: r.update(backups={"etcdMaxAgeHours": 6})).backups.etcd_max_age_hours == 6


@pytest.mark.parametrize("user", ["", "   "])
def test_an_empty_ssh_user_is_refused(user):
    assert problems_of("dev", lambda r: r.update(sshUser=user)) == [
        "sophia:sshUser: is empty, and the hosts are set up over SSH as that user; set the hosts' login user "
        "(e.g. ubuntu) in the ESC environment's sophia.infrastructure.ssh_user."]


@pytest.mark.parametrize("user", ["-oProxyCommand=sh", "Ubuntu", "a b", "x" * 33])
def test_an_ssh_user_ssh_would_misread_is_refused(user):
    msg = _only(problems_of("dev", lambda r: r.update(sshUser=user)))
    assert msg.startswith("sophia:sshUser: ") and "is not a Linux user name" in msg


@pytest.mark.parametrize("user", ["ubuntu", "_deploy", "ops-1"])
def test_ordinary_ssh_users_are_kept(user):
    assert parse_with("dev", lambda r: r.update(sshUser=user)).ssh_user == user


@pytest.mark.parametrize("key", ["AAAAC3NzaC1lZDI1NTE5AAAAI", "ssh-ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----",
                                 "ssh-ed25519 AAAA$(reboot)"])
def test_an_authorized_key_that_is_not_a_public_key_is_refused(key):
    msg = _only(problems_of("dev", lambda r: r.update(sshAuthorizedKeys=[key])))
    assert msg.startswith("sophia:sshAuthorizedKeys[0]: ") and "is not an OpenSSH public key" in msg
    assert "PRIVATE" not in msg and "reboot" not in msg  # never echoed: a private key pasted by mistake stays out of logs


def test_authorized_public_keys_are_kept():
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0xnext ops@laptop"
    assert parse_with("dev", lambda r: r.update(sshAuthorizedKeys=[key])).ssh_authorized_keys == [key]


@pytest.mark.parametrize("host,field", [({"address": "2001:db8::10"}, "address"),
                                        ({"address": "203.0.113.10", "privateAddress": "2001:db8::10"}, "privateAddress")])
def test_an_ipv6_control_plane_in_an_ipv4_cluster_is_refused(host, field):
    msg = _only(problems_of("production", lambda r: r["hosts"].update({"sophia-control": host})))
    assert msg == (f"sophia:hosts.sophia-control.{field}: the control plane's node address is IPv6, but sophia:k3s.clusterCidr "
                   "and serviceCidr are IPv4 ranges, so K3s would not start; give the node an IPv4 address, or set IPv6 "
                   "ranges as clusterCidr and serviceCidr.")


def test_an_ipv6_control_plane_with_ipv6_ranges_is_accepted():
    def ipv6(r):
        r["hosts"]["sophia-control"] = {"address": "2001:db8::10"}
        r["k3s"].update(clusterCidr="2001:db8:42::/56", serviceCidr="2001:db8:43::/112")
    assert parse_with("production", ipv6).hosts["sophia-control"].address == "2001:db8::10"


def test_an_ipv6_public_address_beside_an_ipv4_node_ip_is_accepted():
    host = {"address": "2001:db8::10", "privateAddress": "10.0.0.10"}
    assert parse_with("production", lambda r: r["hosts"].update({"sophia-control": host})).hosts["sophia-control"].address


def test_node_without_address_and_address_without_node():
    def swap(r):
        r["hosts"]["sophia-mcp2"] = r["hosts"].pop("sophia-mcp")
    problems = problems_of("production", swap)
    assert any(p.startswith("sophia:hosts.sophia-mcp:") and "has no address" in p for p in problems)
    assert any(p.startswith("sophia:hosts.sophia-mcp2:") and "no node named" in p for p in problems)


def test_placement_on_a_gpu_type_no_node_has():
    msg = _only(problems_of("dev", lambda r: r["services"][2]["placement"].update(gpuType="GH200")))
    assert msg.startswith("sophia:services[2].placement.gpuType:") and "no node has a GH200 GPU" in msg


def test_gpu_requests_above_capacity_counting_sharing():
    # GH200: one GPU x4 sharing = 4 units; 5 replicas x 1 GPU do not fit.
    msg = _only(problems_of("production", lambda r: r["services"][2].update(replicas=5)))
    assert msg.startswith("sophia:services:") and "request 5 GH200 GPUs" in msg and "offer 4" in msg


def test_gpu_requests_count_hpa_peak():
    msg = _only(problems_of("production", lambda r: r["services"][2].update(maxReplicas=6)))
    assert "request 6 GH200 GPUs at peak replicas" in msg


def test_shared_gpu_allows_only_one_per_pod():
    msg = _only(problems_of("production", lambda r: r["services"][2].update(gpu=2, replicas=1)))
    assert msg.startswith("sophia:services[2].gpu:") and "time-sliced" in msg


def test_gpu_without_placement():
    msg = _only(problems_of("production", lambda r: r["services"][0].update(gpu=1)))
    assert msg.startswith("sophia:services[0].placement:")


def test_arm64_node_needs_arm64_image():
    msg = _only(problems_of("production", lambda r: r["services"][2]["image"].update(platforms=["linux/amd64"])))
    assert msg.startswith("sophia:services[2].image.platforms:") and "linux/arm64" in msg


@pytest.mark.parametrize("replicas", [0, -1])
def test_replicas_below_one(replicas):
    msg = _only(problems_of("production", lambda r: r["services"][1].update(replicas=replicas)))
    assert msg.startswith("sophia:services[1].replicas:") and "greater than or equal to 1" in msg


@pytest.mark.parametrize("version", ["latest", "", "v1.34", "stable", ">=v1.34.0+k3s1"])
def test_unpinned_k3s(version):
    msg = _only(problems_of("production", lambda r: r["k3s"].update(version=version)))
    assert msg.startswith("sophia:k3s.version:") and "not a pinned K3s release" in msg


@pytest.mark.parametrize("version", ["latest", "", "^0.20.0", "0.20.x", "~0.20", ">=0.20.0"])
def test_unpinned_chart(version):
    msg = _only(problems_of("production", lambda r: r["charts"]["nvidia-device-plugin"].update(version=version)))
    assert msg.startswith("sophia:charts.nvidia-device-plugin.version:")


@pytest.mark.parametrize("tag", ["latest", "", "1.*", "^1.0"])
def test_unpinned_image(tag):
    msg = _only(problems_of("production", lambda r: r["services"][0]["image"].update(tag=tag)))
    assert msg.startswith("sophia:services[0].image.tag:")


def test_digest_is_a_pin():
    digest = "sha256:" + "a" * 64
    cfg = parse_with("production", lambda r: r["services"][0]["image"].update(tag=digest))
    assert cfg.services[0].image.ref.endswith("@" + digest)


def test_missing_secret():
    msg = _only(problems_of("production", drop_secrets=("hubspotApiKey",)))
    assert msg.startswith("sophia:hubspotApiKey:") and "(needed by sophia:services[5].secrets.HUBSPOT_API_KEY)" in msg
    assert "fn::secret" in msg


def test_secret_stored_in_plain_text():
    msg = _only(problems_of("production", plain_secrets=("sshPrivateKey",)))
    assert msg.startswith("sophia:sshPrivateKey:") and "plain text" in msg


def test_etcd_s3_needs_its_keys():
    def s3(r):
        r["k3s"]["etcdS3"] = {"bucket": "etcd-backups", "endpoint": "objects.example.com"}
    problems = problems_of("dev", s3, drop_secrets=("etcdS3AccessKey", "etcdS3SecretKey"))
    assert [p.split(":")[1] for p in problems] == ["etcdS3AccessKey", "etcdS3SecretKey"]


def test_unknown_key_is_named_with_the_closest_key():
    msg = _only(problems_of("production", lambda r: r["k3s"].update(verison="v1.34.2+k3s1")))
    assert msg == "sophia:k3s.verison: is not a key this program reads; did you mean sophia:k3s.version?"
    msg = _only(problems_of("production", lambda r: r["services"][1].update(replcas=2)))
    assert msg == "sophia:services[1].replcas: is not a key this program reads; did you mean sophia:services[1].replicas?"


def test_unknown_key_without_a_close_one():
    msg = _only(problems_of("production", lambda r: r["k3s"].update(zzz=1)))
    assert msg == "sophia:k3s.zzz: is not a key this program reads; remove it or correct its spelling."


def _rename(old: str, new: str):
    def change(r):
        r[new] = r.pop(old)
    return change


@pytest.mark.parametrize("typo,key", [("service", "services"), ("platfrom", "platform"), ("sshUsr", "sshUser")])
def test_top_level_typo_is_refused(typo, key):
    # `sophia:service:` used to pass and drop every workload.
    change = _rename(key, typo) if key != "platform" else (lambda r: r.update(platfrom={"valkey": {"replicas": 3}}))
    problems = problems_of("production", change)
    assert problems[0] == f"sophia:{typo}: is not a key this program reads; did you mean sophia:{key}?"


def test_top_level_typo_is_named_even_when_other_keys_are_wrong():
    def change(r):
        r["platfrom"] = {}
        r["k3s"]["version"] = "latest"
    problems = problems_of("production", change)
    assert problems[0] == "sophia:platfrom: is not a key this program reads; did you mean sophia:platform?"
    assert problems[1].startswith("sophia:k3s.version:") and len(problems) == 2


def test_plain_unknown_key_without_a_close_one():
    msg = _only(problems_of("dev", lambda r: r.update(colour="blue")))
    assert msg.startswith("sophia:colour: is not a key this program reads; remove it or correct its spelling")


def test_secret_keys_are_not_unknown_but_a_plain_needed_secret_is_plain_text():
    parse_with("production")  # openaiApiKey, hubspotApiKey, ... are secrets the services name
    msg = _only(problems_of("production", lambda r: r.update(openaiApiKey="sk-x"), plain_secrets=("openaiApiKey",)))
    assert msg.startswith("sophia:openaiApiKey: the value is stored in plain text")


def test_top_level_keys_are_the_schemas():
    aliases = {f.alias or n for n, f in config.StackConfig.model_fields.items()}
    assert set(config.TOP_LEVEL_KEYS) == aliases


# ----------------------------------------------------------------------------- environment, API exposure

def test_environment_is_required():
    msg = _only(problems_of("dev", lambda r: r.pop("environment")))
    assert msg.startswith("sophia:environment: field required") and "sophia:environment: production" in msg


def test_stack_named_like_another_environment_is_refused():
    cfg = parse_with("dev")
    assert config.check_stack_name(cfg, "dev") == [] and config.check_stack_name(cfg, "my-test") == []
    msg = config.check_stack_name(cfg, "production")[0]
    assert msg.startswith("sophia:environment: the stack is named 'production' but its configuration says dev")


def test_production_with_empty_api_allow_from_is_refused():
    msg = _only(problems_of("production", lambda r: r["k3s"].pop("apiAllowFrom")))
    assert msg.startswith("sophia:k3s.apiAllowFrom: is empty, which would open the Kubernetes API (6443)")
    assert "apiAllowFrom: [any]" in msg


def test_production_may_open_the_api_on_purpose():
    cfg = parse_with("production", lambda r: r["k3s"].update(apiAllowFrom=["Any"]))
    assert cfg.k3s.api_allow_from == ["any"] and cfg.k3s.api_open_to_any


def test_production_as_shipped_limits_the_api():
    k3s = parse_with("production").k3s
    assert k3s.firewall and k3s.api_allow_from == ["198.51.100.0/24"] and not k3s.api_open_to_any


def test_dev_may_leave_api_allow_from_empty():
    assert parse_with("dev").k3s.api_open_to_any


def test_any_with_cidrs_is_refused():
    msg = _only(problems_of("production", lambda r: r["k3s"].update(apiAllowFrom=["any", "198.51.100.0/24"])))
    assert msg.startswith("sophia:k3s.apiAllowFrom: 'any' already allows every address")


def test_api_sources_without_the_firewall_are_refused():
    problems = problems_of("production", lambda r: r["k3s"].update(firewall=False))
    assert any(p.startswith("sophia:k3s.apiAllowFrom: lists sources, but sophia:k3s.firewall is false") for p in problems)


def test_firewall_renders_any_as_ufw_any():
    from sophia_infra.program.cluster import scripts
    cfg = parse_with("production", lambda r: r["k3s"].update(apiAllowFrom=["any"]))
    assert "ufw allow proto tcp from any to any port 6443 comment sophia-api" in scripts.firewall_script(cfg, cfg.control_plane)


def test_missing_key_is_named():
    msg = _only(problems_of("production", lambda r: r.pop("sshUser")))
    assert msg.startswith("sophia:sshUser:") and "field required" in msg.lower()


def test_every_problem_is_reported_at_once():
    def many(r):
        r["nodes"][1]["gpu"]["type"] = "H100"
        r["services"][0]["replicas"] = 0
        r["k3s"]["version"] = "latest"
    assert len(problems_of("production", many)) == 3


def test_the_program_stops_on_bad_config_with_a_run_error():
    """pulumi prints a RunError's message without a traceback: the program (__main__.py, run
    as the engine runs it) raises its config problems as one, still a ConfigError to the tools."""
    import json

    import pulumi

    from sophia_infra.tools.plan import runner, stack_config

    values, secret_keys = stack_config.load("dev")
    k3s = json.loads(values["sophia:k3s"])
    values = {**values, "sophia:k3s": json.dumps({**k3s, "version": "latest"})}
    with pytest.raises(pulumi.RunError) as err:
        runner.run("dev", config=values, secret_keys=secret_keys)
    assert isinstance(err.value, config.ConfigError)
    assert str(err.value).startswith("The stack configuration is invalid:\n  - sophia:k3s.version: ")
    assert "Traceback" not in str(err.value)


def test_the_config_schema_does_not_load_the_pulumi_sdk():
    """describe, release, outputs, audit and backups read the config in a fraction of a second:
    they start without the SDK (grpc, protobuf), which only the program and the plan need."""
    import subprocess
    import sys

    code = ("import sys\n"
            "import sophia_infra.__main__, sophia_infra.program.config.stack, sophia_infra.tools.release\n"
            "import sophia_infra.tools.backups, sophia_infra.tools.outputs, sophia_infra.tools.audit\n"
            "print(sorted(m for m in sys.modules if m == 'pulumi' or m.startswith(('pulumi.', 'grpc'))))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_gpu_capacity_counts_sharing():
    cfg = parse_with("production")
    assert cfg.gpu_capacity("GH200") == 4 and cfg.gpu_capacity("A100") == 2


@pytest.mark.parametrize("key,value,path", [
    ("monitoring", {"retention": "two weeks"}, "sophia:platform.monitoring.retention"),
    ("postgres", {"storageSize": "20 gigs"}, "sophia:platform.postgres.storageSize"),
])
def test_platform_values_are_checked(key, value, path):
    msg = _only(problems_of("production", lambda r: r.update(platform={key: value})))
    assert msg.startswith(path + ":")


# ----------------------------------------------------------------------------- under the engine

def _engine_problems(change) -> list[str]:
    """config.load() as `pulumi preview` runs it: every key the engine passed, secrets marked."""
    from sophia_infra.tools.plan import runner, stack_config
    config_values, secret_keys = stack_config.load("production")
    config_values, secret_keys = dict(config_values), list(secret_keys)
    change(config_values, secret_keys)
    with pytest.raises(config.ConfigError) as err:
        runner.run("production", config=config_values, secret_keys=secret_keys)
    return err.value.problems


def test_engine_refuses_a_top_level_typo():
    def typo(c, _):
        c["sophia:service"] = c.pop("sophia:services")
    assert _engine_problems(typo) == ["sophia:service: is not a key this program reads; did you mean sophia:services?"]


def test_engine_accepts_secrets_and_refuses_plain_unknown_keys():
    def extra(c, secret_keys):
        c["sophia:unusedApiKey"] = "placeholder-unused"  # a secret nothing reads: ESC may hold more
        secret_keys.append("sophia:unusedApiKey")
        c["sophia:platfrom"] = "{}"
        c["kubernetes:enableServerSideApply"] = "true"  # other namespaces are not ours
    assert _engine_problems(extra) == ["sophia:platfrom: is not a key this program reads; did you mean sophia:platform?"]


@pytest.mark.parametrize("namespace", ["sophai", "Sophia", "sophia-infra", "sopia"])
def test_engine_refuses_a_misspelt_namespace(namespace):
    def typo(c, _):
        c[f"{namespace}:backups"] = '{"etcdMaxAgeHours": 6}'
    assert _engine_problems(typo) == [
        f"{namespace}:backups: the namespace '{namespace}' is not one this program reads; did you mean sophia:backups?"]


def test_engine_keeps_other_namespaces():
    from sophia_infra.tools.plan import runner, stack_config
    values, secret_keys = stack_config.load("production")
    values = {**values, "pulumi:tags": '{"team": "platform"}', "kubernetes:context": "ops", "command:x": "1",
              "random:y": "1", "aws:region": "us-east-1", "sops:z": "1"}
    result = runner.run("production", config=values, secret_keys=list(secret_keys))
    assert result is not None


def test_engine_checks_the_stack_name_against_the_environment():
    def dev(c, _):
        c["sophia:environment"] = "dev"
    assert _engine_problems(dev) == ["sophia:environment: the stack is named 'production' but its configuration says dev; set sophia:environment: production in Pulumi.production.yaml."]
