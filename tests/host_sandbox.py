"""Run a host script for real, in a private mount namespace with fake system commands.

/etc, /var/lib and /usr/local/bin are empty tmpfs mounts (/etc/rancher persists between runs) visible only to
the script; `systemctl`, `k3s`, `curl`, `ufw` are stubs that record their calls and act
as the test says. Nothing on this machine changes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

STUBS = {
    # STATE_DIR holds files that steer the stubs: installed, active, restart_fails, version.
    "systemctl": r'''
        echo "systemctl $*" >> "$STATE_DIR/calls"
        case "$1" in
          list-unit-files) [ -f "$STATE_DIR/installed" ] ;;
          is-enabled) [ -f "$STATE_DIR/installed" ] ;;
          is-active) [ -f "$STATE_DIR/active" ] ;;
          restart) if [ -f "$STATE_DIR/restart_fails" ] && [ ! -f "$STATE_DIR/restart_failed_once" ]; then
                     touch "$STATE_DIR/restart_failed_once"; rm -f "$STATE_DIR/active"; exit 1; fi
                   touch "$STATE_DIR/active" ;;
          *) true ;;
        esac''',
    "k3s": r'''
        echo "k3s $*" >> "$STATE_DIR/calls"
        case "$1" in
          --version) [ -f "$STATE_DIR/version" ] && echo "k3s version $(cat "$STATE_DIR/version") (abc)" ;;
          kubectl) [ -f "$STATE_DIR/active" ] ;;
        esac''',
    "curl": r'''
        echo "curl $*" >> "$STATE_DIR/calls"
        out=""; while [ $# -gt 0 ]; do [ "$1" = "-o" ] && out="$2"; shift; done
        printf 'echo "installer $INSTALL_K3S_VERSION $INSTALL_K3S_EXEC" >> "$STATE_DIR/calls"\ntouch "$STATE_DIR/installed" "$STATE_DIR/active"\necho "$INSTALL_K3S_VERSION" > "$STATE_DIR/version"\n' > "$out"''',
    "ufw": r'''echo "ufw $*" >> "$STATE_DIR/calls"''',
    "nvidia-container-runtime": "true",
}


def available() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None


class Host:
    def __init__(self, tmp: Path, nvidia: bool = True):
        self.state = tmp / "state"
        self.bin = tmp / "bin"
        self.state.mkdir()
        self.bin.mkdir()
        (self.state / "calls").write_text("")
        for name, body in STUBS.items():
            if name == "nvidia-container-runtime" and not nvidia:
                continue
            path = self.bin / name
            path.write_text("#!/bin/bash\n" + textwrap.dedent(body).strip() + "\n")
            path.chmod(0o755)
        self.snapshot = tmp / "etc-rancher"
        self.snapshot.mkdir()

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
mkdir /etc/rancher /etc/systemd
mount --bind {self.snapshot} /etc/rancher
mount -t tmpfs tmpfs /var/lib
mount -t tmpfs tmpfs /usr/local/bin
if [ -f "$STATE_DIR/nvidia_in_containerd" ]; then
  mkdir -p /var/lib/rancher/k3s/agent/etc/containerd
  echo 'runtime_type = "nvidia"' > /var/lib/rancher/k3s/agent/etc/containerd/config.toml
fi
exec bash -c "$SCRIPT"
"""
        env = {"PATH": f"{self.bin}:/usr/sbin:/usr/bin:/sbin:/bin", "STATE_DIR": str(self.state), "SCRIPT": script}
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", wrapper],
                              input=stdin, capture_output=True, text=True, env=env, timeout=60)

    def file(self, name: str) -> Path:
        return self.snapshot / "k3s" / name


requires_sandbox = pytest.mark.skipif(not available(), reason="needs root and unshare(1) for a private mount namespace")
