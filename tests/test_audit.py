"""The address audit finds planted literals and passes on this repository."""

from __future__ import annotations

import subprocess
import sys

from sophia_infra.tools import audit
from tests.conftest import ROOT


def ip(*parts: str, sep: str = ".") -> str:
    """Planted literals are assembled at run time, so this file passes its own audit."""
    return sep.join(parts)


PRIVATE, OTHER, V6, PUBLIC_V6, DNS = ip("10", "1", "2", "3"), ip("172", "20", "0", "5"), ip("fd00", "", "12", sep=":"), \
    ip("2600", "1f18", "", "1", sep=":"), ip("8", "8", "8", "8")


def test_finds_planted_literals(tmp_path):
    (tmp_path / "a.py").write_text(f'HOST = "{PRIVATE}"\nURL = "http://{OTHER}:8080/x"\nV6 = "{V6}"\n')
    (tmp_path / "b.yaml").write_text(f"endpoint: https://[{PUBLIC_V6}]/\nok: 203.0.113.10\n")
    (tmp_path / "c.txt").write_text("pulumi==3.272.0\nshellcheck-py==0.11.0.1\nloop: 127.0.0.1 any: 0.0.0.0/0\n")
    found = {(f.path.name, f.line, f.literal) for f in audit.audit([tmp_path], tmp_path / "none")}
    assert found == {("a.py", 1, PRIVATE), ("a.py", 2, OTHER), ("a.py", 3, V6), ("b.yaml", 1, PUBLIC_V6)}


def test_allowlist_accepts_listed_networks(tmp_path):
    (tmp_path / "a.py").write_text(f'POD = "10.42.0.0/16"\nHOST = "{PRIVATE}"\n')
    allow = tmp_path / "allow"
    allow.write_text("10.42.0.0/16  # pods\n")
    assert [f.literal for f in audit.audit([tmp_path / "a.py"], allow)] == [PRIVATE]


def test_not_fooled_by_versions_and_times():
    text = "version: v1.34.2+k3s1\nat: 12:30:00\nchart: 0.29.0\nsha: 1.2.3.4.5\n"
    assert audit.scan_text(text, ROOT / "x", []) == []


def test_cli_exit_codes(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(f'ADDR = "{DNS}"\n')
    proc = subprocess.run([sys.executable, "-m", "sophia_infra", "audit", str(bad)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and f"{bad}:1: {DNS}" in proc.stdout


def test_this_repository_has_no_hard_coded_addresses():
    proc = subprocess.run([sys.executable, "-m", "sophia_infra", "audit", "."], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_a_missing_path_is_not_a_pass(tmp_path):
    import pytest
    with pytest.raises(audit.AuditError, match="does not exist; give files or folders to scan"):
        audit.audit([tmp_path, tmp_path / "nope"], tmp_path / "none")


def test_a_bad_allowlist_entry_is_named(tmp_path):
    import pytest
    allow = tmp_path / "allow"
    allow.write_text("# header\n10.42.0.0/16\n10.42.0.0/33  # typo\n")
    with pytest.raises(audit.AuditError, match=r"allow:3: '10.42.0.0/33' is not an address or CIDR range"):
        audit.load_allowlist(allow)


def test_an_impossible_prefix_is_still_a_literal_not_a_crash(tmp_path):
    src = tmp_path / "conf.py"
    src.write_text(f"NET = '{ip('8', '8', '4', '4')}/33'\n")
    allow = tmp_path / "allow"
    allow.write_text("")
    findings = audit.audit([src], allow)
    assert len(findings) == 1 and f"{ip('8', '8', '4', '4')}/33" in str(findings[0])


def test_the_pulled_charts_are_not_the_projects_files(tmp_path):
    """A plain clone after `charts --pull` holds upstream charts in .cache/charts (their CRDs quote
    RFC section numbers, their tests real resolvers): not this project's literals to move."""
    (tmp_path / "own.py").write_text(f'ADDR = "{DNS}"\n')
    pulled = tmp_path / ".cache" / "charts" / "cert-manager-v1.21.1" / "templates"
    pulled.mkdir(parents=True)
    (pulled / "crd.yaml").write_text(f"description: see {DNS}\n")
    assert [f.path.name for f in audit.audit([tmp_path], tmp_path / "none")] == ["own.py"]
