"""Benchmark of the offline plan: wall time and longest dependency chain per stack.

`make bench` (or `python -m sophia_infra.tools.bench`) prints, for dev, production and a
generated large stack (100 workers, 100 MCP servers), the plan's wall time, its resource
count and its longest chain of dependencies (what `pulumi up` must do one after the
other). It prints figures; it asserts nothing.

Then, side by side in one run, each measured in a fresh interpreter (`python -c`), several
times, the median: the import floor (merely importing the SDK modules the plan loads, in the
order it loads them), the plan of production without the rendering checks (run the program
under mocks, write the report), the plan with them (helm template of the real charts, flows,
Pod Security) from the render cache, the plan command itself, the plan cold (an empty render
cache), and the large stack's plan; and the ratios. Every child starts and ends the same way
(Python's bytecode cache on, the heap frozen at exit as the CLI does). Last, the production
plan's own phases (imports, run, report) as measured inside its interpreter.

`make bench-tests` (`python -m sophia_infra.tools.bench tests [--cold]`) times the test suite as
`make test` runs it (pyright beside pytest's parallel workers): its wall time, the CPU time of
everything it ran, the tests' counts and the five slowest tests; `--cold` runs it without what a
warm run reuses (render cache, checkov's and pyright's kept verdicts, the last durations: set aside meanwhile
and put back after).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path

from sophia_infra.tools.plan import ordering, runner, stack_config

GPU_ROTATION = ("A6000", "A100", "A10", "GH200")


def large_stack(workers: int = 100, mcp_servers: int = 100) -> tuple[dict[str, str], list[str]]:
    """Production's config grown to `workers` GPU workers and `mcp_servers` MCP servers."""
    config, secret_keys = stack_config.load("production")
    nodes = json.loads(config["sophia:nodes"])[:1]
    hosts = {nodes[0]["name"]: {"address": "198.51.100.1"}}
    addresses = (str(a) for net in ("198.51.100.0/24", "203.0.113.0/24") for a in ipaddress.ip_network(net).hosts())
    next(addresses)
    for i in range(workers):
        gpu = GPU_ROTATION[i % len(GPU_ROTATION)]
        name = f"worker-{i:03d}"
        nodes.append({"name": name, "role": "worker", "arch": "arm64" if gpu == "GH200" else "amd64",
                      "gpu": {"type": gpu, "count": 1, "sharing": 4}})
        hosts[name] = {"address": next(addresses)}
    # Production's own workloads (their images come from its release files) plus generated MCP
    # servers, which pin their tags in the config, up to `mcp_servers` MCP servers.
    own = json.loads(config["sophia:services"])
    services = [s for s in own if s["kind"] == "app"] + [s for s in own if s["kind"] == "mcp"][:mcp_servers]
    for i in range(mcp_servers - sum(s["kind"] == "mcp" for s in services)):
        gpu = GPU_ROTATION[i % len(GPU_ROTATION)]
        services.append({"name": f"mcp-{i:03d}", "kind": "mcp", "replicas": 1, "placement": {"gpuType": gpu},
                         "image": {"repository": f"docker.io/scoobyjava15/sophia-mcp-{i:03d}", "tag": "1.0.0",
                                   "platforms": ["linux/amd64", "linux/arm64"]},
                         "secrets": {"SLACK_BOT_TOKEN": "slackBotToken"}})
    config = {**config, "sophia:nodes": json.dumps(nodes), "sophia:hosts": json.dumps(hosts),
              "sophia:services": json.dumps(services)}
    return config, secret_keys


def longest_chain(resources) -> list[str]:
    """The longest path through the dependency graph of real (custom) resources, first to
    last. Depending on a component means waiting for everything inside it, as the engine does;
    a component's children wait for what it waits for (sophia_infra.tools.plan.ordering)."""
    children: dict[str, list[str]] = {}
    for r in resources:
        children.setdefault(r.parent, []).append(r.urn)
    custom = {r.urn for r in resources if r.custom}

    def expand(urn: str) -> list[str]:
        if urn in custom:
            return [urn]
        return [d for c in children.get(urn, []) for d in expand(c)]

    # What each waits for: its dependencies, its provider and what its parent components wait for.
    direct = ordering.waits_for(resources)
    deps = {r.urn: sorted({e for d in direct[r.urn] for e in expand(d)}) for r in resources if r.custom}
    names = {r.urn: r.name for r in resources}

    @lru_cache(maxsize=None)
    def chain(urn: str) -> tuple[str, ...]:
        best: tuple[str, ...] = ()
        for d in deps.get(urn, []):
            c = chain(d)
            if len(c) > len(best):
                best = c
        return best + (urn,)

    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    longest = max((chain(u) for u in deps), key=len, default=())
    return [names.get(u, u) for u in longest]


def measure(label: str, stack: str, config=None, secret_keys=None) -> dict:
    start = time.perf_counter()
    result = runner.run(stack, config=config, secret_keys=secret_keys)
    seconds = time.perf_counter() - start
    chain = longest_chain(result.resources)
    return {"stack": label, "seconds": seconds, "resources": len(result.resources) - 1, "chain": chain}


SDK_PACKAGES = ("pulumi", "pulumi_kubernetes", "pulumi_command", "pulumi_random", "pulumi_tls", "grpc",
                "google", "pydantic", "pydantic_core", "yaml", "dill")
REPEAT = 7

# Each child is timed by the parent, from interpreter start-up to its exit.
_CHILD = """
import atexit, gc
atexit.register(gc.freeze)  # every child ends as the CLI does (exit_without_collecting), the floor too
import sys, time, tempfile
from pathlib import Path
mode, stack = sys.argv[1], sys.argv[2]
if mode == "modules":
    from sophia_infra.tools.plan import report, runner
    result = runner.run(stack)
    report.write(result, Path(tempfile.mkdtemp()), [])
    # In the order the plan loaded them (sys.modules keeps it), as the floor will import them.
    print(" ".join(m for m in list(sys.modules) if m.split(".")[0] in sys.argv[3:]))
    raise SystemExit
if mode == "floor":
    import importlib
    for m in sys.argv[3:]:
        try:
            importlib.import_module(m)
        except Exception:
            pass
    raise SystemExit
if mode == "phases":  # where a plan's time goes, printed by the child as JSON
    import json
    marks = [time.perf_counter()]
    from sophia_infra.tools.plan import report, runner
    runner.load_program()
    marks.append(time.perf_counter())
    with runner.frozen_heap():
        result = runner.run(stack)
        marks.append(time.perf_counter())
        report.write(result, Path(tempfile.mkdtemp()), [])
        marks.append(time.perf_counter())
    print(json.dumps(dict(zip(("imports", "run", "report"), (b - a for a, b in zip(marks, marks[1:]))))))
    raise SystemExit
if mode == "command":  # the plan as operators run it: python -m sophia_infra plan
    import contextlib, io
    from sophia_infra.__main__ import main
    with contextlib.redirect_stdout(io.StringIO()):
        main(["plan", "--stack", stack, "--out", tempfile.mkdtemp()])
    raise SystemExit
from sophia_infra.tools.plan import report, runner
with runner.frozen_heap():  # as the plan command runs
    if mode == "large":
        from sophia_infra.tools.bench import large_stack
        config, secret_keys = large_stack()
        result = runner.run(stack, config=config, secret_keys=secret_keys)
    else:
        result = runner.run(stack)
    lines = []
    if mode in ("cached", "cold"):
        from sophia_infra.tools.plan import render, verify
        if mode == "cold":
            render.CACHE_DIR = Path(tempfile.mkdtemp())
        lines = verify.markdown(verify.run(result))
    report.write(result, Path(tempfile.mkdtemp()), lines)
"""


def _child_env() -> dict[str, str]:
    """The environment of an operator's shell: Python's bytecode cache on. (This sandbox sets
    PYTHONDONTWRITEBYTECODE=1, which would have every child compile the project's modules from
    source while the SDK's come precompiled from pip: a cost of the sandbox, not of the plan.)"""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _child_seconds(*args: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, *args], cwd=stack_config.ROOT, capture_output=True, text=True,
                          env=_child_env())
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench: the {args[0]} run failed:\n{proc.stderr}")
    return seconds


def side_by_side(stack: str = "production", repeat: int = REPEAT) -> dict[str, float]:
    """Median seconds of each phase, each repetition in a fresh interpreter, interleaved."""
    loaded = subprocess.run([sys.executable, "-c", _CHILD, "modules", stack, *SDK_PACKAGES], check=True,
                            cwd=stack_config.ROOT, capture_output=True, text=True, env=_child_env()).stdout.split()
    modes = {"import floor": ("floor", stack, *loaded), "plan without checks": ("plan", stack),
             "plan with checks (cached render)": ("cached", stack),
             "plan command (python -m sophia_infra plan)": ("command", stack),
             "plan with checks (cold render)": ("cold", stack), "large stack plan": ("large", stack)}
    _child_seconds("cached", stack)  # fill the render cache (and the bytecode cache) once
    times: dict[str, list[float]] = {k: [] for k in modes}
    for _ in range(repeat):
        for label, args in modes.items():
            times[label].append(_child_seconds(*args))
    return {k: statistics.median(v) for k, v in times.items()}


def phases(stack: str = "production", repeat: int = REPEAT) -> dict[str, float]:
    """Median seconds of the plan's phases inside a fresh interpreter: the imports (the SDK's
    and the project's), the run (the program registering under the mocks, through the SDK)
    and the report (plan.json, manifests, placement.md)."""
    runs = [json.loads(subprocess.run([sys.executable, "-c", _CHILD, "phases", stack], check=True,
                                      cwd=stack_config.ROOT, capture_output=True, text=True,
                                      env=_child_env()).stdout) for _ in range(repeat)]
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def plan_bench() -> int:
    rows = [measure("dev", "dev"), measure("production", "production")]
    config, secret_keys = large_stack()
    rows.append(measure("large (100 workers, 100 MCP)", "production", config, secret_keys))
    print(f"{'stack':30} {'wall s':>7} {'resources':>9} {'longest chain':>13}")
    for r in rows:
        print(f"{r['stack']:30} {r['seconds']:7.2f} {r['resources']:9d} {len(r['chain']):13d}")
    for r in rows:
        print(f"\nlongest chain of {r['stack']}: " + " -> ".join(r["chain"]))
    med = side_by_side()
    floor, plan = med["import floor"], med["plan without checks"]
    print(f"\nproduction, fresh interpreter each, median of {REPEAT}:")
    for label, seconds in med.items():
        line = f"  {label:44} {seconds:6.2f} s  {seconds / floor:5.2f}x import floor"
        if label == "large stack plan":
            line += f", {seconds / plan:.2f}x production plan"
        print(line)
    print("  targets: production plan <= 1.6x the import floor; the large stack <= 8x production")
    inside = phases()
    print("\nthe production plan without checks, inside its interpreter (median of %d):" % REPEAT)
    print("  " + ", ".join(f"{k} {v:.2f} s" for k, v in inside.items())
          + f"; beyond the floor: {plan - floor:.2f} s")
    return 0


# ----------------------------------------------------------------------------- the test suite

SLOWEST = 5
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s (setup|call|teardown)\s+(\S.*)$")
_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?)\b")


def slowest_tests(output: str, n: int = SLOWEST) -> list[tuple[float, str, str]]:
    """(seconds, phase, test id) of pytest's --durations report, slowest first."""
    rows = [(float(m[1]), m[2], m[3].strip()) for m in map(_DURATION.match, output.splitlines()) if m]
    return sorted(rows, key=lambda r: -r[0])[:n]


def suite_counts(output: str) -> dict[str, int]:
    """pytest's closing counts ("1333 passed, 9 failed, 15 errors, 1 skipped in 80.1s")."""
    closing = [line for line in output.splitlines() if re.search(r"\b(passed|failed|errors?)\b.* in [\d.]+s", line)]
    if not closing:
        return {}
    out = {}
    for number, what in _COUNT.findall(closing[-1]):
        out[what.rstrip("s") if what in ("errors", "warnings") else what] = int(number)
    return out


def _render_cache_entries() -> int:
    from sophia_infra.tools.plan import render
    return len(list(render.CACHE_DIR.glob("*.json"))) if render.CACHE_DIR.is_dir() else 0


def _warm_state() -> tuple[Path, ...]:
    """What a warm `make test` reuses from earlier runs, all kept by content or only steering
    the order: the render cache, checkov's and pyright's kept verdicts, the files' last durations."""
    from sophia_infra.tools import typecheck
    from sophia_infra.tools.plan import render

    build = stack_config.ROOT / "build"
    return (render.CACHE_DIR, build / "checkov-cache", typecheck.CACHE, build / "test-durations.json")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def suite(cold: bool = False) -> dict:
    """Run `make test` once; its wall time, CPU time (every process it ran), counts, slowest tests.
    cold: with _warm_state set aside (put back after)."""
    moved = []
    if cold:
        for path in _warm_state():
            if path.exists():
                aside = path.with_name(path.name + ".bench-aside")
                _remove(aside)  # left by an interrupted run
                path.rename(aside)
                moved.append((path, aside))
    entries = _render_cache_entries()
    try:
        env = {**os.environ, "PYTEST_ADDOPTS": f"{os.environ.get('PYTEST_ADDOPTS', '')} --durations={SLOWEST} --durations-min=0".strip()}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(["make", "--no-print-directory", "test"], cwd=stack_config.ROOT, env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        for path, aside in moved:
            _remove(path)  # what the run wrote
            aside.rename(path)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "exit": proc.returncode, "cache_entries": entries,
            "counts": suite_counts(proc.stdout), "slowest": slowest_tests(proc.stdout), "cores": os.cpu_count()}


def suite_bench(cold: bool) -> int:
    r = suite(cold)
    cache = "cold (empty)" if cold else f"{'warm' if r['cache_entries'] else 'cold'} ({r['cache_entries']} renders cached)"
    print(f"make test on {r['cores']} cores, render cache {cache}:")
    print(f"  wall {r['wall']:.1f} s, CPU {r['cpu']:.1f} s (user+sys of everything it ran), exit {r['exit']}")
    print("  tests: " + (", ".join(f"{n} {what}" for what, n in r["counts"].items()) or "no pytest summary found"))
    print(f"  the {SLOWEST} slowest tests:")
    for seconds, phase, test in r["slowest"]:
        print(f"    {seconds:7.2f} s  {phase:8} {test}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sophia_infra.tools.bench",
                                     description="Benchmarks: the offline plan (default), or the test suite (tests).")
    sub = parser.add_subparsers(dest="what")
    tests = sub.add_parser("tests", help="time `make test`: wall and CPU time, counts, the five slowest tests")
    tests.add_argument("--cold", action="store_true", help="without the render cache, the kept verdicts and the last durations (put back after)")
    args = parser.parse_args(argv)
    if args.what == "tests":
        return suite_bench(args.cold)
    return plan_bench()


if __name__ == "__main__":
    sys.exit(main())
