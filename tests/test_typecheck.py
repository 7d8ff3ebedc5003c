"""The type-check (`make typecheck`, pyright) really checks the program against the pinned SDKs.

`make test` runs it before pytest; these tests make sure it cannot pass by checking nothing:
a wrong argument name to a provider is an error, the right one is not, and the configuration
covers the whole program."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "pyrightconfig.json"

# Each line marked `# wrong` must be reported, every other line must not.
PROBE = '''\
import pulumi
import pulumi_command.remote as remote
import pulumi_kubernetes as k8s

conn = remote.ConnectionArgs(host="192.0.2.10", user="ubuntu")
remote.Command("x", connection=conn, create="true", trigger=[1])  # wrong
remote.Command("y", connection=conn, create="true", triggers=[1])
k8s.helm.v3.Release("r", chart="c", skip_crd=True)  # wrong
k8s.helm.v3.Release("s", chart="c", skip_crds=True)
k8s.core.v1.Namespace("n", metadata={"name": "n"}, opts=pulumi.ResourceOptions(depend_on=[]))  # wrong
k8s.core.v1.Namespace("m", metadata={"name": "m"}, opts=pulumi.ResourceOptions(depends_on=[]))
'''


def _pyright(*args: str) -> dict:
    """pyright's JSON report, with the project's configuration (its .venv, its mode)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pyright", "--outputjson", "--project", str(CONFIG), *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "PYRIGHT_PYTHON_IGNORE_WARNINGS": "1"},  # no PyPI "newer version" look-up
    )
    assert proc.stdout, f"pyright printed no report (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(proc.stdout)


def test_a_wrong_argument_name_to_a_provider_is_an_error(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    report = _pyright(str(probe))
    errors = [d for d in report["generalDiagnostics"] if d["severity"] == "error"]
    reported = sorted({d["range"]["start"]["line"] + 1 for d in errors})
    wrong = [i for i, line in enumerate(PROBE.splitlines(), 1) if line.endswith("# wrong")]
    assert reported == wrong, "\n".join(f"{d['range']['start']['line'] + 1}: {d['message']}" for d in errors)
    # Resolved against the real SDKs in .venv (an unresolved import would make every call Unknown).
    assert not any(d.get("rule") == "reportMissingImports" for d in report["generalDiagnostics"])


def test_the_configuration_covers_the_program_and_make_test_runs_it():
    cfg = json.loads(CONFIG.read_text())
    assert {"sophia_infra", "__main__.py", "policy"} <= set(cfg["include"])
    assert cfg.get("typeCheckingMode") in ("standard", "strict")
    assert cfg.get("venv") == ".venv"
    makefile = (ROOT / "Makefile").read_text()
    (rule,) = re.findall(r"^test:.*\n(?:\t.*\n)*", makefile, re.M)  # the prerequisites and the recipe
    assert re.search(r"\btypecheck\b", rule), "`make test` must run `typecheck`"
    assert re.search(r"^\t.*-m pyright\s*$", makefile, re.M)
    pins = (ROOT / "requirements-dev.txt").read_text()
    assert re.search(r"^pyright(\[nodejs\])?==\d", pins, re.M), "pin pyright in requirements-dev.txt"
