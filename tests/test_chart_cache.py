"""Where the charts to render come from: ../shared/charts-src first, the pull cache second."""

from __future__ import annotations

import subprocess
import sys

from sophia_infra.tools.plan import chart_cache, render
from tests.conftest import ROOT


def test_pins_are_the_upstream_releases_the_plans_make():
    pins = chart_cache.pins(["dev", "production"])
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
    lines = proc.stdout.splitlines()
    assert len(lines) == len(chart_cache.pins(["dev", "production"]))
    kps = next(line for line in lines if line.startswith("kube-prometheus-stack-88.5.3"))
    if "lacks subcharts" in kps:
        assert "grafana" in kps
