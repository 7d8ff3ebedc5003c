"""An app release is a git commit: `python -m sophia_infra release` edits one release file, and
production's Pulumi inputs stay byte-identical while what Argo CD renders changes.

The acceptance run works on a throw-away git repository holding a copy of the project (the
chart sources beside it, as ../shared is beside the project), runs the reusable workflow's own
`release` step there, and the offline plan before and after.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from sophia_infra.tools import release
from sophia_infra.program import releases
from sophia_infra.tools.plan import render
from tests.conftest import ROOT, SHARED
from tests.platform_helpers import share_render_cache
from tests import yaml_c

BACKEND = "docker.io/scoobyjava15/sophia-backend"
DIGEST = "sha256:" + "0123456789abcdef" * 4
_IGNORE = shutil.ignore_patterns(".git", ".venv", ".tools", "build", ".cache", ".pytest_cache")  # bytecode kept: no compiling again


def git(root: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True, env=env).stdout


BASELINE_TAG = "1.0.0"


def baseline_releases(root: Path) -> None:
    """Every release file under root at tag 1.0.0 without a digest, as the project first shipped
    them: tests of releasing start from a known state, whatever app releases main has had since
    (each is a commit to main, and main's CI runs these tests on it)."""
    for path in (root / "releases").glob("*/*.yaml"):
        path.write_text(releases.render(path.parent.name, path.stem, releases.Release(BASELINE_TAG)))


def copy_project(tmp_path: Path) -> Path:
    """The project's files in a fresh git repository (one commit; release files at the baseline),
    ../shared beside it, the charts that `charts --pull` fetched and the render cache (keyed by
    content: the same renders) shared."""
    root = tmp_path / "work" / "main"
    shutil.copytree(ROOT, root, ignore=_IGNORE)
    baseline_releases(root)
    for tool in (".venv", ".tools", ".cache"):
        if (ROOT / tool).exists():
            (root / tool).symlink_to(ROOT / tool)
    if SHARED.exists():
        (root.parent / "shared").symlink_to(SHARED)
    share_render_cache(root)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    return root


def cli(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m sophia_infra ...` of the copy (its own modules, its own release files)."""
    full = {**os.environ, "PYTHONPATH": str(root), **(env or {})}
    return subprocess.run([sys.executable, "-m", "sophia_infra", *args], capture_output=True, text=True,
                          cwd=root, env=full, timeout=600)


def workflow_release_step() -> dict:
    doc = yaml_c.load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    (step,) = [s for s in doc["jobs"]["release"]["steps"] if s.get("name") == "Release"]
    return step


def run_workflow_release_step(root: Path, **env: str) -> subprocess.CompletedProcess:
    """The reusable workflow's `release` step, exactly as written there, with these inputs."""
    step = workflow_release_step()
    full = {**os.environ, "PYTHONPATH": str(root), **env}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", step["run"]], capture_output=True, text=True,
                          cwd=root, env=full, timeout=120)


def _registrations(plan_json: Path) -> list[SimpleNamespace]:
    doc = json.loads(plan_json.read_text())
    return [SimpleNamespace(type=r["type"], name=r["name"], inputs=r["inputs"]) for r in doc["resources"]]


def _image_of(root: Path, plan_json: Path, workload: str) -> str:
    """Render `workload`'s Application of the plan the way Argo CD would: the chart with the
    release file (from the copy's work tree) merged under valuesObject."""
    (spec,) = [s for s in render.release_specs(_registrations(plan_json), root=root) if s.release == workload]
    assert spec.via == "argocd"
    rendered = render.render(spec, cache=False)
    (deployment,) = [o for o in rendered.objects if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container["image"]


# ----------------------------------------------------------------------------- acceptance

@pytest.mark.skipif(render.helm_binary() is None, reason="helm is not installed (make test puts .tools/bin on PATH)")
def test_an_app_release_changes_no_pulumi_input_and_argo_cd_renders_the_new_image(tmp_path):
    root = copy_project(tmp_path)
    before, after = tmp_path / "before", tmp_path / "after"
    proc = cli(root, "plan", "--stack", "production", "--out", str(before))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr

    # The workflow's step: release backend --stack production --tag 1.4.2 --digest (from the build).
    proc = run_workflow_release_step(root, WORKLOAD="backend", STACK="production", TAG="1.4.2", DIGEST=DIGEST,
                                     PLATFORMS="linux/amd64", IMAGE=BACKEND)
    assert proc.returncode == 0, proc.stderr
    assert f"to   {BACKEND}:1.4.2@{DIGEST}" in proc.stdout and "Argo CD syncs the Application argocd/backend" in proc.stdout
    # Only the release file changed, and only its tag.
    assert git(root, "status", "--porcelain").split() == ["M", "releases/production/backend.yaml"]
    assert releases.read("production", "backend", root) == releases.Release("1.4.2", DIGEST, "releases/production/backend.yaml")

    proc = cli(root, "plan", "--stack", "production", "--out", str(after))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    # No Pulumi diff: every resource's inputs (and the outputs) are byte-identical.
    assert (before / "plan.json").read_bytes() == (after / "plan.json").read_bytes()
    doc = json.loads((after / "plan.json").read_text())
    assert len(doc["resources"]) > 100
    # What Argo CD renders from the same Application now runs the new image.
    assert _image_of(root, before / "plan.json", "backend") == f"{BACKEND}:1.4.2@{DIGEST}"
    # With the committed release file back, the same Application renders the old image.
    release_file = root / "releases" / "production" / "backend.yaml"
    release_file.write_text(git(root, "show", "HEAD:releases/production/backend.yaml"))
    assert _image_of(root, before / "plan.json", "backend") == f"{BACKEND}:1.0.0"


@pytest.mark.skipif(render.helm_binary() is None, reason="helm is not installed (make test puts .tools/bin on PATH)")
def test_a_release_with_a_digest_pins_the_pods_to_it(tmp_path):
    root = copy_project(tmp_path)
    proc = run_workflow_release_step(root, WORKLOAD="ai-memory", STACK="production", TAG="2.0.1", DIGEST=DIGEST,
                                     PLATFORMS="linux/amd64,linux/arm64", IMAGE="docker.io/scoobyjava15/sophia-mcp-ai-memory")
    assert proc.returncode == 0, proc.stderr
    text = (root / "releases" / "production" / "ai-memory.yaml").read_text()
    assert yaml_c.load(text) == {"image": {"tag": "2.0.1", "digest": DIGEST}}
    from tests.test_services import run_services
    run = run_services("production")
    regs = [SimpleNamespace(type=r.type, name=r.name, inputs=run.raw[r.name]) for r in run.registrations
            if r.type == render.APPLICATION]
    (spec,) = [s for s in render.release_specs(regs, root=root) if s.release == "ai-memory"]
    (deployment,) = [o for o in render.render(spec, cache=False).objects if o["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == \
        f"docker.io/scoobyjava15/sophia-mcp-ai-memory:2.0.1@{DIGEST}"
    # --digest alone later (a rebuilt image under the same tag) keeps the tag.
    proc = cli(root, "release", "ai-memory", "--stack", "production", "--digest", "sha256:" + "f" * 64)
    assert proc.returncode == 0, proc.stderr
    assert releases.read("production", "ai-memory", root).tag == "2.0.1"


def config_only_python(root: Path, tmp_path: Path) -> None:
    """root/.venv/bin/python with exactly the distributions requirements-config.txt names (what
    the release jobs install, by hash) and the standard library: no site-packages (-S)."""
    from importlib import metadata

    site = tmp_path / "config-site"
    site.mkdir()
    names = [line.split("==")[0] for line in (ROOT / "requirements-config.txt").read_text().splitlines()
             if "==" in line and not line.startswith("#")]
    for name in names:
        dist = metadata.distribution(name)
        for top in {Path(str(f)).parts[0] for f in dist.files or ()}:
            source = Path(str(dist.locate_file(top)))
            if source.exists() and not (site / top).exists():
                (site / top).symlink_to(source)
    venv = root / ".venv"
    if venv.is_symlink():
        venv.unlink()
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'''#!/bin/sh\nPYTHONPATH="{site}${{PYTHONPATH:+:$PYTHONPATH}}" exec {sys.executable} -S "$@"\n''')
    python.chmod(0o755)


def test_the_release_jobs_run_with_only_requirements_config(tmp_path):
    """release.yml's plan and release jobs and deploy.yml's chart-tag job install requirements-config.txt
    only: describe, the workflow's own release step and chart-tag run with it; the plan says what it lacks."""
    root = copy_project(tmp_path)
    config_only_python(root, tmp_path)
    python = str(root / ".venv" / "bin" / "python")
    probe = subprocess.run([python, "-c", "import yaml, pydantic, importlib.util as u; print(u.find_spec('pulumi'))"],
                           capture_output=True, text=True, cwd=root)
    assert probe.stdout.strip() == "None", probe.stderr  # the SDK is really absent
    described = subprocess.run([python, "-m", "sophia_infra", "describe", "--stack", "production", "ai-memory"],
                               capture_output=True, text=True, cwd=root)
    assert described.returncode == 0 and "platforms=linux/amd64,linux/arm64" in described.stdout, described.stderr
    proc = run_workflow_release_step(root, WORKLOAD="ai-memory", STACK="production", TAG="2.0.1", DIGEST=DIGEST,
                                     PLATFORMS="linux/amd64,linux/arm64", IMAGE="docker.io/scoobyjava15/sophia-mcp-ai-memory")
    assert proc.returncode == 0, proc.stderr
    assert yaml_c.load((root / "releases" / "production" / "ai-memory.yaml").read_text()) == \
        {"image": {"tag": "2.0.1", "digest": DIGEST}}
    tag = subprocess.run([python, "-m", "sophia_infra", "chart-tag", "--check"], capture_output=True, text=True, cwd=root)
    assert tag.returncode == 0 and "does not exist yet" in tag.stdout, tag.stderr
    plan = subprocess.run([python, "-m", "sophia_infra", "plan", "--stack", "dev"], capture_output=True, text=True, cwd=root)
    assert plan.returncode == 2 and "lacks the project's dependencies (pulumi, pulumi_kubernetes)" in plan.stderr


def test_the_workflow_release_step_is_the_release_command():
    step = workflow_release_step()
    assert step["run"].startswith('.venv/bin/python -m sophia_infra release "$WORKLOAD" --stack "$STACK" --tag "$TAG"')
    assert set(step["env"]) == {"WORKLOAD", "STACK", "TAG", "DIGEST", "PLATFORMS", "IMAGE"}


# ----------------------------------------------------------------------------- refusals

@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    """One project copy at the release baseline for the cases that leave it untouched."""
    return copy_project(tmp_path_factory.mktemp("baseline"))


@pytest.mark.parametrize("args,message", [
    (("bakend", "--stack", "production", "--tag", "1.4.2"),
     "error: WORKLOAD bakend: stack production has no workload 'bakend'; use one of backend, frontend, ai-memory,"),
    (("backend", "--stack", "staging", "--tag", "1.4.2"),
     "error: --stack staging: there is no stack 'staging' (no Pulumi.staging.yaml); use one of dev, production."),
    (("backend", "--stack", "production", "--tag", "latest"),
     "error: --tag latest: the tag 'latest' is not pinned (latest moves by itself); give the exact version tag the image "
     "was pushed with, such as 1.4.2."),
    (("backend", "--stack", "production", "--tag", "1.4.2", "--digest", "sha256:abc"),
     "error: --digest sha256:abc: 'sha256:abc' is not an image digest; give sha256: followed by 64 lower-case hex digits"),
    (("backend", "--stack", "production", "--tag", "1.4.2", "--digest", "SHA256:" + "A" * 64), "is not an image digest"),
    (("ai-memory", "--stack", "production", "--tag", "1.4.2", "--platforms", "linux/amd64"),
     "error: --platforms linux/amd64: the image of 'ai-memory' is built for linux/amd64 only, but it runs on GH200 nodes "
     "(linux/arm64); build it for linux/arm64 too."),
    (("backend", "--stack", "production", "--tag", "1.4.2", "--image", "docker.io/someone/else"),
     "error: --image docker.io/someone/else: 'backend' in stack production runs docker.io/scoobyjava15/sophia-backend"),
    (("backend", "--stack", "production", "--tag", "sha256:" + "a" * 64), "is a digest; give it as the digest (--digest)"),
    (("backend", "--stack", "production"), "error: give the image to release: --tag"),
    # Production runs by digest: a tag alone is refused there (dev takes it).
    (("backend", "--stack", "production", "--tag", "1.4.2"),
     "error: --tag 1.4.2: stack production is production, which runs images by digest (a tag can be re-pushed with other "
     "content); give --digest sha256:... of the pushed image"),
])
def test_bad_input_is_one_sentence_exit_2_and_leaves_the_files_alone(args, message, baseline):
    files = {p: p.read_bytes() for p in (baseline / "releases").rglob("*.yaml")}
    proc = cli(baseline, "release", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert {p: p.read_bytes() for p in (baseline / "releases").rglob("*.yaml")} == files


def test_an_amd64_only_image_for_a_gh200_workload_is_refused_from_the_stack_config(tmp_path):
    """ai-memory placed on GH200 with an image declared linux/amd64 only: refused, file untouched."""
    root = copy_project(tmp_path)
    stack_file = root / "Pulumi.production.yaml"
    stack_file.write_text(stack_file.read_text().replace(
        "sophia-mcp-ai-memory, platforms: [linux/amd64, linux/arm64]}", "sophia-mcp-ai-memory, platforms: [linux/amd64]}"))
    before = (root / "releases" / "production" / "ai-memory.yaml").read_bytes()
    proc = cli(root, "release", "ai-memory", "--stack", "production", "--tag", "1.4.2")
    assert proc.returncode == 2
    assert proc.stderr == ("error: --stack production: the stack configuration is invalid: sophia:services[2].image.platforms: "
                           "'ai-memory' is placed on GH200 nodes, which run linux/arm64, but its image declares only "
                           "linux/amd64; build and declare a linux/arm64 image.\n")
    assert (root / "releases" / "production" / "ai-memory.yaml").read_bytes() == before


def test_a_tag_still_in_the_stack_config_is_refused_not_duplicated(tmp_path):
    root = copy_project(tmp_path)
    (root / "releases" / "dev" / "gong.yaml").unlink()
    stack_file = root / "Pulumi.dev.yaml"
    stack_file.write_text(stack_file.read_text().replace("sophia-mcp-gong}", 'sophia-mcp-gong, tag: "1.0.0"}'))
    proc = cli(root, "release", "gong", "--stack", "dev", "--tag", "1.4.2")
    assert proc.returncode == 2
    assert proc.stderr == ("error: WORKLOAD gong: sophia:services[4].image.tag pins '1.0.0' in Pulumi.dev.yaml; remove it "
                           "there first, so the release file is the one place the tag lives.\n")
    assert not (root / "releases" / "dev" / "gong.yaml").exists()


def test_releasing_the_same_image_again_changes_nothing(tmp_path):
    root = copy_project(tmp_path)
    proc = cli(root, "release", "gong", "--stack", "production", "--tag", "1.0.0", "--digest", DIGEST)
    assert proc.returncode == 0, proc.stderr
    git(root, "commit", "-qam", "release gong")
    # The same tag again: its recorded digest still holds.
    proc = cli(root, "release", "gong", "--stack", "production", "--tag", "1.0.0")
    assert proc.returncode == 0 and f"already runs docker.io/scoobyjava15/sophia-mcp-gong:1.0.0@{DIGEST}; nothing to change" in proc.stdout
    assert git(root, "status", "--porcelain") == ""


def test_dev_says_the_release_rolls_out_with_pulumi_up(tmp_path):
    root = copy_project(tmp_path)
    proc = cli(root, "release", "backend", "--stack", "dev", "--tag", "1.4.2", "--digest", DIGEST)
    assert proc.returncode == 0, proc.stderr
    assert "Rolls out with the next pulumi up of stack dev" in proc.stdout
    assert (root / "releases" / "dev" / "backend.yaml").read_text() == releases.render(
        "dev", "backend", releases.Release("1.4.2", DIGEST))
    # A new tag without a digest drops the old digest (it named another image).
    assert cli(root, "release", "backend", "--stack", "dev", "--tag", "1.4.3").returncode == 0
    assert releases.read("dev", "backend", root).digest is None


# ----------------------------------------------------------------------------- status

def test_status_shows_the_released_image_and_what_argo_cd_reports(tmp_path):
    from tests.conftest import parse_with

    cfg = parse_with("production")
    shutil.copytree(ROOT / "releases", tmp_path / "releases")
    baseline_releases(tmp_path)
    apps = {"items": [
        {"metadata": {"name": "backend"}, "status": {"sync": {"status": "Synced", "revisions": ["a" * 40, "b" * 40]},
                                                     "health": {"status": "Healthy"},
                                                     "summary": {"images": [f"{BACKEND}:1.0.0"]}}},
        {"metadata": {"name": "frontend"}, "status": {"sync": {"status": "OutOfSync"}, "health": {"status": "Progressing"},
                                                      "summary": {"images": ["docker.io/scoobyjava15/sophia-frontend:0.9.0"]}}},
    ]}
    lines = release.status(cfg, "production", apps, root=tmp_path)
    assert lines[0].split() == ["WORKLOAD", "RELEASED", "IMAGE", "SYNC", "HEALTH", "REVISIONS", "RUNNING"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["backend"] == ["backend", f"{BACKEND}:1.0.0", "Synced", "Healthy", "aaaaaaaaaaaa,bbbbbbbbbbbb", "yes"]
    assert rows["frontend"][2:] == ["OutOfSync", "Progressing", "-", "rolling", "out"]
    assert rows["gong"][2:] == ["(no", "Application)", "-", "-", "-"]
    assert len(rows) == 15
    offline = release.status(cfg, "production", root=tmp_path)
    assert offline[0].split() == ["WORKLOAD", "RELEASED", "IMAGE"] and len(offline) == 16


def test_describe_gives_the_workflow_platforms_and_repository():
    proc = cli(ROOT, "describe", "--stack", "production", "ai-memory")
    assert proc.returncode == 0, proc.stderr
    facts = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    assert facts["platforms"] == "linux/amd64,linux/arm64"  # GH200: arm64 is built too
    assert facts["repository"] == "docker.io/scoobyjava15/sophia-mcp-ai-memory"
    assert facts["releaseFile"] == "releases/production/ai-memory.yaml" and facts["releaseBranch"] == "main"
    gong = dict(line.split("=", 1) for line in cli(ROOT, "describe", "--stack", "production", "gong").stdout.splitlines())
    assert gong["platforms"] == "linux/amd64"


# ----------------------------------------------------------------------------- tag-only production workloads

def test_preview_warns_of_production_workloads_run_by_tag_only():
    from tests.conftest import parse_with

    prod = parse_with("production")
    released = releases.for_stack(prod, "production")
    warning = releases.tag_only_warning(prod, "production", released)
    tag_only = sorted(n for n, r in released.items() if not r.digest)
    assert tag_only, "every production release has a digest: this test needs one without"
    assert warning is not None and f"{len(tag_only)} workload(s) run by image tag only" in warning
    assert ", ".join(tag_only) in warning and "--digest sha256:" in warning
    pinned = {n: releases.Release(r.tag, DIGEST, r.file) for n, r in released.items()}
    assert releases.tag_only_warning(prod, "production", pinned) is None
    dev = parse_with("dev")
    assert releases.tag_only_warning(dev, "dev", releases.for_stack(dev, "dev")) is None
