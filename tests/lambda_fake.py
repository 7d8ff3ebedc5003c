"""A local fake of the Lambda Cloud API (http.server on 127.0.0.1, a random port) for tests.

It implements the endpoints and bodies of the Lambda Cloud API reference
(https://docs-api.lambda.ai/api/cloud): `{"data": ...}` on success, `{"error": {"code",
"message", "suggestion"}}` on failure, Bearer authentication, and the documented codes
(`global/invalid-api-key` 401, `global/object-does-not-exist` 404,
`instance-operations/launch/insufficient-capacity` 400, 429 when rate limited).

Knobs (attributes of FakeLambda, changed by the tests while it runs):
- `capacity`: instance type -> regions that have capacity; a launch elsewhere fails.
- `rate_limit_next`: answer this many next requests with 429 (with Retry-After: 0).
- `boot_polls`: GETs of a new instance that still say `booting` (then `active` with an ip);
  None = it never becomes active.
- `vanish`: instance ids that disappear (404) from now on.
- `fail_terminate`: terminate answers 500.
- `lose_launch_responses`: this many next launches create the instance, then drop the
  connection without an answer (the client sees the response lost).
- `boot_after_launches`: new instances stay `booting` until this many launches were made
  (then `boot_polls` counts as usual); None = no such gate.
- `after_put`: called (with the fake) right after a PUT /firewall-rules is stored: another
  writer replacing the account-wide list between this stack's PUT and its next GET.
"""

from __future__ import annotations

import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional

API_KEY = "secret-test-key-0123456789"
PREFIX = "/api/v1"
LOST = 0  # a status that means: close the connection without answering


def _err(status: int, code: str, message: str, suggestion: Optional[str] = None) -> tuple[int, dict]:
    body: dict[str, Any] = {"code": code, "message": message}
    if suggestion:
        body["suggestion"] = suggestion
    return status, {"error": body}


class FakeLambda:
    def __init__(self) -> None:
        self.capacity: dict[str, list[str]] = {
            "gpu_1x_gh200": ["us-east-3"], "gpu_1x_a100": ["us-east-1", "us-west-2"],
            "gpu_1x_a6000": ["us-east-1"], "gpu_1x_a10": ["us-east-1"], "gpu_1x_rtx6000": ["us-south-1"]}
        self.prices = {"gpu_1x_gh200": 149, "gpu_1x_a100": 129, "gpu_1x_a6000": 80, "gpu_1x_a10": 75,
                       "gpu_1x_rtx6000": 50}
        self.rate_limit_next = 0
        self.boot_polls: Optional[int] = 1
        self.vanish: set[str] = set()
        self.fail_terminate = False
        self.lose_launch_responses = 0
        self.boot_after_launches: Optional[int] = None
        self.launches = 0
        self.after_put: Optional[Callable[["FakeLambda"], None]] = None
        self.instances: dict[str, dict] = {}
        self.polls: dict[str, int] = {}
        self.ssh_keys: dict[str, dict] = {}
        self.firewall: list[dict] = []
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[Any] = []
        self.auth_headers: list[str] = []
        self._ids = itertools.count(1)
        self._ips = itertools.count(20)
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{PREFIX}"

    def __enter__(self) -> "FakeLambda":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def running(self) -> list[dict]:
        return [i for i in self.instances.values() if i["status"] != "terminated"]

    # ------------------------------------------------------------------ the API
    def handle(self, method: str, path: str, auth: str, body: Any) -> tuple[int, dict, dict]:
        with self.lock:
            self.requests.append((method, path))
            self.bodies.append(body)
            self.auth_headers.append(auth)
            if self.rate_limit_next > 0:
                self.rate_limit_next -= 1
                status, payload = _err(429, "global/too-many-requests", "Too many requests",
                                       "Wait a moment and try again")
                return status, payload, {"Retry-After": "0"}
            if auth != f"Bearer {API_KEY}":
                status, payload = _err(401, "global/invalid-api-key", "API key was invalid, expired, or deleted.",
                                       "Check your API key or create a new one, then try again.")
                return status, payload, {}
            if not path.startswith(PREFIX):
                return (*_err(404, "global/object-does-not-exist", "Not found"), {})
            status, payload = self._route(method, path[len(PREFIX):], body)
            return status, payload, {}

    def _route(self, method: str, path: str, body: Any) -> tuple[int, dict]:
        if method == "GET" and path == "/instance-types":
            return 200, {"data": {name: {
                "instance_type": {"name": name, "description": name, "price_cents_per_hour": self.prices.get(name, 100),
                                  "specs": {"vcpus": 8, "memory_gib": 64, "storage_gib": 512, "gpus": 1}},
                "regions_with_capacity_available": [{"name": r, "description": r} for r in self.capacity.get(name, [])],
            } for name in sorted(set(self.capacity) | set(self.prices))}}
        if method == "POST" and path == "/instance-operations/launch":
            return self._launch(body or {})
        if method == "GET" and path == "/instances":
            return 200, {"data": [dict(i) for iid, i in self.instances.items()
                                  if i["status"] != "terminated" and iid not in self.vanish]}
        if method == "GET" and path.startswith("/instances/"):
            return self._get(path.rsplit("/", 1)[1])
        if method == "POST" and path == "/instance-operations/terminate":
            if self.fail_terminate:
                return _err(500, "global/unknown", "Internal error")
            done = []
            for iid in body.get("instance_ids", []):
                inst = self.instances.get(iid)
                if inst is None or iid in self.vanish:
                    return _err(404, "global/object-does-not-exist", f"Instance {iid} not found")
                inst["status"] = "terminated"
                done.append(inst)
            return 200, {"data": {"terminated_instances": done}}
        if method == "GET" and path == "/ssh-keys":
            return 200, {"data": list(self.ssh_keys.values())}
        if method == "POST" and path == "/ssh-keys":
            if any(k["name"] == body["name"] for k in self.ssh_keys.values()):
                return _err(400, "global/invalid-parameters", "SSH key name already in use")
            if "PRIVATE KEY" in body.get("public_key", ""):
                return _err(400, "global/invalid-parameters", "a private key was sent")
            kid = f"key-{next(self._ids)}"
            self.ssh_keys[kid] = {"id": kid, "name": body["name"], "public_key": body["public_key"]}
            return 200, {"data": self.ssh_keys[kid]}
        if method == "DELETE" and path.startswith("/ssh-keys/"):
            kid = path.rsplit("/", 1)[1]
            if self.ssh_keys.pop(kid, None) is None:
                return _err(404, "global/object-does-not-exist", "SSH key not found")
            return 200, {"data": {}}
        if method == "GET" and path == "/firewall-rules":
            return 200, {"data": list(self.firewall)}
        if method == "PUT" and path == "/firewall-rules":
            self.firewall = list(body.get("data", []))
            stored = list(self.firewall)
            if self.after_put is not None:
                self.after_put(self)
            return 200, {"data": stored}
        return _err(404, "global/object-does-not-exist", f"No route {method} {path}")

    def _launch(self, body: dict) -> tuple[int, dict]:
        itype, region = body.get("instance_type_name"), body.get("region_name")
        if itype not in self.capacity and itype not in self.prices:
            return _err(400, "global/invalid-parameters", f"Unknown instance type {itype}")
        if region not in self.capacity.get(itype, []):
            return _err(400, "instance-operations/launch/insufficient-capacity",
                        "Not enough capacity to fulfill launch request.", "Choose an instance type with more availability, or try again later.")
        keys = body.get("ssh_key_names") or []
        if len(keys) != 1 or keys[0] not in {k["name"] for k in self.ssh_keys.values()}:
            return _err(400, "global/invalid-parameters", "Exactly one existing SSH key name must be given")
        iid = f"i-{next(self._ids):04d}"
        self.instances[iid] = {"id": iid, "name": body.get("name"), "status": "booting", "ip": None,
                               "private_ip": None, "region": {"name": region}, "instance_type": {"name": itype},
                               "ssh_key_names": keys, "file_system_names": body.get("file_system_names", []),
                               "hostname": None, "image": body.get("image"), "tags": body.get("tags") or []}
        self.polls[iid] = 0
        self.launches += 1
        if self.lose_launch_responses > 0:
            self.lose_launch_responses -= 1
            return LOST, {}
        return 200, {"data": {"instance_ids": [iid]}}

    def _get(self, iid: str) -> tuple[int, dict]:
        inst = self.instances.get(iid)
        if inst is None or iid in self.vanish:
            return _err(404, "global/object-does-not-exist", f"Instance {iid} not found")
        gated = self.boot_after_launches is not None and self.launches < self.boot_after_launches
        if inst["status"] == "booting" and not gated:
            self.polls[iid] += 1
            if self.boot_polls is not None and self.polls[iid] > self.boot_polls:
                n = next(self._ips)
                inst.update(status="active", ip=f"198.51.100.{n}", private_ip=f"10.19.0.{n}",
                            hostname=f"{iid}.cloud.example")
        return 200, {"data": dict(inst)}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _do(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                status, payload, headers = fake.handle(self.command, self.path, self.headers.get("Authorization", ""), body)
                if status == LOST:
                    self.close_connection = True
                    return
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _do

            def log_message(self, *args) -> None:  # quiet
                pass

        return Handler
