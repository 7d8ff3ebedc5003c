"""`python -m sophia_infra`: every expected failure is one sentence on stderr with an exit
code that tells "could not check" (2) from "check failed" (1); the codes are in --help."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

import pytest

from sophia_infra import __main__ as cli
from tests.conftest import ROOT
from tests.platform_helpers import share_render_cache


def _project(tmp_path: Path, edit: Optional[Callable[[str], str]] = None, stack: str = "production",
             esc_edit: Optional[Callable[[str], str]] = None) -> Path:
    """A copy of what the CLI reads (package, stack files, ESC definitions), one file edited."""
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copytree(ROOT / "sophia_infra", proj / "sophia_infra")  # with its bytecode: no compiling again
    shutil.copytree(ROOT / "esc", proj / "esc")
    shutil.copy(ROOT / "__main__.py", proj)
    for stack_file in ROOT.glob("Pulumi*.yaml"):
        shutil.copy(stack_file, proj)
    if edit:
        path = proj / f"Pulumi.{stack}.yaml"
        path.write_text(edit(path.read_text()))
    if esc_edit:
        path = proj / "esc" / f"sophia-ai-{stack}.yaml"
        path.write_text(esc_edit(path.read_text()))
    return proj


def _no_aws_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No credentials anywhere botocore looks, and no instance-metadata lookup (no traffic)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(HOME=str(tmp_path), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_EC2_METADATA_DISABLED="true", AWS_MAX_ATTEMPTS="1", **extra)
    return env


def _run(args: list[str], cwd: Path = ROOT, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sophia_infra", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _one_line(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, proc.stderr
    return err


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _local_etcd_endpoint(port: int) -> Callable[[str], str]:
    return lambda t: t.replace("endpoint: s3.us-east-1.amazonaws.com", f"endpoint: '127.0.0.1:{port}'")


# ----------------------------------------------------------------------------- bad input: exit 2

def test_top_level_typo_stops_the_plan(tmp_path):
    proj = _project(tmp_path, lambda t: t.replace("  sophia:services:", "  sophia:service:"))
    proc = _run(["plan", "--stack", "production", "--out", str(tmp_path / "out")], cwd=proj)
    assert proc.returncode == 2
    assert "sophia:service: is not a key this program reads; did you mean sophia:services?" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_top_level_typo_stops_describe(tmp_path):
    proj = _project(tmp_path, lambda t: t.replace("  sophia:delivery: argocd", "  sophia:delivery: argocd\n  sophia:platfrom: {valkey: {replicas: 3}}"))
    proc = _run(["describe", "--stack", "production", "backend"], cwd=proj)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[1] == "  - sophia:platfrom: is not a key this program reads; did you mean sophia:platform?"


@pytest.mark.parametrize("command", [["plan", "--stack", "production"], ["describe", "--stack", "production", "backend"],
                                     ["backups", "--stack", "production"]])
def test_yaml_syntax_error_is_one_located_line(tmp_path, command):
    proj = _project(tmp_path, lambda t: t.replace("    firewall: true\n", "    firewall: true\n\tapiDnsName: x\n"))
    proc = _run(command + (["--out", str(tmp_path / "out")] if command[0] == "plan" else []), cwd=proj)
    assert proc.returncode == 2
    line = _one_line(proc)
    assert line.startswith("Pulumi.production.yaml:")
    where, what = line.split(": ", 1)
    number = int(where.split(":")[1])
    assert "\tapiDnsName" in (proj / "Pulumi.production.yaml").read_text().splitlines()[number - 1]
    assert what == "found character '\\t' that cannot start any token; indent with spaces, not tabs"


def test_unclosed_brace_in_esc_is_one_located_line(tmp_path):
    proj = _project(tmp_path, esc_edit=lambda t: t.replace("{address: 203.0.113.10}", "{address: 203.0.113.10"))
    proc = _run(["plan", "--stack", "production", "--out", str(tmp_path / "out")], cwd=proj)
    assert proc.returncode == 2
    line = _one_line(proc)
    assert line.startswith("esc/sophia-ai-production.yaml:") and "expected ',' or '}'" in line
    assert "while parsing a flow mapping that starts at line" in line


def test_audit_of_a_missing_path(tmp_path):
    proc = _run(["audit", "/no/such/path"])
    assert proc.returncode == 2
    assert _one_line(proc) == "error: /no/such/path does not exist; give files or folders to scan"


def test_audit_with_a_bad_allowlist(tmp_path):
    (tmp_path / "a.txt").write_text("nothing here\n")
    (tmp_path / "allow").write_text("10.42.0.0/16  # pods\nnot-a-cidr\n")
    proc = _run(["audit", str(tmp_path / "a.txt"), "--allowlist", str(tmp_path / "allow")])
    assert proc.returncode == 2
    assert _one_line(proc) == f"error: {tmp_path / 'allow'}:2: 'not-a-cidr' is not an address or CIDR range; write one CIDR per line, `# why` after it"
    proc = _run(["audit", str(tmp_path / "a.txt"), "--allowlist", str(tmp_path / "missing")])
    assert proc.returncode == 2 and "missing does not exist" in _one_line(proc)


def test_unknown_service(tmp_path):
    proc = _run(["describe", "--stack", "dev", "nope"])
    assert proc.returncode == 2 and _one_line(proc).startswith("error: stack 'dev' has no service 'nope'; use one of backend, frontend")


def test_outputs_without_the_pulumi_cli(tmp_path):
    proc = _run(["outputs", "--stack", "production"], env={**os.environ, "PATH": str(tmp_path)})
    assert proc.returncode == 2
    assert _one_line(proc).startswith("error: the Pulumi CLI is not installed or not on PATH; install it")


@pytest.mark.parametrize("command", [["describe", "--stack", "staging"], ["plan", "--stack", "staging", "--out", "unused"],
                                     ["backups", "--stack", "staging"], ["outputs", "--stack", "staging"],
                                     ["etcd-restore", "--stack", "staging", "--snapshot", "s"], ["capacity", "--stack", "staging"],
                                     ["charts", "--stack", "staging"]])
def test_an_unknown_stack_is_refused_with_the_valid_ones(command, capsys):
    assert cli.main(command) == 2
    assert capsys.readouterr().err == ("error: there is no stack 'staging' (Pulumi.staging.yaml does not exist); "
                                       "use one of dev, production\n")


@pytest.mark.parametrize("command, lacks", [("plan", "pulumi, pulumi_kubernetes, pydantic, yaml"),
                                             ("describe", "pydantic, yaml")])  # describe needs no SDK
def test_outside_the_virtualenv_it_says_how_to_get_in(command, lacks):
    # -S: no site-packages, so none of the dependencies; the package itself is found in the cwd.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run([sys.executable, "-S", "-m", "sophia_infra", command, "--stack", "dev"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    line = _one_line(proc)
    assert line.startswith(f"error: {sys.executable} lacks the project's dependencies ({lacks});")
    assert "run `make setup` once, then `.venv/bin/python -m sophia_infra ...` (or `. .venv/bin/activate` first)." in line


def _pins(name: str) -> dict[str, str]:
    """{normalised distribution name: version} of a requirements file's `name==version` lines."""
    lines = (ROOT / name).read_text().splitlines()
    return {line.split("==")[0].strip().lower().replace("-", "_"): line.split("==")[1].split()[0].strip(" \\")
            for line in lines if "==" in line and not line.lstrip().startswith("#")}


def test_the_dependencies_checked_are_the_pinned_ones():
    pinned = _pins("requirements.txt")
    assert {"pyyaml" if d == "yaml" else d for d in cli.DEPENDENCIES} <= set(pinned)
    assert cli.missing_dependencies() == []
    assert {"pyyaml" if d == "yaml" else d for d in cli.CONFIG_DEPENDENCIES} <= set(_pins("requirements-config.in"))


def _sources(name: str) -> dict[str, str]:
    """The pins a pip-compile input names, following its `-r file` lines."""
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        if line.startswith("-r "):
            pins.update(_pins(str(Path(name).parent / line[3:].strip())))
    return {**pins, **_pins(name)}


@pytest.mark.parametrize("compiled", ["requirements-config.txt", "requirements-locked.txt"])
def test_hashed_requirements_are_complete_and_pin_what_the_tests_run(compiled):
    """The hashed installs of the release and deploy jobs (pip-compile output, installed with
    --require-hashes --no-deps) hold the versions the sources pin and the tests run, a hash for
    every distribution, and every dependency of every distribution they hold."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins, sources = _pins(compiled), _sources(compiled.replace(".txt", ".in"))
    assert sources and sources.items() <= pins.items()
    assert {k: v for k, v in _pins("requirements.txt").items() if k in sources} == \
        {k: v for k, v in sources.items() if k in _pins("requirements.txt")}
    for name, version in pins.items():
        # setuptools: the virtualenv's own satisfies pulumi-policy's unversioned requirement here.
        assert name == "setuptools" or metadata.version(name) == version, name
    blocks = (ROOT / compiled).read_text().split("==")[1:]
    assert len(blocks) == len(pins) and all("--hash=sha256:" in block for block in blocks)
    held = {canonicalize_name(n) for n in pins}
    for name in pins:
        for spec in metadata.requires(name) or ():
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                assert canonicalize_name(req.name) in held, f"{compiled}: {name} needs {req.name}"


# ----------------------------------------------------------------------------- backups: could not check vs stale

def test_backups_without_credentials(tmp_path):
    port = _closed_port()  # nothing is contacted: botocore stops at signing
    proj = _project(tmp_path, _local_etcd_endpoint(port))
    proc = _run(["backups", "--stack", "production"], cwd=proj, env=_no_aws_env(tmp_path))
    assert proc.returncode == 2
    assert _one_line(proc) == (
        f"error: cannot check the etcd snapshots in s3://sophia-ai-backups (https://127.0.0.1:{port}): no S3 credentials "
        "were found; run it inside the stack's ESC environment (`pulumi env run sophia-ai/<stack> -- python -m "
        "sophia_infra backups --stack <stack>`) or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")


def test_backups_with_an_unreachable_endpoint(tmp_path):
    port = _closed_port()
    proj = _project(tmp_path, _local_etcd_endpoint(port))
    env = _no_aws_env(tmp_path, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    proc = _run(["backups", "--stack", "production"], cwd=proj, env=env)
    assert proc.returncode == 2
    assert _one_line(proc).endswith("the endpoint cannot be reached (EndpointConnectionError); "
                                    "check sophia:k3s.etcdS3.endpoint and the network")


def test_stale_backups_are_a_failed_check(monkeypatch, capsys):
    from sophia_infra.tools import backups

    stale = [backups.Target("etcd snapshot", "b", 12, None)]
    monkeypatch.setattr(backups, "targets_for", lambda cfg: stale)
    assert cli.main(["backups", "--stack", "production"]) == 1
    assert capsys.readouterr().out.strip() == "FAIL etcd snapshot: none found in s3://b"


# ----------------------------------------------------------------------------- plan: policy violations fail the check

def test_policy_violations_fail_the_plan(monkeypatch, tmp_path, capsys):
    from sophia_infra.tools.plan import report

    monkeypatch.setattr(report, "policy_violations",
                        lambda result, advisory=False: [] if advisory else [("urn:x", "pinned-images", "-/x: unpinned")])
    assert cli.main(["plan", "--stack", "dev", "--out", str(tmp_path / "out")]) == 1
    assert (tmp_path / "out" / "plan.json").is_file()  # the artefacts are still written, for review
    assert "[pinned-images] -/x: unpinned" in capsys.readouterr().out


def test_clean_plan_is_ok(tmp_path, capsys):
    assert cli.main(["plan", "--stack", "dev", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1].startswith("Plan of stack 'dev' OK:")
    assert (tmp_path / "out" / "placement.md").read_text().startswith("**Plan of stack 'dev' OK:")


def test_a_failed_plan_ends_with_why(tmp_path):
    """nodeCidrs that leave out the worker: Prometheus cannot scrape its node-exporter (a
    hostNetwork pod, so its node's address) and the plan says so last, one line per failure,
    on stderr and at the top of placement.md."""
    proj = _project(tmp_path, stack="dev", edit=lambda t: t.replace(
        "  sophia:platform:\n", "  sophia:platform:\n    network: {nodeCidrs: [198.51.100.10/32]}\n", 1))
    for folder in ("releases", "policy", "charts"):  # what the full plan reads besides the config
        shutil.copytree(ROOT / folder, proj / folder, ignore=shutil.ignore_patterns("__pycache__"))
    # The pinned charts, found from the copy where the project finds them.
    if (ROOT.parent / "shared").exists():
        (tmp_path / "shared").symlink_to(ROOT.parent / "shared")
    if (ROOT / ".cache").exists():
        (proj / ".cache").symlink_to(ROOT / ".cache")
    share_render_cache(proj)
    proc = _run(["plan", "--stack", "dev", "--out", str(tmp_path / "out")], cwd=proj)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("Plan of stack 'dev' FAILED: "))
    failures = lines[head + 1:]
    assert lines[head] == f"Plan of stack 'dev' FAILED: {len(failures)} problem(s)"
    assert any(f.startswith("  - required flow denied: Prometheus -> ServiceMonitor nvidia-gpu/kube-prometheus-stack-prometheus-node-exporter")
               and "on sophia-dev-a10" in f for f in failures)
    placement = (tmp_path / "out" / "placement.md").read_text().splitlines()
    assert placement[0] == f"**{lines[head]}**" and placement[1:1 + len(failures)] == failures


# ----------------------------------------------------------------------------- --help documents the codes

def _subcommands() -> dict[str, str]:
    """Each subcommand argparse knows, with its one-line summary."""
    (sub,) = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return {a.dest: a.help for a in sub._get_subactions()}


def test_help_lists_every_command_on_one_line(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    lines = cli.build_parser().format_help().splitlines()
    commands = _subcommands()
    assert len(commands) == 10
    for name, summary in commands.items():
        assert summary and len(summary) <= cli.SUMMARY_MAX
        assert any(re.fullmatch(rf"    {re.escape(name)} +{re.escape(summary)}", line) for line in lines), name
    # Nothing else is listed as a command, and the description names none on its own.
    listed = [line.split()[0] for line in lines if re.match(r"    \S", line)]
    assert listed == list(commands)
    assert "plan, outputs" not in cli.build_parser().description


def test_help_lists_the_exit_codes():
    proc = _run(["--help"])
    assert proc.returncode == 0
    assert "exit codes:" in proc.stdout and "1  the check ran and failed" in proc.stdout and "2  could not check" in proc.stdout


@pytest.mark.parametrize("command,phrase", [("plan", "1 planned and a check failed"), ("backups", "1 a backup is stale or missing"),
                                            ("audit", "1 address literals found"), ("outputs", "2 not read"),
                                            ("describe", "2 invalid configuration or unknown service")])
def test_each_command_documents_its_codes(command, phrase):
    proc = _run([command, "--help"])
    text = " ".join(proc.stdout.split())
    assert proc.returncode == 0 and "exit codes: 0" in text and phrase in text
