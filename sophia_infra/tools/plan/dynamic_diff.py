"""A dynamic resource's Diff, asked exactly as the engine asks it: through the pinned SDK's own
servicer (`pulumi/dynamic/__main__.py`, what `python -m pulumi.dynamic` serves), with the
serialized provider in `__provider` and unknown values as `rpc.UNKNOWN`, so the provider's
`diff` sees what it sees under `pulumi preview` (an unknown arrives as `pulumi.output.Unknown`).

The provider object is the program's current one for the resource's type (the engine diffs with
the new program's `__provider`); `pulumi-python:dynamic/<module>:<Kind>` maps to `<Kind>Provider`
in the module's provider file. The servicer module ends in a bare `main()` (it starts a gRPC
server), so it is loaded from its source without that last statement.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import importlib
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pulumi.dynamic
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import proto, rpc

SOURCE = Path(pulumi.dynamic.__file__).with_name("__main__.py")
UNKNOWN = "[unknown]"  # how plan.json and transition.py spell an unknown value
PROVIDER_KEY = "__provider"

# pulumi-python:dynamic/<module>:<Kind> -> the module holding <Kind>Provider.
PROVIDER_MODULES = {"lambda": "sophia_infra.program.lambda_cloud.provider"}


class DynamicDiffError(Exception):
    """The provider's diff could not be asked (unknown type) or failed."""


@dataclass(frozen=True)
class DynamicDiff:
    changes: Optional[bool]  # None: the provider did not say (DIFF_UNKNOWN)
    replaces: tuple[str, ...]
    delete_before_replace: bool


@functools.lru_cache(maxsize=1)
def servicer_module() -> types.ModuleType:
    tree = ast.parse(SOURCE.read_text())
    last = tree.body[-1]
    if not (isinstance(last, ast.Expr) and isinstance(last.value, ast.Call)
            and getattr(last.value.func, "id", None) == "main"):
        raise DynamicDiffError(f"{SOURCE} no longer ends in main(); the transition preview cannot drive it")
    tree.body.pop()
    module = types.ModuleType("pulumi_dynamic_servicer")
    exec(compile(tree, str(SOURCE), "exec"), module.__dict__)
    return module


class _Context:
    """What the servicer gets for a gRPC context: an abort becomes an exception."""

    def abort(self, code: Any, details: str) -> None:
        raise DynamicDiffError(details.strip().splitlines()[-1] if details.strip() else str(code))

    def set_code(self, code: Any) -> None:
        pass

    def set_details(self, details: str) -> None:
        pass


def provider_for(type_: str) -> Any:
    """The program's provider object for a dynamic resource type."""
    try:
        module_name, kind = type_.split("/", 1)[1].split(":", 1)
    except (IndexError, ValueError):
        raise DynamicDiffError(f"{type_} is not a pulumi-python:dynamic/<module>:<Kind> type") from None
    module = PROVIDER_MODULES.get(module_name)
    cls = getattr(importlib.import_module(module), f"{kind}Provider", None) if module else None
    if cls is None:
        raise DynamicDiffError(f"no provider class for {type_} (tools/plan/dynamic_diff.py PROVIDER_MODULES)")
    return cls()


def _engine_value(value: Any) -> Any:
    if value == UNKNOWN:
        return rpc.UNKNOWN
    if isinstance(value, dict):
        return {k: _engine_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_engine_value(v) for v in value]
    return value


def _struct(props: dict[str, Any], provider: str) -> Any:
    loop = asyncio.new_event_loop()
    try:
        values = {k: _engine_value(v) for k, v in props.items() if k != PROVIDER_KEY}
        return loop.run_until_complete(rpc.serialize_properties({**values, PROVIDER_KEY: provider}, {}))
    finally:
        loop.close()


def diff(type_: str, resource_id: str, olds: dict[str, Any], news: dict[str, Any]) -> DynamicDiff:
    """The servicer's Diff of `olds` (the state's inputs) against `news` ("[unknown]" = unknown)."""
    provider = serialize_provider(provider_for(type_))
    servicer = servicer_module().DynamicResourceProviderServicer()
    request = proto.DiffRequest(id=resource_id, urn="", olds=_struct(olds, provider), news=_struct(news, provider))
    response = servicer.Diff(request, _Context())
    changes = {proto.DiffResponse.DIFF_SOME: True, proto.DiffResponse.DIFF_NONE: False}.get(response.changes)
    return DynamicDiff(changes=changes, replaces=tuple(response.replaces),
                       delete_before_replace=bool(response.deleteBeforeReplace))
