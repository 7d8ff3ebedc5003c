"""checkov (Bridgecrew/Prisma's Kubernetes checks) over what both stacks really deploy: the
program's own objects (the plan's manifests/) and every Helm release rendered from the pinned
charts (charts/sophia-service included), written as YAML into one directory and scanned once
per session (`checkov -d DIR --framework kubernetes --output json --quiet --skip-download`).

- the program's own objects: no finding at all;
- charts/sophia-service: only the findings tests/data/checkov-exceptions.yaml lists under
  scope `own`, each with its reason;
- third-party charts: every finding is listed there (scope `charts`) with its reason, and the
  test fails on a finding not listed and on a listed exception that no longer matches anything.

Helm test hooks (`helm.sh/hook: test`) are left out: a helm.v3.Release never runs `helm test`,
so those pods are never created. checkov is pinned in requirements-checkov.txt and installed by
scripts/install-tools.sh into .tools/checkov-venv (its own dependency pins stay out of the
project's virtualenv); without it these tests skip.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from sophia_infra.tools.plan import render, report, runner
from tests.conftest import ROOT, STACKS

EXCEPTIONS = Path(__file__).parent / "data" / "checkov-exceptions.yaml"


def _checkov() -> str | None:
    local = ROOT / ".tools" / "checkov-venv" / "bin" / "checkov"
    return str(local) if local.is_file() else shutil.which("checkov")


CHECKOV = _checkov()
pytestmark = [
    pytest.mark.skipif(CHECKOV is None, reason="checkov is not installed (scripts/install-tools.sh puts it in .tools/checkov-venv)"),
    pytest.mark.skipif(render.helm_binary() is None, reason="helm is not installed (scripts/install-tools.sh; make test puts it on PATH)"),
]


def _is_test_hook(obj: dict) -> bool:
    hooks = ((obj.get("metadata") or {}).get("annotations") or {}).get("helm.sh/hook", "")
    return "test" in [h.strip() for h in hooks.split(",")]


def write_stack(stack: str, out: Path) -> None:
    """<out>/<stack>/own (the plan's objects), /sophia-service/<release>, /charts/<release>."""
    result = runner.run(stack)
    specs = render.release_specs(result.resources)
    missing = render.missing_sources(specs)
    if missing:
        pytest.skip(f"no chart source holds {', '.join(missing)}: lay ../shared/charts-src beside the project")
    groups = [(out / stack / "own", report.kubernetes_objects(result.resources))]
    for r in render.render_all(specs):
        groups.append((out / stack / ("sophia-service" if r.spec.local else "charts") / r.spec.release, r.objects))
    for folder, objects in groups:
        folder.mkdir(parents=True, exist_ok=True)
        for i, obj in enumerate(o for o in objects if not _is_test_hook(o)):
            (folder / f"{i:03d}-{obj['kind']}-{obj['metadata']['name']}.yaml").write_text(yaml.safe_dump(obj))


@functools.lru_cache(maxsize=None)
def findings(tmp: str) -> tuple[tuple[str, str, str, str], ...]:
    """(scope: own | sophia-service | charts, check id, resource, file) of every failed check."""
    out = Path(tmp)
    for stack in STACKS:
        write_stack(stack, out)
    assert CHECKOV is not None
    env = {**os.environ, "LOG_LEVEL": "ERROR"}
    proc = subprocess.run([CHECKOV, "-d", str(out), "--framework", "kubernetes", "--output", "json", "--quiet",
                           "--skip-download"], capture_output=True, text=True, timeout=1800, env=env)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    reports = doc if isinstance(doc, list) else [doc]
    found = []
    for rep in reports:
        if rep.get("check_type") != "kubernetes":
            continue
        assert rep["summary"]["parsing_errors"] == 0, rep["summary"]
        assert rep["summary"]["resource_count"] > 500, rep["summary"]  # both stacks were read
        for f in rep["results"]["failed_checks"]:
            scope = Path(f["file_path"]).parts[2]  # /<stack>/<scope>/...
            found.append((scope, f["check_id"], f["resource"], f["file_path"]))
    return tuple(sorted(found))


@pytest.fixture(scope="module")
def found(tmp_path_factory) -> tuple[tuple[str, str, str, str], ...]:
    return findings(str(tmp_path_factory.mktemp("checkov")))


def exceptions() -> list[dict]:
    return yaml.safe_load(EXCEPTIONS.read_text())


def _listed(entry: dict, scope: str, check: str, resource: str) -> bool:
    return (entry["scope"] == scope and entry["check"] == check
            and any(fnmatch.fnmatchcase(resource, p) for p in entry["resources"]))


def test_the_exceptions_file_is_well_formed():
    for e in exceptions():
        assert set(e) == {"check", "scope", "resources", "reason"}, e
        assert e["scope"] in ("own", "charts") and e["resources"] and len(e["reason"]) > 30, e


def test_the_programs_own_objects_are_clean(found):
    assert [f for f in found if f[0] == "own"] == []


def test_every_finding_is_listed_with_its_reason(found):
    entries = exceptions()
    unlisted = sorted({(scope, check, resource) for scope, check, resource, _ in found if scope != "own"
                       if not any(_listed(e, "own" if scope == "sophia-service" else "charts", check, resource)
                                  for e in entries)})
    assert unlisted == [], "fix these, or list them with a reason in tests/data/checkov-exceptions.yaml:\n" + \
        "\n".join(f"  {s} {c} {r}" for s, c, r in unlisted)


def test_no_exception_is_stale(found):
    stale = [e for e in exceptions()
             if not any(_listed(e, "own" if scope == "sophia-service" else "charts", check, resource)
                        for scope, check, resource, _ in found if scope != "own")]
    assert stale == [], "these exceptions match no finding any more; remove them:\n" + \
        "\n".join(f"  {e['check']} {e['resources']}" for e in stale)


def test_own_chart_exceptions_are_the_two_known_ones():
    """charts/sophia-service may differ from checkov's defaults only where docs/security.md says why."""
    assert sorted(e["check"] for e in exceptions() if e["scope"] == "own") == ["CKV_K8S_35", "CKV_K8S_43"]


def test_the_matcher():
    entry = {"scope": "charts", "check": "CKV_K8S_43", "resources": ["Deployment.argocd.*"], "reason": "x" * 40}
    assert _listed(entry, "charts", "CKV_K8S_43", "Deployment.argocd.argo-cd-argocd-server")
    assert not _listed(entry, "charts", "CKV_K8S_43", "Deployment.monitoring.grafana")
    assert not _listed(entry, "own", "CKV_K8S_43", "Deployment.argocd.argo-cd-argocd-server")
