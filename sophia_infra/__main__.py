"""Command line: plan, outputs, describe, backups, audit (see --help)."""

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


def _audit(args: argparse.Namespace) -> int:
    from sophia_infra import audit

    findings = audit.audit([Path(p) for p in args.paths], Path(args.allowlist))
    for finding in findings:
        print(finding)
    if findings:
        print(f"{len(findings)} address literal(s): move them to ESC or the stack outputs, "
              f"or allowlist them in {args.allowlist} with a reason", file=sys.stderr)
        return 1
    return 0


def _outputs(args: argparse.Namespace) -> int:
    import json

    from sophia_infra import outputs

    try:
        data = outputs.read_outputs(args.stack, show_secrets=args.show_secrets)
        value = outputs.lookup(data, args.key) if args.key else data
    except outputs.OutputsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True))
    return 0


def _validated(stack: str):
    """The stack's validated config, or None after printing why not."""
    from sophia_infra.plan import stack_config

    try:
        return stack_config.load_validated(stack)
    except (stack_config.StackFileError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return None


def _describe(args: argparse.Namespace) -> int:
    """Facts deploy.sh needs about a service, read offline from the stack config."""
    from sophia_infra import names

    cfg = _validated(args.stack)
    if cfg is None:
        return 2
    svc = next((s for s in cfg.services if s.name == args.service), None)
    if svc is None:
        print(f"error: stack '{args.stack}' has no service '{args.service}'", file=sys.stderr)
        return 2
    print(f"namespace={names.SERVICE_NAMESPACES[svc.kind]}\ndelivery={cfg.delivery}\nkind={svc.kind}")
    return 0


def _backups(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from sophia_infra import backups

    cfg = _validated(args.stack)
    if cfg is None:
        return 2
    targets = backups.targets_for(cfg)
    if not targets:
        print(f"error: stack '{args.stack}' configures no backups (sophia:k3s.etcdS3, "
              "sophia:platform.postgres.backup)", file=sys.stderr)
        return 2
    lines, ok = backups.report(targets, datetime.now(timezone.utc))
    print("\n".join(lines))
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sophia_infra", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan", help="run the program offline under Pulumi's mock monitor")
    plan.add_argument("--stack", required=True, help="dev or production (a Pulumi.<stack>.yaml)")
    plan.add_argument("--out", help="output folder (default build/plan/<stack>)")
    plan.set_defaults(func=_plan)
    outs = sub.add_parser("outputs", help="read the stack's outputs (node addresses, endpoints, MCP registry)")
    outs.add_argument("--stack", required=True)
    outs.add_argument("key", nargs="?", help="dotted path, e.g. nodeIps.sophia-mcp (default: all)")
    outs.add_argument("--show-secrets", action="store_true", help="print secret outputs in clear text")
    outs.set_defaults(func=_outputs)
    describe = sub.add_parser("describe", help="a service's namespace and delivery mode (for deploy.sh)")
    describe.add_argument("--stack", required=True)
    describe.add_argument("service")
    describe.set_defaults(func=_describe)
    bk = sub.add_parser("backups", help="check the newest etcd snapshot and PostgreSQL base backup are fresh")
    bk.add_argument("--stack", required=True)
    bk.set_defaults(func=_backups)
    audit = sub.add_parser("audit", help="find hard-coded IP addresses in code and config")
    audit.add_argument("paths", nargs="+", help="files or folders to scan")
    audit.add_argument("--allowlist", default=".address-allowlist", help="CIDRs to accept (default .address-allowlist)")
    audit.set_defaults(func=_audit)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
