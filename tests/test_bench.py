"""The benchmark's chain measure (timings are printed by `make bench`, never asserted)."""

from sophia_infra.tools.bench import large_stack, longest_chain
from sophia_infra.tools.plan.mocks import Registration


def _r(urn, deps=(), parent="", custom=True, provider=""):
    return Registration(urn=urn, type="t", name=urn, custom=custom, parent=parent, dependencies=list(deps),
                        provider=provider, inputs={})


def test_longest_chain_follows_dependencies_providers_and_components():
    resources = [
        _r("a"), _r("b", ["a"]), _r("prov", ["b"]),
        _r("comp", custom=False), _r("c1", parent="comp", provider="prov::id"), _r("c2", ["c1"], parent="comp"),
        _r("d", ["comp"]),  # waits for everything inside the component
        _r("x", ["a"]),
    ]
    assert longest_chain(resources) == ["a", "b", "prov", "c1", "c2", "d"]


def test_large_stack_has_the_asked_size():
    import json
    config, _ = large_stack(workers=10, mcp_servers=7)
    assert len(json.loads(config["sophia:nodes"])) == 11
    assert sum(s["kind"] == "mcp" for s in json.loads(config["sophia:services"])) == 7


def test_a_components_children_wait_for_what_the_component_waits_for():
    from sophia_infra.tools.plan import ordering
    resources = [
        _r("base"), _r("prov"),
        _r("outer", ["base"], custom=False), _r("inner", parent="outer", custom=False),
        _r("leaf", ["sibling"], parent="inner", provider="prov::id"), _r("sibling", parent="inner"),
        _r("free"),
    ]
    waits = ordering.waits_for(resources)
    assert waits["leaf"] == {"sibling", "prov", "base"}  # its own, its provider, its grandparent's
    assert waits["sibling"] == {"base"} and waits["free"] == set()
    # the longest chain follows the inherited wait too
    assert longest_chain(resources) == ["base", "sibling", "leaf"]


PYTEST_OUTPUT = """\
........................................................................ [ 98%]
=============================== slowest 5 durations ===============================
21.28s call     tests/test_rendered.py::test_every_value_changes_the_rendered_output
4.10s setup    tests/test_plan.py::test_plan_writes_its_files[dev]
45.72s call     tests/test_chart_injection.py::test_hostile_value_is_refused_or_rendered_exactly[base:name:x]
0.50s teardown tests/test_x.py::test_y
3.00s call     tests/test_a.py::test_b[with space]
=========================== short test summary info ============================
FAILED tests/test_cli.py::test_clean_plan_is_ok - AssertionError: assert 1 == 0
9 failed, 1333 passed, 1 skipped, 15 errors in 793.48s (0:13:13)
"""


def test_the_suite_bench_reads_pytests_durations_and_counts():
    from sophia_infra.tools.bench import slowest_tests, suite_counts
    assert slowest_tests(PYTEST_OUTPUT, 3) == [
        (45.72, "call", "tests/test_chart_injection.py::test_hostile_value_is_refused_or_rendered_exactly[base:name:x]"),
        (21.28, "call", "tests/test_rendered.py::test_every_value_changes_the_rendered_output"),
        (4.10, "setup", "tests/test_plan.py::test_plan_writes_its_files[dev]")]
    assert suite_counts(PYTEST_OUTPUT) == {"failed": 9, "passed": 1333, "skipped": 1, "error": 15}
    assert suite_counts("no summary here") == {}


def test_bench_tests_is_a_make_target_that_prints_figures():
    import re
    from tests.conftest import ROOT
    makefile = (ROOT / "Makefile").read_text()
    (rule,) = re.findall(r"^bench-tests:.*\n(?:\t.*\n)*", makefile, re.M)
    assert "sophia_infra.tools.bench tests" in rule


def test_a_cold_suite_run_sets_the_warm_state_aside_and_puts_it_back(tmp_path, monkeypatch):
    """`make bench-tests BENCH_ARGS=--cold`: nothing a warm run reuses is there while make test
    runs, and all of it is back afterwards, byte for byte."""
    import subprocess

    from sophia_infra.tools import bench
    from tests.conftest import DURATIONS
    from tests.test_checkov import CACHE as CHECKOV_CACHE

    # What it sets aside is what the render cache, checkov's test, the type check and the
    # scheduler really use.
    from sophia_infra.tools import typecheck
    from sophia_infra.tools.plan import render
    assert set(bench._warm_state()) == {render.CACHE_DIR, CHECKOV_CACHE, typecheck.CACHE, DURATIONS}

    folder, file = tmp_path / "cache", tmp_path / "durations.json"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "entry.json").write_text("{}")
    file.write_text('{"tests/test_x.py": 1.0}')
    monkeypatch.setattr(bench, "_warm_state", lambda: (folder, file, tmp_path / "absent"))
    seen = []

    def fake_make(*args, **kwargs):
        seen.append((folder.exists(), file.exists()))
        return subprocess.CompletedProcess(args, 0, stdout="1 passed in 0.1s\n", stderr="")

    monkeypatch.setattr(bench.subprocess, "run", fake_make)
    result = bench.suite(cold=True)
    assert seen == [(False, False)] and result["counts"] == {"passed": 1}
    assert (folder / "sub" / "entry.json").read_text() == "{}" and file.read_text() == '{"tests/test_x.py": 1.0}'
    assert not list(tmp_path.glob("*.bench-aside"))
