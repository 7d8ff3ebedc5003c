"""Mocks that answer like the real providers for what the program consumes.

`PlanMocks` returns realistic outputs (a K3s secure token, a kubeconfig, generated
passwords); `RecordingMonitor` keeps what the engine would see of each registration:
parent, dependencies, provider and inputs, with secret values masked.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import yaml
from google.protobuf import json_format, struct_pb2
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime.proto import resource_pb2

SECRET = "[secret]"
UNKNOWN = "[unknown]"

# Stdout of remote commands, keyed by the suffix of the command's resource name.
CommandStdout = Callable[[str, dict], str]


def _digest(*parts: str, n: int = 32) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:n]


def fake_k3s_token(name: str, user: str = "server") -> str:
    return f"K10{_digest(name, 'ca', n=64)}::{user}:{_digest(name, 'pw')}"


def fake_kubeconfig(name: str) -> str:
    """What /etc/rancher/k3s/k3s.yaml looks like on a fresh server."""
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "default", "preferences": {},
        "clusters": [{"name": "default", "cluster": {
            "certificate-authority-data": _digest(name, "ca-data", n=64),
            "server": "https://127.0.0.1:6443"}}],
        "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
        "users": [{"name": "default", "user": {
            "client-certificate-data": _digest(name, "cert", n=64),
            "client-key-data": _digest(name, "key", n=64)}}],
    })


def default_command_stdout(name: str, inputs: dict) -> str:
    """What the control plane's read commands print on a real host."""
    from sophia_infra.program.cluster.nodes import READ_AGENT_TOKEN, READ_KUBECONFIG, READ_TOKEN

    if name.endswith(READ_AGENT_TOKEN):
        return fake_k3s_token(name, user="node") + "\n"
    if name.endswith(READ_TOKEN):
        return fake_k3s_token(name) + "\n"
    if name.endswith(READ_KUBECONFIG):
        return fake_kubeconfig(name)
    return ""


# Dynamic resources register as pulumi-python:dynamic/<module>:<name> (lambda_cloud/resources.py).
LAMBDA_INSTANCE = "pulumi-python:dynamic/lambda:Instance"
LAMBDA_INSTANCE_READY = "pulumi-python:dynamic/lambda:InstanceReady"


def fake_instance_address(name: str) -> str:
    """A stable address in 203.0.113.0/24 (TEST-NET-3) for an instance the plan launches."""
    return f"203.0.113.{100 + int(_digest(name, 'ip', n=8), 16) % 100}"


def fake_instance_private_address(name: str) -> str:
    """A stable private-side address in 192.0.2.0/24 (TEST-NET-1) for a launched instance."""
    return f"192.0.2.{100 + int(_digest(name, 'private-ip', n=8), 16) % 100}"


class PlanMocks(pulumi_mocks.Mocks):
    def __init__(self, command_stdout: Optional[CommandStdout] = None):
        self.command_stdout = command_stdout or default_command_stdout

    def new_resource(self, args: pulumi_mocks.MockResourceArgs):
        state = dict(args.inputs)
        typ, name = args.typ, args.name
        if typ == "command:remote:Command":
            state.setdefault("stdout", self.command_stdout(name, args.inputs))
            state.setdefault("stderr", "")
        elif typ == LAMBDA_INSTANCE:
            state.update(ip=None, private_ip=None, status="booting", hostname=None)
        elif typ == LAMBDA_INSTANCE_READY:
            # The booted instance: active, with an address from a documentation range.
            instance = name.removesuffix("-ready") + "-instance"
            state.update(ip=fake_instance_address(instance), private_ip=fake_instance_private_address(instance),
                         status="active", hostname=None)
        elif typ == "random:index/randomPassword:RandomPassword":
            length = int(args.inputs.get("length", 32))
            state["result"] = (_digest(name, "password", n=64) * 4)[:length]
        elif typ.startswith("kubernetes:") and not typ.startswith("kubernetes:helm"):
            meta = dict(state.get("metadata") or {})
            meta.setdefault("name", name)
            state["metadata"] = meta
        elif typ == "kubernetes:helm.sh/v3:Release":
            state.setdefault("status", {"name": args.inputs.get("name", name), "namespace": args.inputs.get("namespace", "default"), "status": "deployed"})
        return f"{name}-id", state

    def call(self, args: pulumi_mocks.MockCallArgs):
        return {}, None


@dataclass
class Registration:
    urn: str
    type: str
    name: str
    custom: bool
    parent: str
    dependencies: list[str]
    provider: str
    inputs: dict
    options: dict = field(default_factory=dict)


def mask(value: Any) -> Any:
    """What the engine saw, as plain JSON: Pulumi's secret envelopes become "[secret]" (a
    secret mapping keeps its keys: `{KEY: "[secret]"}`), unknowns "[unknown]", and the
    integral floats the protobuf Struct made of every number become integers again."""
    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            inner = value.get("value")
            return {k: SECRET for k in inner} if isinstance(inner, dict) else SECRET
        if value.get(rpc._special_sig_key) == rpc._special_resource_sig:
            return value.get("urn")
        return {k: mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v) for v in value]
    if value == rpc.UNKNOWN:
        return UNKNOWN
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: pulumi_mocks.Mocks):
        super().__init__(mocks)
        self.registrations: list[Registration] = []

    def RegisterResource(self, request):
        inputs = json_format.MessageToDict(request.object, preserving_proto_field_name=True)
        response = self._register(request, inputs)
        options = {}
        if request.protect:
            options["protect"] = True
        if request.deleteBeforeReplace:
            options["deleteBeforeReplace"] = True
        if list(request.ignoreChanges):
            options["ignoreChanges"] = list(request.ignoreChanges)
        if list(request.replaceOnChanges):
            options["replaceOnChanges"] = list(request.replaceOnChanges)
        if list(request.additionalSecretOutputs):
            options["additionalSecretOutputs"] = list(request.additionalSecretOutputs)
        if request.retainOnDelete:
            options["retainOnDelete"] = True
        if request.deletedWith:
            options["deletedWith"] = request.deletedWith
        self.registrations.append(Registration(
            urn=response.urn, type=request.type, name=request.name, custom=bool(request.custom),
            parent=request.parent, dependencies=sorted(set(request.dependencies)),
            provider=request.provider, inputs=mask(inputs), options=options,
        ))
        return response

    def _register(self, request, inputs: dict):
        """MockMonitor.RegisterResource without its round trip through Python values: the SDK's
        mock decodes the inputs into Python objects and encodes the mock's state back, about an
        eighth of the plan. Here the state (inputs plus what PlanMocks adds, all plain JSON: a
        secret is its {sig, value} envelope, a resource reference its {sig, urn} one) goes
        straight into the response Struct, which the SDK decodes as it decodes the SDK mock's.
        tests/test_plan.py checks that both give the same plan, outputs and secrets."""
        if request.type == "pulumi:pulumi:Stack" or list(request.transforms):
            return super().RegisterResource(request)
        urn = self.make_urn(request.parent, request.type, request.name)
        args = pulumi_mocks.MockResourceArgs(typ=request.type, name=request.name, inputs=inputs,
                                             provider=request.provider, resource_id=request.importId,
                                             custom=request.custom or False)
        id_, state = self.mocks.new_resource(args)
        id_ = id_ or ""  # as the SDK's mock sends an id it was not given
        obj = struct_pb2.Struct()
        obj.CopyFrom(request.object)  # the inputs, as they came
        try:
            obj.update({k: v for k, v in state.items() if inputs.get(k, obj) is not v})  # what the mock set
        except (TypeError, ValueError):  # a value that is not plain JSON: the SDK's own encoding
            return super().RegisterResource(request)
        for key in inputs.keys() - state.keys():  # what the mock dropped
            del obj[key]
        self.resources[urn] = pulumi_mocks.MockMonitor.ResourceRegistration(urn, id_, state)
        return resource_pb2.RegisterResourceResponse(urn=urn, id=id_, object=obj)
