"""Argo CD reads charts/sophia-service at a revision that exists and holds the chart the
program writes its values for: the tag sophia-service-<Chart.yaml version>, which
`python -m sophia_infra chart-tag` creates (the deploy workflow, before `pulumi up`) and
refuses to reuse for another chart. Proven in throwaway git repositories with real git: the
values of every production Application validate against values.schema.json as
`git show <tag>:` returns it, and an old chart at the tag (0.1.0, which knew no `metrics`)
is caught.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest

from sophia_infra.program.config.chart_revision import CHART_PATH, ROOT, ChartTagError, chart_tag, decide
from sophia_infra.tools import chart_tag as tool
from sophia_infra.tools.plan import render
from tests.test_argocd import applications

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(repo: Path, *args: str) -> str:
    env_args = ["-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "init.defaultBranch=main",
                "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"]
    return subprocess.run(["git", *env_args, "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path) -> Path:
    """A repository holding this work tree's chart, committed."""
    r = tmp_path / "infra"
    shutil.copytree(ROOT / CHART_PATH, r / CHART_PATH)
    r.mkdir(exist_ok=True)
    git(r, "init", "-q")
    git(r, "add", "-A")
    git(r, "commit", "-qm", "chart")
    return r


def tagged_schema(repo: Path, tag: str) -> dict:
    return json.loads(git(repo, "show", f"{tag}:{CHART_PATH}/values.schema.json"))


def disagreements(values: dict, schema: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in jsonschema.Draft7Validator(schema).iter_errors(values)]


def production_values() -> dict[str, dict]:
    """What Argo CD renders each Application with: the release file, then valuesObject."""
    return {name: render.application_values(app["spec"])[1] for name, app in applications().items()}


def test_applications_name_the_tag_of_the_working_trees_chart_version():
    tags = {app["spec"]["sources"][0]["targetRevision"] for app in applications().values()}
    assert tags == {chart_tag()} and chart_tag().startswith("sophia-service-")


def test_chart_tag_creates_the_revision_and_the_values_validate_against_the_chart_there(repo):
    outcome = tool.run(root=repo)
    assert outcome.created and outcome.decision.tag == chart_tag()
    assert git(repo, "tag", "--list").split() == [chart_tag()]
    schema = tagged_schema(repo, chart_tag())
    values = production_values()
    assert len(values) == 15
    for name, v in values.items():
        assert disagreements(v, schema) == [], name
    # Run again on the same commit: nothing to do.
    again = tool.run(root=repo)
    assert not again.created and not again.decision.create


def test_an_old_chart_at_the_revision_is_caught(repo):
    """The v0.1.0 failure: the chart at the revision rejects today's values."""
    schema_file = repo / CHART_PATH / "values.schema.json"
    good = schema_file.read_text()
    old = json.loads(good)
    old["properties"].pop("metrics")
    schema_file.write_text(json.dumps(old))
    chart_file = repo / CHART_PATH / "Chart.yaml"
    chart_file.write_text(chart_file.read_text().replace(f"version: {chart_tag()[len('sophia-service-'):]}", "version: 0.1.0"))
    git(repo, "commit", "-qam", "the chart as it was")
    git(repo, "tag", "sophia-service-0.1.0")
    (name, values), *_ = production_values().items()
    found = disagreements(values, tagged_schema(repo, "sophia-service-0.1.0"))
    assert any("'metrics' was unexpected" in f for f in found), found


def test_a_chart_change_without_a_version_bump_is_refused(repo):
    tool.run(root=repo)
    template = repo / CHART_PATH / "templates" / "service.yaml"
    template.write_text(template.read_text() + "\n# changed\n")
    git(repo, "commit", "-qam", "template change, same version")
    with pytest.raises(ChartTagError, match="bump `version`"):
        tool.run(root=repo, check=True)
    # Bumped: a new tag, the old one untouched.
    chart_file = repo / CHART_PATH / "Chart.yaml"
    version = chart_tag()[len("sophia-service-"):]
    chart_file.write_text(chart_file.read_text().replace(f"version: {version}", "version: 99.0.0"))
    git(repo, "commit", "-qam", "bump")
    assert tool.run(root=repo).decision.tag == "sophia-service-99.0.0"
    assert set(git(repo, "tag", "--list").split()) == {chart_tag(), "sophia-service-99.0.0"}


def test_push_and_a_fresh_shallow_checkout_see_the_tag(repo, tmp_path):
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(origin))
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "push", "-q", "origin", "HEAD:main")
    assert tool.run(root=repo, remote="origin", push=True).pushed
    assert chart_tag() in git(origin, "tag", "--list")
    # The deploy job's checkout: depth 1, no tags. chart-tag --remote finds the tag there.
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--depth", "1", "--no-tags", f"file://{origin}", str(clone))
    assert git(clone, "tag", "--list") == ""
    outcome = tool.run(root=clone, remote="origin", check=True)
    assert not outcome.decision.create
    # --check never creates a tag.
    fresh = tmp_path / "fresh"
    shutil.copytree(repo, fresh)
    git(fresh, "tag", "-d", chart_tag())
    assert not tool.run(root=fresh, check=True).created and git(fresh, "tag", "--list") == ""


def test_decide():
    assert decide("sophia-service-1.0.0", None, "abc").create
    assert not decide("sophia-service-1.0.0", "abc", "abc").create
    with pytest.raises(ChartTagError):
        decide("sophia-service-1.0.0", "abd", "abc")


def test_outside_a_checkout_says_so(tmp_path):
    with pytest.raises(tool.GitError):
        tool.run(root=tmp_path)
