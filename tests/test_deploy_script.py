"""deploy.sh: argument handling, the commands --dry-run prints, missing tools."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "deploy.sh"


def deploy(*args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    if path is not None:
        env["PATH"] = path
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)


def commands(proc: subprocess.CompletedProcess) -> list[str]:
    assert proc.returncode == 0, proc.stderr
    return [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")]


def test_shellcheck_clean():
    proc = subprocess.run(["shellcheck", "--severity=style", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_help():
    proc = deploy("--help")
    assert proc.returncode == 0 and "rollback SERVICE REVISION [STACK]" in proc.stdout


@pytest.mark.parametrize("args,message", [
    ((), "Usage:"),
    (("launch",), "unknown command 'launch'"),
    (("--force", "deploy"), "unknown option '--force'"),
    (("rollback", "backend"), "rollback needs SERVICE and REVISION"),
    (("rollback", "backend", "last"), "REVISION must be a number"),
    (("logs",), "logs needs SERVICE"),
    (("deploy", "staging"), "unknown stack 'staging'"),
    (("--dry-run", "rollback", "nope", "2", "production"), "no service 'nope' in stack 'production'"),
])
def test_bad_arguments(args, message):
    proc = deploy(*args)
    assert proc.returncode == 2 and message in proc.stderr


def test_deploy_and_preview_commands():
    assert commands(deploy("--dry-run", "deploy", "production")) == ["pulumi up --stack production"]
    assert commands(deploy("--dry-run", "--yes", "deploy")) == ["pulumi up --stack dev --yes"]
    assert commands(deploy("--dry-run", "preview", "production")) == ["pulumi preview --stack production --diff"]


def test_status_commands():
    cmds = commands(deploy("--dry-run", "status", "production"))
    assert cmds[0] == "pulumi stack output kubeconfig --show-secrets --stack production"
    joined = "\n".join(cmds)
    assert "get nodes -o wide -L gpu-type" in joined
    assert "status.phase\\!=Running" in joined  # pods not ready
    assert "applications.argoproj.io --namespace argocd" in joined
    assert "allocatable.nvidia\\\\.com/gpu" in joined  # GPU allocation per node


def test_rollback_through_argocd_in_production():
    cmds = commands(deploy("--dry-run", "rollback", "gong", "3", "production"))
    assert cmds == ["pulumi stack history --stack production --page-size 5",
                    "argocd app set argocd/gong --sync-policy none",
                    "argocd app history argocd/gong",
                    "argocd app rollback argocd/gong 3"]


def test_rollback_through_helm_in_dev():
    cmds = commands(deploy("--dry-run", "rollback", "backend", "2", "dev"))
    assert cmds[0] == "pulumi stack history --stack dev --page-size 5"
    assert any(c.endswith("history backend --namespace sophia-apps --max 10") for c in cmds)
    assert cmds[-1].endswith("rollback backend 2 --namespace sophia-apps --wait")


def test_logs_of_an_mcp_server():
    cmds = commands(deploy("--dry-run", "logs", "slack", "production"))
    assert cmds[-1].endswith("logs --namespace sophia-mcp deployment/slack --all-containers --tail=200 --follow")


def test_missing_cli_is_named(tmp_path):
    proc = deploy("preview", "production", path=f"{tmp_path}:/usr/bin:/bin")
    assert proc.returncode == 127 and "'pulumi' is not installed" in proc.stderr
