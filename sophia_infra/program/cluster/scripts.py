"""Every shell script the cluster layer sends to a host, built by pure functions.

Each script is idempotent: it checks the host's state first and changes only what
differs, so `pulumi up` can re-run it safely (the kube-hetzner way of re-applying K3s
config). Scripts take no secret in their text: secrets arrive on standard input and
go straight to files with mode 0600, so command text can be logged and diffed.
Every script is checked by shellcheck in the tests.

Nothing waits without a bound: K3s's install.sh writes a `Type=notify` unit with
`TimeoutStartSec=0`, so a K3s that never reports ready (an agent that cannot join, k3s
#11808, #6879) would hold `systemctl restart` and the remote command forever. Every start
and restart goes through `timeout`, every wait has a deadline, every download a
`--max-time`; the commands' own timeouts (nodes.py) are longer than these bounds.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Optional
from urllib.parse import quote

import yaml

from sophia_infra.program.cluster.addresses import LaunchedHost
from sophia_infra.program.config import names
from sophia_infra.program.config.cluster import Host, Node
from sophia_infra.program.config.stack import StackConfig
from sophia_infra.program.config.validators import url_host

K3S_DIR = "/etc/rancher/k3s"
CONFIG_PATH = f"{K3S_DIR}/config.yaml"
CONTAINERD_CONFIG = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml"
TOKEN_PATH = f"{K3S_DIR}/cluster-token"
# On servers only: the agent token's password, which K3s reads through `agent-token-file`.
AGENT_TOKEN_PATH = f"{K3S_DIR}/agent-token"
S3_ENV_PATH = f"{K3S_DIR}/etcd-s3.env"
# What K3s writes on a server (docs.k3s.io/cli/token): the secure server token, and the
# secure agent token (K10<ca-hash>::node:<password>; a link to the server token when no
# agent token is set).
SERVER_TOKEN_PATH = "/var/lib/rancher/k3s/server/token"
SERVER_AGENT_TOKEN_PATH = "/var/lib/rancher/k3s/server/agent-token"
# Servers run etcd and the API only: workloads never land next to etcd. K3s's own pods
# and the program's node agents tolerate it (docs.k3s.io/datastore/ha-embedded).
CONTROL_PLANE_TAINT = "CriticalAddonsOnly=true:NoExecute"
# The stack files' value until an operator pins the real checksum: no installer matches it.
UNPINNED_INSTALLER_SHA256 = "0" * 64
KUBECONFIG_PATH = f"{K3S_DIR}/k3s.yaml"
API_PORT = 6443
NODE_EXPORTER_PORT = 9100

# Bounds, in seconds, of the waits in the scripts (see the module docstring).
READY_SECONDS = 300  # K3s answering after a (re)start
RESTART_SECONDS = 300  # `systemctl restart` of a Type=notify unit that may never report ready
INSTALLER_SECONDS = 600  # install.sh downloading and verifying the binary (it starts nothing)
UNINSTALL_SECONDS = 600
DOWNLOAD_SECONDS = 120  # one `curl` of a small file
APT_LOCK_SECONDS = 300  # apt waiting for another apt (unattended-upgrades on a fresh host)

_PRELUDE = "set -euo pipefail\numask 077\n"


def service_name(node: Node) -> str:
    return "k3s" if node.role == "control-plane" else "k3s-agent"


def as_root(script: str) -> str:
    """The command line that runs `script` as root; standard input passes through."""
    return f"sudo bash -c {shlex.quote(script)}"


def node_labels(node: Node, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Labels every node carries: role, GPU type, GPU presence, plus the node's own."""
    labels = {names.ROLE_LABEL: node.role}
    if node.gpu:
        labels[names.GPU_TYPE_LABEL] = node.gpu.type
        labels[names.GPU_PRESENT_LABEL] = "true"
    labels.update(extra or {})
    labels.update(node.labels)
    return labels


# `hosts`: node name -> Host, as cluster.addresses resolves them (a provisioned node's
# address comes from its instance); None = the ESC addresses of sophia:hosts.
Hosts = Optional[Mapping[str, Host]]


def peer_addresses(host: Host) -> list[str]:
    """Every address a node's traffic may come from: its address, its private address, and a
    launched host's private address (which of its two it carries is not documented)."""
    launched = host.launched_private_ip if isinstance(host, LaunchedHost) else None
    return list(dict.fromkeys(a for a in (host.address, host.private_address, launched) if a))


def node_ip_candidates(host: Host) -> tuple[str, ...]:
    """For a launched host, the addresses its config script chooses K3s's node-ip from, in order
    of preference (the public one first: every peer reaches it, in any region); () when the
    stack config says which address is which (ESC hosts)."""
    if not isinstance(host, LaunchedHost):
        return ()
    return tuple(a for a in (host.address, host.launched_private_ip) if a)


def server_url(cfg: StackConfig, hosts: Hosts = None) -> str:
    """How nodes reach the first server: its private address when it has one."""
    host = (hosts or cfg.hosts)[cfg.control_plane.name]
    return f"https://{url_host(host.private_address or host.address)}:{API_PORT}"


def api_endpoint(cfg: StackConfig, hosts: Hosts = None) -> str:
    """How operators and Pulumi reach the API: the DNS name if set, else the address."""
    return cfg.k3s.api_dns_name or (hosts or cfg.hosts)[cfg.control_plane.name].address


def k3s_config(cfg: StackConfig, node: Node, labels: dict[str, str], hosts: Hosts = None) -> dict:
    """The node's /etc/rancher/k3s/config.yaml (keys are K3s flag names). No secrets."""
    host: Host = (hosts or cfg.hosts)[node.name]
    k3s = cfg.k3s
    out: dict = {"node-name": node.name, "token-file": TOKEN_PATH}
    if node.role == "control-plane":
        if node.cluster_init:
            out["cluster-init"] = True
        else:
            out["server"] = server_url(cfg, hosts)
        out["tls-san"] = [*peer_addresses(host), *([k3s.api_dns_name] if k3s.api_dns_name else [])]
        out["agent-token-file"] = AGENT_TOKEN_PATH  # every server: else it resets the agent password
        out["disable"] = ["traefik"]
        out["secrets-encryption"] = k3s.secrets_encryption
        out["write-kubeconfig-mode"] = "0600"
        out["cluster-cidr"] = k3s.cluster_cidr
        out["service-cidr"] = k3s.service_cidr
        out["flannel-backend"] = k3s.flannel_backend
        out["etcd-snapshot-schedule-cron"] = k3s.etcd_snapshot_schedule
        out["etcd-snapshot-retention"] = k3s.etcd_snapshot_retention
        if k3s.etcd_s3:
            s3 = k3s.etcd_s3
            out.update({"etcd-s3": True, "etcd-s3-bucket": s3.bucket, "etcd-s3-endpoint": s3.endpoint,
                        "etcd-s3-folder": s3.folder})
            if s3.region:
                out["etcd-s3-region"] = s3.region
    else:
        out["server"] = server_url(cfg, hosts)
    if host.private_address:
        out["node-ip"] = host.private_address
        out["node-external-ip"] = host.address
    if host.flannel_iface:
        out["flannel-iface"] = host.flannel_iface
    out["node-label"] = [f"{k}={v}" for k, v in sorted(labels.items())]
    taints = node_taints(node)
    if taints:
        out["node-taint"] = taints
    return out


def node_taints(node: Node) -> list[str]:
    """The taints a node registers with: the control plane's own, then the node's."""
    own = [CONTROL_PLANE_TAINT] if node.role == "control-plane" else []
    return own + [t for t in node.taints if t not in own]


def render_config(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=True, default_flow_style=False)


def secrets_stdin(token: str, agent_token: str | None = None,
                  etcd_s3_keys: tuple[str, str] | None = None) -> str:
    """What the secrets command reads, one per line: the join token; on a server the agent
    token's password; on an S3-backed server the S3 key pair. pulumi-command sends it as is,
    so the last line has no final newline."""
    return "\n".join([token, *([agent_token] if agent_token is not None else []), *(etcd_s3_keys or ())])


def _read_line(var: str, what: str) -> str:
    # `read` returns 1 on a last line without a newline (how pulumi-command sends stdin):
    # the line is read all the same, so that status must not end the script under `set -e`.
    return f"""{var}=""
IFS= read -r {var} || true
if [ -z "${var}" ]; then
  echo "no {what} on standard input" >&2
  exit 1
fi
"""


def _write_file(var: str, path: str, what: str, on_change: str = "") -> str:
    """Write "$var" to `path` (0600) unless it holds that already; run `on_change` if it changed."""
    name = path.rsplit("/", 1)[1]
    return f"""tmp="$(mktemp {K3S_DIR}/.{name}.XXXXXX)"
printf '%s\\n' "${var}" > "$tmp"
if cmp -s "$tmp" {path}; then
  rm -f "$tmp"
  echo "{what} unchanged"
else
  mv "$tmp" {path}
  echo "{what} written"
{on_change}fi
"""


def write_secrets_script(node: Node, with_etcd_s3: bool) -> str:
    """Reads the join token (line 1), on a server the agent token (line 2) and, on an
    S3-backed server, the S3 keys (lines 3-4) from standard input into 0600 files; prints no
    secret. An agent refuses the server token: with it, a compromised worker could join as
    a server and read etcd. On a running server, a new agent token (once config.yaml names
    its file) or new S3 keys restart K3s (bounded): K3s reads both only when it starts."""
    server = node.role == "control-plane"
    svc = service_name(node)
    script = _PRELUDE + (_k3s_functions(node) + 'restart_for=""\n' if server else "") + f"""install -d -m 0700 {K3S_DIR}
""" + _read_line("token", "cluster token")
    if not server:
        script += """case "$token" in
  *::server:*)
    echo "refusing the server token on an agent: agents join with the agent token (K10<ca-hash>::node:...)" >&2
    exit 1 ;;
esac
"""
    script += _write_file("token", TOKEN_PATH, "token")
    if server:
        script += _read_line("agent_token", "agent token (line 2)") + _write_file(
            "agent_token", AGENT_TOKEN_PATH, "agent token",
            on_change=f"""  if grep -qs '^agent-token-file:' {CONFIG_PATH}; then
    restart_for="the new agent token"
  fi
""")
    if with_etcd_s3:
        dropin_dir = f"/etc/systemd/system/{svc}.service.d"
        script += f"""access_key=""
secret_key=""
IFS= read -r access_key || true
IFS= read -r secret_key || true
if [ -z "$access_key" ] || [ -z "$secret_key" ]; then
  echo "no etcd S3 access key and secret key on standard input (lines 3 and 4)" >&2
  exit 1
fi
s3_changed=false
tmp="$(mktemp {K3S_DIR}/.s3.XXXXXX)"
printf 'AWS_ACCESS_KEY_ID=%s\\nAWS_SECRET_ACCESS_KEY=%s\\n' "$access_key" "$secret_key" > "$tmp"
if cmp -s "$tmp" {S3_ENV_PATH}; then
  rm -f "$tmp"
  echo "etcd S3 credentials unchanged"
else
  mv "$tmp" {S3_ENV_PATH}
  s3_changed=true
  echo "etcd S3 credentials written"
fi
install -d -m 0755 {dropin_dir}
tmp="$(mktemp {dropin_dir}/.etcd-s3.XXXXXX)"
printf '[Service]\\nEnvironmentFile=-{S3_ENV_PATH}\\n' > "$tmp"
chmod 0644 "$tmp"
if cmp -s "$tmp" {dropin_dir}/10-etcd-s3.conf; then
  rm -f "$tmp"
else
  mv "$tmp" {dropin_dir}/10-etcd-s3.conf
  systemctl daemon-reload
  s3_changed=true
fi
if [ "$s3_changed" = true ]; then
  restart_for="${{restart_for:+$restart_for and }}the new etcd S3 credentials"
fi
"""
    if server:
        script += f"""if [ -n "$restart_for" ] && systemctl is-active --quiet {svc}; then
  echo "restarting {svc} so it uses $restart_for"
  if ! restart_k3s; then
    echo "{svc} did not come back after the restart; see: journalctl -u {svc}" >&2
    exit 1
  fi
fi
"""
    return script


def _wait_ready(node: Node, seconds: int = READY_SECONDS) -> str:
    if node.role == "control-plane":
        probe = "k3s kubectl get --raw=/readyz >/dev/null 2>&1"
    else:
        probe = "systemctl is-active --quiet k3s-agent"
    return f"""wait_ready() {{
  local deadline=$((SECONDS + {seconds}))
  until {probe}; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      return 1
    fi
    sleep 3
  done
}}
"""


def _k3s_functions(node: Node) -> str:
    """`wait_ready`, and `restart_k3s`: a restart bounded by `timeout`, then wait_ready.
    A blocking restart (not --no-block) so that the old process is gone before the probe
    runs, and `restart` (not `start`) so that a new binary or config takes effect."""
    svc = service_name(node)
    return _wait_ready(node) + f"""restart_k3s() {{
  if ! timeout {RESTART_SECONDS} systemctl restart {svc}; then
    echo "{svc} did not report ready within {RESTART_SECONDS}s" >&2
    return 1
  fi
  wait_ready
}}
"""


def _choose_node_ip(candidates: Sequence[str]) -> str:
    """Shell that sets $node_ip to the first candidate on an interface of the host, or fails
    in one sentence when none is."""
    listed = " ".join(shlex.quote(c) for c in candidates)
    return f"""if ! command -v ip >/dev/null 2>&1; then
  echo "the ip command (iproute2) is missing, so the address for K3s's node-ip cannot be chosen; install iproute2" >&2
  exit 1
fi
on_interfaces="$(ip -o addr show)"
node_ip=""
candidates=({listed})
for candidate in "${{candidates[@]}}"; do
  # `ip -o` prints "<n>: <dev>    inet <address>/<prefix> ...": the slash ends the address.
  if printf '%s\n' "$on_interfaces" | grep -qF "inet $candidate/"; then
    node_ip="$candidate"
    break
  fi
done
if [ -z "$node_ip" ]; then
  echo "none of the instance's addresses ({', '.join(candidates)}) is on an interface of this host (ip -o addr show), so K3s would advertise an address the other nodes do not admit; check the host's network and run pulumi up again" >&2
  exit 1
fi
"""


def apply_config_script(node: Node, config_text: str, node_ip_from: Sequence[str] = ()) -> str:
    """Upload config.yaml; do nothing if unchanged; else restart K3s (when installed)
    and roll back to the previous file if it does not come back. `node_ip_from`: a launched
    host's addresses; the one on an interface becomes node-ip (the first one, its public
    address, is then node-external-ip when it is not that one)."""
    svc = service_name(node)
    choose = _choose_node_ip(node_ip_from) if node_ip_from else ""
    append = f"""printf 'node-ip: %s\n' "$node_ip" >> "$tmp"
if [ "$node_ip" != {shlex.quote(node_ip_from[0])} ]; then
  printf 'node-external-ip: %s\n' {shlex.quote(node_ip_from[0])} >> "$tmp"
fi
""" if node_ip_from else ""
    return _PRELUDE + _k3s_functions(node) + choose + f"""install -d -m 0700 {K3S_DIR}
tmp="$(mktemp {K3S_DIR}/.config.XXXXXX)"
cat > "$tmp" <<'SOPHIA_K3S_CONFIG'
{config_text.rstrip()}
SOPHIA_K3S_CONFIG
{append}chmod 0600 "$tmp"
if cmp -s "$tmp" {CONFIG_PATH}; then
  rm -f "$tmp"
  echo "config unchanged"
  exit 0
fi
if [ -f {CONFIG_PATH} ]; then
  cp -p {CONFIG_PATH} {CONFIG_PATH}.previous
fi
mv "$tmp" {CONFIG_PATH}
if ! systemctl list-unit-files {svc}.service >/dev/null 2>&1 || ! systemctl is-enabled --quiet {svc}; then
  echo "config written; K3s is not installed yet"
  exit 0
fi
echo "config changed; restarting {svc}"
if restart_k3s; then
  echo "{svc} is running with the new config"
  exit 0
fi
echo "{svc} did not come back with the new config; rolling back" >&2
if [ -f {CONFIG_PATH}.previous ]; then
  cp -p {CONFIG_PATH}.previous {CONFIG_PATH}
  restart_k3s || true
fi
exit 1
"""


def nvidia_runtime_check(install_toolkit: bool) -> str:
    """K3s adds the nvidia runtime only if the toolkit is there when it starts."""
    if install_toolkit:
        fix = f"""  echo "installing the NVIDIA container toolkit"
  export DEBIAN_FRONTEND=noninteractive
  install -d -m 0755 /usr/share/keyrings
  curl -fsSL --max-time {DOWNLOAD_SECONDS} https://nvidia.github.io/libnvidia-container/gpgkey \\
    | gpg --batch --yes --dearmor -o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
  curl -fsSL --max-time {DOWNLOAD_SECONDS} https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list \\
    | sed 's#deb https://#deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] https://#g' \\
    > /etc/apt/sources.list.d/nvidia-container-toolkit.list
  # umask 077 made both 0600; apt reads them as the unprivileged _apt user.
  chmod 0644 /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg /etc/apt/sources.list.d/nvidia-container-toolkit.list
  apt-get -o DPkg::Lock::Timeout={APT_LOCK_SECONDS} update -q
  apt-get -o DPkg::Lock::Timeout={APT_LOCK_SECONDS} install -y -q nvidia-container-toolkit
"""
    else:
        fix = """  echo "the NVIDIA container runtime is missing on this GPU node: install nvidia-container-toolkit, or set sophia:k3s.installNvidiaToolkit: true" >&2
  exit 1
"""
    return f"""if ! command -v nvidia-container-runtime >/dev/null 2>&1; then
{fix}fi
"""


def install_script(cfg: StackConfig, node: Node) -> str:
    """Install K3s at the pinned version, or do nothing if the host already runs it.
    A different pin upgrades in place (the installer keeps data and config).
    The installer runs as root only if its SHA-256 is the pinned `k3s.installerSha256`.
    The installer only installs (INSTALL_K3S_SKIP_START): its own start waits without a
    bound; this script then restarts K3s itself, bounded, and waits until it is ready."""
    version = cfg.k3s.version
    exec_role = "server" if node.role == "control-plane" else "agent"
    svc = service_name(node)
    gpu_check = nvidia_runtime_check(cfg.k3s.install_nvidia_toolkit) if node.gpu else ""
    # K3s adds the nvidia runtime to containerd only when it starts with the toolkit present.
    runtime_reload = f"""  if ! grep -qs nvidia {CONTAINERD_CONFIG}; then
    echo "restarting {svc} so containerd picks up the NVIDIA runtime"
    restart_k3s || {{ echo "{svc} did not come back after the restart; see: journalctl -u {svc}" >&2; exit 1; }}
  fi
""" if node.gpu else ""
    installer = f"https://raw.githubusercontent.com/k3s-io/k3s/{quote(version, safe='')}/install.sh"
    return _PRELUDE + _k3s_functions(node) + gpu_check + f"""want={shlex.quote(version)}
have="$(k3s --version 2>/dev/null | head -n 1 || true)"
have="${{have#k3s version }}"
have="${{have%% *}}"
if [ "$have" = "$want" ] && systemctl is-active --quiet {svc}; then
{runtime_reload}  echo "K3s $want already running"
  exit 0
fi
echo "installing K3s $want (found: ${{have:-none}})"
workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
curl -sfL --max-time {DOWNLOAD_SECONDS} {shlex.quote(installer)} -o "$workdir/install.sh"
want_sha={shlex.quote(cfg.k3s.installer_sha256)}
have_sha="$(sha256sum "$workdir/install.sh")"
have_sha="${{have_sha%% *}}"
if [ "$have_sha" != "$want_sha" ]; then
  echo "not running install.sh of K3s $want: its SHA-256 is $have_sha, but sophia:k3s.installerSha256 is $want_sha; review {installer} and, if it is the installer you trust, pin that checksum" >&2
  exit 1
fi
INSTALL_K3S_SKIP_START=true INSTALL_K3S_VERSION="$want" INSTALL_K3S_EXEC={exec_role} \\
  timeout {INSTALLER_SECONDS} sh "$workdir/install.sh"
if ! restart_k3s; then
  echo "K3s $want did not become ready on {node.name}; see: journalctl -u {svc}" >&2
  exit 1
fi
echo "K3s $want is running"
"""


def uninstall_script(node: Node) -> str:
    """Uninstall K3s, unless the host now belongs to another node: a renamed node's new
    commands run before the old ones are deleted, and must not be wiped by them."""
    script = "k3s-uninstall.sh" if node.role == "control-plane" else "k3s-agent-uninstall.sh"
    name = shlex.quote(node.name)
    return _PRELUDE + f"""current=""
if [ -f {CONFIG_PATH} ]; then
  current="$(sed -n 's/^node-name: *//p' {CONFIG_PATH} | tr -d "\\"'")"
fi
if [ -n "$current" ] && [ "$current" != {name} ]; then
  echo "not uninstalling K3s: this host is now configured as node $current, not {node.name}"
  exit 0
fi
if [ -x /usr/local/bin/{script} ]; then
  timeout {UNINSTALL_SECONDS} /usr/local/bin/{script}
  echo "K3s uninstalled"
else
  echo "K3s is not installed"
fi
rm -f {TOKEN_PATH} {AGENT_TOKEN_PATH} {S3_ENV_PATH}
"""


REGISTER_SECONDS = 600


def wait_registered_script(node_name: str, seconds: int = REGISTER_SECONDS, version: Optional[str] = None) -> str:
    """On the control plane: wait until the node has registered and is Ready and, with
    `version`, until its kubelet reports that K3s version (an upgrade has really taken). The
    version is part of the script, so a new pin re-runs this wait as an update: the next node's
    upgrade waits for it (cluster/__init__.py chains them)."""
    node = shlex.quote(node_name)
    check = f"k3s kubectl wait --for=condition=Ready node/{node} --timeout=10s >/dev/null 2>&1"
    what = "become Ready"
    if version:
        want = shlex.quote(version)
        check += (f" && [ \"$(k3s kubectl get node {node} -o 'jsonpath={{.status.nodeInfo.kubeletVersion}}' 2>/dev/null)\""
                  f" = {want} ]")
        what = f"become Ready at {version}"
    return _PRELUDE + f"""deadline=$((SECONDS + {seconds}))
until {check}; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "node {node_name} did not {what}" >&2
    exit 1
  fi
  sleep 5
done
echo "node {node_name} is Ready{f' at {version}' if version else ''}"
"""


DRAIN_SECONDS = 300
DRAIN_FALLBACK_SECONDS = 120
NODE_DELETE_SECONDS = 120


def drain_and_delete_script(node_name: str) -> str:
    """On the control plane, when a worker leaves: drain it, then delete its Node so a
    reinstalled host with the same name is not refused ("Node password rejected").
    A node that is not Ready (its host is gone or down) is deleted without a drain,
    which could only wait for pods that will never stop."""
    node = shlex.quote(node_name)
    return _PRELUDE + f"""if ! k3s kubectl get node {node} >/dev/null 2>&1; then
  echo "node {node_name} is already gone"
  exit 0
fi
ready="$(k3s kubectl get node {node} -o 'jsonpath={{.status.conditions[?(@.type=="Ready")].status}}' 2>/dev/null || true)"
if [ "$ready" = "True" ]; then
  k3s kubectl cordon {node}
  k3s kubectl drain {node} --ignore-daemonsets --delete-emptydir-data --timeout={DRAIN_SECONDS}s \\
    || k3s kubectl drain {node} --ignore-daemonsets --delete-emptydir-data --disable-eviction --timeout={DRAIN_FALLBACK_SECONDS}s
else
  echo "node {node_name} is not Ready (its host may be gone): deleting it without a drain"
fi
k3s kubectl delete node {node} --wait=true --timeout={NODE_DELETE_SECONDS}s
echo "node {node_name} deleted"
"""


def read_file_script(path: str) -> str:
    return _PRELUDE + f"cat {shlex.quote(path)}\n"


def read_agent_token_script() -> str:
    """Print the secure agent token, only once it is one: before K3s applies
    `agent-token-file` the file is a link to the server token, which agents must not get."""
    return _PRELUDE + f"""if ! grep -qs '^K10[0-9a-f]*::node:' {SERVER_AGENT_TOKEN_PATH}; then
  echo "{SERVER_AGENT_TOKEN_PATH} holds no agent token (K10<ca-hash>::node:...): K3s has not applied agent-token-file yet; restart k3s on this server, then run pulumi up again" >&2
  exit 1
fi
cat {SERVER_AGENT_TOKEN_PATH}
"""


def firewall_script(cfg: StackConfig, node: Node, hosts: Hosts = None) -> str:
    """ufw rules: SSH and the ingress ports from anywhere; the API from the allowed
    sources; node-to-node ports (API, kubelet, overlay, node-exporter) only from the other
    nodes; pod and service ranges."""
    k3s = cfg.k3s
    by_name = hosts or cfg.hosts
    peers = sorted({a for n in cfg.nodes if n.name != node.name for a in peer_addresses(by_name[n.name])})
    servers = sorted({a for n in cfg.nodes if n.role == "control-plane" and n.name != node.name
                      for a in peer_addresses(by_name[n.name])})
    overlay = "51820/udp" if k3s.flannel_backend == "wireguard-native" else "8472/udp"
    lines = [
        "if ! command -v ufw >/dev/null 2>&1; then",
        '  echo "ufw is not installed; install it or set sophia:k3s.firewall: false" >&2',
        "  exit 1",
        "fi",
        "ufw default deny incoming",
        "ufw default allow outgoing",
        "ufw allow 22/tcp comment sophia-ssh",
        "ufw allow 80/tcp comment sophia-ingress",
        "ufw allow 443/tcp comment sophia-ingress",
    ]
    if node.role == "control-plane":
        for src in k3s.api_allow_from or ["any"]:
            lines.append(f"ufw allow proto tcp from {shlex.quote(src)} to any port {API_PORT} comment sophia-api")
    for cidr in (k3s.cluster_cidr, k3s.service_cidr):
        lines.append(f"ufw allow from {shlex.quote(cidr)} comment sophia-pods")
    for peer in peers:
        p = shlex.quote(peer)
        lines.append(f"ufw allow proto tcp from {p} to any port {API_PORT},10250 comment sophia-nodes")
        proto, port = overlay.split("/")[1], overlay.split("/")[0]
        lines.append(f"ufw allow proto {proto} from {p} to any port {port} comment sophia-overlay")
        # Prometheus scrapes node-exporter on every node's address (hostNetwork).
        lines.append(f"ufw allow proto tcp from {p} to any port {NODE_EXPORTER_PORT} comment sophia-node-exporter")
    if node.role == "control-plane":
        for server in servers:
            lines.append(f"ufw allow proto tcp from {shlex.quote(server)} to any port 2379:2380 comment sophia-etcd")
    lines.append("ufw --force enable")
    lines.append('echo "firewall rules applied"')
    return _PRELUDE + "\n".join(lines) + "\n"
