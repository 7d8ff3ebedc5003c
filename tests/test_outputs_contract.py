"""docs/outputs.md is the outputs contract: its table against what the program exports.

The program runs for both stacks under Pulumi's mock monitor (tools/plan/runner.py); the set of
output names, each one's secrecy and the shape of its real value must match the page, and so
must the page's examples. The consumer example (docs/examples/consumer/) runs under the mock
monitor too, with a StackReference answered from the real outputs, the way the engine answers
it: the outputs with secret values marked secret, plus `secretOutputNames`."""

from __future__ import annotations

import json
import re
import runpy
from dataclasses import dataclass
from typing import Any, Callable

import pulumi
import pytest
from pulumi.runtime import rpc
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from sophia_infra.tools.plan import runner, stack_config
from tests.conftest import ROOT, STACKS
from tests.fake_pulumi import stack_plans  # noqa: F401  (a session fixture, shared with test_docs)

PAGE = ROOT / "docs" / "outputs.md"
CONSUMER = ROOT / "docs" / "examples" / "consumer" / "__main__.py"
SECRECY = ("yes", "no", "with hosts")


# ----------------------------------------------------------------------------- the page


@dataclass
class Row:
    name: str
    shape: str
    secret: str
    example: str


def _cells(line: str) -> list[str]:
    # A table row; `\|` inside a cell is a literal bar.
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def _tables(text: str) -> dict[str, list[list[str]]]:
    """Heading -> rows (header first) of the first table under it."""
    tables: dict[str, list[list[str]]] = {}
    heading, rows = "", []
    for line in text.splitlines() + [""]:
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("|"):
            if not re.fullmatch(r"\|[\s:|-]+\|", line.strip()):  # not the separator row
                rows.append(_cells(line))
        elif rows:
            tables.setdefault(heading, rows)
            rows = []
    return tables


def _code(cell: str) -> str:
    m = re.fullmatch(r"`([^`]*)`", cell)
    if not m:
        raise AssertionError(f"docs/outputs.md: expected one `code` cell, got {cell!r}")
    return m.group(1)


def read_contract(text: str) -> tuple[dict[str, Row], dict[str, dict[str, str]]]:
    """(output name -> row, object name -> field -> shape) from the page's tables."""
    tables = _tables(text)
    outputs = tables.get("The outputs")
    assert outputs and outputs[0][:4] == ["output", "shape", "secret", "example"], (
        "docs/outputs.md: the section 'The outputs' must start with a table: output | shape | secret | example | what")
    rows = {}
    for cells in outputs[1:]:
        row = Row(_code(cells[0]), _code(cells[1]), cells[2], _code(cells[3]))
        assert row.secret in SECRECY, f"docs/outputs.md: {row.name}: secret is one of {SECRECY}, not {row.secret!r}"
        assert row.name not in rows, f"docs/outputs.md: {row.name} is listed twice"
        rows[row.name] = row
    objects = {heading: {_code(c[0]): _code(c[1]) for c in table[1:]}
               for heading, table in tables.items() if table[0][:2] == ["field", "shape"]}
    return rows, objects


def shape_errors(value: Any, shape: str, objects: dict[str, dict[str, str]], where: str) -> list[str]:
    """Why `value` does not have `shape` (empty when it does)."""
    alternatives = shape.split(" or ")
    if len(alternatives) > 1:
        found = [shape_errors(value, a, objects, where) for a in alternatives]
        return [] if any(not f for f in found) else [f"{where}: {value!r} is not {shape}"]
    if shape == "string":
        return [] if isinstance(value, str) else [f"{where}: {value!r} is not a string"]
    if shape == "integer":
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{where}: {value!r} is not an integer"]
    if shape == "null":
        return [] if value is None else [f"{where}: {value!r} is not null"]
    m = re.fullmatch(r"map<(.+)>", shape)
    if m:
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is not a map"]
        return [e for k, v in value.items() for e in shape_errors(v, m.group(1), objects, f"{where}.{k}")]
    if shape in objects:
        fields = objects[shape]
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is not a {shape}"]
        errors = [f"{where}: has {k}, which {shape} does not list" for k in sorted(set(value) - set(fields))]
        errors += [f"{where}: lacks {k}, which {shape} lists" for k in sorted(set(fields) - set(value))]
        return errors + [e for k in sorted(set(fields) & set(value))
                         for e in shape_errors(value[k], fields[k], objects, f"{where}.{k}")]
    raise AssertionError(f"docs/outputs.md: unknown shape {shape!r} at {where}")


def differences(rows: dict[str, Row], objects: dict[str, dict[str, str]], result: runner.PlanResult,
                hosts_secret: bool = False) -> list[str]:
    """Everything in which the program's outputs differ from the page."""
    out = [f"{n}: exported by {result.stack} but not in docs/outputs.md" for n in sorted(set(result.outputs) - set(rows))]
    out += [f"{n}: in docs/outputs.md but not exported by {result.stack}" for n in sorted(set(rows) - set(result.outputs))]
    for name in sorted(set(rows) & set(result.outputs)):
        row = rows[name]
        expected = row.secret == "yes" or (row.secret == "with hosts" and hosts_secret)
        actual = name in result.secret_outputs
        if expected != actual:
            out.append(f"{name}: docs/outputs.md says secret={row.secret}, {result.stack} exports it "
                       f"{'secret' if actual else 'plain'}")
        value = result.secret_outputs[name] if actual else result.outputs[name]
        out += shape_errors(value, row.shape, objects, f"{result.stack}:{name}")
    return out


# ----------------------------------------------------------------------------- the program's outputs


@pytest.fixture(scope="module")
def contract():
    return read_contract(PAGE.read_text())


@pytest.fixture
def plans(stack_plans) -> dict[str, runner.PlanResult]:  # noqa: F811
    return stack_plans


@pytest.mark.parametrize("stack", STACKS)
def test_the_page_matches_the_outputs(contract, plans, stack):
    assert differences(*contract, plans[stack]) == []


def test_with_hosts_outputs_turn_secret_when_the_hosts_are_secret(contract):
    config, secret_keys = stack_config.load("dev")
    result = runner.run("dev", config=dict(config), secret_keys=[*secret_keys, "sophia:hosts"])
    assert differences(*contract, result, hosts_secret=True) == []
    assert any(row.secret == "with hosts" for row in contract[0].values())


def test_every_example_has_its_shape(contract):
    rows, objects = contract
    for row in rows.values():
        assert shape_errors(json.loads(row.example.replace("…", "")), row.shape, objects, f"example of {row.name}") == []
    fields = _tables(PAGE.read_text())["Node"]
    example = {_code(c[0]): json.loads(_code(c[2])) for c in fields[1:]}
    assert shape_errors(example, "Node", objects, "the Node example") == []


# A change to the program that the page does not follow, seen through the page instead.
CHANGES: list[tuple[str, Callable[[str], str], str]] = [
    ("an output the page lost", lambda t: re.sub(r"^\| `redisPort` .*\n", "", t, flags=re.M),
     "redisPort: exported by production but not in docs/outputs.md"),
    ("an output the program does not export", lambda t: t.replace("| `ingressClass` |", "| `ingressClassName` |"),
     "ingressClassName: in docs/outputs.md but not exported by production"),
    ("secrecy", lambda t: t.replace("| `kubeconfig` | `string` | yes |", "| `kubeconfig` | `string` | no |"),
     "kubeconfig: docs/outputs.md says secret=no, production exports it secret"),
    ("a shape", lambda t: t.replace("| `postgresPort` | `integer` |", "| `postgresPort` | `string` |"),
     "production:postgresPort: 5432 is not a string"),
    ("an object's field", lambda t: re.sub(r"^\| `privateAddress` .*\n", "", t, flags=re.M),
     "production:nodes.sophia-ai-core: has privateAddress, which Node does not list"),
    ("nullability", lambda t: t.replace("| `gpuType` | `string or null` |", "| `gpuType` | `string` |"),
     None),  # production's nodes all have a GPU: only dev's GPU-less control plane shows it
]


@pytest.mark.parametrize("what,change,message", CHANGES, ids=[c[0] for c in CHANGES])
def test_a_page_out_of_date_is_caught(plans, what, change, message):
    text = PAGE.read_text()
    changed = change(text)
    assert changed != text, f"the change '{what}' no longer applies to docs/outputs.md"
    if message is None:
        assert "dev:nodes.sophia-dev-control.gpuType: None is not a string" in differences(*read_contract(changed), plans["dev"])
    else:
        assert message in differences(*read_contract(changed), plans["production"])


def test_a_malformed_page_says_what_is_wrong():
    with pytest.raises(AssertionError, match="secret is one of"):
        read_contract(PAGE.read_text().replace("| `redisPort` | `integer` | no |", "| `redisPort` | `integer` | maybe |"))
    with pytest.raises(AssertionError, match="must start with a table"):
        read_contract(PAGE.read_text().replace("## The outputs", "## Outputs"))


# ----------------------------------------------------------------------------- the consumer example


class StackReferenceMocks(pulumi.runtime.Mocks):
    """Answers a StackReference with a stack's real outputs, as the engine does."""

    def __init__(self, result: runner.PlanResult):
        self.result = result
        self.referenced: list[str] = []
        self.created: dict[str, dict] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        if args.typ == "pulumi:pulumi:StackReference":
            self.referenced.append(args.inputs["name"])
            outputs = {name: ({rpc._special_sig_key: rpc._special_secret_sig, "value": self.result.secret_outputs[name]}
                              if name in self.result.secret_outputs else value)
                       for name, value in self.result.outputs.items()}
            return args.inputs["name"], {"name": args.inputs["name"], "outputs": outputs,
                                         "secretOutputNames": sorted(self.result.secret_outputs)}
        self.created[args.typ] = args.inputs
        return f"{args.name}-id", args.inputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


def _run_consumer(result: runner.PlanResult) -> tuple[StackReferenceMocks, dict[str, Any]]:
    mocks = StackReferenceMocks(result)
    ran: dict[str, Any] = {}
    pulumi_settings.ROOT.set(None)
    pulumi.runtime.set_all_config({}, [])
    pulumi.runtime.set_mocks(mocks, project="sophia-consumer", stack="dev", preview=False)
    _sync_await(run_pulumi_func(lambda: ran.update(runpy.run_path(str(CONSUMER), run_name="__pulumi_program__"))))
    return mocks, ran


def _value(output: pulumi.Output) -> tuple[Any, bool]:
    async def both():
        return await output.future(), await output.is_secret()
    return _sync_await(both())


def test_the_consumer_reads_addresses_plain_and_the_kubeconfig_secret(plans):
    production = plans["production"]
    mocks, ran = _run_consumer(production)
    assert mocks.referenced == ["sophia-ai/sophia-infra/production"]
    assert _value(ran["mcp_host"]) == (production.outputs["nodeIps"]["sophia-mcp"], False)
    assert _value(ran["control_plane_ip"]) == (production.outputs["controlPlaneIp"], False)
    assert _value(ran["slack_mcp_url"]) == (production.outputs["mcpRegistry"]["slack"], False)
    assert _value(ran["kubeconfig"]) == (production.secret_outputs["kubeconfig"], True)
    # and reaches the provider still marked secret (the mock monitor passes the marker through)
    assert mocks.created["pulumi:providers:kubernetes"]["kubeconfig"] == {
        rpc._special_sig_key: rpc._special_secret_sig, "value": production.secret_outputs["kubeconfig"]}


def test_the_consumer_gets_secret_addresses_when_the_hosts_are_secret():
    config, secret_keys = stack_config.load("production")
    result = runner.run("production", config=dict(config), secret_keys=[*secret_keys, "sophia:hosts"])
    _, ran = _run_consumer(result)
    assert _value(ran["mcp_host"]) == (result.secret_outputs["nodeIps"]["sophia-mcp"], True)


def test_the_consumer_names_its_stack_from_config(plans):
    mocks = StackReferenceMocks(plans["production"])
    pulumi_settings.ROOT.set(None)
    pulumi.runtime.set_all_config({"sophia-consumer:infraStack": "acme/sophia-infra/dev"}, [])
    pulumi.runtime.set_mocks(mocks, project="sophia-consumer", stack="dev", preview=False)
    _sync_await(run_pulumi_func(lambda: runpy.run_path(str(CONSUMER), run_name="__pulumi_program__")))
    assert mocks.referenced == ["acme/sophia-infra/dev"]


def test_the_consumer_pins_what_the_program_pins():
    """The example's SDKs are exact pins, the same as the program's, so it reads what the program wrote."""
    def pins(path):
        return dict(line.split("==") for line in path.read_text().splitlines() if line and not line.startswith("#"))
    consumer, program = pins(CONSUMER.parent / "requirements.txt"), pins(ROOT / "requirements.txt")
    assert consumer and all(program.get(name) == version for name, version in consumer.items())
