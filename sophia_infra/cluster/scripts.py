"""Every shell script the cluster layer sends to a host, built by pure functions.

Each script is idempotent: it checks the host's state first and changes only what
differs, so `pulumi up` can re-run it safely (the kube-hetzner way of re-applying K3s
config). Scripts take no secret in their text: secrets arrive on standard input and
go straight to files with mode 0600, so command text can be logged and diffed.
Every script is checked by shellcheck in the tests.
"""

from __future__ import annotations

import shlex
from urllib.parse import quote

import yaml

from sophia_infra import names
from sophia_infra.config import Host, Node, StackConfig

K3S_DIR = "/etc/rancher/k3s"
CONFIG_PATH = f"{K3S_DIR}/config.yaml"
CONTAINERD_CONFIG = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml"
TOKEN_PATH = f"{K3S_DIR}/cluster-token"
S3_ENV_PATH = f"{K3S_DIR}/etcd-s3.env"
SERVER_TOKEN_PATH = "/var/lib/rancher/k3s/server/token"
KUBECONFIG_PATH = f"{K3S_DIR}/k3s.yaml"
API_PORT = 6443

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


def server_url(cfg: StackConfig) -> str:
    """How nodes reach the first server: its private address when it has one."""
    host = cfg.host(cfg.control_plane)
    return f"https://{host.private_address or host.address}:{API_PORT}"


def api_endpoint(cfg: StackConfig) -> str:
    """How operators and Pulumi reach the API: the DNS name if set, else the address."""
    return cfg.k3s.api_dns_name or cfg.host(cfg.control_plane).address


def k3s_config(cfg: StackConfig, node: Node, labels: dict[str, str]) -> dict:
    """The node's /etc/rancher/k3s/config.yaml (keys are K3s flag names). No secrets."""
    host: Host = cfg.host(node)
    k3s = cfg.k3s
    out: dict = {"node-name": node.name, "token-file": TOKEN_PATH}
    if node.role == "control-plane":
        if node.cluster_init:
            out["cluster-init"] = True
        else:
            out["server"] = server_url(cfg)
        out["tls-san"] = [v for v in (host.address, host.private_address, k3s.api_dns_name) if v]
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
        out["server"] = server_url(cfg)
    if host.private_address:
        out["node-ip"] = host.private_address
        out["node-external-ip"] = host.address
    if host.flannel_iface:
        out["flannel-iface"] = host.flannel_iface
    out["node-label"] = [f"{k}={v}" for k, v in sorted(labels.items())]
    if node.taints:
        out["node-taint"] = list(node.taints)
    return out


def render_config(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=True, default_flow_style=False)


def write_secrets_script(node: Node, with_etcd_s3: bool) -> str:
    """Reads the join token (line 1) and, on an S3-backed server, the S3 keys (lines 2-3)
    from standard input into 0600 files; restarts nothing and prints no secret."""
    script = _PRELUDE + f"""install -d -m 0700 {K3S_DIR}
IFS= read -r token
if [ -z "$token" ]; then
  echo "no cluster token on standard input" >&2
  exit 1
fi
tmp="$(mktemp {K3S_DIR}/.token.XXXXXX)"
printf '%s\\n' "$token" > "$tmp"
if cmp -s "$tmp" {TOKEN_PATH}; then
  rm -f "$tmp"
  echo "token unchanged"
else
  mv "$tmp" {TOKEN_PATH}
  echo "token written"
fi
"""
    if with_etcd_s3:
        script += f"""IFS= read -r access_key
IFS= read -r secret_key
tmp="$(mktemp {K3S_DIR}/.s3.XXXXXX)"
printf 'AWS_ACCESS_KEY_ID=%s\\nAWS_SECRET_ACCESS_KEY=%s\\n' "$access_key" "$secret_key" > "$tmp"
mv "$tmp" {S3_ENV_PATH}
install -d -m 0755 /etc/systemd/system/k3s.service.d
printf '[Service]\\nEnvironmentFile=-{S3_ENV_PATH}\\n' > /etc/systemd/system/k3s.service.d/10-etcd-s3.conf
chmod 0644 /etc/systemd/system/k3s.service.d/10-etcd-s3.conf
systemctl daemon-reload
echo "etcd S3 credentials written"
"""
    return script


def _wait_ready(node: Node, seconds: int = 300) -> str:
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


def apply_config_script(node: Node, config_text: str) -> str:
    """Upload config.yaml; do nothing if unchanged; else restart K3s (when installed)
    and roll back to the previous file if it does not come back."""
    svc = service_name(node)
    return _PRELUDE + _wait_ready(node) + f"""install -d -m 0700 {K3S_DIR}
tmp="$(mktemp {K3S_DIR}/.config.XXXXXX)"
cat > "$tmp" <<'SOPHIA_K3S_CONFIG'
{config_text.rstrip()}
SOPHIA_K3S_CONFIG
chmod 0600 "$tmp"
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
if systemctl restart {svc} && wait_ready; then
  echo "{svc} is running with the new config"
  exit 0
fi
echo "{svc} did not come back with the new config; rolling back" >&2
if [ -f {CONFIG_PATH}.previous ]; then
  cp -p {CONFIG_PATH}.previous {CONFIG_PATH}
  systemctl restart {svc} || true
fi
exit 1
"""


def nvidia_runtime_check(install_toolkit: bool) -> str:
    """K3s adds the nvidia runtime only if the toolkit is there when it starts."""
    if install_toolkit:
        fix = """  echo "installing the NVIDIA container toolkit"
  export DEBIAN_FRONTEND=noninteractive
  install -d -m 0755 /usr/share/keyrings
  curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey \\
    | gpg --batch --yes --dearmor -o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
  curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list \\
    | sed 's#deb https://#deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] https://#g' \\
    > /etc/apt/sources.list.d/nvidia-container-toolkit.list
  apt-get update -q
  apt-get install -y -q nvidia-container-toolkit
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
    A different pin upgrades in place (the installer keeps data and config)."""
    version = cfg.k3s.version
    exec_role = "server" if node.role == "control-plane" else "agent"
    svc = service_name(node)
    gpu_check = nvidia_runtime_check(cfg.k3s.install_nvidia_toolkit) if node.gpu else ""
    # K3s adds the nvidia runtime to containerd only when it starts with the toolkit present.
    runtime_reload = f"""  if ! grep -qs nvidia {CONTAINERD_CONFIG}; then
    echo "restarting {svc} so containerd picks up the NVIDIA runtime"
    systemctl restart {svc}
    wait_ready || {{ echo "{svc} did not come back after the restart" >&2; exit 1; }}
  fi
""" if node.gpu else ""
    installer = f"https://raw.githubusercontent.com/k3s-io/k3s/{quote(version, safe='')}/install.sh"
    return _PRELUDE + _wait_ready(node) + gpu_check + f"""want={shlex.quote(version)}
have="$(k3s --version 2>/dev/null | head -n 1 || true)"
have="${{have#k3s version }}"
have="${{have%% *}}"
if [ "$have" = "$want" ] && systemctl is-active --quiet {svc}; then
{runtime_reload}  echo "K3s $want already running"
  exit 0
fi
echo "installing K3s $want (found: ${{have:-none}})"
curl -sfL {shlex.quote(installer)} -o /tmp/k3s-install.sh
INSTALL_K3S_VERSION="$want" INSTALL_K3S_EXEC={exec_role} sh /tmp/k3s-install.sh
rm -f /tmp/k3s-install.sh
if ! wait_ready; then
  echo "K3s $want did not become ready on {node.name}; see: journalctl -u {svc}" >&2
  exit 1
fi
"""


def uninstall_script(node: Node) -> str:
    script = "k3s-uninstall.sh" if node.role == "control-plane" else "k3s-agent-uninstall.sh"
    return _PRELUDE + f"""if [ -x /usr/local/bin/{script} ]; then
  /usr/local/bin/{script}
  echo "K3s uninstalled"
else
  echo "K3s is not installed"
fi
rm -f {TOKEN_PATH} {S3_ENV_PATH}
"""


def wait_registered_script(node_name: str, seconds: int = 600) -> str:
    """On the control plane: wait until the node has registered and is Ready."""
    node = shlex.quote(node_name)
    return _PRELUDE + f"""deadline=$((SECONDS + {seconds}))
until k3s kubectl wait --for=condition=Ready node/{node} --timeout=10s >/dev/null 2>&1; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "node {node_name} did not become Ready" >&2
    exit 1
  fi
  sleep 5
done
echo "node {node_name} is Ready"
"""


def drain_and_delete_script(node_name: str) -> str:
    """On the control plane, when a worker leaves: drain it, then delete its Node so a
    reinstalled host with the same name is not refused ("Node password rejected")."""
    node = shlex.quote(node_name)
    return _PRELUDE + f"""if ! k3s kubectl get node {node} >/dev/null 2>&1; then
  echo "node {node_name} is already gone"
  exit 0
fi
k3s kubectl cordon {node}
k3s kubectl drain {node} --ignore-daemonsets --delete-emptydir-data --timeout=300s \\
  || k3s kubectl drain {node} --ignore-daemonsets --delete-emptydir-data --disable-eviction --timeout=120s
k3s kubectl delete node {node} --wait=true
echo "node {node_name} drained and deleted"
"""


def read_file_script(path: str) -> str:
    return _PRELUDE + f"cat {shlex.quote(path)}\n"


def firewall_script(cfg: StackConfig, node: Node) -> str:
    """ufw rules: SSH and the ingress ports from anywhere; the API from the allowed
    sources; node-to-node ports only from the other nodes; pod and service ranges."""
    k3s = cfg.k3s
    peers = sorted({a for n in cfg.nodes if n.name != node.name
                    for a in (cfg.host(n).address, cfg.host(n).private_address) if a})
    servers = sorted({a for n in cfg.nodes if n.role == "control-plane" and n.name != node.name
                      for a in (cfg.host(n).address, cfg.host(n).private_address) if a})
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
    if node.role == "control-plane":
        for server in servers:
            lines.append(f"ufw allow proto tcp from {shlex.quote(server)} to any port 2379:2380 comment sophia-etcd")
    lines.append("ufw --force enable")
    lines.append('echo "firewall rules applied"')
    return _PRELUDE + "\n".join(lines) + "\n"
