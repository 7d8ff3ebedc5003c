"""The offline plan end to end, through its command line, for both stacks."""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest

from tests.conftest import ROOT
from tests.platform_helpers import plan as shared_plan, plan_with
from tests import yaml_c


def _plan(stack: str, out, root=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sophia_infra", "plan", "--stack", stack, "--out", str(out)],
                          cwd=root, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    out = {}
    for stack in ("dev", "production"):
        d = tmp_path_factory.mktemp(stack)
        proc = _plan(stack, d)
        assert proc.returncode == 0, proc.stderr
        out[stack] = (proc.stdout, d)
    return out


def test_plan_writes_its_files(plans, stack):
    _, d = plans[stack]
    doc = json.loads((d / "plan.json").read_text())
    assert doc["stack"] == stack and doc["resources"] and "nodes" in doc["outputs"]
    for r in doc["resources"]:
        assert set(r) >= {"urn", "type", "name", "parent", "dependencies", "provider", "inputs"}
    assert (d / "manifests").is_dir()
    md = (d / "placement.md").read_text()
    assert "```mermaid" in md and "| node |" in md


def test_production_lists_five_hosts_with_gpu_and_arch(plans):
    stdout, d = plans["production"]
    rows = {line.split()[0]: line for line in stdout.splitlines() if line.startswith("sophia-") and "linux/" in line}
    assert set(rows) == {"sophia-control", "sophia-ai-core", "sophia-mcp", "sophia-data", "sophia-dev"}
    assert "linux/arm64" in rows["sophia-ai-core"] and "GH200" in rows["sophia-ai-core"]
    for name in ("sophia-control", "sophia-mcp", "sophia-data", "sophia-dev"):
        assert "linux/amd64" in rows[name]
    nodes = json.loads((d / "plan.json").read_text())["outputs"]["nodes"]
    assert nodes["sophia-ai-core"]["arch"] == "arm64" and nodes["sophia-ai-core"]["gpuType"] == "GH200"
    assert nodes["sophia-control"]["address"] == "203.0.113.10"


def test_no_placeholder_secret_leaks(plans, stack):
    stdout, d = plans[stack]
    assert "placeholder-" not in stdout
    for path in d.rglob("*"):
        if path.is_file():
            assert "placeholder-" not in path.read_text(), path


def test_manifests_are_yaml_objects(plans, stack):
    _, d = plans[stack]
    for path in (d / "manifests").glob("*.yaml"):
        obj = yaml_c.load(path.read_text())
        assert obj["apiVersion"] and obj["kind"] and obj["metadata"]["name"], path


def test_bad_config_stops_with_sentences_not_a_traceback(tmp_path):
    proj = tmp_path / "proj"
    shutil.copytree(ROOT, proj, ignore=shutil.ignore_patterns(".venv", ".tools", "build", ".git"))
    stack_file = proj / "Pulumi.dev.yaml"
    stack_file.write_text(stack_file.read_text().replace("type: A10", "type: H100"))
    proc = _plan("dev", tmp_path / "out", root=proj)
    assert proc.returncode == 2
    assert "sophia:nodes[1].gpu.type: unknown GPU type 'H100'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_stack(tmp_path):
    proc = _plan("staging", tmp_path / "out")
    assert proc.returncode == 2 and "Pulumi.staging.yaml does not exist" in proc.stderr


def test_plan_evaluates_the_policy_pack_and_is_clean(plans, stack):
    stdout, _ = plans[stack]
    assert "Policy (policy/rules.py): 0 violation(s)" in stdout


def test_plan_prints_policy_violations(tmp_path):
    from sophia_infra.tools.plan import report
    from sophia_infra.tools.plan.mocks import Registration

    result = shared_plan("dev")
    leak = Registration(
        urn="urn:x", type="kubernetes:core/v1:ConfigMap", name="leak", custom=True, parent="", dependencies=[],
        provider="", inputs={"metadata": {"name": "leak"}, "data": {"API_TOKEN": "x"}})
    text = report.render(dataclasses.replace(result, resources=[*result.resources, leak]))
    assert "1 violation(s)" in text and "[no-secrets-in-configmaps] -/leak: key 'API_TOKEN'" in text


def _still_tag_only(listed: list[str]) -> list[str]:
    """The listed production workloads whose release file names no digest, as the files are now:
    an app release by digest (a commit to main) shortens it."""
    return [n for n in listed if "digest:" not in (ROOT / "releases" / "production" / f"{n}.yaml").read_text()]


def test_production_lists_the_workloads_its_policy_config_still_allows_by_tag(plans):
    props = json.loads((ROOT / "policy" / "config" / "production.json").read_text())["images-by-digest"]
    tag_only = _still_tag_only(props["tagOnlyAllowed"])
    stdout, _ = plans["production"]
    head = f"Allowed by policy/config/production.json until released by digest: {len(tag_only)}"
    assert (head in stdout) == bool(tag_only)
    if tag_only:
        listed = stdout.split(head, 1)[1].split("\n\n", 1)[0].splitlines()[1:]
        assert [line.split("'")[1] for line in listed] == sorted(tag_only)


def test_a_production_workload_off_the_tag_list_fails_the_plan():
    """A tag-only Application of a workload the list does not name is a violation; named, it is allowed."""
    import dataclasses

    from sophia_infra.tools.plan import report, verify
    from sophia_infra.tools.plan.mocks import Registration
    from tests.platform_helpers import plan

    values = {"name": "newcomer", "image": {"repository": "docker.io/sophia/newcomer", "tag": "1.0.0"},
              "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}
    app = Registration(urn="urn:pulumi:production::sophia-infra::kubernetes:argoproj.io/v1alpha1:Application::newcomer",
                       type="kubernetes:argoproj.io/v1alpha1:Application", name="newcomer", custom=True, parent="",
                       dependencies=[], provider="", inputs={"metadata": {"name": "newcomer", "namespace": "argocd"},
                       "spec": {"source": {"path": "charts/sophia-service", "helm": {"valuesObject": values}}}})
    base = plan("production")
    result = dataclasses.replace(base, resources=[*base.resources, app])
    level, props = report.policy_pack_config("production")["images-by-digest"]
    found = report.policy_violations(result)  # the shipped config: newcomer is not listed
    assert [(rule, msg.split(":")[0]) for _, rule, msg in found] == [("images-by-digest", "service 'newcomer'")]
    nothing_else = SimpleNamespace(flows=[], undeclared=[], rejected=[])
    assert verify.failures(nothing_else, found)[0].startswith("policy [images-by-digest] service 'newcomer'")
    listed = {"images-by-digest": (level, {"tagOnlyAllowed": [*props["tagOnlyAllowed"], "newcomer"]})}
    assert report.policy_violations(result, pack_config=listed) == []
    assert ("images-by-digest", "service 'newcomer'") in \
        [(rule, msg.split(":")[0]) for _, rule, msg in report.allowed_by_config(result, pack_config=listed)]


def test_the_plan_names_allowances_the_tag_list_no_longer_needs():
    from sophia_infra.tools.plan import report
    from tests.platform_helpers import plan

    result = plan("production")
    level, props = report.policy_pack_config("production")["images-by-digest"]
    tag_only = _still_tag_only(props["tagOnlyAllowed"])
    assert report.unneeded_allowances(result) == [n for n in props["tagOnlyAllowed"] if n not in tag_only]
    stale = {"images-by-digest": (level, {"tagOnlyAllowed": [*tag_only, "retired-workload"]})}
    assert report.unneeded_allowances(result, pack_config=stale) == ["retired-workload"]


def test_a_policy_config_mistake_stops_the_plan_with_one_sentence(tmp_path):
    proj = tmp_path / "proj"
    shutil.copytree(ROOT, proj, ignore=shutil.ignore_patterns(".venv", ".tools", "build", ".git", ".cache"))
    (proj / "policy" / "config" / "production.json").write_text('{"images-by-digest": "strict"}\n')
    proc = _plan("production", tmp_path / "out", root=proj)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: policy/config/production.json: 'images-by-digest' needs an enforcement level")


def test_plan_shows_every_service_and_the_gpu_quota(plans):
    stdout, d = plans["production"]
    lines = {line.split()[0]: line.split() for line in stdout.splitlines() if line.split()}
    assert lines["ai-memory"][1:6] == ["mcp", "GH200", "arm64", "2", "1"]
    assert lines["ai-memory"][6] == "http://ai-memory.sophia-mcp.svc.cluster.local:8000/mcp"
    assert lines["backend"][1:6] == ["app", "any", "amd64", "3-6", "0"]
    assert "sophia-mcp: requests.nvidia.com/gpu quota 15, peak demand 2, cluster capacity 15" in stdout
    md = (d / "placement.md").read_text()
    assert "## Services" in md and "| snowflake-cortex | mcp | A100 |" in md


# ----------------------------------------------------------------------------- deterministic artefacts

def _files(d) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_two_processes_write_byte_identical_plans(plans, stack, tmp_path, capsys):
    """The plan the command wrote in a process of its own, and the same command run again in
    this test process (another process: its own string hashes, its own module state)."""
    from sophia_infra import __main__ as cli

    _, first = plans[stack]
    assert cli.main(["plan", "--stack", stack, "--out", str(tmp_path / "again")]) == 0, capsys.readouterr().err
    assert (tmp_path / "again" / "plan.json").read_bytes() == (first / "plan.json").read_bytes()
    assert _files(tmp_path / "again") == _files(first)


def test_two_runs_in_one_process_write_byte_identical_plans(tmp_path):
    """A run after others in the same process (the SDK's and the program's module state left
    from them) writes what the first one did."""
    from sophia_infra.tools.plan import report, runner

    report.write(shared_plan("production"), tmp_path / "a")  # the process's first run of it
    report.write(runner.run("production"), tmp_path / "b")
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_plan_json_is_in_urn_order_with_integers(plans, stack):
    _, d = plans[stack]
    doc = json.loads((d / "plan.json").read_text())
    urns = [r["urn"] for r in doc["resources"]]
    assert urns == sorted(urns)
    token = next(r for r in doc["resources"] if r["type"] == "random:index/randomPassword:RandomPassword")
    assert token["inputs"]["length"] == 48 and isinstance(token["inputs"]["length"], int)
    assert "5432.0" not in (d / "plan.json").read_text()


def test_secret_manifests_show_their_keys_masked(plans):
    _, d = plans["production"]
    secret = yaml_c.load((d / "manifests" / "secret_sophia-apps_backend-secrets.yaml").read_text())
    assert secret["stringData"] == {key: "[secret]" for key in (
        "ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENROUTER_API_KEY", "PORTKEY_API_KEY",
        "POSTGRES_PASSWORD", "REDIS_PASSWORD")}  # the database and user are plain config


def test_the_plan_leaves_the_collector_as_it_found_it():
    """The plan freezes its imports' heap and runs with the collector off;
    a process that goes on afterwards (the tests, a notebook) gets the collector back as it was."""
    import gc
    from sophia_infra.tools.plan import runner
    assert gc.isenabled()
    with runner.frozen_heap():
        assert gc.get_freeze_count() > 0 and not gc.isenabled()
        runner.run("dev")  # a nested use keeps the outer freeze
        assert gc.get_freeze_count() > 0 and not gc.isenabled()
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    runner.run("dev")
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    gc.disable()  # a caller that had it off gets it back off
    try:
        with runner.frozen_heap():
            pass
        assert not gc.isenabled() and gc.get_freeze_count() == 0
    finally:
        gc.enable()


def test_the_plan_skips_only_the_source_positions_the_mock_monitor_throws_away(monkeypatch):
    """The SDK's stack walk and its contains_unknowns are replaced in the offline plan only:
    every registration carries an empty stack trace while it runs, with the plan's own
    contains_unknowns; the SDK's functions are back afterwards, and the plan is the same as with
    the SDK untouched."""
    import contextlib
    import inspect
    from pulumi.runtime import resource as pulumi_resource
    from pulumi.runtime import rpc
    from sophia_infra.tools.plan import mocks, report, runner

    original, sdk_contains_unknowns = pulumi_resource._get_stack_trace, rpc.contains_unknowns
    assert list(inspect.signature(original).parameters) == []  # the pinned SDK's hook, as replaced
    assert list(inspect.signature(sdk_contains_unknowns).parameters) == ["val"]
    frames: list[int] = []
    checks: set = set()
    record = mocks.RecordingMonitor.RegisterResource

    def spy(self, request):
        frames.append(len(request.stackTrace.frames))
        checks.add(rpc.contains_unknowns)
        return record(self, request)

    monkeypatch.setattr(mocks.RecordingMonitor, "RegisterResource", spy)
    fast = report.plan_document(runner.run("dev"))
    assert frames and set(frames) == {0} and checks == {runner.contains_unknowns}
    assert pulumi_resource._get_stack_trace is original and rpc.contains_unknowns is sdk_contains_unknowns

    frames.clear()
    checks.clear()
    monkeypatch.setattr(runner, "without_source_positions", contextlib.nullcontext)
    monkeypatch.setattr(runner, "without_closure_cycles", contextlib.nullcontext)
    untouched = report.plan_document(runner.run("dev"))
    assert max(frames) > 0 and checks == {sdk_contains_unknowns}  # the SDK's own
    assert untouched == fast


def _unknowns_cases():
    """Values as the SDK meets them: nested dicts (output types among them) and lists, shared
    and self-referencing ones, scalars, with and without an Unknown, at every depth."""
    import random
    from pulumi.output import Unknown
    from pulumi_kubernetes.core.v1.outputs import ContainerPort

    rng = random.Random(20261203)

    def value(depth: int):
        kind = rng.choice(["scalar", "unknown", "dict", "list", "output type"] if depth < 5 else ["scalar", "unknown"])
        if kind == "scalar":
            return rng.choice([0, 1, "", "x", None, True, 2.5, b"b"])
        if kind == "unknown":
            return Unknown() if rng.random() < 0.3 else "known"
        if kind == "output type":
            return ContainerPort(container_port=rng.choice([80, 443]), name=rng.choice(["http", Unknown()]))
        items = [value(depth + 1) for _ in range(rng.randint(0, 4))]
        return items if kind == "list" else {f"k{i}": v for i, v in enumerate(items)}

    cases = [value(0) for _ in range(400)]
    looped: dict = {"a": 1}
    looped["self"] = looped
    shared = [Unknown()]
    cases += [looped, {"x": looped, "y": [looped, Unknown()]}, [shared, shared], {"a": shared}, [], {}, Unknown(),
              [[[[[[[[Unknown()]]]]]]]], ("a tuple is not walked", Unknown())]
    return cases


def test_the_plans_contains_unknowns_answers_as_the_sdks():
    from pulumi.runtime import rpc
    from sophia_infra.tools.plan import runner

    cases = _unknowns_cases()
    answers = [rpc.contains_unknowns(case) for case in cases]
    assert [runner.contains_unknowns(case) for case in cases] == answers
    assert 50 < sum(answers) < len(answers) - 50  # both answers well represented


def _variants():
    """dev, production, production with every option on, production with its hosts launched
    on Lambda Cloud (dynamic resources: pickled providers in the inputs)."""
    from sophia_infra.tools.plan import stack_config
    from tests.test_provisioning import ALL, production_config
    from tests.platform_helpers import EVERYTHING, VARIANTS
    out = {s: (s, *stack_config.load(s)) for s in ("dev", "production")}
    config, secret_keys = stack_config.load("production")
    for key, value in VARIANTS[EVERYTHING][1].items():  # merged into the stack's own, as platform_helpers.plan does
        config = {**config, key: json.dumps({**json.loads(config.get(key, "{}")), **value})}
    out[EVERYTHING] = ("production", config, secret_keys)
    out["production+lambda"] = ("production", *production_config(ALL))
    return out


@pytest.mark.parametrize("variant", ["dev", "production", "production+everything", "production+lambda"])
def test_the_plans_direct_echo_answers_as_the_sdks_mock_monitor(variant, monkeypatch):
    """RecordingMonitor answers registrations without the SDK mock's decode/encode round trip;
    the program sees the same: identical resources and inputs, outputs, secret outputs."""
    from pulumi.runtime import mocks as pulumi_mocks
    from sophia_infra.tools.plan import mocks, report, runner
    stack, config, secret_keys = _variants()[variant]
    if variant == "production+everything":
        assert json.loads(config["sophia:argocd"])["ingressHost"]  # the option really is on

    def run(result):
        return report.plan_document(result), result.secret_outputs

    direct = run(plan_with(stack, config, secret_keys))  # the fast path's run, shared in this process
    sdk_calls = []

    def through_the_sdk(self, request, inputs):
        sdk_calls.append(request.type)
        return pulumi_mocks.MockMonitor.RegisterResource(self, request)

    monkeypatch.setattr(mocks.RecordingMonitor, "_register", through_the_sdk)
    assert run(runner.run(stack, config=config, secret_keys=secret_keys)) == direct
    assert len(sdk_calls) == len(direct[0]["resources"])


def test_every_workload_waits_for_the_whole_platform_and_the_labelled_nodes():
    """The Services children list only their own dependencies; they still wait for every
    platform resource and every node's labels, through their component: the registrations come
    in that order, and the engine's ordering (dependencies, provider, parent) says so."""
    from sophia_infra.tools.plan import ordering
    from tests.platform_helpers import plan
    result = plan("production")  # planned once per test process
    by_urn = {r.urn: r for r in result.resources}

    def under(prefix: str) -> list[str]:
        def root(r):
            while r.parent in by_urn and by_urn[r.parent].type != "pulumi:pulumi:Stack":
                r = by_urn[r.parent]
            return r
        return [r.urn for r in result.resources if r.custom and root(r).type == prefix]

    platform, services = under("sophia:platform:Platform"), under("sophia:services:Services")
    labels = [r.urn for r in result.resources if r.name.endswith("-labels")]
    assert len(platform) > 50 and len(services) > 30 and labels
    waits = ordering.waits_for(result.resources)

    def closure(urn: str, seen: set[str]) -> set[str]:
        for d in waits.get(urn, ()):
            if d not in seen:
                seen.add(d)
                closure(d, seen)
        return seen

    order = {r.urn: i for i, r in enumerate(result.resources)}
    for urn in services:
        assert set(platform) | set(labels) <= closure(urn, set()), by_urn[urn].name
        assert order[urn] > max(order[p] for p in [*platform, *labels]), by_urn[urn].name
    # and no child repeats the platform's resources in its own dependencies
    assert max(len(by_urn[u].dependencies) for u in services) < 20


IMPORT_VARIANTS = ("dev", "production", "production+everything", "production+lambda")

# A fresh interpreter loads the program as the plan does, then runs each variant given (their
# configs come on stdin, so the child imports nothing of the tests), printing the modules each
# run imported, and at the end every module it holds. While every run imports nothing, the next
# one starts from the very modules a fresh interpreter would have: one interpreter answers for
# all of them.
_IMPORTS_CHILD = ("import json, sys\n"
                  "variants = json.load(sys.stdin)\n"
                  "from sophia_infra.tools.plan import runner\n"
                  "with runner.frozen_heap():\n"
                  "    pass\n"
                  "for name in sys.argv[1:]:\n"
                  "    stack, config, secret_keys = variants[name]\n"
                  "    before = set(sys.modules)\n"
                  "    runner.run(stack, config=config, secret_keys=secret_keys)\n"
                  "    print(json.dumps([name, sorted(set(sys.modules) - before)]), flush=True)\n"
                  "print(json.dumps(['<loaded>', sorted(m for m, mod in sys.modules.items() "
                  "if type(mod).__name__ != '_LazyModule')]))\n")


def _imports_during_runs(*variants: str) -> tuple[dict[str, list[str]], str]:
    """(variant -> modules its run imported, for each that ran, and '<loaded>' -> every module
    loaded at the end; the child's error, if it failed)."""
    import subprocess
    import sys
    configs = {name: _variants()[name] for name in variants}
    proc = subprocess.run([sys.executable, "-c", _IMPORTS_CHILD, *variants], cwd=ROOT, capture_output=True, text=True,
                          input=json.dumps(configs), timeout=300)
    found = dict(json.loads(line) for line in proc.stdout.splitlines() if line.startswith("["))
    return found, (proc.stderr[-2000:] or f"exit {proc.returncode}") if proc.returncode else ""


@functools.lru_cache(maxsize=None)
def _imports_of_each_run() -> dict[str, list[str] | str]:
    """The variants' runs in one interpreter, in order. A variant after one that imported
    something (no longer a fresh start), or that the shared interpreter did not reach, runs in an
    interpreter of its own. A str is the error of the child that ran it. '<loaded>': the modules
    the shared interpreter held at its end."""
    shared, error = _imports_during_runs(*IMPORT_VARIANTS)
    out: dict[str, list[str] | str] = {"<loaded>": shared.get("<loaded>", error)}
    for variant in IMPORT_VARIANTS:
        if variant in shared and all(out[v] == [] for v in out if v != "<loaded>"):
            out[variant] = shared[variant]
        else:
            alone, error = _imports_during_runs(variant)
            out[variant] = alone[variant] if variant in alone else error
    return out


@pytest.mark.parametrize("variant", IMPORT_VARIANTS)
def test_the_run_imports_nothing(variant):
    """Every module the program uses loads before the plan freezes the heap and switches the
    collector off (runner.PROGRAM_MODULES): the run itself imports nothing, so the plan's
    imports are the same work as the bench's import floor, under the same collector."""
    imported = _imports_of_each_run()[variant]
    assert not isinstance(imported, str), imported
    assert imported == []


def test_loading_the_program_first_loads_nothing_the_program_would_not():
    """runner.PROGRAM_MODULES only moves imports earlier: the modules loaded by the end of a
    plan are the same with and without it (else the bench's floor and the plan would both carry
    work the program never asks for). With it: the shared interpreter above, whose runs imported
    nothing, so it holds what the preload loaded; without it: production's run in a fresh one."""
    import subprocess
    import sys
    runs = _imports_of_each_run()
    preloaded = runs["<loaded>"]
    assert not isinstance(preloaded, str), preloaded
    assert all(runs[v] == [] for v in IMPORT_VARIANTS)  # else the shared end is not the preload's
    code = ("import json, sys\n"
            "from sophia_infra.tools.plan import runner\n"
            "runner.PROGRAM_MODULES = ('sophia_infra.program.stack',)\n"
            "runner.run('production')\n"
            "print(json.dumps(sorted(m for m, mod in sys.modules.items() if type(mod).__name__ != '_LazyModule')))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    natural = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert set(preloaded) == natural, (sorted(set(preloaded) - natural), sorted(natural - set(preloaded)))
