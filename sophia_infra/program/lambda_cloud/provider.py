"""The Lambda Cloud instances, SSH key and firewall rules as Pulumi resources: dynamic providers.

Why a dynamic provider: there is no official Pulumi (or maintained Terraform) provider for
Lambda Cloud, and the API is small (launch, get, terminate; SSH keys; one firewall list), so
the create/read/update/delete below are a few dozen lines each, in the program's own
language, with no plugin to build, publish or pin.

Its limits, as Pulumi documents them (pulumi.com/docs/iac/concepts/providers/dynamic-providers,
and pulumi/pulumi#15864 for secrets):
- Pulumi serializes the provider object (dill) into each resource's state (`__provider`)
  and runs it in a separate process (`python -m pulumi.dynamic`) from the project folder.
  Classes of this package are serialized by reference, so that process must be able to
  import `sophia_infra` (it can: it runs with the project's virtualenv from its folder).
  Keep the providers free of state worth serializing: no clients, no keys, no Outputs.
- A value captured by the provider object would be serialized with it. The API key is
  therefore a **secret input** (`api_key`) of every resource, never an attribute or a closure;
  the resources mark it as a secret output too, so it is encrypted in the state, and
  `delete` and `read` take it from the state (a rotated key reaches them on the next `up`).
- `pulumi refresh` calls `read`; an instance that is gone reads back as deleted.
- Only Python programs can use these resources, and `pulumi import` is not supported.

What the pinned SDK's servicer (pulumi/dynamic/__main__.py) does, which shapes the code below:
- `Diff` and `Check` get unknown inputs as pulumi.output.Unknown (preview; the dependents of a
  delete-first replacement): every `diff` goes through `diff_inputs`, which never raises on
  one and never asks for a replacement because of one.
- A request's timeout is never read, so `custom_timeouts` would do nothing: the waits are
  bounded by the resources' own `wait_seconds`.
- One process serves every dynamic resource with four worker threads; a call waits for a free
  one. So no create waits for a boot (InstanceReadyProvider does, after the launches).
- An exception becomes a gRPC error carrying its traceback (the SDK's `_abort_with_traceback`;
  no provider can avoid that), whose last line is the exception: errors meant for operators
  are LambdaCloudError sentences, raised `from None` so only one is printed.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult
from pulumi.output import Unknown
from pulumi.runtime import rpc

from sophia_infra.program.lambda_cloud import api

# Inputs whose change replaces the instance (a new host: a new launch, the old one terminated).
INSTANCE_REPLACE_KEYS = ("name", "instance_type", "region", "image_family", "file_system_names")
# Bookkeeping inputs: changed in place, the host stays. The SSH key is one of them: Lambda puts
# it on the host at launch only, so a rotated key changes nothing on a running host (the
# cluster layer keeps its authorized_keys, cluster/ssh_keys.py); replacing a GPU host for it
# would lose its disk and, for the control plane, etcd.
INSTANCE_UPDATE_KEYS = ("api_key", "base_url", "wait_seconds", "poll_seconds", "stack_tag", "ssh_key_name")
READY_UPDATE_KEYS = ("api_key", "base_url", "wait_seconds", "poll_seconds")
WAIT_SECONDS = 1200  # Lambda: "instances might take several minutes to launch"
POLL_SECONDS = 10.0


def is_unknown(value: Any) -> bool:
    """Whether the value, or anything in it, is not known yet. In a preview, and when the
    engine re-diffs the dependents of a delete-first replacement (step_generator.go
    calculateDependentReplacements), the servicer hands `diff` such inputs as
    pulumi.output.Unknown (Diff deserializes with keep_unknowns=True)."""
    if isinstance(value, Unknown) or value == rpc.UNKNOWN:
        return True
    if isinstance(value, dict):
        return any(is_unknown(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(is_unknown(v) for v in value)
    return False


def diff_inputs(olds: dict[str, Any], news: dict[str, Any], replace_keys: tuple[str, ...],
                update_keys: tuple[str, ...], same: Callable[[str, Any, Any], bool]) -> DiffResult:
    """Known inputs decide as usual; an unknown one is a change, never an error and never by
    itself a replacement: the real value is diffed again once known, and replaces then if it
    must. (Asking to replace on an unknown would delete a GPU host for a value that may not
    change at all.)"""
    unknown = [k for k in (*replace_keys, *update_keys) if is_unknown(news.get(k))]
    replaces = [k for k in replace_keys if k not in unknown and not same(k, olds.get(k), news.get(k))]
    updates = [k for k in update_keys if k not in unknown and not same(k, olds.get(k), news.get(k))]
    return DiffResult(changes=bool(replaces or updates or unknown), replaces=replaces,
                      delete_before_replace=bool(replaces))


def _equal(_key: str, old: Any, new: Any) -> bool:
    return old == new


class _Provider(ResourceProvider):
    """Time is injectable for tests; None (the default, and what is serialized) = the real
    clock and the process-wide throttle of api.py."""

    serialize_as_secret_always = True

    def __init__(self, sleep: Optional[Callable[[float], None]] = None,
                 clock: Optional[Callable[[], float]] = None, throttle: Optional[api.Throttle] = None):
        super().__init__()
        self._sleep, self._clock, self._throttle = sleep, clock, throttle

    def _client(self, props: dict[str, Any]) -> api.Client:
        return api.Client(props["api_key"], base_url=props.get("base_url") or api.BASE_URL, throttle=self._throttle)

    def _wait_args(self) -> dict[str, Any]:
        return {"sleep": self._sleep or time.sleep, "clock": self._clock or time.monotonic}


# The tag every instance is launched with: the stack it belongs to (`<project>-<stack>`), so
# that an instance found by name is adopted only by its own stack.
STACK_TAG = "sophia-stack"


def tags_of(inst: dict) -> dict[str, str]:
    return {str(t.get("key")): str(t.get("value")) for t in inst.get("tags") or [] if isinstance(t, dict)}


class InstanceProvider(_Provider):
    """One Lambda Cloud instance: launched or adopted, terminated. Its create returns as soon as
    the launch is accepted; the boot is awaited by InstanceReadyProvider, a resource of its own.

    Why: Pulumi records an instance only once `create` returns. Everything that can go wrong
    between the launch and that moment (the launch's answer lost, the run interrupted, an
    exception) would leave a billed host the stack does not know, and the next `up` would
    launch a second one. So: before a launch, and after a launch whose outcome is not known,
    list the account's instances and adopt the one with this name and this stack's tag; and
    keep the window short (no boot wait in here)."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        client = self._client(props)
        inst = self._adoptable(client, props)
        if inst is None:
            inst = {"id": self._launch(client, props), "status": "booting"}
        return CreateResult(str(inst["id"]), {**props, **_observed(inst)})

    def _launch(self, client: api.Client, props: dict[str, Any]) -> str:
        tag = props.get("stack_tag")
        try:
            return client.launch(
                name=props["name"], instance_type=props["instance_type"], region=props["region"],
                ssh_key_name=props["ssh_key_name"], file_system_names=props.get("file_system_names") or None,
                image_family=props.get("image_family") or None, tags={STACK_TAG: tag} if tag else None)
        except api.LambdaCloudError as err:
            if 0 < err.status < 500:
                raise  # refused (capacity, key, quota, parameters): nothing was launched
            lost: BaseException = err
        except Exception as err:  # an answer that could not be read: the launch may have happened
            lost = err
        found = self._adoptable(client, props)
        if found is not None:
            return str(found["id"])
        raise api.LambdaCloudError(
            f"launching {props['name']} failed or its answer was lost ({lost}) and the account shows no instance "
            f"named {props['name']} tagged {STACK_TAG}={tag}; run pulumi up again (it adopts such an instance if "
            "one appears, instead of launching another)") from None

    def _adoptable(self, client: api.Client, props: dict[str, Any]) -> Optional[dict]:
        """This stack's live instance with this name, if any (an earlier run launched it and
        never recorded it). None when untagged resources cannot be told apart (no stack_tag)."""
        tag, name = props.get("stack_tag"), props["name"]
        if not tag:
            return None
        mine = [i for i in client.instances() if i.get("name") == name and tags_of(i).get(STACK_TAG) == tag
                and i.get("status") not in api.ENDING_STATUSES]
        if not mine:
            return None
        if len(mine) > 1:
            ids = ", ".join(sorted(str(i.get("id")) for i in mine))
            raise api.LambdaCloudError(f"the account has {len(mine)} instances named {name} tagged {STACK_TAG}={tag} "
                                       f"({ids}); terminate all but one in the Lambda Cloud console and run pulumi up again")
        inst = mine[0]
        have = ((inst.get("instance_type") or {}).get("name"), (inst.get("region") or {}).get("name"))
        if have != (props["instance_type"], props["region"]):
            raise api.LambdaCloudError(
                f"instance {inst.get('id')} named {name} (tagged {STACK_TAG}={tag}) is a {have[0]} in {have[1]}, not the "
                f"{props['instance_type']} in {props['region']} the stack wants; terminate it in the Lambda Cloud "
                "console and run pulumi up again")
        return inst

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        inst = self._client(props).get_instance(id_)
        if inst is None or inst.get("status") in api.GONE_STATUSES:
            return ReadResult("", {})  # gone: Pulumi drops it from the state
        return ReadResult(id_, {**props, **_observed(inst)})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return diff_inputs(olds, news, INSTANCE_REPLACE_KEYS, INSTANCE_UPDATE_KEYS,
                           lambda _k, old, new: _norm(old) == _norm(new))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        # Only bookkeeping inputs change in place (the key, timeouts, the tag); the host stays.
        return UpdateResult({**news, **{k: olds.get(k) for k in OBSERVED}})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        client = self._client(props)
        client.terminate([id_])
        wait = self._wait_args()
        deadline = wait["clock"]() + float(props.get("wait_seconds") or WAIT_SECONDS)
        while True:
            inst = client.get_instance(id_)
            if inst is None or inst.get("status") in api.GONE_STATUSES:
                return
            if wait["clock"]() >= deadline:
                raise api.LambdaCloudError(f"instance {id_} was still {inst.get('status')} after the terminate "
                                           "request; check the Lambda Cloud console and run pulumi destroy again")
            wait["sleep"](float(props.get("poll_seconds") or POLL_SECONDS))


class InstanceReadyProvider(_Provider):
    """Waits until the instance is active with its addresses (`ip`, `private_ip`).

    A resource of its own, after the instance: the instance is in the stack before the wait
    starts, so a wait that fails or is interrupted leaves nothing unknown behind (the next
    `up` waits again), and a long boot does not hold up the other launches (the dynamic
    provider's process serves four calls at once: launches queue before these waits)."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        instance_id = props["instance_id"]
        try:
            inst = api.wait_for(self._client(props), instance_id, float(props.get("wait_seconds") or WAIT_SECONDS),
                                float(props.get("poll_seconds") or POLL_SECONDS), **self._wait_args())
        except Exception as err:  # noqa: BLE001 - whatever it was, say what is left and what to do
            raise api.LambdaCloudError(
                f"{err}; instance {instance_id} stays in the stack: run pulumi up again to wait for it once more, or "
                "pulumi refresh if it is gone") from None
        return CreateResult(instance_id, {**props, **_observed(inst)})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        inst = self._client(props).get_instance(id_)
        if inst is None or inst.get("status") in api.GONE_STATUSES:
            return ReadResult("", {})
        return ReadResult(id_, {**props, **_observed(inst)})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # A new instance is a new wait; the old one is gone with its instance (delete: nothing).
        result = diff_inputs(olds, news, ("instance_id",), READY_UPDATE_KEYS, _equal)
        # The one exception to "an unknown never replaces by itself": this resource holds nothing,
        # and its instance id is unknown only when that instance is being replaced (delete-first).
        # Answering "replace" then lets the engine's dependent walk (step_generator.go
        # calculateDependentReplacements) go on to the node's commands, whose address comes from
        # here: the node is drained and its install deleted while the old host still runs, before
        # the instance is terminated; an update here would stop the walk and strand them.
        replaces = ["instance_id"] if is_unknown(news.get("instance_id")) else result.replaces
        return DiffResult(changes=result.changes, replaces=replaces, delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult({**news, **{k: olds.get(k) for k in OBSERVED}})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        pass  # the instance's own delete terminates it


def _norm(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else (value or None)


OBSERVED = ("ip", "private_ip", "status", "hostname")


def _observed(inst: dict) -> dict[str, Any]:
    return {k: inst.get(k) for k in OBSERVED}


class SshKeyProvider(_Provider):
    """The public half of the stack's SSH key, registered under a name (the private key never leaves)."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        client = self._client(props)
        name, public_key = props["name"], props["public_key"].strip()
        existing = next((k for k in client.ssh_keys() if k.get("name") == name), None)
        if existing is not None:
            if (existing.get("public_key") or "").strip().split()[:2] != public_key.split()[:2]:
                raise api.LambdaCloudError(
                    f"the Lambda Cloud account already has an SSH key named {name} with another public key; "
                    "delete it in the console or give this stack another key name")
            return CreateResult(existing["id"], {**props, "adopted": True})
        key = client.add_ssh_key(name, public_key)
        return CreateResult(key["id"], {**props, "adopted": False})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        key = next((k for k in self._client(props).ssh_keys() if k.get("id") == id_), None)
        return ReadResult(id_, props) if key else ReadResult("", {})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # A new key has a new name (its fingerprint, resources.py): it is registered before the
        # old one is deleted, so there is never a moment without the stack's key.
        result = diff_inputs(olds, news, ("name", "public_key"), ("api_key", "base_url"), _equal)
        return DiffResult(changes=result.changes, replaces=result.replaces, delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult({**news, "adopted": olds.get("adopted", False)})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        if not props.get("adopted"):
            self._client(props).delete_ssh_key(id_)


def rule_key(rule: dict) -> tuple:
    return (rule.get("protocol"), tuple(rule.get("port_range") or ()), rule.get("source_network"),
            rule.get("description"))


# Read-modify-write rounds before giving up on a list that another writer keeps replacing.
FIREWALL_APPLY_ATTEMPTS = 3


def _same_rules(key: str, old: Any, new: Any) -> bool:
    if key == "rules":
        return sorted(map(rule_key, old or [])) == sorted(map(rule_key, new or []))
    return old == new


def missing_rules(wanted: list[dict], current: list[dict]) -> list[dict]:
    present = {rule_key(r) for r in current}
    return [r for r in wanted if rule_key(r) not in present]


class FirewallRulesProvider(_Provider):
    """This stack's inbound rules in the account-wide list, which other users share.

    The API has one list per account and PUT replaces all of it, so every change is a
    read-modify-write that keeps every rule this stack did not add (`owned`): a rule that was
    already there (someone else's, identical) is never removed by this stack. Another writer
    (another stack, the console) can replace the list at any time, dropping this stack's
    rules: `read` (pulumi refresh) and `diff` (every preview and up) compare the account's
    list with the wanted rules, and a missing one is a change that `update` puts back."""

    def _apply(self, props: dict[str, Any], wanted: list[dict], owned: list[dict]) -> list[dict]:
        """The rules this stack owns once the account's list holds `wanted` and none of the
        `owned` rules no longer wanted. Every PUT is followed by a GET: a writer racing
        between our GET and PUT shows up there, and the round is done again."""
        client = self._client(props)
        wanted_keys = {rule_key(r) for r in wanted}
        drop = {rule_key(r) for r in owned} - wanted_keys
        owned_keys = {rule_key(r) for r in owned} & wanted_keys
        current = client.firewall_rules()
        for _ in range(FIREWALL_APPLY_ATTEMPTS):
            kept = [r for r in current if rule_key(r) not in drop]
            added = missing_rules(wanted, kept)
            if not added and len(kept) == len(current):
                break
            owned_keys |= {rule_key(r) for r in added}  # what this stack put there is its own
            client.set_firewall_rules(kept + added)
            current = client.firewall_rules()
        still_missing = missing_rules(wanted, current)
        if still_missing:
            raise api.LambdaCloudError(
                f"the account's Lambda firewall list still lacks {len(still_missing)} of this stack's rules after "
                f"{FIREWALL_APPLY_ATTEMPTS} rounds of writing them (something else keeps replacing the list, e.g. "
                "another stack or the console); stop the other writer and run pulumi up again")
        seen: set = set()
        return [r for r in wanted if rule_key(r) in owned_keys and not (rule_key(r) in seen or seen.add(rule_key(r)))]

    def create(self, props: dict[str, Any]) -> CreateResult:
        owned = self._apply(props, list(props["rules"]), [])
        return CreateResult(props["name"], {**props, "owned": owned, "missing": []})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        current = self._client(props).firewall_rules()
        present = {rule_key(r) for r in current}
        owned = [r for r in props.get("owned") or [] if rule_key(r) in present]
        return ReadResult(id_, {**props, "owned": owned, "missing": missing_rules(list(props.get("rules") or []), current)})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        result = diff_inputs(olds, news, (), ("rules", "api_key", "base_url"), _same_rules)
        if result.changes:
            return result
        # Same inputs: is the account's list still carrying them? (refresh recorded `missing`;
        # without a refresh, look now.)
        drifted = bool(olds.get("missing")) or bool(self._missing_now(news))
        return DiffResult(changes=drifted, replaces=[])

    def _missing_now(self, props: dict[str, Any]) -> list[dict]:
        try:
            return missing_rules(list(props.get("rules") or []), self._client(props).firewall_rules())
        except api.LambdaCloudError:
            return []  # unreachable now: the next refresh or up looks again

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        owned = self._apply(news, list(news["rules"]), list(olds.get("owned") or []))
        return UpdateResult({**news, "owned": owned, "missing": []})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        self._apply(props, [], list(props.get("owned") or []))
