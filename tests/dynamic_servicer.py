"""The pinned SDK's own dynamic-provider servicer (`python -m pulumi.dynamic`), driven
directly: requests are built as the engine sends them (the serialized provider in
`__provider`, `rpc.UNKNOWN` for values not known yet), so what the tests see is what
the engine gets (how unknowns are deserialized, how a DiffResult or an exception maps
to the response).

The module ends in a bare `main()` (it starts a gRPC server), so it is loaded from its
source without that last statement. Calls run on a pool of worker threads of the size
`main()` uses, as the real server runs them (which also keeps the settings the servicer
configures per call inside those threads)."""

from __future__ import annotations

import ast
import asyncio
from concurrent import futures
from typing import Any

import grpc
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import proto, rpc

from sophia_infra.tools.plan.dynamic_diff import SOURCE, servicer_module


# The servicer module as the transition preview loads it (without its trailing main()).
SERVICER = servicer_module()


def workers() -> int:
    """The size of the pool `main()` serves requests with, read from its source."""
    for node in ast.walk(ast.parse(SOURCE.read_text())):
        if isinstance(node, ast.keyword) and node.arg == "max_workers" and isinstance(node.value, ast.Constant):
            return int(node.value.value)
    raise AssertionError("main() no longer sets max_workers")


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(details)
        self.code, self.details = code, details


class Context:
    def abort(self, code, details):
        raise Aborted(code, details)

    def set_code(self, code):
        pass

    def set_details(self, details):
        pass


def struct(provider: Any, props: dict[str, Any]):
    """Properties as the engine sends them, with the serialized provider in `__provider`."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(rpc.serialize_properties(
            {**props, "__provider": serialize_provider(provider)}, {}))
    finally:
        loop.close()


def plain(s) -> dict[str, Any]:
    out = rpc.deserialize_properties(s)
    out.pop("__provider", None)
    return out


class Servicer:
    def __init__(self, max_workers: int = 1):
        self.pool = futures.ThreadPoolExecutor(max_workers=max_workers)
        self.servicer = SERVICER.DynamicResourceProviderServicer()

    def __enter__(self) -> "Servicer":
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True)

    def submit(self, method: str, request) -> futures.Future:
        return self.pool.submit(getattr(self.servicer, method), request, Context())

    def call(self, method: str, request):
        return self.submit(method, request).result(timeout=60)

    def diff(self, provider, olds: dict, news: dict, id_: str = "id-1"):
        return self.call("Diff", proto.DiffRequest(id=id_, urn="urn:pulumi:s::p::t::n",
                                                   olds=struct(provider, olds), news=struct(provider, news)))

    def create_request(self, provider, props: dict):
        return proto.CreateRequest(urn="urn:pulumi:s::p::t::n", properties=struct(provider, props))


def diff_kind(resp) -> str:
    return {proto.DiffResponse.DIFF_SOME: "some", proto.DiffResponse.DIFF_NONE: "none",
            proto.DiffResponse.DIFF_UNKNOWN: "unknown"}[resp.changes]
