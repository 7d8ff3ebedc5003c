"""Run a host script for real, in a private mount namespace with fake system commands.

/etc, /var/lib, /usr/local/bin and /usr/share/keyrings are empty tmpfs mounts (/etc/rancher and
/etc/systemd persist between runs) visible only to the script; `systemctl`, `timeout`, `k3s`,
`curl`, `gpg`, `apt-get`, `ufw`, `ip` are stubs that record their calls and act as the test says
(`timeout` records the bound asked for and enforces 1 s). Nothing on this machine changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

STUBS = {
    # STATE_DIR holds files that steer the stubs: installed, active, restart_fails, restart_hangs,
    # version, node_not_ready, node_gone, installer_tampered.
    "systemctl": r"""
        echo "systemctl $*" >> "$STATE_DIR/calls"
        case "$1" in
          list-unit-files) [ -f "$STATE_DIR/installed" ] ;;
          is-enabled) [ -f "$STATE_DIR/installed" ] ;;
          is-active) [ -f "$STATE_DIR/active" ] ;;
          restart) if [ -f "$STATE_DIR/restart_hangs" ]; then  # Type=notify, never READY
                     rm -f "$STATE_DIR/active"; exec sleep 60; fi
                   if [ -f "$STATE_DIR/restart_fails" ] && [ ! -f "$STATE_DIR/restart_failed_once" ]; then
                     touch "$STATE_DIR/restart_failed_once"; rm -f "$STATE_DIR/active"; exit 1; fi
                   touch "$STATE_DIR/active" ;;
          *) true ;;
        esac""",
    # Records the bound the script asked for, then enforces a short one, so that a hang
    # shows up in seconds.
    "timeout": r"""
        echo "timeout $*" >> "$STATE_DIR/calls"
        shift
        exec /usr/bin/timeout 1 "$@" """,
    "k3s": r"""
        echo "k3s $*" >> "$STATE_DIR/calls"
        case "$1" in
          --version) [ -f "$STATE_DIR/version" ] && echo "k3s version $(cat "$STATE_DIR/version") (abc)" ;;
          kubectl)
            case "$*" in
              *kubeletVersion*) cat "$STATE_DIR/kubelet_version" 2>/dev/null || cat "$STATE_DIR/version" ;;
              *jsonpath*) if [ -f "$STATE_DIR/node_not_ready" ]; then echo Unknown; else echo True; fi ;;
              "kubectl get node "*) [ ! -f "$STATE_DIR/node_gone" ] ;;
              *" cordon "*|*" drain "*|*" delete node "*) true ;;
              *) [ -f "$STATE_DIR/active" ] ;;
            esac ;;
        esac""",
    # `curl -o FILE` of install.sh writes FAKE_INSTALLER (and logs the mode of FILE's
    # directory), with one line more when `installer_tampered` is set; piped downloads (the
    # NVIDIA key and list) print a line.
    "curl": r"""
        echo "curl $*" >> "$STATE_DIR/calls"
        out=""; while [ $# -gt 0 ]; do [ "$1" = "-o" ] && out="$2"; shift; done
        if [ -z "$out" ]; then echo "deb https://nvidia.github.io/libnvidia-container/stable/deb/amd64 /"; exit 0; fi
        echo "download dir $(dirname "$out") mode $(stat -c %a "$(dirname "$out")")" >> "$STATE_DIR/calls"
        cat "$STATE_DIR/fake-install.sh" > "$out"
        if [ -f "$STATE_DIR/installer_tampered" ]; then echo 'touch "$STATE_DIR/tampered_installer_ran"' >> "$out"; fi""",
    "gpg": r"""
        echo "gpg $*" >> "$STATE_DIR/calls"
        out=""; while [ $# -gt 0 ]; do [ "$1" = "-o" ] && out="$2"; shift; done
        cat > "$out" """,
    # What the unprivileged _apt user will find when apt reads the key and the list.
    "apt-get": r"""
        echo "apt-get $*" >> "$STATE_DIR/calls"
        for f in /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg /etc/apt/sources.list.d/nvidia-container-toolkit.list; do
          [ -f "$f" ] && echo "apt sees $f mode $(stat -c %a "$f")" >> "$STATE_DIR/calls"
        done
        true""",
    "ufw": r"""echo "ufw $*" >> "$STATE_DIR/calls" """,
    # `ip -o addr show` as iproute2 prints it: loopback, then one line per address in
    # STATE_DIR/addrs (the host's interfaces, as the test says).
    "ip": r"""
        echo "ip $*" >> "$STATE_DIR/calls"
        echo '1: lo    inet 127.0.0.1/8 scope host lo\       valid_lft forever preferred_lft forever'
        n=2
        if [ -f "$STATE_DIR/addrs" ]; then
          while read -r a; do
            echo "$n: eth0    inet $a/20 brd 0.0.0.0 scope global eth0\       valid_lft forever preferred_lft forever"
            n=$((n + 1))
          done < "$STATE_DIR/addrs"
        fi""",
    "nvidia-container-runtime": "true",
}

# What the curl stub serves as install.sh, and its SHA-256: what a stack pins as
# k3s.installerSha256 for the stub's installer to run (see trust_fake_installer).
FAKE_INSTALLER = """echo "installer $INSTALL_K3S_VERSION $INSTALL_K3S_EXEC skip-start=${INSTALL_K3S_SKIP_START:-false}" >> "$STATE_DIR/calls"
touch "$STATE_DIR/installed"
[ "${INSTALL_K3S_SKIP_START:-false}" = true ] || touch "$STATE_DIR/active"
echo "$INSTALL_K3S_VERSION" > "$STATE_DIR/version"
"""
FAKE_INSTALLER_SHA256 = hashlib.sha256(FAKE_INSTALLER.encode()).hexdigest()


def trust_fake_installer(raw: dict) -> None:
    """A `parse_with` change: pin the stub's installer, as an operator pins the real one."""
    raw["k3s"]["installerSha256"] = FAKE_INSTALLER_SHA256


# K3s's uninstall scripts, present on the host once it is installed.
UNINSTALL_STUB = 'echo "uninstall $(basename "$0")" >> "$STATE_DIR/calls"\nrm -f "$STATE_DIR/installed" "$STATE_DIR/active"\n'


def available() -> bool:
    # /usr/share/keyrings must exist to be hidden behind a tmpfs (the NVIDIA toolkit path writes there).
    return os.geteuid() == 0 and shutil.which("unshare") is not None and Path("/usr/share/keyrings").is_dir()


class Host:
    def __init__(self, tmp: Path, nvidia: bool = True):
        self.state = tmp / "state"
        self.bin = tmp / "bin"
        self.state.mkdir()
        self.bin.mkdir()
        (self.state / "calls").write_text("")
        (self.state / "fake-install.sh").write_text(FAKE_INSTALLER)
        for name, body in STUBS.items():
            if name == "nvidia-container-runtime" and not nvidia:
                continue
            path = self.bin / name
            path.write_text("#!/bin/bash\n" + textwrap.dedent(body).strip() + "\n")
            path.chmod(0o755)
        self.snapshot = tmp / "etc-rancher"
        self.snapshot.mkdir()
        self.systemd = tmp / "etc-systemd"  # unit drop-ins, kept between runs too
        self.systemd.mkdir()

    def set(self, *flags: str, version: str | None = None) -> None:
        for f in flags:
            (self.state / f).touch()
        if version:
            (self.state / "version").write_text(version + "\n")

    def calls(self) -> list[str]:
        return (self.state / "calls").read_text().splitlines()

    def run(self, script: str, stdin: str = "") -> subprocess.CompletedProcess:
        """Run the script as root with /etc/rancher persisted in self.snapshot between runs."""
        (self.state / "calls").write_text("")
        wrapper = f"""set -e
mount -t tmpfs tmpfs /etc
mkdir -p /etc/rancher /etc/systemd /etc/apt/sources.list.d
mount --bind {self.snapshot} /etc/rancher
mount --bind {self.systemd} /etc/systemd
mount -t tmpfs tmpfs /var/lib
mount -t tmpfs tmpfs /usr/local/bin
mount -t tmpfs tmpfs /usr/share/keyrings
if [ -f "$STATE_DIR/installed" ]; then
  for u in k3s-uninstall.sh k3s-agent-uninstall.sh; do
    printf '%s' "$UNINSTALL_STUB" > /usr/local/bin/$u
    chmod 0755 /usr/local/bin/$u
  done
fi
if [ -f "$STATE_DIR/nvidia_in_containerd" ]; then
  mkdir -p /var/lib/rancher/k3s/agent/etc/containerd
  echo 'runtime_type = "nvidia"' > /var/lib/rancher/k3s/agent/etc/containerd/config.toml
fi
exec bash -c "$SCRIPT"
"""
        env = {"PATH": f"{self.bin}:/usr/sbin:/usr/bin:/sbin:/bin", "STATE_DIR": str(self.state), "SCRIPT": script,
               "UNINSTALL_STUB": "#!/bin/bash\n" + UNINSTALL_STUB}
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", wrapper],
                              input=stdin, capture_output=True, text=True, env=env, timeout=60)

    def file(self, name: str) -> Path:
        return self.snapshot / "k3s" / name


requires_sandbox = pytest.mark.skipif(not available(), reason="needs root and unshare(1) for a private mount namespace")
