"""Mocks that answer like the real providers for what the program consumes.

`PlanMocks` returns realistic outputs (a K3s secure token, a kubeconfig, generated
passwords); `RecordingMonitor` keeps what the engine would see of each registration:
parent, dependencies, provider and inputs, with secret values masked.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
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
DYNAMIC_PREFIX = "pulumi-python:dynamic"
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
    # Input key -> the URNs its value came from (what the engine's dependent-replacement walk reads).
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    # JSON pointer of each secret in `inputs` -> its keyed fingerprint (fingerprint()).
    secret_fingerprints: dict[str, str] = field(default_factory=dict)
    # A dynamic resource's outputs that are not its inputs (what its provider fills in, e.g. a
    # launched instance's address): what a preview, which hands back the inputs, does not know.
    outputs: dict[str, Any] = field(default_factory=dict)


# The key of the secret fingerprints in plan.json. Fixed by default, so two plans of one commit
# are byte-identical and a base plan compares with a head plan; set SOPHIA_PLAN_FINGERPRINT_KEY
# (the same for both plans) when the config holds real secrets, so a fingerprint cannot be
# checked against guesses. The offline plan itself only ever holds esc/'s placeholders.
FINGERPRINT_KEY_ENV = "SOPHIA_PLAN_FINGERPRINT_KEY"
_DEFAULT_FINGERPRINT_KEY = b"sophia-infra offline plan"


def fingerprint(value: Any) -> str:
    """A keyed hash (HMAC-SHA256) of a secret value: equal values, equal fingerprints; never the value."""
    key = os.environ.get(FINGERPRINT_KEY_ENV, "").encode() or _DEFAULT_FINGERPRINT_KEY
    text = json.dumps(_plain(value), sort_keys=True, separators=(",", ":"))
    return "hmac-sha256:" + hmac.new(key, text.encode(), hashlib.sha256).hexdigest()[:32]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def pointer(parts: list) -> str:
    """RFC 6901 JSON pointer of a path."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def secret_fingerprints(value: Any, path: Optional[list] = None) -> dict[str, str]:
    """JSON pointer of every secret envelope in `value` -> fingerprint of what it wraps."""
    path = path or []
    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            return {pointer(path): fingerprint(value.get("value"))}
        found: dict[str, str] = {}
        for k, v in value.items():
            found.update(secret_fingerprints(v, [*path, k]))
        return found
    if isinstance(value, list):
        found = {}
        for i, v in enumerate(value):
            found.update(secret_fingerprints(v, [*path, i]))
        return found
    return {}


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
        # What an update needs besides the inputs (tools/plan/transition.py): the options the
        # engine reads, as the SDK sent them.
        if request.deleteBeforeReplaceDefined:
            options["deleteBeforeReplaceDefined"] = True
        if request.protect:
            options["protect"] = True
        timeouts = {k: v for k, v in json_format.MessageToDict(request.customTimeouts).items() if v}
        if timeouts:
            options["customTimeouts"] = timeouts
        aliases = sorted({*request.aliasURNs, *(a.urn for a in request.aliases if a.urn)})
        if aliases or any(not a.urn for a in request.aliases):
            options["aliases"] = aliases + [json_format.MessageToDict(a.spec) for a in request.aliases if not a.urn]
        self.registrations.append(Registration(
            urn=response.urn, type=request.type, name=request.name, custom=bool(request.custom),
            parent=request.parent, dependencies=sorted(set(request.dependencies)),
            provider=request.provider, inputs=mask(inputs), options=options,
            property_dependencies={k: sorted(set(v.urns)) for k, v in sorted(request.propertyDependencies.items())
                                   if v.urns},
            secret_fingerprints=secret_fingerprints(inputs),
            outputs=self._filled_outputs(request.type, response.urn, inputs),
        ))
        return response

    def _filled_outputs(self, type_: str, urn: str, inputs: dict) -> dict:
        registered = self.resources.get(urn)
        if not type_.startswith(DYNAMIC_PREFIX) or registered is None:
            return {}
        return {k: mask(v) for k, v in sorted(registered.state.items())
                if not k.startswith("__") and inputs.get(k) != v}

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
