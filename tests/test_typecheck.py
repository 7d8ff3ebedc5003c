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


def _pyright(*args: str, config: Path = CONFIG) -> dict:
    """pyright's JSON report, with the project's configuration (its .venv, its mode) or another."""
    proc = subprocess.run(
        [sys.executable, "-m", "pyright", "--outputjson", "--project", str(config), *args],
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
    (typecheck,) = re.findall(r"^typecheck:.*\n(?:\t.*\n)*", makefile, re.M)
    assert re.search(r"^\t.*-m sophia_infra\.tools\.typecheck\s*$", typecheck, re.M)
    pins = (ROOT / "requirements-dev.txt").read_text()
    assert re.search(r"^pyright(\[nodejs\])?==\d", pins, re.M), "pin pyright in requirements-dev.txt"


# A project shaped like this one: included folders and files, the config's excludes, the folders
# pyright leaves out by itself, and files outside `include`. Each file has one type error, so the
# files pyright reports are the files it checks.
_TINY_CONFIG = {"include": ["pkg", "main.py", "docs/examples"], "exclude": ["**/__pycache__", "build", "pkg/skip"]}
_TINY_FILES = ("pkg/__init__.py", "pkg/a.py", "pkg/sub/b.py", "pkg/stub.pyi", "main.py", "docs/examples/e.py",
               "pkg/skip/s.py", "pkg/.hidden/h.py", "pkg/node_modules/n.py", "pkg/__pycache__/c.py",
               "build/x.py", "tests/t.py", "other.py")


def _tiny_project(root: Path, error: bool = True) -> None:
    (root / "pyrightconfig.json").write_text(json.dumps(_TINY_CONFIG))
    for name in _TINY_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text('x: int = "not an int"\n' if error else "x: int = 1\n")


def test_the_files_the_kept_verdict_depends_on_are_the_files_pyright_checks(tmp_path):
    from sophia_infra.tools import typecheck
    _tiny_project(tmp_path)
    report = _pyright(config=tmp_path / "pyrightconfig.json")
    reported = {Path(d["file"]).relative_to(tmp_path).as_posix() for d in report["generalDiagnostics"]}
    assert reported == {"pkg/__init__.py", "pkg/a.py", "pkg/sub/b.py", "pkg/stub.pyi", "main.py", "docs/examples/e.py"}
    assert {p.relative_to(tmp_path).as_posix() for p in typecheck.checked_files(tmp_path)} == reported
    assert report["summary"]["filesAnalyzed"] == len(reported)


def test_the_key_changes_with_what_pyright_reads_and_only_with_it(tmp_path):
    from sophia_infra.tools import typecheck
    _tiny_project(tmp_path, error=False)
    key = typecheck.input_key(tmp_path)
    for ignored in ("pkg/skip/s.py", "pkg/.hidden/h.py", "build/x.py", "tests/t.py", "other.py", "pkg/a.txt"):
        (tmp_path / ignored).write_text("changed = True\n")
        assert typecheck.input_key(tmp_path) == key, ignored
    for read in ("pkg/a.py", "pkg/new.py", "main.py", "pkg/stub.pyi", "docs/examples/e.py", "typings/lib.pyi"):
        (tmp_path / read).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / read).write_text("changed: bool = True\n")
        assert typecheck.input_key(tmp_path) != key, read
        key = typecheck.input_key(tmp_path)
    (tmp_path / "pkg/new.py").unlink()
    assert typecheck.input_key(tmp_path) != key
    key = typecheck.input_key(tmp_path)
    (tmp_path / "pyrightconfig.json").write_text(json.dumps({**_TINY_CONFIG, "typeCheckingMode": "strict"}))
    assert typecheck.input_key(tmp_path) != key


def test_the_key_changes_with_the_installed_packages(monkeypatch):
    from sophia_infra.tools import typecheck
    key = typecheck.input_key()
    real = typecheck.installed_distributions()
    assert any(d.startswith("pyright-") for d in real) and any(d.startswith("pulumi-") for d in real)
    monkeypatch.setattr(typecheck, "installed_distributions",
                        lambda: [d if not d.startswith("pulumi-") else "pulumi-0.0.1.dist-info" for d in real])
    assert typecheck.input_key() != key


def test_a_clean_verdict_is_kept_and_a_failing_one_is_not(tmp_path, monkeypatch, capsys):
    """What check does with pyright's answers (pyright itself answers in the test above; here a
    stand-in answers as it does: exit 1 and a report when a checked file has an error)."""
    from sophia_infra.tools import typecheck
    runs = []

    def pyright(command, cwd, **_):
        runs.append(command)
        broken = [p for p in typecheck.checked_files(Path(cwd)) if '"' in p.read_text()]
        return subprocess.CompletedProcess(command, 1 if broken else 0, f"{len(broken)} errors, 0 warnings\n")

    monkeypatch.setattr(typecheck.subprocess, "run", pyright)
    _tiny_project(tmp_path, error=True)
    assert typecheck.check(tmp_path) == 1 and len(runs) == 1
    assert capsys.readouterr().out == "6 errors, 0 warnings\n"
    assert not (tmp_path / "build" / "typecheck").exists()  # a failure is never kept
    _tiny_project(tmp_path, error=False)
    assert typecheck.check(tmp_path) == 0 and len(runs) == 2
    assert runs[-1][1:] == ["-m", "pyright"]  # the project's own configuration, no arguments
    assert capsys.readouterr().out == "0 errors, 0 warnings\n"
    assert typecheck.check(tmp_path) == 0 and len(runs) == 2  # kept: pyright does not start
    again = capsys.readouterr().out
    assert again.startswith("typecheck: nothing pyright reads has changed") and again.endswith("\n0 errors, 0 warnings\n")
    assert typecheck.check(tmp_path, ("pkg/a.py",)) == 0 and len(runs) == 3  # with arguments it always runs
    (tmp_path / "pkg/a.py").write_text('x: int = "broken again"\n')
    assert typecheck.check(tmp_path) == 1 and len(runs) == 4  # a changed file is checked again
