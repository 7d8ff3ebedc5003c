"""A small client of the Lambda Cloud API: the endpoints the provider needs, its limits, its errors.

What it follows (Lambda Cloud API reference, https://docs-api.lambda.ai/api/cloud, v1):
- Base URL https://cloud.lambda.ai/api/v1 (formerly cloud.lambdalabs.com/api/v1, which
  still answers); the key goes in `Authorization: Bearer <key>`.
- A success is `{"data": ...}`; a failure is `{"error": {"code", "message", "suggestion"?}}`,
  and only `code` is stable (messages may change), e.g. `global/invalid-api-key`,
  `global/object-does-not-exist`, `instance-operations/launch/insufficient-capacity`.
- Limits: about one request per second; `/instance-operations/launch` one per 12 seconds
  (five a minute; older docs said 10 s). Past them the API answers 429.
- Endpoints: `GET /instance-types` (price_cents_per_hour, regions_with_capacity_available),
  `POST /instance-operations/launch` (`name`, `tags: [{key, value}]`, ...) ->
  `{"instance_ids": [...]}`, `GET /instances` (every instance of the account, with `name` and
  `tags`), `GET /instances/{id}` (status booting|active|unhealthy|terminating|terminated, ip,
  private_ip),
  `POST /instance-operations/terminate` `{"instance_ids": [...]}`, `GET/POST /ssh-keys`,
  `DELETE /ssh-keys/{id}`, `GET/PUT /firewall-rules` (PUT replaces the whole account-wide
  list: `{"data": [{protocol, port_range, source_network, description}]}`).

The key is never part of a message, a URL or an exception's text.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

BASE_URL = "https://cloud.lambda.ai/api/v1"
REQUEST_INTERVAL = 1.0  # seconds between any two requests
LAUNCH_INTERVAL = 12.0  # seconds between two launches
MAX_RETRIES = 6  # 429s (and 5xx on reads) retried with exponential backoff
HTTP_TIMEOUT = 30.0

INSUFFICIENT_CAPACITY = "instance-operations/launch/insufficient-capacity"
INVALID_API_KEY = "global/invalid-api-key"
NOT_FOUND = "global/object-does-not-exist"
GONE_STATUSES = ("terminated",)
ENDING_STATUSES = ("terminating", "terminated")


class LambdaCloudError(Exception):
    """A failed API call, as one sentence (never with the key)."""

    def __init__(self, message: str, status: int = 0, code: str = ""):
        super().__init__(message)
        self.status, self.code = status, code


class AuthError(LambdaCloudError):
    pass


class CapacityError(LambdaCloudError):
    pass


class NotFound(LambdaCloudError):
    pass


class RateLimited(LambdaCloudError):
    pass


@dataclass
class Throttle:
    """Spaces requests out: one per `interval`, launches one per `launch_interval`.
    Shared by every client of a process (the provider runs resources in parallel threads)."""

    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    interval: float = REQUEST_INTERVAL
    launch_interval: float = LAUNCH_INTERVAL
    _last: float = field(default=float("-inf"))
    _last_launch: float = field(default=float("-inf"))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait(self, launch: bool = False) -> None:
        with self._lock:
            ready = self._last + self.interval
            if launch:
                ready = max(ready, self._last_launch + self.launch_interval)
            now = self.clock()
            if ready > now:
                self.sleep(ready - now)
                now = self.clock()
            self._last = now
            if launch:
                self._last_launch = now

    def backoff(self, attempt: int, retry_after: Optional[float]) -> None:
        self.sleep(retry_after if retry_after is not None else self.interval * 2 ** attempt)


_SHARED = Throttle()


def _error_body(raw: bytes) -> tuple[str, str, str]:
    try:
        err = json.loads(raw or b"{}").get("error") or {}
    except (ValueError, AttributeError):
        err = {}
    if not isinstance(err, dict):
        err = {}
    return str(err.get("code") or ""), str(err.get("message") or ""), str(err.get("suggestion") or "")


class Client:
    def __init__(self, api_key: str, base_url: str = BASE_URL, throttle: Optional[Throttle] = None,
                 max_retries: int = MAX_RETRIES, timeout: float = HTTP_TIMEOUT):
        self._key = api_key
        self.base_url = base_url.rstrip("/")
        self.throttle = throttle or _SHARED
        self.max_retries = max_retries
        self.timeout = timeout

    def __repr__(self) -> str:  # never the key
        return f"Client({self.base_url!r})"

    # ------------------------------------------------------------------ transport
    def _send(self, method: str, path: str, body: Any) -> tuple[int, bytes, Optional[str]]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self._key}", "Accept": "application/json",
            **({"Content-Type": "application/json"} if data is not None else {})})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.read(), None
        except urllib.error.HTTPError as err:
            return err.code, err.read(), err.headers.get("Retry-After")
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise LambdaCloudError(f"cannot reach the Lambda Cloud API at {self.base_url} ({reason}); "
                                   "check the network and try again") from None

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """The `data` of a successful call; a LambdaCloudError (one sentence) otherwise."""
        launch = path == "/instance-operations/launch"
        for attempt in range(self.max_retries + 1):
            self.throttle.wait(launch=launch)
            status, raw, retry_after = self._send(method, path, body)
            if 200 <= status < 300:
                return (json.loads(raw) if raw else {}).get("data")
            code, message, suggestion = _error_body(raw)
            # A 429 is always safe to retry; a 5xx only when the call changes nothing.
            retryable = status == 429 or (status >= 500 and method == "GET")
            if retryable and attempt < self.max_retries:
                try:
                    wait = float(retry_after) if retry_after is not None else None
                except ValueError:
                    wait = None
                self.throttle.backoff(attempt, wait)
                continue
            raise self._error(method, path, status, code, message, suggestion)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _error(self, method: str, path: str, status: int, code: str, message: str, suggestion: str) -> LambdaCloudError:
        if status in (401, 403) and (status == 401 or code == INVALID_API_KEY):
            return AuthError("the Lambda Cloud API refused the API key (HTTP "
                             f"{status}{', ' + code if code else ''}): it is wrong, revoked or missing; set a valid key "
                             "in the ESC environment as sophia.infrastructure.lambda_labs.api_key "
                             "(sophia:lambdaLabsApiKey)", status, code)
        if status == 404 or code == NOT_FOUND:
            return NotFound(f"{method} {path}: not found ({code or status})", status, code)
        if status == 429:
            return RateLimited(f"the Lambda Cloud API kept answering 429 (rate limited) to {method} {path} after "
                               f"{self.max_retries} retries; wait a minute and run again", status, code)
        detail = message.rstrip(".") or f"HTTP {status}"
        hint = f"; {suggestion.rstrip('.')}" if suggestion else ""
        return LambdaCloudError(f"Lambda Cloud API {method} {path} failed: {detail} ({code or status}){hint}",
                                status, code)

    # ------------------------------------------------------------------ endpoints
    def instance_types(self) -> dict[str, dict]:
        """Instance type -> {price_cents_per_hour, description, regions (with capacity now)}."""
        data = self.request("GET", "/instance-types") or {}
        out = {}
        for name, entry in data.items():
            it = entry.get("instance_type") or {}
            out[name] = {
                "price_cents_per_hour": it.get("price_cents_per_hour"),
                "description": it.get("description", ""),
                "regions": sorted(r.get("name", "") for r in entry.get("regions_with_capacity_available") or []),
            }
        return out

    def launch(self, *, name: str, instance_type: str, region: str, ssh_key_name: str,
               file_system_names: Optional[list[str]] = None, image_family: Optional[str] = None,
               tags: Optional[dict[str, str]] = None) -> str:
        """Launch one instance; its id. No capacity: a CapacityError naming where there is some."""
        body: dict[str, Any] = {"region_name": region, "instance_type_name": instance_type,
                                "ssh_key_names": [ssh_key_name], "quantity": 1, "name": name}
        if tags:
            body["tags"] = [{"key": k, "value": v} for k, v in sorted(tags.items())]
        if file_system_names:
            body["file_system_names"] = list(file_system_names)
        if image_family:
            body["image"] = {"family": image_family}
        try:
            data = self.request("POST", "/instance-operations/launch", body)
        except LambdaCloudError as err:
            if err.code != INSUFFICIENT_CAPACITY:
                raise
            raise self._capacity_error(instance_type, region) from None
        ids = (data or {}).get("instance_ids") or []
        if len(ids) != 1:
            raise LambdaCloudError(f"launching {instance_type} in {region} returned {len(ids)} instance ids, not 1; "
                                   "check the Lambda Cloud console for instances named " + name)
        return ids[0]

    def _capacity_error(self, instance_type: str, region: str) -> CapacityError:
        try:
            regions = self.instance_types().get(instance_type, {}).get("regions", [])
        except LambdaCloudError:
            regions = None
        if regions:
            where = f"it has capacity now in {', '.join(regions)}; set provision.region to one of them or try again later"
        elif regions is None:
            where = "the regions with capacity could not be read; try again later"
        else:
            where = "no region has capacity for it right now; try again later or choose another instance type"
        return CapacityError(f"Lambda Cloud has no capacity for {instance_type} in {region}; {where}.",
                             400, INSUFFICIENT_CAPACITY)

    def get_instance(self, instance_id: str) -> Optional[dict]:
        """The instance, or None when it no longer exists."""
        try:
            return self.request("GET", f"/instances/{instance_id}")
        except NotFound:
            return None

    def instances(self) -> list[dict]:
        """Every instance of the account that is not terminated, with its name and tags."""
        return list(self.request("GET", "/instances") or [])

    def terminate(self, instance_ids: list[str]) -> None:
        try:
            self.request("POST", "/instance-operations/terminate", {"instance_ids": list(instance_ids)})
        except NotFound:
            pass  # already gone

    def ssh_keys(self) -> list[dict]:
        return list(self.request("GET", "/ssh-keys") or [])

    def add_ssh_key(self, name: str, public_key: str) -> dict:
        return self.request("POST", "/ssh-keys", {"name": name, "public_key": public_key})

    def delete_ssh_key(self, key_id: str) -> None:
        try:
            self.request("DELETE", f"/ssh-keys/{key_id}")
        except NotFound:
            pass

    def firewall_rules(self) -> list[dict]:
        return list(self.request("GET", "/firewall-rules") or [])

    def set_firewall_rules(self, rules: list[dict]) -> list[dict]:
        return list(self.request("PUT", "/firewall-rules", {"data": rules}) or [])


def wait_for(client: Client, instance_id: str, timeout: float, poll: float,
             clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> dict:
    """Poll until the instance is active with an address; TimeoutError or LambdaCloudError otherwise."""
    deadline = clock() + timeout
    last = "unknown"
    while True:
        inst = client.get_instance(instance_id)
        if inst is None or inst.get("status") in GONE_STATUSES:
            raise LambdaCloudError(f"instance {instance_id} disappeared while booting (last status {last}); "
                                   "Lambda Cloud may have reclaimed it: run pulumi up again")
        last = str(inst.get("status"))
        if last == "active" and inst.get("ip"):
            return inst
        if clock() >= deadline:
            raise TimeoutError(f"instance {instance_id} was not active with an address after {timeout:.0f} s "
                               f"(status {last})")
        sleep(poll)
