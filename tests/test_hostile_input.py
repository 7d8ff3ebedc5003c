"""Careless and hostile input (issue 14): every value checked against what its consumer accepts.

Table-driven: each bad input is one change to the production (or dev) stack and must give
exactly ONE problem, naming the key path, saying what is wrong in one line, never with a
traceback, and never showing a value that came from a secret. A few good inputs must still pass.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from typing import Any, Callable, Optional

import pytest

from sophia_infra.program.config import stack as config, validators
from sophia_infra.tools.plan import stack_config

Change = Callable[[dict], None]


@functools.lru_cache(maxsize=None)
def _stack(stack: str) -> tuple[str, frozenset[str], tuple[tuple[str, str], ...]]:
    raw, present = stack_config.raw_config(stack)
    values, _ = stack_config.load(stack)
    secret_values = tuple((k.split(":", 1)[1], v) for k, v in values.items()
                          if k.startswith("sophia:") and present.get(k.split(":", 1)[1]))
    return json.dumps(raw), frozenset(k for k, s in present.items() if s), secret_values


def _parse(stack: str, change: Optional[Change] = None, secrets: Optional[dict[str, str]] = None,
           secret_top: tuple[str, ...] = ()) -> config.StackConfig:
    """config.parse as load() calls it: `secrets` override secret values, `secret_top` are
    schema keys given as secrets (sophia:hosts with fn::secret)."""
    raw_json, secret_keys, secret_values = _stack(stack)
    raw = json.loads(raw_json)
    if change:
        change(raw)
    values = {**dict(secret_values), **(secrets or {})}

    def lookup(key: str) -> Optional[bool]:
        if key in secret_top:
            return True
        return True if key in secret_keys or key in (secrets or {}) else None

    return config.parse(raw, lookup, values.get)


def _problems(stack: str, change: Optional[Change] = None, **kw) -> list[str]:
    with pytest.raises(config.ConfigError) as err:
        _parse(stack, change, **kw)
    return err.value.problems


# ----------------------------------------------------------------------------- changes

def _set(path: str, value: Any) -> Change:
    """Set the value at a dotted path with [i] indexes: 'services[0].image.tag'."""
    def change(raw: dict) -> None:
        node: Any = raw
        parts = path.replace("[", ".[").split(".")
        for i, part in enumerate(parts):
            key: Any = int(part[1:-1]) if part.startswith("[") else part
            if i == len(parts) - 1:
                node[key] = value
            else:
                if isinstance(node, dict) and node.get(key) is None:
                    node[key] = {}
                node = node[key]
    return change


def _host(name: str, value: Any) -> Change:
    return lambda r: r["hosts"].update({name: value})


def _platform(settings: dict) -> Change:
    # Merged into the stack's own (production's backup settings stay).
    def merge(base: dict, over: dict) -> dict:
        return {**base, **{k: merge(base.get(k) or {}, v) if isinstance(v, dict) else v for k, v in over.items()}}
    return lambda r: r.update(platform=merge(r.get("platform") or {}, settings))


def _backups(endpoint: str) -> Change:
    return _platform({"postgres": {"backup": {"enabled": True, "bucket": "pg-backups", "endpoint": endpoint}}})


NL = "\n"
MULTICAST = str(ipaddress.IPv4Address(0xE0000001))  # all-hosts; built, so the address audit has no literal
# (id, stack, change, key path of the one problem, a substring of its sentence)
BAD: list[tuple[str, str, Change, str, str]] = [
    # --- a trailing newline, per kind of field (`$` of re.match lets it through)
    ("nl-service-name", "production", _set("services[4].name", "gong" + NL), "sophia:services[4].name", "DNS-1035 label"),
    ("nl-node-name", "production", _set("nodes[2].name", "sophia-mcp" + NL), "sophia:nodes[2].name", "DNS-1123 label"),
    ("nl-k3s-version", "production", _set("k3s.version", "v1.34.2+k3s1" + NL), "sophia:k3s.version", "not a pinned K3s release"),
    ("nl-image-tag", "dev", _set("services[0].image.tag", "1.0.0" + NL), "sophia:services[0].image.tag", "not a pinned image tag"),
    ("nl-image-repository", "production", _set("services[0].image.repository", "docker.io/org/app" + NL), "sophia:services[0].image.repository", "not an image repository"),
    ("nl-chart-version", "production", _set("charts.nvidia-device-plugin.version", "0.20.0" + NL), "sophia:charts.nvidia-device-plugin.version", "not a pinned chart version"),
    ("nl-chart-repository", "production", _set("charts.valkey.repository", "https://valkey.io/valkey-helm/" + NL), "sophia:charts.valkey.repository", "not an https or oci chart repository"),
    ("nl-host-address", "production", _host("sophia-mcp", "203.0.113.12" + NL), "sophia:hosts.sophia-mcp.address", "neither an IP address nor a DNS name"),
    ("nl-taint", "production", _set("nodes[2].taints", ["dedicated=gpu:NoSchedule" + NL]), "sophia:nodes[2].taints", "is not a taint"),
    ("nl-label-value", "production", _set("nodes[2].labels", {"team": "mcp" + NL}), "sophia:nodes[2].labels", "not a label value"),
    ("nl-env-name", "production", _set("services[2].secrets", {"OPENAI_API_KEY" + NL: "openaiApiKey"}), "sophia:services[2].secrets", "not an environment variable name"),
    ("nl-secret-key", "production", _set("services[2].secrets", {"OPENAI_API_KEY": "openaiApiKey" + NL}), "sophia:services[2].secrets", "not a config key"),
    ("nl-metrics-path", "production", _set("services[0].metricsPath", "/metrics" + NL + "host: 169.254.169.254"), "sophia:services[0].metricsPath", "not an HTTP path"),
    ("nl-health-path", "production", _set("workloads.healthPaths", {"backend": "/health" + NL + "  host: 169.254.169.254"}), "sophia:workloads.healthPaths", "health path of 'backend'"),
    ("nl-ingress-class", "production", _set("workloads.ingressClass", "nginx" + NL + "defaultBackend: x"), "sophia:workloads.ingressClass", "DNS-1123 subdomain"),
    ("nl-frontend-host", "production", _set("workloads.frontendHost", "app.example.com" + NL), "sophia:workloads.frontendHost", "not a DNS host name"),
    ("nl-target-revision", "production", _set("argocd.targetRevision", "v0.1.0" + NL), "sophia:argocd.targetRevision", "the tag of the chart version"),
    ("nl-repo-url", "production", _set("argocd.repoUrl", "https://github.com/sophia-ai/sophia-infra.git" + NL), "sophia:argocd.repoUrl", "not a git repository URL"),
    ("nl-s3-endpoint", "production", _set("k3s.etcdS3.endpoint", "s3.us-east-1.amazonaws.com" + NL), "sophia:k3s.etcdS3.endpoint", "host[:port] of an S3-compatible endpoint"),
    ("nl-cnpg-cluster", "production", _platform({"postgres": {"clusterName": "sophia-postgres" + NL}}), "sophia:platform.postgres.clusterName", "CloudNativePG cluster name"),
    ("nl-storage-class", "production", _platform({"valkey": {"storageClass": "local-path" + NL}}), "sophia:platform.valkey.storageClass", "DNS-1123 subdomain"),
    ("nl-cron", "production", _set("k3s.etcdSnapshotSchedule", "0 */6 * * *" + NL), "sophia:k3s.etcdSnapshotSchedule", "line break"),
    ("nl-quantity", "production", _platform({"postgres": {"storageSize": "20Gi" + NL}}), "sophia:platform.postgres.storageSize", "not a Kubernetes quantity"),
    ("nl-duration", "production", _platform({"monitoring": {"retention": "15d" + NL}}), "sophia:platform.monitoring.retention", "not a Prometheus duration"),
    ("nl-mtime", "production", _set("argocd.adminPasswordMtime", "2026-01-01T00:00:00Z" + NL), "sophia:argocd.adminPasswordMtime", "not an RFC 3339 UTC time"),
    ("nl-api-dns-name", "production", _set("k3s.apiDnsName", "api.example.com" + NL), "sophia:k3s.apiDnsName", "not a DNS name"),
    ("nl-gateway-url", "production", _platform({"llmGateway": {"portkeyBaseUrl": "https://api.portkey.ai/v1" + NL}}), "sophia:platform.llmGateway.portkeyBaseUrl", "not an https gateway base URL"),
    ("nl-model", "production", _platform({"llmGateway": {"defaultModel": "openai/gpt-4o" + NL}}), "sophia:platform.llmGateway.defaultModel", "not a model id"),
    # --- limits of the platforms
    ("not-dns1035-service", "production", _set("services[4].name", "1password"), "sophia:services[4].name", "starting with a letter"),
    ("release-name-over-53", "production", _set("services[4].name", "g" * 54), "sophia:services[4].name", "at most 53"),
    ("node-name-underscore", "production", _set("nodes[2].name", "Sophia_MCP"), "sophia:nodes[2].name", "DNS-1123 label"),
    ("cnpg-name-underscore", "production", _platform({"postgres": {"clusterName": "Sophia_PG"}}), "sophia:platform.postgres.clusterName", "DNS-1035 label"),
    ("cnpg-name-over-50", "production", _platform({"postgres": {"clusterName": "p" * 51}}), "sophia:platform.postgres.clusterName", "at most 50"),
    ("ingress-class-underscore", "production", _set("workloads.ingressClass", "Nginx_Class"), "sophia:workloads.ingressClass", "DNS-1123 subdomain"),
    ("label-name-over-63", "production", _set("nodes[2].labels", {"x" * 64: "a"}), "sophia:nodes[2].labels", "at most 63"),
    ("label-prefix-not-dns", "production", _set("nodes[2].labels", {"Bad_Prefix/team": "a"}), "sophia:nodes[2].labels", "prefix"),
    ("label-value-over-63", "production", _set("nodes[2].labels", {"team": "v" * 64}), "sophia:nodes[2].labels", "not a label value"),
    ("taint-effect", "production", _set("nodes[2].taints", ["dedicated=gpu:NoRun"]), "sophia:nodes[2].taints", "is not a taint"),
    ("etcd-retention-huge", "production", _set("k3s.etcdSnapshotRetention", 10**20), "sophia:k3s.etcdSnapshotRetention", "less than or equal to 1000"),
    ("max-replicas-int32", "production", _set("services[0].maxReplicas", 2**31), "sophia:services[0].maxReplicas", "less than or equal to 1000"),
    ("replicas-int32", "production", _set("services[1].replicas", 2**31), "sophia:services[1].replicas", "less than or equal to 1000"),
    ("port-too-big", "production", _set("services[4].port", 70000), "sophia:services[4].port", "less than or equal to 65535"),
    ("internet-port-zero", "production", _platform({"network": {"internetPorts": [0]}}), "sophia:platform.network.internetPorts[0]", "from 1 to 65535"),
    ("gpu-count", "production", _set("nodes[1].gpu.count", 17), "sophia:nodes[1].gpu.count", "less than or equal to 16"),
    ("gpu-per-pod", "production", _set("services[2].gpu", 100), "sophia:services[2].gpu", "less than or equal to 16"),
    ("image-tag-over-128", "dev", _set("services[0].image.tag", "1" * 129), "sophia:services[0].image.tag", "at most 128"),
    ("chart-version-partial", "production", _set("charts.valkey.version", "0.11"), "sophia:charts.valkey.version", "not a pinned chart version"),
    ("cron-minute-range", "production", _set("k3s.etcdSnapshotSchedule", "61 * * * *"), "sophia:k3s.etcdSnapshotSchedule", "minute 61 is outside 0-59"),
    ("cron-four-fields", "production", _set("k3s.etcdSnapshotSchedule", "0 */6 * *"), "sophia:k3s.etcdSnapshotSchedule", "4 fields, not 5"),
    ("cron-zero-step", "production", _set("k3s.etcdSnapshotSchedule", "*/0 * * * *"), "sophia:k3s.etcdSnapshotSchedule", "step"),
    ("cron-backwards", "production", _set("k3s.etcdSnapshotSchedule", "0 6-1 * * *"), "sophia:k3s.etcdSnapshotSchedule", "runs backwards"),
    ("cron-bad-name", "production", _set("k3s.etcdSnapshotSchedule", "0 0 * * funday"), "sophia:k3s.etcdSnapshotSchedule", "day of week"),
    ("cron-not-cron", "production", _set("k3s.etcdSnapshotSchedule", "every six hours"), "sophia:k3s.etcdSnapshotSchedule", "not a 5-field cron schedule"),
    ("cnpg-cron-five-fields", "production", _platform({"postgres": {"backup": {"schedule": "0 3 * * *"}}}), "sophia:platform.postgres.backup.schedule", "not a 6-field cron schedule"),
    ("cidrs-overlap", "production", _set("k3s.clusterCidr", "10.42.0.0/15"), "sophia:k3s.serviceCidr", "overlaps clusterCidr"),
    ("host-inside-pod-range", "production", _host("sophia-mcp", "10.42.7.7"), "sophia:hosts.sophia-mcp.address", "inside sophia:k3s.clusterCidr"),
    ("s3-port-too-big", "production", _set("k3s.etcdS3.endpoint", "s3.example.com:99999"), "sophia:k3s.etcdS3.endpoint", "from 1 to 65535"),
    ("s3-port-garbage", "production", _set("k3s.etcdS3.endpoint", "s3.example.com:9000/x"), "sophia:k3s.etcdS3.endpoint", "host[:port]"),
    ("s3-with-scheme", "production", _set("k3s.etcdS3.endpoint", "https://s3.example.com"), "sophia:k3s.etcdS3.endpoint", "without https://"),
    ("s3-bucket", "production", _set("k3s.etcdS3.bucket", "B"), "sophia:k3s.etcdS3.bucket", "not an S3 bucket name"),
    ("backup-endpoint-port", "production", _backups("https://s3.example.com:99999"), "sophia:platform.postgres.backup.endpoint", "not an https or http S3 endpoint"),
    # --- empty means everything
    ("empty-internet-ports", "production", _platform({"network": {"internetPorts": []}}), "sophia:platform.network.internetPorts", "every port"),
    ("empty-node-cidrs", "production", _platform({"network": {"nodeCidrs": []}}), "sophia:platform.network.nodeCidrs", "every address"),
    # --- addresses
    ("host-unspecified", "production", _host("sophia-mcp", "0.0.0.0"), "sophia:hosts.sophia-mcp.address", "the unspecified address"),
    ("host-loopback", "production", _host("sophia-mcp", "127.0.0.1"), "sophia:hosts.sophia-mcp.address", "a loopback address"),
    ("host-ipv6-unspecified", "production", _host("sophia-mcp", "::"), "sophia:hosts.sophia-mcp.address", "the unspecified address"),
    ("host-link-local", "production", _host("sophia-mcp", "169.254.169.254"), "sophia:hosts.sophia-mcp.address", "a link-local address"),
    ("host-multicast", "production", _host("sophia-mcp", MULTICAST), "sophia:hosts.sophia-mcp.address", "a multicast address"),
    ("host-dns-with-firewall", "production", _host("sophia-mcp", "gpu-1.example.com"), "sophia:hosts.sophia-mcp.address", "ufw rules take IP addresses only"),
    ("private-address-dns", "production", _host("sophia-mcp", {"address": "203.0.113.12", "privateAddress": "mcp.internal.example.com"}), "sophia:hosts.sophia-mcp.privateAddress", "node-ip takes an IP address"),
    ("flannel-iface", "production", _host("sophia-mcp", {"address": "203.0.113.12", "flannelIface": "eth1; reboot"}), "sophia:hosts.sophia-mcp.flannelIface", "network interface name"),
    # --- labels and placement
    ("label-gpu-type", "production", _set("nodes[2].labels", {"gpu-type": "GH200"}), "sophia:nodes[2].labels", "sets itself"),
    ("label-gpu-present", "production", _set("nodes[2].labels", {"nvidia.com/gpu.present": "false"}), "sophia:nodes[2].labels", "sets itself"),
    ("label-role", "production", _set("nodes[2].labels", {"sophia.ai/role": "data"}), "sophia:nodes[2].labels", "sets itself"),
    ("label-device-plugin", "production", _set("nodes[2].labels", {"nvidia.com/device-plugin.config": "x"}), "sophia:nodes[2].labels", "sets itself"),
    ("label-node-role", "production", _set("nodes[2].labels", {"node-role.kubernetes.io/control-plane": "true"}), "sophia:nodes[2].labels", "sets itself"),
    ("label-kubernetes-io", "production", _set("nodes[2].labels", {"kubernetes.io/arch": "arm64"}), "sophia:nodes[2].labels", "sets itself"),
    ("label-k3s-io", "production", _set("nodes[2].labels", {"k3s.io/hostname": "x"}), "sophia:nodes[2].labels", "sets itself"),
    ("placement-on-control-plane", "production", _set("services[3].placement.gpuType", "RTX6000"), "sophia:services[3].placement.gpuType", "only control-plane nodes have a RTX6000 GPU"),
    # --- secrets (plain keys that name them)
    ("infra-secret-ssh", "production", _set("services[12].secrets", {"SSH_KEY": "sshPrivateKey"}), "sophia:services[12].secrets", "infrastructure secrets (SSH to the hosts)"),
    ("infra-secret-etcd", "production", _set("services[12].secrets", {"AWS_SECRET_ACCESS_KEY": "etcdS3SecretKey"}), "sophia:services[12].secrets", "infrastructure secrets"),
    ("infra-secret-argocd", "production", _set("services[12].secrets", {"ARGOCD": "argocdAdminPasswordBcrypt"}), "sophia:services[12].secrets", "infrastructure secrets"),
    ("infra-secret-docker", "production", _set("services[12].secrets", {"DOCKER_TOKEN": "dockerAccessToken"}), "sophia:services[12].secrets", "infrastructure secrets"),
    ("postgres-user-is-config", "production", _set("services[0].secrets.POSTGRES_USER", "postgresUser"), "sophia:services[0].secrets", "plain config now"),
    ("postgres-owner-reserved", "production", _platform({"postgres": {"owner": "postgres"}}), "sophia:platform.postgres.owner", "keeps for itself"),
    ("postgres-database-name", "production", _platform({"postgres": {"database": "Sophia DB"}}), "sophia:platform.postgres.database", "not a PostgreSQL database name"),
]


@pytest.mark.parametrize("case_id,stack,change,path,says", BAD, ids=[c[0] for c in BAD])
def test_bad_input_gives_one_clear_sentence(case_id, stack, change, path, says):
    problems = _problems(stack, change)
    assert len(problems) == 1, problems
    msg = problems[0]
    assert msg.startswith(path + ":"), msg
    assert says in msg, msg
    assert "\n" not in msg and "Traceback" not in msg and "Value error" not in msg
    assert msg.endswith(".") or msg.endswith("?"), msg


def test_at_least_sixty_cases_across_the_classes():
    assert len(BAD) >= 60
    assert len({c[0] for c in BAD}) == len(BAD)


# ----------------------------------------------------------------------------- secret values

CREDENTIAL = "ghp_S3cr3tT0kenValue42"


@pytest.mark.parametrize("url", [f"https://ci:{CREDENTIAL}@github.com/sophia-ai/sophia-infra.git",
                                 f"https://{CREDENTIAL}@github.com/sophia-ai/sophia-infra.git",
                                 f"ssh://git:{CREDENTIAL}@github.com/sophia-ai/sophia-infra.git"])
def test_credential_in_repo_url_is_refused_without_echoing_it(url):
    problems = _problems("production", _set("argocd.repoUrl", url))
    assert len(problems) == 1, problems
    assert problems[0].startswith("sophia:argocd.repoUrl: the URL carries a credential")
    assert "repository Secret from ESC" in problems[0]
    assert CREDENTIAL not in problems[0]


@pytest.mark.parametrize("value", ["", "   ", "\n", "\t \n"])
def test_empty_or_whitespace_secret_is_refused(value):
    problems = _problems("production", secrets={"openaiApiKey": value})
    assert problems == ["sophia:openaiApiKey: the secret is empty or only whitespace (needed by "
                        "sophia:services[0].secrets.OPENAI_API_KEY); store the real value with fn::secret in ESC."]


@pytest.mark.parametrize("hosts_value,path", [
    ({"sophia-mcp": "300.1.2.3"}, "sophia:hosts.sophia-mcp.address"),
    ({"sophia-mcp": "198.51.100.77" + NL}, "sophia:hosts.sophia-mcp.address"),
    ({"sophia-mcp": "127.0.0.1"}, "sophia:hosts.sophia-mcp.address"),
    ({"sophia-mcp": {"address": "198.51.100.77", "privateAddress": 12345}}, "sophia:hosts.sophia-mcp.privateAddress"),
    ({"sophia-mcp": {"address": "198.51.100.78", "privateAddress": "pg.example.com"}}, "sophia:hosts.sophia-mcp.privateAddress"),
])
def test_secret_hosts_are_never_echoed(hosts_value, path):
    secret_texts = [str(v) for h in hosts_value.values() for v in (h.values() if isinstance(h, dict) else [h])]

    def change(r):
        r["hosts"].update(hosts_value)
    problems = _problems("production", change, secret_top=("hosts",))
    assert len(problems) == 1, problems
    assert problems[0].startswith(path + ":"), problems[0]
    for text in secret_texts:
        assert text not in problems[0] and text.strip() not in problems[0], problems[0]
        assert validators.show(text).strip("'") not in problems[0]
    assert "(got" not in problems[0]


def test_plain_hosts_still_show_the_value():
    problems = _problems("production", _host("sophia-mcp", "300.1.2.3"))
    assert problems == ["sophia:hosts.sophia-mcp.address: '300.1.2.3' is neither an IP address nor a DNS name; give the host's IP address or DNS name."]


def test_secret_hosts_keep_their_marking_in_the_outputs():
    from sophia_infra.tools.plan import runner
    config_values, secret_keys = stack_config.load("dev")
    run = runner.run("dev", config=dict(config_values), secret_keys=[*secret_keys, "sophia:hosts"])
    for key in ("controlPlaneIp", "nodeIps", "nodes"):
        assert run.outputs[key] == "[secret]", key
    assert run.cfg.is_secret("hosts")
    assert run.secret_outputs["nodeIps"]["sophia-dev-a10"] == json.loads(config_values["sophia:hosts"])["sophia-dev-a10"]["address"]


def test_empty_secret_is_refused_under_the_engine():
    from sophia_infra.tools.plan import runner
    config_values, secret_keys = stack_config.load("dev")
    config_values = {**config_values, "sophia:redisPassword": " "}
    with pytest.raises(config.ConfigError) as err:
        runner.run("dev", config=config_values, secret_keys=list(secret_keys))
    assert err.value.problems == ["sophia:redisPassword: the secret is empty or only whitespace (needed by "
                                  "sophia:services[0].secrets.REDIS_PASSWORD); store the real value with fn::secret in ESC."]


# ----------------------------------------------------------------------------- good input

GOOD: list[tuple[str, str, Change]] = [
    ("ipv6-host", "production", _host("sophia-mcp", "2001:db8::12")),
    ("cron-lists-ranges-steps-names", "production", _set("k3s.etcdSnapshotSchedule", "*/15 0-6,22,23 * jan-mar mon-fri")),
    ("label-with-prefix", "production", _set("nodes[2].labels", {"example.com/team": "gpu-a", "tier": ""})),
    ("taints", "production", _set("nodes[2].taints", ["dedicated=gpu:NoSchedule", "example.com/maintenance:NoExecute"])),
    ("s3-endpoint-with-port", "production", _set("k3s.etcdS3.endpoint", "minio.example.com:9000")),
    ("ssh-repo-url", "dev", _set("argocd.repoUrl", "git@github.com:sophia-ai/sophia-infra.git")),
    ("digest", "dev", _set("services[0].image.tag", "sha256:" + "a" * 64)),
    ("dotted-ingress-class", "production", _set("workloads.ingressClass", "nginx.example.com")),
    ("postgres-names", "production", _platform({"postgres": {"database": "sophia_app", "owner": "sophia_app"}})),
    ("backups", "production", _backups("https://s3.us-east-1.amazonaws.com")),
]


@pytest.mark.parametrize("case_id,stack,change", GOOD, ids=[c[0] for c in GOOD])
def test_good_input_still_passes(case_id, stack, change):
    _parse(stack, change)


def test_both_stacks_as_shipped_pass():
    for stack in ("dev", "production"):
        _parse(stack)


def test_ipv6_addresses_are_bracketed_in_urls():
    from sophia_infra.program.cluster import kubeconfig, scripts
    def ipv6(raw):  # an IPv6 server needs IPv6 pod and service ranges (config/stack.py: address_families)
        _host("sophia-control", "2001:db8::10")(raw)
        raw["k3s"].update(clusterCidr="2001:db8:42::/56", serviceCidr="2001:db8:43::/112")
    cfg = _parse("production", ipv6)
    assert scripts.server_url(cfg) == "https://[2001:db8::10]:6443"
    raw = "clusters: [{name: default, cluster: {server: https://127.0.0.1:6443}}]\nusers: [{name: default, user: {}}]\n"
    assert "server: https://[2001:db8::10]:6443" in kubeconfig.rewrite(raw, "2001:db8::10", "sophia")
    assert validators.url_host("203.0.113.10") == "203.0.113.10" and validators.url_host("api.example.com") == "api.example.com"


def test_postgres_names_are_plain_config_and_its_password_a_secret():
    cfg = _parse("production")
    assert (cfg.platform.postgres.database, cfg.platform.postgres.owner) == ("sophia", "sophia")
    needed = cfg.required_secrets()
    assert "postgresPassword" in needed and "postgresUser" not in needed and "postgresDatabase" not in needed
