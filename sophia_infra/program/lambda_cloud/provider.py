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
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from sophia_infra.program.lambda_cloud import api

# Inputs whose change replaces the instance (a new host: a new launch, the old one terminated).
INSTANCE_REPLACE_KEYS = ("name", "instance_type", "region", "ssh_key_name", "image_family", "file_system_names")
WAIT_SECONDS = 1200  # Lambda: "instances might take several minutes to launch"
POLL_SECONDS = 10.0


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


class InstanceProvider(_Provider):
    """One Lambda Cloud instance: launched, waited for, terminated."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        client = self._client(props)
        instance_id = client.launch(
            name=props["name"], instance_type=props["instance_type"], region=props["region"],
            ssh_key_name=props["ssh_key_name"], file_system_names=props.get("file_system_names") or None,
            image_family=props.get("image_family") or None)
        try:
            inst = api.wait_for(client, instance_id, float(props.get("wait_seconds") or WAIT_SECONDS),
                                float(props.get("poll_seconds") or POLL_SECONDS), **self._wait_args())
        except (api.LambdaCloudError, TimeoutError) as err:
            # Pulumi records nothing for a failed create, so an instance left running here
            # would be an orphan the stack does not know about, billed by the hour: end it.
            try:
                client.terminate([instance_id])
            except api.LambdaCloudError as term_err:
                raise api.LambdaCloudError(
                    f"{err}; terminating instance {instance_id} failed too ({term_err}): terminate it in "
                    "the Lambda Cloud console, it is not in the stack") from None
            raise api.LambdaCloudError(f"{err}; instance {instance_id} was terminated, so nothing is left "
                                       "behind: run pulumi up again") from None
        return CreateResult(instance_id, {**props, **_observed(inst)})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        inst = self._client(props).get_instance(id_)
        if inst is None or inst.get("status") in api.GONE_STATUSES:
            return ReadResult("", {})  # gone: Pulumi drops it from the state
        return ReadResult(id_, {**props, **_observed(inst)})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in INSTANCE_REPLACE_KEYS if _norm(olds.get(k)) != _norm(news.get(k))]
        changed = replaces or [k for k in ("api_key", "base_url", "wait_seconds", "poll_seconds")
                               if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=bool(replaces))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        # Only bookkeeping inputs change in place (the key, timeouts); the host stays.
        return UpdateResult({**news, **{k: olds.get(k) for k in ("ip", "private_ip", "status", "hostname")}})

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


def _norm(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else (value or None)


def _observed(inst: dict) -> dict[str, Any]:
    return {"ip": inst.get("ip"), "private_ip": inst.get("private_ip"),
            "status": inst.get("status"), "hostname": inst.get("hostname")}


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
        replaces = [k for k in ("name", "public_key") if olds.get(k) != news.get(k)]
        changed = replaces or [k for k in ("api_key", "base_url") if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=bool(replaces))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult({**news, "adopted": olds.get("adopted", False)})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        if not props.get("adopted"):
            self._client(props).delete_ssh_key(id_)


def rule_key(rule: dict) -> tuple:
    return (rule.get("protocol"), tuple(rule.get("port_range") or ()), rule.get("source_network"),
            rule.get("description"))


class FirewallRulesProvider(_Provider):
    """This stack's inbound rules in the account-wide list, which other users share.

    The API has one list per account and PUT replaces all of it, so every change is a
    read-modify-write that keeps every rule this stack did not add (`owned`): a rule that was
    already there (someone else's, identical) is never removed by this stack."""

    def _apply(self, props: dict[str, Any], wanted: list[dict], owned: list[dict]) -> list[dict]:
        client = self._client(props)
        current = client.firewall_rules()
        wanted_keys = {rule_key(r) for r in wanted}
        drop = {rule_key(r) for r in owned} - wanted_keys
        kept = [r for r in current if rule_key(r) not in drop]
        kept_keys = {rule_key(r) for r in kept}
        added = [r for r in wanted if rule_key(r) not in kept_keys]
        if added or len(kept) != len(current):
            client.set_firewall_rules(kept + added)
        before = {rule_key(r) for r in current}
        still_owned = [r for r in owned if rule_key(r) in wanted_keys]
        return still_owned + [r for r in added if rule_key(r) not in before]

    def create(self, props: dict[str, Any]) -> CreateResult:
        owned = self._apply(props, list(props["rules"]), [])
        return CreateResult(props["name"], {**props, "owned": owned})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        present = {rule_key(r) for r in self._client(props).firewall_rules()}
        owned = [r for r in props.get("owned") or [] if rule_key(r) in present]
        return ReadResult(id_, {**props, "owned": owned})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = sorted(map(rule_key, olds.get("rules") or [])) != sorted(map(rule_key, news.get("rules") or [])) \
            or any(olds.get(k) != news.get(k) for k in ("api_key", "base_url"))
        return DiffResult(changes=changed, replaces=[])

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        owned = self._apply(news, list(news["rules"]), list(olds.get("owned") or []))
        return UpdateResult({**news, "owned": owned})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        self._apply(props, [], list(props.get("owned") or []))
