"""Where the charts to render come from: ../shared/charts-src first, the pull cache second; and
the render cache, keyed by the chart's content, the values and helm."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sophia_infra.tools.plan import chart_cache, render
from tests.conftest import ROOT
from tests import yaml_c


@functools.lru_cache(maxsize=None)
def _pins() -> dict:
    return chart_cache.pins(["dev", "production"])  # both stacks planned: once per test process


def test_pins_are_the_upstream_releases_the_plans_make():
    pins = _pins()
    assert ("kube-prometheus-stack", "88.5.3") in pins
    assert ("argo-cd", "10.1.1") in pins  # production delivers through Argo CD
    assert pins[("nginx-ingress", "2.6.4")][0].startswith("oci://")
    assert not any(chart.startswith("istio") for chart, _ in pins)  # the mesh is off in both stacks


def test_a_chart_in_the_cache_is_found_when_shared_lacks_it(tmp_path, monkeypatch):
    cached = tmp_path / "valkey-9.9.9"
    cached.mkdir()
    (cached / "Chart.yaml").write_text("apiVersion: v2\nname: valkey\nversion: 9.9.9\n")
    monkeypatch.setattr(render, "CHART_SOURCES", (tmp_path / "no-shared", tmp_path))
    assert render.chart_source("valkey", "9.9.9") == cached
    assert render.chart_source("valkey", "0.0.1") is None
    spec = render.ReleaseSpec("r", "r", "ns", "valkey", "0.0.1", values={})
    assert render.missing_sources([spec]) == ["valkey-0.0.1"]


def test_charts_command_lists_every_source_and_the_subcharts_it_lacks():
    proc = subprocess.run([sys.executable, "-m", "sophia_infra", "charts"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode == 2:
        assert "no source" in proc.stdout  # a plain clone without ../shared: says what to pull
        return
    assert proc.returncode == 0, proc.stderr
    *lines, cache = proc.stdout.splitlines()
    assert len(lines) == len(_pins())
    kps = next(line for line in lines if line.startswith("kube-prometheus-stack-88.5.3"))
    if "lacks subcharts" in kps:
        assert "grafana" in kps
    # The last line: where the renders are cached and how to clear them.
    assert cache.startswith("render cache: build/render-cache (") and cache.endswith("rm -rf build/render-cache)")


# ----------------------------------------------------------------------------- the render cache

HELM = render.helm_binary()
needs_helm = pytest.mark.skipif(HELM is None, reason="helm is not installed (scripts/install-tools.sh; make test puts it on PATH)")

CHART = {
    "Chart.yaml": "apiVersion: v2\nname: tiny\nversion: 1.0.0\ndependencies:\n  - name: sub\n    version: 1.0.0\n",
    "values.yaml": "greeting: hello\n",
    "templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
                         "data:\n  greeting: {{ .Values.greeting | quote }}\n",
    "charts/sub/Chart.yaml": "apiVersion: v2\nname: sub\nversion: 1.0.0\n",
    "charts/sub/values.yaml": "size: 1\n",
    "charts/sub/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: sub\ndata:\n  size: {{ .Values.size | quote }}\n",
}


def _chart(base: Path, files: dict[str, str] = CHART) -> Path:
    folder = base / "tiny-1.0.0"
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return folder


@pytest.fixture
def tiny(tmp_path, monkeypatch) -> Path:
    """A pinned chart `tiny` 1.0.0 (with a subchart) as the only chart source, and an empty render cache."""
    monkeypatch.setattr(render, "CHART_SOURCES", (tmp_path / "charts-src",))
    monkeypatch.setattr(render, "CACHE_DIR", tmp_path / "render-cache")
    return _chart(tmp_path / "charts-src")


def _spec(values=None) -> render.ReleaseSpec:
    return render.ReleaseSpec("tiny", "tiny", "ns", "tiny", "1.0.0", values=values or {})


def _data(rendered: render.Rendered) -> dict[str, dict]:
    return {o["metadata"]["name"]: o["data"] for o in rendered.objects}


def _entries() -> list[Path]:
    return sorted(render.CACHE_DIR.glob("*.json"))


@needs_helm
def test_a_changed_file_of_the_chart_misses_the_cache(tiny):
    first = render.render(_spec())
    assert _data(first) == {"tiny": {"greeting": "hello"}, "sub": {"size": "1"}}
    assert len(_entries()) == 1
    # The same content again: the cached render, not a second one.
    assert _data(render.render(_spec())) == _data(first) and len(_entries()) == 1
    # A subchart's default changes, in place (same path, same size): a new render.
    (tiny / "charts/sub/values.yaml").write_text("size: 2\n")
    assert _data(render.render(_spec()))["sub"] == {"size": "2"}
    assert len(_entries()) == 2
    # A template changes.
    (tiny / "templates/cm.yaml").write_text(CHART["templates/cm.yaml"].replace("greeting:", "hello:"))
    assert _data(render.render(_spec()))["tiny"] == {"hello": "hello"}
    # A file only added (helm reads every file: .helmignore, files/, README): another key too.
    before = render.cache_key(_spec(), tiny, HELM)
    (tiny / "files").mkdir()
    (tiny / "files/extra.txt").write_text("x")
    assert render.cache_key(_spec(), tiny, HELM) != before


@needs_helm
def test_the_subcharts_a_source_lacks_are_not_remembered_past_a_fix(tiny):
    """The stale entry of issue #20: a chart folder without its subchart, then with it."""
    shutil.rmtree(tiny / "charts")
    first = render.render(_spec())
    assert first.missing_subcharts == ["sub"] and set(_data(first)) == {"tiny"}
    _chart(tiny.parent)  # the subchart is back
    second = render.render(_spec())
    assert second.missing_subcharts == [] and set(_data(second)) == {"tiny", "sub"}


@needs_helm
def test_identical_content_hits_the_cache_wherever_it_lies(tiny, tmp_path, monkeypatch):
    render.render(_spec())
    (entry,) = _entries()
    entry.write_text(entry.read_text().replace("hello", "from-the-cache"))
    # A copy of the same chart in another chart source (e.g. .cache/charts after `charts --pull`).
    copy = _chart(tmp_path / "pulled")
    monkeypatch.setattr(render, "CHART_SOURCES", (tmp_path / "pulled",))
    hit = render.render(_spec())
    assert hit.source == copy
    assert _data(hit)["tiny"] == {"greeting": "from-the-cache"}  # read from the entry, helm not run
    assert len(_entries()) == 1


@needs_helm
def test_values_helm_and_its_arguments_are_part_of_the_key(tiny, monkeypatch):
    key = render.cache_key(_spec(), tiny, HELM)
    assert render.cache_key(_spec(), tiny, HELM) == key
    assert render.cache_key(_spec({"greeting": "hi"}), tiny, HELM) != key
    assert render.cache_key(render.ReleaseSpec("tiny", "other", "ns", "tiny", "1.0.0", values={}), tiny, HELM) != key
    assert render.cache_key(render.ReleaseSpec("tiny", "tiny", "ns2", "tiny", "1.0.0", values={}), tiny, HELM) != key
    monkeypatch.setattr(render, "helm_version", lambda helm: "v9.9.9 0000000")
    assert render.cache_key(_spec(), tiny, HELM) != key
    monkeypatch.undo()
    monkeypatch.setattr(render, "CLUSTER_APIS", ("monitoring.coreos.com/v1", "example.com/v1"))
    assert render.cache_key(_spec(), tiny, HELM) != key


@needs_helm
def test_a_cache_entry_cut_short_is_rendered_again(tiny):
    """Parallel test workers share the cache: an entry is written whole or not at all, and one
    that is not whole (or of another format) reads as absent."""
    render.render(_spec())
    (entry,) = _entries()
    entry.write_text(entry.read_text()[:20])
    assert _data(render.render(_spec()))["tiny"] == {"greeting": "hello"}
    assert render._read_entry(entry) is not None  # rewritten whole
    assert not list(render.CACHE_DIR.glob(".*.tmp"))


def test_documents_are_read_as_yaml_reads_the_whole_output():
    """Helm's output is read piece by piece (a line `---` ends a document anywhere in YAML) with
    each piece's objects remembered: the same objects, in the same order, as reading it whole."""
    text = ("---\n# Source: a.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"
            "data:\n  script: |\n    echo ---\n    --- not a separator here\n"
            "---\n# Source: empty.yaml\n"
            "--- \n# Source: b.yaml\napiVersion: v1\nkind: Secret\nmetadata: {name: b}\n"
            "--- {kind: Inline, metadata: {name: c}}\n"
            "---\njust: a mapping without a kind\n")
    whole = [d for d in yaml_c.load_all(text) if isinstance(d, dict) and d.get("kind")]
    assert [d["metadata"]["name"] for d in whole] == ["a", "b", "c"]
    assert render._documents(text) == whole
    again = render._documents(text)
    assert again == whole and again[0] is not render._documents(text)[0]  # fresh objects every time


@needs_helm
def test_the_tests_own_helm_commands_are_answered_from_the_cache_until_the_chart_changes(tiny):
    from tests import helm_cache

    args = ["template", "t", helm_cache.CHART, "-f", helm_cache.VALUES]
    first = helm_cache.run(HELM, args, tiny, {"greeting": "hi"})
    assert first.returncode == 0 and 'greeting: "hi"' in first.stdout
    (entry,) = _entries()
    entry.write_text(entry.read_text().replace('\\"hi\\"', '\\"from-the-cache\\"'))
    assert 'greeting: "from-the-cache"' in helm_cache.run(HELM, args, tiny, {"greeting": "hi"}).stdout  # helm not run
    (tiny / "templates/cm.yaml").write_text(CHART["templates/cm.yaml"] + "  extra: x\n")
    again = helm_cache.run(HELM, args, tiny, {"greeting": "hi"})
    assert 'greeting: "hi"' in again.stdout and "extra: x" in again.stdout  # the chart changed: helm ran
    # A failure is kept too, and reads back with this call's paths.
    bad = ["lint", "--strict", helm_cache.CHART, "-f", helm_cache.VALUES]
    (tiny / "templates/broken.yaml").write_text("{{ .Values.nope.deeper }}\n")
    failed = helm_cache.run(HELM, bad, tiny, {})
    cached = helm_cache.run(HELM, bad, tiny, {})
    assert failed.returncode == cached.returncode != 0
    assert (failed.stdout + failed.stderr).replace(failed.args[-1], "V") == (cached.stdout + cached.stderr).replace(cached.args[-1], "V")
    assert str(tiny) in cached.stdout + cached.stderr


def _signature_by_os_walk(folder: Path) -> tuple:
    """The chart tree's signature as os.walk and os.path.relpath read it."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
                entries.append((os.path.relpath(path, folder), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
            except OSError:
                entries.append((os.path.relpath(path, folder), -1, 0, 0, 0))
    return tuple(entries)


def test_the_tree_signature_is_os_walks(tmp_path):
    """The render cache's change detector walks chart folders its own (faster) way; it must see
    what os.walk sees, in its order: every pinned chart source, and a tree with a linked
    folder, a linked file and a dangling link."""
    tree = tmp_path / "chart"
    (tree / "templates" / "sub").mkdir(parents=True)
    (tree / "Chart.yaml").write_text("name: x\n")
    (tree / "templates" / "a.yaml").write_text("a: 1\n")
    (tree / "templates" / "sub" / "b.yaml").write_text("b: 2\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "c.yaml").write_text("c: 3\n")
    (tree / "charts").symlink_to(tmp_path / "elsewhere")
    (tree / "values.yaml").symlink_to(tree / "Chart.yaml")
    (tree / "gone.yaml").symlink_to(tmp_path / "nowhere")
    assert render._tree_signature(tree) == _signature_by_os_walk(tree)
    assert [e[0] for e in render._tree_signature(tree)] == [
        "Chart.yaml", "gone.yaml", "values.yaml", "charts/c.yaml", "templates/a.yaml", "templates/sub/b.yaml"]
    sources = [d for root in render.CHART_SOURCES if root.is_dir() for d in sorted(root.iterdir()) if d.is_dir()]
    for chart in sources:
        assert render._tree_signature(chart) == _signature_by_os_walk(chart), chart
