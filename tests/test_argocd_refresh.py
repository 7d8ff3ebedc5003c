"""scripts/argocd-refresh.sh and argocd-refresh.yml's step, against a real local HTTP server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests import yaml_c

SCRIPT = ROOT / "scripts" / "argocd-refresh.sh"
TOKEN = "argocd-test-token"


@pytest.fixture
def argocd():
    """A stand-in for argocd-server's API: records each request; 404 for an unknown Application."""
    seen: list[tuple[str, str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            seen.append(("GET", self.path, self.headers.get("Authorization")))
            found = not self.path.startswith("/api/v1/applications/gone?")
            self.send_response(200 if found else 404)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (GitHub's runners have it)")
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], "ARGOCD_TOKEN": TOKEN, **env})


def test_shellcheck_clean():
    exe = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    proc = subprocess.run([exe, str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_each_workload_is_refreshed_with_the_token(argocd):
    url, seen = argocd
    proc = _run(["bash", str(SCRIPT), url, "backend", "ai-memory"])
    assert proc.returncode == 0, proc.stderr
    assert seen == [("GET", "/api/v1/applications/backend?appNamespace=argocd&refresh=normal", f"Bearer {TOKEN}"),
                    ("GET", "/api/v1/applications/ai-memory?appNamespace=argocd&refresh=normal", f"Bearer {TOKEN}")]
    assert proc.stdout.splitlines() == ["asked Argo CD to refresh backend", "asked Argo CD to refresh ai-memory"]


def test_a_failed_refresh_warns_and_leaves_it_to_the_poll(argocd):
    url, seen = argocd
    proc = _run(["bash", str(SCRIPT), url, "gone", "backend"])
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == [
        "::warning::could not ask Argo CD to refresh gone; it rolls the change out at its next poll (within 3 minutes)",
        "asked Argo CD to refresh backend"]
    assert len(seen) == 2


def test_a_name_that_is_not_a_workload_is_not_sent(argocd):
    url, seen = argocd
    proc = _run(["bash", str(SCRIPT), url, "../../settings"])
    assert proc.returncode == 0 and seen == []
    assert proc.stdout.strip() == "::warning::'../../settings' is not a workload name; not refreshed"


def test_the_token_is_not_on_curls_command_line(argocd, tmp_path):
    """Other processes on the runner can read a command line: curl gets the token through a file."""
    url, seen = argocd
    real = shutil.which("curl")
    if real is None:
        pytest.skip("curl is not installed (GitHub's runners have it)")
    (tmp_path / "curl").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/argv\nexec {real} "$@"\n')
    (tmp_path / "curl").chmod(0o755)
    proc = _run(["bash", str(SCRIPT), url, "backend"], PATH=f"{tmp_path}:{os.environ['PATH']}")
    assert proc.returncode == 0 and seen[0][2] == f"Bearer {TOKEN}"  # it did reach the server
    assert TOKEN not in (tmp_path / "argv").read_text()


def test_the_workflow_refreshes_the_workloads_whose_release_files_a_push_changed(argocd, tmp_path):
    """argocd-refresh.yml's own step, with a push event as GitHub writes it."""
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed (GitHub's runners have it)")
    url, seen = argocd
    doc = yaml_c.load((ROOT / ".github" / "workflows" / "argocd-refresh.yml").read_text())
    assert doc[True] == {"push": {"branches": ["main"], "paths": ["releases/production/**"]}}
    (step,) = [s for s in doc["jobs"]["refresh"]["steps"] if "run" in s]
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"commits": [
        {"added": ["releases/production/ai-memory.yaml"], "modified": [], "removed": []},
        {"added": [], "modified": ["releases/production/backend.yaml", "releases/dev/backend.yaml", "README.md"],
         "removed": ["releases/production/gong.yaml"]},
        {"added": [], "modified": ["releases/production/backend.yaml"], "removed": []}]}))
    proc = _run(["bash", "-e", "-c", step["run"]], GITHUB_EVENT_PATH=str(event), ARGOCD_SERVER=url)
    assert proc.returncode == 0, proc.stderr
    assert [path.split("?")[0] for _, path, _ in seen] == ["/api/v1/applications/ai-memory",
                                                           "/api/v1/applications/backend"]
