"""`plan --against OLD`: steps.json and steps.md beside the plan, exit 1 on a destructive step no
--allow-destroy names, exit 2 with one sentence when OLD is not a plan. The charts are not
rendered here (verify.run is stubbed): what is tested is the transition, not the flows."""

from __future__ import annotations

import json

import pytest

from sophia_infra import __main__ as cli
from sophia_infra.tools.plan import report, verify
from tests import yaml_c
from tests.platform_helpers import plan

GHOST = "sophia-gone-instance"


@pytest.fixture
def old_plan(tmp_path, monkeypatch):
    """dev's plan.json plus a Lambda instance the new plan no longer has."""
    monkeypatch.setattr(verify, "run", lambda result: verify.Checks(skipped="not rendered in this test"))
    doc = report.plan_document(plan("dev"))
    doc["resources"].append({
        "urn": f"urn:pulumi:dev::sophia-infra::sophia:lambda:Instance$pulumi-python:dynamic/lambda:Instance::{GHOST}",
        "type": "pulumi-python:dynamic/lambda:Instance", "name": GHOST, "custom": True, "parent": None,
        "dependencies": [], "provider": None, "options": {}, "inputs": {"name": "sophia-gone"},
        "propertyDependencies": {}, "secretFingerprints": {}})
    path = tmp_path / "old" / "plan.json"
    path.parent.mkdir()
    path.write_text(json.dumps(doc))
    return path


def test_a_destructive_step_fails_the_plan_until_allowed_by_name(old_plan, tmp_path, capsys):
    out = tmp_path / "new"
    assert cli.main(["plan", "--stack", "dev", "--out", str(out), "--against", str(old_plan)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"destructive: delete {GHOST} (pulumi-python:dynamic/lambda:Instance): ")
    assert err[-1].endswith(f"pass --allow-destroy {GHOST} if that is intended")
    steps = json.loads((out / "steps.json").read_text())
    ghost = next(s for s in steps if s["name"] == GHOST)
    assert {k: ghost[k] for k in ("op", "deleteBeforeReplace", "keys", "destructive")} == \
        {"op": "delete", "deleteBeforeReplace": False, "keys": [], "destructive": True}
    assert steps[-1]["name"] == GHOST  # deletes come last
    assert {s["op"] for s in steps} == {"same", "delete"}
    md = (out / "steps.md").read_text()
    assert "0 create · 0 update · 0 replace · 1 delete" in md and "### Destructive" in md and "**no**" in md

    first = (out / "steps.json").read_bytes()
    assert cli.main(["plan", "--stack", "dev", "--out", str(out), "--against", str(old_plan),
                     "--allow-destroy", GHOST]) == 0
    assert "yes (--allow-destroy)" in (out / "steps.md").read_text()
    assert (out / "steps.json").read_bytes() == first  # the same plans, the same steps, byte for byte


def test_an_against_file_that_is_not_a_plan_is_one_sentence(tmp_path, capsys):
    bad = tmp_path / "plan.json"
    bad.write_text("{}")
    assert cli.main(["plan", "--stack", "dev", "--against", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --against {bad}: not a plan.json")
    assert cli.main(["plan", "--stack", "dev", "--against", str(tmp_path / "missing.json")]) == 2
    assert "cannot read it" in capsys.readouterr().err


def test_allow_destroy_without_against_is_refused(capsys):
    assert cli.main(["plan", "--stack", "dev", "--allow-destroy", "x"]) == 2
    assert "--allow-destroy only means something with --against" in capsys.readouterr().err


def test_ci_shows_every_pull_requests_steps_without_credentials():
    """preview.yml's transition job: base and head planned offline, the head against the base,
    steps.md in the job summary; read-only, with no secret and no Pulumi login (forks get it too)."""
    import subprocess

    from tests.conftest import ROOT

    text = (ROOT / ".github" / "workflows" / "preview.yml").read_text()
    job = yaml_c.load(text)["jobs"]["transition"]
    assert job["permissions"] == {"contents": "read"}
    assert job["strategy"]["matrix"]["stack"] == ["dev", "production"]
    job_text = yaml_c.dump(job)
    assert "secrets." not in job_text and "pulumi/" not in job_text
    checkouts = [s.get("with", {}) for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@")]
    assert {c.get("path") for c in checkouts} == {"base", "head"}
    assert any(c.get("ref") == "${{ github.event.pull_request.base.sha }}" for c in checkouts)
    runs = {s.get("name"): s.get("run", "") for s in job["steps"]}
    head = runs["Offline plan of the head against the base"]
    assert "--against \"$RUNNER_TEMP/base/plan.json\"" in head and "--allow-destroy" in head
    summary = next(s for s in job["steps"] if "GITHUB_STEP_SUMMARY" in s.get("run", ""))
    assert summary["if"] == "always()" and "steps.md" in summary["run"]
    for name, script in runs.items():
        if script:
            proc = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
            assert proc.returncode == 0, f"{name}: {proc.stderr}"
