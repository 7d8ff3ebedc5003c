"""scripts/commit-release.sh, release.yml's commit step, against a real bare remote."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "commit-release.sh"
FILE = "releases/production/ai-memory.yaml"


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A bare repository with a main branch holding one other workload's release."""
    bare = tmp_path / "infra.git"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    seed = tmp_path / "seed"
    git(tmp_path, "clone", "--quiet", str(bare), str(seed))
    (seed / "releases" / "production").mkdir(parents=True)
    (seed / "releases" / "production" / "backend.yaml").write_text('image:\n  tag: "1.0.0"\n')
    git(seed, "add", ".")
    git(seed, "commit", "--quiet", "-m", "seed")
    git(seed, "push", "--quiet", "origin", "HEAD:main")
    return bare


def clone(remote: Path, path: Path) -> Path:
    git(path.parent, "clone", "--quiet", str(remote), str(path))
    return path


def commit_release(checkout: Path, tag: str, path: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "MODE": "direct", "BRANCH": "main", "APP_REPOSITORY": "sophia-ai/ai-memory",
                "APP_SHA": "0123456789ab", **env}
    if path is not None:
        full_env["PATH"] = f"{path}{os.pathsep}{full_env['PATH']}"
    return subprocess.run(["bash", str(SCRIPT), "production", "ai-memory", tag], cwd=checkout, env=full_env,
                          capture_output=True, text=True)


def write_release(checkout: Path, tag: str) -> None:
    (checkout / FILE).write_text(f'image:\n  tag: "{tag}"\n')


def test_shellcheck_clean():
    exe = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    proc = subprocess.run([exe, str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_workloads_first_release_is_pushed(remote, tmp_path):
    """The release file does not exist on the branch yet (untracked): it is committed and pushed."""
    checkout = clone(remote, tmp_path / "work")
    write_release(checkout, "sha-abc")
    proc = commit_release(checkout, "sha-abc")
    assert proc.returncode == 0, proc.stderr
    assert "nothing to commit" not in proc.stdout
    assert git(remote, "show", f"main:{FILE}") == 'image:\n  tag: "sha-abc"'
    assert git(remote, "log", "-1", "--format=%s%n%b", "main").splitlines()[:2] == [
        "release(production): ai-memory sha-abc",
        "Built from sophia-ai/ai-memory@0123456789ab. Roll back with ./deploy.sh rollback production ai-memory."]
    assert git(remote, "show", "--format=", "--name-only", "main").split() == [FILE]


def test_the_same_release_again_commits_nothing(remote, tmp_path):
    checkout = clone(remote, tmp_path / "work")
    write_release(checkout, "sha-abc")
    assert commit_release(checkout, "sha-abc").returncode == 0
    head = git(remote, "rev-parse", "main")
    write_release(checkout, "sha-abc")
    proc = commit_release(checkout, "sha-abc")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ai-memory in production already runs sha-abc: nothing to commit"
    assert git(remote, "rev-parse", "main") == head


def test_only_the_release_file_is_committed(remote, tmp_path):
    checkout = clone(remote, tmp_path / "work")
    write_release(checkout, "sha-abc")
    (checkout / "stray.txt").write_text("left by a build step\n")
    assert commit_release(checkout, "sha-abc").returncode == 0
    assert git(remote, "show", "--format=", "--name-only", "main").split() == [FILE]


def test_a_concurrent_release_of_another_workload_is_rebased_on(remote, tmp_path):
    checkout = clone(remote, tmp_path / "work")
    other = clone(remote, tmp_path / "other")
    (other / "releases" / "production" / "backend.yaml").write_text('image:\n  tag: "1.1.0"\n')
    git(other, "commit", "--quiet", "-am", "release(production): backend 1.1.0")
    git(other, "push", "--quiet", "origin", "HEAD:main")
    write_release(checkout, "sha-abc")  # checked out before the other push landed
    proc = commit_release(checkout, "sha-abc")
    assert proc.returncode == 0, proc.stderr
    assert "push attempt 1 failed; rebasing on main" in proc.stdout
    assert git(remote, "log", "--format=%s", "main").splitlines()[:2] == [
        "release(production): ai-memory sha-abc", "release(production): backend 1.1.0"]


def test_pull_request_mode_pushes_a_branch_and_asks_for_auto_merge(remote, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "gh-calls"
    (bin_dir / "gh").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    (bin_dir / "gh").chmod(0o755)
    checkout = clone(remote, tmp_path / "work")
    write_release(checkout, "sha-abc")
    proc = commit_release(checkout, "sha-abc", path=bin_dir, MODE="pull-request")
    assert proc.returncode == 0, proc.stderr
    head = "release/production/ai-memory/sha-abc"
    assert git(remote, "show", f"{head}:{FILE}") == 'image:\n  tag: "sha-abc"'
    assert git(remote, "rev-parse", "main") == git(remote, "rev-parse", f"{head}~1")  # main untouched
    create, merge = calls.read_text().splitlines()
    assert create.startswith(f"pr create --base main --head {head} --title release(production): ai-memory sha-abc")
    assert merge == f"pr merge {head} --auto --squash"


def test_an_unknown_mode_is_refused(remote, tmp_path):
    checkout = clone(remote, tmp_path / "work")
    write_release(checkout, "sha-abc")
    proc = commit_release(checkout, "sha-abc", MODE="yolo")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "::error::mode must be direct or pull-request, not yolo"
