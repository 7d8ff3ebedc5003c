"""Shared test helpers: the stacks' real configuration, and ways to break it."""

from __future__ import annotations

import copy
import functools
import gc
import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest

from sophia_infra.program.config import stack as config
from sophia_infra.tools.plan import stack_config

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
STACKS = ("dev", "production")


def raw_stack(stack: str) -> tuple[dict[str, Any], set[str]]:
    """(top-level key -> value, secret keys) exactly as the program would read them."""
    raw, present = stack_config.raw_config(stack)
    return raw, {k for k, is_secret in present.items() if is_secret}


def parse_with(stack: str, change: Callable[[dict], None] | None = None,
               drop_secrets: tuple[str, ...] = (), plain_secrets: tuple[str, ...] = ()) -> config.StackConfig:
    raw, secrets = raw_stack(stack)
    raw = copy.deepcopy(raw)
    if change:
        change(raw)

    def lookup(key: str):
        if key in drop_secrets or key not in secrets and key not in plain_secrets:
            return None
        return key not in plain_secrets

    return config.parse(raw, lookup)


def problems_of(stack: str, change: Callable[[dict], None] | None = None, **kw) -> list[str]:
    with pytest.raises(config.ConfigError) as err:
        parse_with(stack, change, **kw)
    return err.value.problems


@pytest.fixture(params=STACKS)
def stack(request) -> str:
    return request.param


def _read_kubernetes_schemas_once() -> None:
    """kubernetes-validate reads its schema files (the 1.5 MB `_definitions.json` among them) and
    lists its schema folders again on every validate() call, 28 ms a call; the files do not change
    while the tests run, so each is read once. What it validates, and how, is its own, unchanged."""
    from kubernetes_validate import utils

    if not hasattr(utils.schema_contents, "cache_info"):
        utils.schema_contents = functools.lru_cache(maxsize=None)(utils.schema_contents)
        utils.all_versions = functools.lru_cache(maxsize=None)(utils.all_versions)


_read_kubernetes_schemas_once()

# helm is Go: each `helm template` the tests run lives a fraction of a second, and its garbage
# collector only costs time there (a quarter of its CPU; a big chart's render peaks near 120 MB
# without it). The output is the same.
os.environ.setdefault("GOGC", "off")

# Python's collector, in each test process: the workers keep what many tests share (the stacks'
# plans, every release rendered, parsed CRDs), some 300,000-500,000 objects, and each full
# collection walks all of them again to find little (0.3-0.6 s each; 13-19 of them in a run of
# the suite, 7-8 s of CPU). A full collection waits for 100 middle-generation ones instead of
# 10: one or two a worker, and the last one at exit (2-4 s in all). Cycles are still freed,
# later (a worker peaks at 0.3-0.45 GB instead of 0.25-0.3).
gc.set_threshold(*gc.get_threshold()[:2], 100)


# ----------------------------------------------------------------------------- scheduling
# `make test` hands whole files to the workers (--dist loadfile), in collection order
# (--no-loadscope-reorder). A long file started last keeps one worker busy while the other
# idles, so the files are collected longest first, by their durations in the previous run
# (build/test-durations.json, written at the end of each run; a file it does not know runs
# first). Only the order changes, never what runs.
DURATIONS = ROOT / "build" / "test-durations.json"


def _recorded_durations() -> dict[str, float]:
    try:
        return {str(k): float(v) for k, v in json.loads(DURATIONS.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    known = _recorded_durations()
    if known:  # a stable sort: a file's tests keep their order
        items.sort(key=lambda item: -known.get(item.nodeid.split("::")[0], float("inf")))


_durations: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = report.nodeid.split("::")[0]
    _durations[path] = _durations.get(path, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    if hasattr(session.config, "workerinput") or not _durations:
        return  # a worker: the controller sees every report and writes once
    try:
        DURATIONS.parent.mkdir(parents=True, exist_ok=True)
        partial = DURATIONS.with_suffix(f".{os.getpid()}.tmp")
        kept = {path: seconds for path, seconds in _recorded_durations().items() if (ROOT / path).is_file()}
        partial.write_text(json.dumps({**kept, **_durations}, indent=0, sort_keys=True))  # a removed file leaves
        partial.replace(DURATIONS)
    except OSError:
        pass  # a read-only checkout: the next run keeps the default order
