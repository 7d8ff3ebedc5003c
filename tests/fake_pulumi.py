"""A fake `pulumi` executable that answers `pulumi stack output` from the program's real outputs.

The outputs come from running the program for both stacks under the mock monitor (one
session-wide run, shared by the tests that import `stack_plans`), so a documented consumer
snippet is checked against what the program really exports, not against a recorded file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from sophia_infra.tools.plan import runner
from tests.conftest import STACKS

# Answers only `pulumi stack output [NAME] [--json] [--show-secrets] --stack S`, with the CLI's
# own behaviour: secrets as "[secret]" unless --show-secrets, errors on stderr, exit 255.
SCRIPT = r'''
import json, sys
from pathlib import Path

here = Path(__file__).resolve().parent
args = sys.argv[1:]
if args[:2] != ["stack", "output"]:
    sys.exit("fake pulumi: only `pulumi stack output` is answered here, not " + " ".join(args))
rest, stack, show, as_json, name = args[2:], None, False, False, None
while rest:
    arg = rest.pop(0)
    if arg == "--stack":
        stack = rest.pop(0)
    elif arg == "--show-secrets":
        show = True
    elif arg in ("--json", "-j"):
        as_json = True
    else:
        name = arg
if stack is None:
    print("error: no stack selected; please use `pulumi stack select`", file=sys.stderr)
    sys.exit(255)
path = here / f"outputs-{stack}.json"
if not path.exists():
    print(f"error: no stack named '{stack}' found", file=sys.stderr)
    sys.exit(255)
data = json.loads(path.read_text())
outputs = {k: (v["secret"] if show else "[secret]") if isinstance(v, dict) and v.keys() == {"secret"} else v["plain"]
           for k, v in data.items()}
if name is not None:
    if name not in outputs:
        print(f"error: current stack does not have output property '{name}'", file=sys.stderr)
        sys.exit(255)
    value = outputs[name]
    print(json.dumps(value, indent=2) if as_json or not isinstance(value, str) else value)
else:
    print(json.dumps(outputs, indent=2))
'''


def install(bin_dir: Path, plans: dict[str, runner.PlanResult]) -> Path:
    """Write `pulumi` into bin_dir, answering for every stack in `plans`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for stack, result in plans.items():
        data = {k: {"secret": result.secret_outputs[k]} if k in result.secret_outputs else {"plain": v}
                for k, v in result.outputs.items()}
        (bin_dir / f"outputs-{stack}.json").write_text(json.dumps(data))
    exe = bin_dir / "pulumi"
    exe.write_text(f"#!{sys.executable}\n{SCRIPT}")
    exe.chmod(0o755)
    return exe


@pytest.fixture(scope="session")
def stack_plans() -> dict[str, runner.PlanResult]:
    """Both stacks run once under the mock monitor, for every test that needs their outputs."""
    from tests.platform_helpers import plan

    return {stack: plan(stack) for stack in STACKS}
