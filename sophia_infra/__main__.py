"""Command line: `python -m sophia_infra plan --stack dev|production [--out DIR]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sophia_infra.config import ConfigError


def _plan(args: argparse.Namespace) -> int:
    from sophia_infra.plan import report, runner, stack_config
    out_dir = Path(args.out) if args.out else stack_config.ROOT / "build" / "plan" / args.stack
    try:
        result = runner.run(args.stack)
    except stack_config.StackFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report.write(result, out_dir)
    sys.stdout.write(report.render(result))
    print(f"\nWrote {out_dir}/plan.json, manifests/ and placement.md")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sophia_infra", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan", help="run the program offline under Pulumi's mock monitor")
    plan.add_argument("--stack", required=True, help="dev or production (a Pulumi.<stack>.yaml)")
    plan.add_argument("--out", help="output folder (default build/plan/<stack>)")
    plan.set_defaults(func=_plan)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
