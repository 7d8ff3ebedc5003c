"""checkov (Bridgecrew/Prisma's Kubernetes checks) over what both stacks really deploy: the
program's own objects (the plan's manifests/) and every Helm release rendered from the pinned
charts (charts/sophia-service included), written as YAML into one directory and scanned once
per session (`checkov -d DIR --framework kubernetes --output json --quiet --skip-download`);
the verdict is kept by the content of what it read (build/checkov-cache, see _scan).

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
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sophia_infra.tools.plan import render, report
from tests.conftest import ROOT, STACKS
from tests.platform_helpers import plan
from tests import yaml_c

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
    """<out>/<stack>/own (the plan's objects), /sophia-service/<release>, /charts/<release>; each
    object in a file named by its kind, namespace and name, so the same objects make the same
    directory byte for byte whatever order the program registered them in."""
    result = plan(stack)
    specs = render.release_specs(result.resources)
    missing = render.missing_sources(specs)
    if missing:
        pytest.skip(f"no chart source holds {', '.join(missing)}: lay ../shared/charts-src beside the project")
    groups = [(out / stack / "own", report.kubernetes_objects(result.resources))]
    for r in render.render_all(specs):
        groups.append((out / stack / ("sophia-service" if r.spec.local else "charts") / r.spec.release, r.objects))
    for folder, objects in groups:
        write_objects(folder, objects)


def write_objects(folder: Path, objects: list[dict]) -> None:
    """One file per object, named and numbered in the objects' sorted order, not the given one."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = sorted((_file_name(o), yaml_c.dump(o)) for o in objects if not _is_test_hook(o))
    for i, (name, text) in enumerate(texts):
        (folder / f"{i:03d}-{name}.yaml").write_text(text)


def _file_name(obj: dict) -> str:
    meta = obj["metadata"]
    return "-".join(part for part in (obj["kind"], meta.get("namespace"), meta["name"]) if part)


CACHE = ROOT / "build" / "checkov-cache"
CHECKOV_ARGS = ("--framework", "kubernetes", "--output", "json", "--quiet", "--skip-download")


def _input_key(out: Path) -> str:
    """What checkov's answer depends on: every file it reads (path and bytes), its command line
    and the exact versions of checkov and everything installed beside it."""
    assert CHECKOV is not None
    digest = hashlib.sha256(" ".join(CHECKOV_ARGS).encode())
    venv = Path(CHECKOV).resolve().parents[1]
    for dist in sorted(venv.glob("lib/python*/site-packages/*.dist-info")):
        digest.update(dist.name.encode() + b"\0")
    for path in sorted(out.rglob("*.yaml")):
        digest.update(str(path.relative_to(out)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _scan(out: Path) -> dict:
    """checkov's verdict on `out`: {parsing_errors, resource_count, failed: [[scope, check,
    resource, file]]}. checkov is deterministic for the same files and version, so the verdict
    is kept in build/checkov-cache under _input_key and a second run over the very same objects
    reads it instead of scanning again (a minute of CPU); any changed object, checkov version or
    argument is a new key, and `make clean` (or deleting the folder) forces a scan."""
    cached = CACHE / f"{_input_key(out)}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    assert CHECKOV is not None
    env = {**os.environ, "LOG_LEVEL": "ERROR"}
    proc = subprocess.run([CHECKOV, "-d", str(out), *CHECKOV_ARGS], capture_output=True, text=True,
                          timeout=1800, env=env)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    reports = [r for r in (doc if isinstance(doc, list) else [doc]) if r.get("check_type") == "kubernetes"]
    assert len(reports) == 1, [r.get("check_type") for r in reports]
    rep = reports[0]
    verdict = {"parsing_errors": rep["summary"]["parsing_errors"], "resource_count": rep["summary"]["resource_count"],
               "failed": sorted([Path(f["file_path"]).parts[2], f["check_id"], f["resource"], f["file_path"]]
                                for f in rep["results"]["failed_checks"])}  # /<stack>/<scope>/...
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(verdict))
    partial.replace(cached)  # whole or absent, whichever worker writes it
    return verdict


@functools.lru_cache(maxsize=None)
def findings(tmp: str) -> tuple[tuple[str, str, str, str], ...]:
    """(scope: own | sophia-service | charts, check id, resource, file) of every failed check."""
    out = Path(tmp)
    for stack in STACKS:
        write_stack(stack, out)
    verdict = _scan(out)
    assert verdict["parsing_errors"] == 0, verdict
    assert verdict["resource_count"] > 500, verdict  # both stacks were read
    return tuple(sorted(tuple(f) for f in verdict["failed"]))


@pytest.fixture(scope="module")
def found(tmp_path_factory) -> tuple[tuple[str, str, str, str], ...]:
    return findings(str(tmp_path_factory.mktemp("checkov")))


def exceptions() -> list[dict]:
    return yaml_c.load(EXCEPTIONS.read_text())


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


def test_a_kept_verdict_is_only_reused_for_the_very_same_objects(tmp_path):
    """The cache key follows every byte and every name checkov would read."""
    (tmp_path / "dev" / "own").mkdir(parents=True)
    obj = tmp_path / "dev" / "own" / "000-ConfigMap-a.yaml"
    obj.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    first = _input_key(tmp_path)
    assert _input_key(tmp_path) == first
    obj.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n")
    changed = _input_key(tmp_path)
    assert changed != first
    obj.rename(obj.with_name("000-ConfigMap-b.yaml"))
    assert _input_key(tmp_path) not in (first, changed)


def test_the_written_objects_do_not_depend_on_registration_order(tmp_path):
    """The program registers resources concurrently, so their order differs between runs; the
    files checkov reads must not (else the kept verdict never serves)."""
    objects = report.kubernetes_objects(plan("dev").resources)
    assert len(objects) > 50
    write_objects(tmp_path / "a" / "own", objects)
    write_objects(tmp_path / "b" / "own", list(reversed(objects)))
    assert _input_key(tmp_path / "a") == _input_key(tmp_path / "b")
