"""Stack outputs for other code: node addresses, endpoints, the MCP registry.

Code that used to hard-code an address asks the stack instead (through the public path
`sophia_infra.outputs`; docs/outputs.md lists every output):

    from sophia_infra.outputs import read_outputs, lookup
    mcp_host = lookup(read_outputs("production"), "nodeIps.sophia-mcp")

It shells out to `pulumi stack output --json` (the CLI knows the backend and login), so
it works wherever `pulumi` does; errors say what is missing and how to fix it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[2]


class OutputsError(Exception):
    """The outputs could not be read; the message says why and what to do."""


def read_outputs(stack: str, show_secrets: bool = False, cwd: Path = ROOT,
                 pulumi: Optional[str] = None) -> dict[str, Any]:
    exe = pulumi or shutil.which("pulumi")
    if exe is None:
        raise OutputsError("the Pulumi CLI is not installed or not on PATH; install it "
                           "(https://www.pulumi.com/docs/iac/download-install/) and run `pulumi login`")
    cmd = [exe, "stack", "output", "--json", "--stack", stack]
    if show_secrets:
        cmd.append("--show-secrets")
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise OutputsError("`pulumi stack output` did not answer within 120 s; check the network and `pulumi whoami`") from None
    except OSError as e:
        raise OutputsError(f"the Pulumi CLI at {exe} cannot be run ({e.strerror}); reinstall it") from None
    if proc.returncode != 0:
        err = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        if "no stack named" in proc.stderr or "not found" in proc.stderr:
            raise OutputsError(f"stack '{stack}' was not found ({err}); check `pulumi stack ls` and `pulumi login`")
        raise OutputsError(f"`pulumi stack output` failed: {err}")
    return parse_outputs(proc.stdout or "{}")


def parse_outputs(text: str) -> dict[str, Any]:
    """The outputs from the text of `pulumi stack output --json` (saved by a script, or read
    by other means); secret outputs are "[secret]" unless it ran with --show-secrets."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise OutputsError(f"`pulumi stack output --json` printed something that is not JSON ({e})") from None
    if not isinstance(data, dict):
        raise OutputsError("`pulumi stack output --json` did not print an object")
    return data


def lookup(outputs: dict[str, Any], key: str) -> Any:
    """A dotted path into the outputs: `nodeIps.sophia-mcp`, `nodes.sophia-ai-core.arch`."""
    node: Any = outputs
    walked = []
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            have = ", ".join(sorted(node)) if isinstance(node, dict) else "a plain value"
            where = ".".join(walked) or "the stack outputs"
            raise OutputsError(f"'{key}' is not in the stack outputs: {where} has {have}")
        node = node[part]
        walked.append(part)
    return node
