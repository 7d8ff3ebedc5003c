"""Run `__main__.py` under the mock monitor and collect what it registered and exported."""

from __future__ import annotations

import gc
import importlib
import runpy
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import pulumi
from pulumi.runtime import known_types, rpc
from pulumi.runtime import resource as pulumi_resource
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.proto import source_pb2
from pulumi.runtime.stack import Stack, run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from sophia_infra.program.config import stack as stack_schema
from sophia_infra.program.config.stack import StackConfig
from sophia_infra.tools.plan import stack_config
from sophia_infra.tools.plan.mocks import SECRET, CommandStdout, PlanMocks, RecordingMonitor, Registration

PROJECT = "sophia-infra"


@dataclass
class PlanResult:
    stack: str
    resources: list[Registration]
    outputs: dict[str, Any]  # plain values; secret outputs are "[secret]"
    secret_outputs: dict[str, Any]  # the real values of secret outputs, for tests only
    config: dict[str, str]
    cfg: StackConfig


_frozen = 0
_was_enabled = True

# What the program reaches through the SDKs' lazy attributes (k8s.helm.v3, remote.Command, ...)
# or imports inside a function, loaded with the program's own modules before the heap is frozen:
# the run itself then imports nothing (tests/test_plan.py checks it), so the plan's imports are
# the same work, under the same collector, as the bench's import floor.
PROGRAM_MODULES = (
    "sophia_infra.program.errors",
    "sophia_infra.program.stack",
    "sophia_infra.program.platform.gpu.components",
    "pulumi_command.remote",
    "pulumi_kubernetes.apiextensions",
    "pulumi_kubernetes.helm",
    "pulumi_kubernetes.helm.v3",
    "pulumi_kubernetes.meta.v1",
    "pulumi_kubernetes.rbac",
    "pulumi_kubernetes.rbac.v1",
    "pulumi_kubernetes.yaml.v2",
)


def load_program() -> None:
    """Import every module the program uses (PROGRAM_MODULES)."""
    for module in PROGRAM_MODULES:
        getattr(importlib.import_module(module), "__all__", None)  # a lazy module loads on its first attribute


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Load the program's modules (and the SDK's) with the collector as usual, then freeze the
    heap they made, none of it garbage, out of the collector's sight, and switch the collector
    off while the plan runs: its collections would walk every SDK class again and again (about
    0.15 s of a production plan) to find next to nothing (the plan's ~10^6 objects are freed by
    reference counting). Leaving, the cycles the run made (asyncio tasks, outputs: ~19,000
    objects a production run) are freed at once, while they are young: left for the collector
    to find among the process's old objects, a process that plans again and again (the tests)
    spent more time collecting than planning.
    Nested uses share one freeze; leaving the outermost gives the collector back as it was."""
    global _frozen, _was_enabled
    load_program()
    if _frozen == 0:
        _was_enabled = gc.isenabled()
        gc.freeze()
        gc.disable()
    _frozen += 1
    try:
        yield
    finally:
        _frozen -= 1
        if _frozen == 0:
            # Only the run's objects are young (the rest is frozen): one young collection
            # (6-7 ms after a production plan) frees its cycles and ages the survivors;
            # then the rest comes back to the oldest generation, where it was.
            gc.collect(0)
            gc.unfreeze()
            if _was_enabled:
                gc.enable()


@contextmanager
def without_source_positions() -> Iterator[None]:
    """With each registration the SDK walks the whole Python stack and reads the source line of
    every frame, for the engine to store where the resource was declared. The mock monitor
    throws that away (so does RecordingMonitor: plan.json has no positions), and it is a fifth
    of the run, so the plan sends empty stack traces instead. Only the offline plan does this;
    under `pulumi preview`/`up` the program runs the SDK untouched."""
    original = pulumi_resource._get_stack_trace
    pulumi_resource._get_stack_trace = source_pb2.StackTrace  # what it returns for an unknown stack
    try:
        yield
    finally:
        pulumi_resource._get_stack_trace = original


def contains_unknowns(value: Any) -> bool:
    """The SDK's rpc.contains_unknowns, without its recursive closure: the SDK's defines at each
    call an inner function that refers to itself, a reference cycle (function, cell, closure,
    annotations) only the collector frees; with ~7,700 calls a production run, those cycles
    were two thirds of the garbage a run leaves and a fifth of its time. The same answer:
    whether an Unknown is reachable through dict values and list items."""
    pending, seen = [value], set()
    while pending:
        item = pending.pop()
        if known_types.is_unknown(item):
            return True
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, dict):
            pending.extend([item[key] for key in item])  # item[key], as the SDK reads an output type
        elif isinstance(item, list):
            pending.extend(item)
    return False


@contextmanager
def without_closure_cycles() -> Iterator[None]:
    """rpc.contains_unknowns (which pulumi.output calls through the module) is ours while the
    plan runs; under `pulumi preview`/`up` the program runs the SDK untouched."""
    original = rpc.contains_unknowns
    rpc.contains_unknowns = contains_unknowns
    try:
        yield
    finally:
        rpc.contains_unknowns = original


@contextmanager
def as_the_plan_runs() -> Iterator[None]:
    """The plan's way of running a program under mocks (frozen heap, no source positions, no
    closure cycles): runner.run's, and the tests' own mock runs of parts of the program."""
    with frozen_heap(), without_source_positions(), without_closure_cycles():
        yield


async def _resolve(value: Any) -> tuple[Any, bool]:
    out = pulumi.Output.from_input(value)
    return await out.future(with_unknowns=True), await out.is_secret()


def run(
    stack: str,
    root: Path = stack_config.ROOT,
    config: Optional[dict[str, str]] = None,
    secret_keys: Optional[list[str]] = None,
    command_stdout: Optional[CommandStdout] = None,
    preview: bool = False,
) -> PlanResult:
    """Run the program for `stack` offline. `config`/`secret_keys` replace the stack's own."""
    if config is None:
        config, secret_keys = stack_config.load(stack, root)
    monitor = RecordingMonitor(PlanMocks(command_stdout))
    ran: dict[str, Any] = {}

    def program() -> None:
        ran.update(runpy.run_path(str(root / "__main__.py"), run_name="__pulumi_program__"))

    with as_the_plan_runs():
        pulumi_settings.ROOT.set(None)  # a fresh root Stack for every run (set_mocks registers it)
        pulumi.runtime.set_all_config(config, secret_keys or [])
        pulumi.runtime.set_mocks(monitor.mocks, project=PROJECT, stack=stack, preview=preview, monitor=monitor)
        _sync_await(run_pulumi_func(program))

    root_stack = pulumi.runtime.get_root_resource()
    assert isinstance(root_stack, Stack)  # run_pulumi_func made it
    exported = root_stack.outputs
    outputs, secret_outputs = {}, {}
    for name, value in exported.items():
        resolved, is_secret = _sync_await(_resolve(value))
        outputs[name] = SECRET if is_secret else resolved
        if is_secret:
            secret_outputs[name] = resolved
    return PlanResult(stack=stack, resources=monitor.registrations, outputs=outputs,
                      secret_outputs=secret_outputs, config=config,
                      cfg=_validated_config(ran))


def _validated_config(program_globals: dict[str, Any]) -> StackConfig:
    """The config the program validated (its `stack_config`), else validated again."""
    cfg = program_globals.get("stack_config")
    return cfg if isinstance(cfg, StackConfig) else stack_schema.load()
