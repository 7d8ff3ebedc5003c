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
    assert "resume SERVICE [STACK]" in proc.stdout
    # What lasts: an Argo CD rollback until `resume`; a Helm one until the next upgrade of the release.
    text = " ".join(proc.stdout.split())
    assert "later `pulumi up`s keep it rolled back until `resume`" in text
    assert "the next `pulumi up` that upgrades the release re-applies the stack's values" in text


@pytest.mark.parametrize("args,message", [
    ((), "Usage:"),
    (("launch",), "unknown command 'launch'"),
    (("--force", "deploy"), "unknown option '--force'"),
    (("rollback", "backend"), "rollback needs SERVICE and REVISION"),
    (("rollback", "backend", "last"), "REVISION must be a number"),
    (("logs",), "logs needs SERVICE"),
    (("resume",), "resume needs SERVICE"),
    (("--dry-run", "resume", "nope", "production"), "no service 'nope' in stack 'production'"),
    (("--dry-run", "resume", "backend", "dev"), "stack 'dev' delivers with helm, where nothing pauses"),
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


def test_rollback_through_argocd_in_production_is_recorded_first():
    proc = deploy("--dry-run", "rollback", "gong", "3", "production")
    assert commands(proc) == ["pulumi stack history --stack production --page-size 5",
                              "pulumi config set --path sophia:argocd.rollbacks.gong 3 --stack production",
                              "argocd app set argocd/gong --sync-policy none",
                              "argocd app history argocd/gong",
                              "argocd app rollback argocd/gong 3"]
    # The operator is told what keeps it rolled back and how it ends.
    assert "commit and push Pulumi.production.yaml" in proc.stderr
    assert "./deploy.sh resume gong production" in proc.stderr


def test_resume_clears_the_record_and_turns_auto_sync_back_on():
    proc = deploy("--dry-run", "resume", "gong", "production")
    assert commands(proc) == ["pulumi config rm --path sophia:argocd.rollbacks.gong --stack production",
                              "argocd app set argocd/gong --sync-policy automated --auto-prune --self-heal"]
    assert "commit and push Pulumi.production.yaml" in proc.stderr


def test_resume_turns_on_the_policy_the_program_renders():
    """`argocd app set` in resume gives what application_spec renders without a rollback."""
    from sophia_infra.services import application_spec
    from tests.conftest import parse_with

    cfg = parse_with("production")
    gong = next(s for s in cfg.services if s.name == "gong")
    assert application_spec(cfg, gong, {})["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    assert "--auto-prune --self-heal" in SCRIPT.read_text()


def test_the_key_rollback_records_is_the_one_the_program_reads():
    """Apply the dry-run's `pulumi config set --path KEY VALUE` to the stack's config the way
    Pulumi does (the path's segments nest, a number stays a number): gong alone is paused."""
    from sophia_infra import config as schema
    from sophia_infra.plan import stack_config
    from sophia_infra.services import application_spec, paused_for_rollback

    (cmd,) = [c for c in commands(deploy("--dry-run", "rollback", "gong", "3", "production")) if " config set " in c]
    key, value = cmd.split()[4:6]
    namespace, path = key.split(":", 1)
    assert namespace == "sophia"
    top, *rest = path.split(".")
    raw, present = stack_config.raw_config("production")
    assert not raw.get(top)  # nothing is paused in the committed stack file
    raw[top] = node = {}
    for part in rest[:-1]:
        node = node.setdefault(part, {})
    node[rest[-1]] = int(value)
    cfg = schema.parse(raw, lambda k: present.get(k))
    assert paused_for_rollback(cfg) == {"gong": "3"}
    specs = {s.name: application_spec(cfg, s, {}) for s in cfg.services}
    assert [n for n, spec in specs.items() if "automated" not in spec["syncPolicy"]] == ["gong"]


def test_rollback_through_helm_in_dev():
    proc = deploy("--dry-run", "rollback", "backend", "2", "dev")
    cmds = commands(proc)
    assert not any(" config set " in c or c.startswith("argocd") for c in cmds)  # nothing to record in helm delivery
    assert "re-applies the stack's values" in proc.stderr
    assert cmds[0] == "pulumi stack history --stack dev --page-size 5"
    assert any(c.endswith("history backend --namespace sophia-apps --max 10") for c in cmds)
    assert cmds[-1].endswith("rollback backend 2 --namespace sophia-apps --wait")


def test_logs_of_an_mcp_server():
    cmds = commands(deploy("--dry-run", "logs", "slack", "production"))
    assert cmds[-1].endswith("logs --namespace sophia-mcp deployment/slack --all-containers --tail=200 --follow")


def test_missing_cli_is_named(tmp_path):
    proc = deploy("preview", "production", path=f"{tmp_path}:/usr/bin:/bin")
    assert proc.returncode == 127 and "'pulumi' is not installed" in proc.stderr
