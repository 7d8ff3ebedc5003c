"""GitHub Actions workflows: valid against the published schema, and doing what they say."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def _load(name: str) -> dict:
    doc = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def test_workflows_match_the_github_schema():
    exe = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    proc = subprocess.run([exe, "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(WORKFLOWS) == 4


def test_ci_runs_tests_audit_and_plan_with_placement_summary():
    doc = _load("ci.yml")
    assert "pull_request" in doc["on"]
    runs = [s.get("run", "") for job in doc["jobs"].values() for s in job["steps"]]
    assert "make test" in runs and ".venv/bin/python -m sophia_infra audit ." in runs
    assert any("placement.md" in r and "GITHUB_STEP_SUMMARY" in r for r in runs)
    assert doc["jobs"]["offline-plan"]["strategy"]["matrix"]["stack"] == ["dev", "production"]


def test_preview_comments_on_pull_requests_for_each_stack():
    doc = _load("preview.yml")
    assert list(doc["on"]) == ["pull_request"]
    assert doc["permissions"]["pull-requests"] == "write" and doc["permissions"]["id-token"] == "write"
    job = doc["jobs"]["preview"]
    assert job["strategy"]["matrix"]["stack"] == ["dev", "production"]
    action = next(s for s in job["steps"] if s.get("uses", "").startswith("pulumi/actions@"))
    assert action["with"]["command"] == "preview" and action["with"]["comment-on-pr"] is True


def test_production_up_only_on_main_behind_an_environment():
    doc = _load("deploy.yml")
    assert doc["on"] == {"push": {"branches": ["main"]}}
    job = doc["jobs"]["up"]
    assert job["environment"] == "production"
    action = next(s for s in job["steps"] if s.get("uses", "").startswith("pulumi/actions@"))
    assert action["with"]["command"] == "up" and action["with"]["stack-name"].endswith("/production")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_to_a_version(path):
    for job in yaml.safe_load(path.read_text())["jobs"].values():
        for step in job["steps"]:
            if "uses" in step:
                ref = step["uses"].split("@")[1]
                assert ref not in ("main", "master", "latest"), step["uses"]


def test_release_is_a_reusable_workflow_that_builds_pushes_and_records_the_release():
    doc = _load("release.yml")
    call = doc["on"]["workflow_call"]
    assert {"workload", "stack", "image", "context", "mode"} <= set(call["inputs"])
    assert call["inputs"]["mode"]["default"] == "direct" and call["inputs"]["stack"]["default"] == "production"
    # Secret names a caller can pass with `secrets: inherit` (GitHub secret names have no hyphens).
    assert set(call["secrets"]) == {"REGISTRY_USERNAME", "REGISTRY_TOKEN", "INFRA_TOKEN"}
    jobs = doc["jobs"]
    # The platforms come from the stack config (linux/arm64 for a GH200 workload), via describe.
    describe = next(s for s in jobs["plan"]["steps"] if s.get("id") == "describe")
    assert 'python -m sophia_infra describe --stack "$STACK" "$WORKLOAD"' in describe["run"]
    build = {s["uses"].split("@")[0]: s for s in jobs["build"]["steps"] if "uses" in s}
    assert {"docker/setup-qemu-action", "docker/setup-buildx-action", "docker/login-action",
            "docker/build-push-action"} <= set(build)
    push = build["docker/build-push-action"]["with"]
    assert push["push"] is True and push["platforms"] == "${{ needs.plan.outputs.platforms }}"
    assert jobs["release"]["needs"] == ["plan", "build"]
    steps = jobs["release"]["steps"]
    (step,) = [s for s in steps if s.get("name") == "Release"]
    assert step["env"]["DIGEST"] == "${{ needs.build.outputs.digest }}"
    commit = next(s for s in steps if s.get("name") == "Commit the release file")["run"]
    # Only the release file is committed; direct push or a pull request with auto-merge.
    assert 'git commit --quiet -m "$message" -m "$body" -- "$file"' in commit
    assert 'git push origin "HEAD:$BRANCH"' in commit and "gh pr merge" in commit and "--auto" in commit


def test_release_workflow_commit_script_is_valid_bash():
    for step in _load("release.yml")["jobs"]["release"]["steps"]:
        if "run" in step:
            proc = subprocess.run(["bash", "-n", "-c", step["run"]], capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr
