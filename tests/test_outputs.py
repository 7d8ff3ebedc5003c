"""Reading stack outputs for other code, against recorded `pulumi stack output --json`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sophia_infra.tools import outputs
from tests.conftest import ROOT

RECORDED = ROOT / "tests" / "data" / "stack-output-production.json"


def _fake_pulumi(tmp_path, body: str):
    exe = tmp_path / "pulumi"
    exe.write_text("#!/bin/bash\necho \"$*\" > \"$(dirname \"$0\")/args\"\n" + body)
    exe.chmod(0o755)
    return exe


def test_reads_recorded_outputs_and_looks_up_a_node(tmp_path):
    exe = _fake_pulumi(tmp_path, f"cat {RECORDED}\n")
    data = outputs.read_outputs("production", pulumi=str(exe))
    assert outputs.lookup(data, "nodeIps.sophia-mcp") == "203.0.113.12"
    assert outputs.lookup(data, "nodes.sophia-ai-core.arch") == "arm64"
    assert data["kubeconfig"] == "[secret]"
    assert (tmp_path / "args").read_text().split() == ["stack", "output", "--json", "--stack", "production"]


def test_show_secrets_is_passed_on(tmp_path):
    exe = _fake_pulumi(tmp_path, "echo '{}'\n")
    outputs.read_outputs("production", show_secrets=True, pulumi=str(exe))
    assert "--show-secrets" in (tmp_path / "args").read_text()


def test_unknown_key_names_what_exists():
    data = json.loads(RECORDED.read_text())
    with pytest.raises(outputs.OutputsError, match="nodeIps has sophia-ai-core, sophia-control"):
        outputs.lookup(data, "nodeIps.sophia-gpu9")


def test_missing_stack(tmp_path):
    exe = _fake_pulumi(tmp_path, "echo \"error: no stack named 'staging' found\" >&2\nexit 255\n")
    with pytest.raises(outputs.OutputsError, match="stack 'staging' was not found"):
        outputs.read_outputs("staging", pulumi=str(exe))


def test_missing_cli(monkeypatch):
    monkeypatch.setattr(outputs.shutil, "which", lambda _: None)
    with pytest.raises(outputs.OutputsError, match="Pulumi CLI is not installed"):
        outputs.read_outputs("production")


def test_cli_prints_one_value(tmp_path):
    _fake_pulumi(tmp_path, f"cat {RECORDED}\n")
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    proc = subprocess.run([sys.executable, "-m", "sophia_infra", "outputs", "--stack", "production", "controlPlaneIp"],
                          cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "203.0.113.10"


def test_cli_without_pulumi_says_so(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "sophia_infra", "outputs", "--stack", "production"],
                          cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "Pulumi CLI is not installed" in proc.stderr


def test_the_public_path_finds_pulumi_on_path(tmp_path, monkeypatch):
    """What docs/outputs.md tells consumers to write: `pulumi` found on PATH, no argument."""
    from sophia_infra.outputs import lookup, read_outputs
    _fake_pulumi(tmp_path, f"cat {RECORDED}\n")
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert lookup(read_outputs("production"), "nodeIps.sophia-mcp") == "203.0.113.12"


def test_saved_json_is_parsed_and_bad_text_is_one_sentence():
    from sophia_infra.outputs import OutputsError, parse_outputs
    assert parse_outputs(RECORDED.read_text())["controlPlaneIp"] == "203.0.113.10"
    with pytest.raises(OutputsError, match="not JSON"):
        parse_outputs("error: no stack selected")
    with pytest.raises(OutputsError, match="did not print an object"):
        parse_outputs("[1, 2]")
