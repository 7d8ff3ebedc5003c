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
    assert proc.returncode == 0 and "rollback STACK WORKLOAD" in proc.stdout
    assert "rollback --emergency SERVICE REVISION [STACK]" in proc.stdout
    assert "resume SERVICE [STACK]" in proc.stdout
    text = " ".join(proc.stdout.split())
    assert "an app rollback is a git revert" in text
    # What lasts: an emergency Argo CD rollback until `resume`; a Helm one until the next upgrade.
    assert "later `pulumi up`s keep it rolled back until `resume`" in text
    assert "the next `pulumi up` that upgrades the release re-applies the release file" in text


@pytest.mark.parametrize("args,message", [
    ((), "Usage:"),
    (("launch",), "unknown command 'launch'"),
    (("--force", "deploy"), "unknown option '--force'"),
    (("rollback", "backend"), "rollback needs STACK and WORKLOAD"),
    (("rollback", "production", "backend", "3"), "rollback needs STACK and WORKLOAD"),
    (("--dry-run", "rollback", "staging", "backend"), "unknown stack 'staging'"),
    (("--dry-run", "rollback", "production", "nope"), "no workload 'nope' in stack 'production'"),
    (("--emergency", "rollback", "backend"), "rollback --emergency needs SERVICE and REVISION"),
    (("--emergency", "rollback", "backend", "last"), "REVISION must be a number"),
    (("logs",), "logs needs SERVICE"),
    (("resume",), "resume needs SERVICE"),
    (("--dry-run", "resume", "nope", "production"), "no service 'nope' in stack 'production'"),
    (("--dry-run", "resume", "backend", "dev"), "stack 'dev' delivers with helm, where nothing pauses"),
    (("deploy", "staging"), "unknown stack 'staging'"),
    (("--dry-run", "--emergency", "rollback", "nope", "2", "production"), "no service 'nope' in stack 'production'"),
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
    # The release files first (offline), then the cluster's view.
    assert cmds[0] == f"{sys.executable} -m sophia_infra describe --stack production"
    assert cmds[1] == "pulumi stack output kubeconfig --show-secrets --stack production"
    joined = "\n".join(cmds)
    assert "get nodes -o wide -L gpu-type" in joined
    assert "status.phase\\!=Running" in joined  # pods not ready
    # Argo CD's sync and health next to the release files.
    assert any(c.endswith("get applications.argoproj.io --namespace argocd -o json | "
                          f"{sys.executable} -m sophia_infra describe --stack production --applications -") for c in cmds)
    assert "allocatable.nvidia\\\\.com/gpu" in joined  # GPU allocation per node
    dev = "\n".join(commands(deploy("--dry-run", "status", "dev")))
    assert "applications.argoproj.io" not in dev  # helm delivery has no Applications


def test_status_without_cluster_tools_shows_the_release_files(tmp_path):
    """No pulumi or kubectl at hand: the release files are still shown, and that is not a failure."""
    (tmp_path / "python3").symlink_to(sys.executable)
    proc = deploy("status", "production", path=f"{tmp_path}:/usr/bin:/bin")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split() == ["WORKLOAD", "RELEASED", "IMAGE"]
    assert "backend           docker.io/scoobyjava15/sophia-backend:" in proc.stdout
    assert "showing the release files only" in proc.stderr


def test_emergency_rollback_through_argocd_in_production_is_recorded_first():
    proc = deploy("--dry-run", "--emergency", "rollback", "gong", "3", "production")
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
    from sophia_infra.program.services import application_spec
    from tests.conftest import parse_with

    cfg = parse_with("production")
    gong = next(s for s in cfg.services if s.name == "gong")
    assert application_spec(cfg, gong, {}, "production")["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    assert "--auto-prune --self-heal" in SCRIPT.read_text()


def test_the_key_rollback_records_is_the_one_the_program_reads():
    """Apply the dry-run's `pulumi config set --path KEY VALUE` to the stack's config the way
    Pulumi does (the path's segments nest, a number stays a number): gong alone is paused."""
    from sophia_infra.program.config import stack as schema
    from sophia_infra.tools.plan import stack_config
    from sophia_infra.program.services import application_spec, paused_for_rollback

    (cmd,) = [c for c in commands(deploy("--dry-run", "--emergency", "rollback", "gong", "3", "production")) if " config set " in c]
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
    specs = {s.name: application_spec(cfg, s, {}, "production") for s in cfg.services}
    assert [n for n, spec in specs.items() if "automated" not in spec["syncPolicy"]] == ["gong"]


def test_emergency_rollback_through_helm_in_dev():
    proc = deploy("--dry-run", "--emergency", "rollback", "backend", "2", "dev")
    cmds = commands(proc)
    assert not any(" config set " in c or c.startswith("argocd") for c in cmds)  # nothing to record in helm delivery
    assert "re-applies releases/dev/backend.yaml" in proc.stderr
    assert cmds[0] == "pulumi stack history --stack dev --page-size 5"
    assert any(c.endswith("history backend --namespace sophia-apps --max 10") for c in cmds)
    assert cmds[-1].endswith("rollback backend 2 --namespace sophia-apps --wait")


def test_logs_of_an_mcp_server():
    cmds = commands(deploy("--dry-run", "logs", "slack", "production"))
    assert cmds[-1].endswith("logs --namespace sophia-mcp deployment/slack --all-containers --tail=200 --follow")


def test_missing_cli_is_named(tmp_path):
    proc = deploy("preview", "production", path=f"{tmp_path}:/usr/bin:/bin")
    assert proc.returncode == 127 and "'pulumi' is not installed" in proc.stderr


# ----------------------------------------------------------------------------- rollback = git revert

def _repo_with_two_releases(tmp_path):
    """A throw-away clone-like copy: the project's files, two commits releasing backend."""
    from tests.test_release import copy_project, git

    root = copy_project(tmp_path)
    release = root / "releases" / "production" / "backend.yaml"
    release.write_text(release.read_text().replace('tag: "1.0.0"', 'tag: "1.4.2"'))
    git(root, "commit", "-q", "-m", "release(production): backend 1.4.2", "--", "releases/production/backend.yaml")
    return root


def _deploy_in(root, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(root)}
    return subprocess.run(["bash", str(root / "deploy.sh"), *args], capture_output=True, text=True, env=env, cwd=root, timeout=60)


def test_rollback_reverts_the_last_release_commit_of_the_workload(tmp_path):
    root = _repo_with_two_releases(tmp_path)
    from tests.test_release import git

    head = git(root, "rev-parse", "HEAD").strip()
    proc = _deploy_in(root, "--dry-run", "rollback", "production", "backend")
    cmds = commands(proc)
    assert cmds == [f"git -C {root} pull --ff-only origin main",
                    f"git -C {root} revert --no-edit {head}",
                    f"git -C {root} push origin HEAD:main"]
    assert "Argo CD rolls the reverted releases/production/backend.yaml out by itself" in proc.stderr
    assert git(root, "rev-parse", "HEAD").strip() == head  # --dry-run changed nothing
    # The revert it prints is the rollback: backend is back on 1.0.0, nothing else changed.
    git(root, "revert", "--no-edit", head)
    assert 'tag: "1.0.0"' in (root / "releases" / "production" / "backend.yaml").read_text()
    assert git(root, "show", "--format=", "--name-only", "HEAD").split() == ["releases/production/backend.yaml"]


def test_rollback_refuses_a_commit_that_changed_more_than_the_release_file(tmp_path):
    root = _repo_with_two_releases(tmp_path)
    from tests.test_release import git

    (root / "releases" / "production" / "backend.yaml").write_text(
        (root / "releases" / "production" / "backend.yaml").read_text().replace("1.4.2", "1.4.3"))
    (root / "README.md").write_text("changed\n")
    git(root, "commit", "-q", "-am", "release and docs")
    proc = _deploy_in(root, "--dry-run", "rollback", "production", "backend")
    assert proc.returncode == 2
    assert proc.stderr == (f"deploy.sh: commit {git(root, 'rev-parse', 'HEAD')[:12]} changes 1 other file(s) besides "
                           "releases/production/backend.yaml (README.md); revert by hand what should go\n")


def test_rollback_names_at_most_three_other_files(tmp_path):
    root = _repo_with_two_releases(tmp_path)
    from tests.test_release import git

    release = root / "releases" / "production" / "backend.yaml"
    release.write_text(release.read_text().replace("1.4.2", "1.4.3"))
    for name in ("a.txt", "b.txt", "c.txt", "d.txt", "e.txt"):
        (root / name).write_text("x\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "release and more")
    proc = _deploy_in(root, "--dry-run", "rollback", "production", "backend")
    assert proc.returncode == 2 and "changes 5 other file(s) besides releases/production/backend.yaml (a.txt b.txt c.txt ...)" in proc.stderr


def test_rollback_on_a_fresh_clone_says_there_is_no_earlier_release(tmp_path):
    """The release file's only commit is the one that created the project: one short sentence."""
    from tests.test_release import copy_project

    root = copy_project(tmp_path)
    proc = _deploy_in(root, "--dry-run", "rollback", "production", "backend")
    assert proc.returncode == 2
    assert proc.stderr == ("deploy.sh: releases/production/backend.yaml has only its first version: nothing to roll back to "
                           "(release another with python -m sophia_infra release backend --stack production --tag TAG)\n")
    assert len(proc.stderr) <= 200


def test_rollback_in_a_shallow_clone_asks_for_the_history(tmp_path):
    root = _repo_with_two_releases(tmp_path)
    shallow = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{root}", str(shallow)], check=True, capture_output=True)
    for tool in (".venv", ".tools"):
        if (root / tool).exists() and not (shallow / tool).exists():
            (shallow / tool).symlink_to(root / tool)
    proc = _deploy_in(shallow, "--dry-run", "rollback", "production", "backend")
    assert proc.returncode == 2
    assert proc.stderr == ("deploy.sh: this clone is shallow, so it lacks the release history of releases/production/backend.yaml; "
                           "run git fetch --unshallow, then roll back again\n")
