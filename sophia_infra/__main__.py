"""sophia-infra's command line: the commands below, one line each (`COMMAND --help` says more).

Every command answers in one of three ways, so scripts and CI can tell a failed check
from a check that could not run; an expected failure is one sentence on stderr, never a
traceback."""

from __future__ import annotations

import argparse
import gc
import importlib.util
import sys
import textwrap
from pathlib import Path
from typing import NoReturn

# What the commands import; found (not imported) before anything else is, so a Python
# outside the virtualenv gets a sentence saying how to get into it, not ModuleNotFoundError
# (exit 1, which reads as "check failed"). The commands that read the configuration without
# the SDK need only the schema's (requirements-config.txt, what the release jobs install).
CONFIG_DEPENDENCIES = ("pydantic", "yaml")
DEPENDENCIES = ("pulumi", "pulumi_kubernetes", *CONFIG_DEPENDENCIES)
CONFIG_COMMANDS = ("describe", "release", "chart-tag")


def missing_dependencies(command: str | None = None) -> list[str]:
    needed = CONFIG_DEPENDENCIES if command in CONFIG_COMMANDS else DEPENDENCIES
    return [name for name in needed if importlib.util.find_spec(name) is None]


_missing = missing_dependencies(sys.argv[1] if len(sys.argv) > 1 else None) if __name__ == "__main__" else []
if _missing:
    print(f"error: {sys.executable} lacks the project's dependencies ({', '.join(_missing)}); "
          "run `make setup` once, then `.venv/bin/python -m sophia_infra ...` (or `. .venv/bin/activate` first).",
          file=sys.stderr)
    sys.exit(2)

from sophia_infra.program.config.stack import ConfigError  # noqa: E402  (after the check above)

OK, CHECK_FAILED, COULD_NOT_CHECK = 0, 1, 2

EXIT_CODES = """\
exit codes:
  0  ok
  1  the check ran and failed: plan (a policy violation, a required network flow denied
     or matching no pod, an undeclared cross-namespace flow allowed, a pod its
     namespace's Pod Security level rejects, with --against a destructive step no
     --allow-destroy names; each is listed at the end), backups (stale
     or missing), audit (address literals found), capacity (no capacity for a
     provisioned node's type in its region), chart-tag (the chart's version tag holds
     another chart: bump its version)
  2  could not check: bad input (a stack or ESC file that is not valid YAML, an invalid
     configuration, an unknown stack, service, key or path) or something missing to run
     (the Pulumi CLI, S3 credentials, a reachable endpoint)
"""


def _fail(err: object) -> int:
    """Print one expected failure and return the could-not-check code."""
    from sophia_infra.tools.plan.stack_config import StackFileSyntaxError

    # A syntax error is already `file:line:column: what`, the form editors and CI link.
    print(err if isinstance(err, StackFileSyntaxError) else f"error: {err}", file=sys.stderr)
    return COULD_NOT_CHECK


def _plan(args: argparse.Namespace) -> int:
    from sophia_infra.tools.plan import stack_config

    # The stack and ESC files and the schema first, before the SDK and the program load: a
    # mistake there is one sentence in a quarter of a second. The run checks them again, with
    # the release files and the secrets' contents.
    try:
        stack_config.load_validated(args.stack)
    except (stack_config.StackFileError, ConfigError) as err:
        return _fail(err)
    from sophia_infra.tools.plan import dynamic_diff, report, runner, transition, transition_report, verify
    try:  # the policy pack config `pulumi preview --policy-pack-config` would read
        report.policy_pack_config(args.stack)
    except ValueError as err:
        return _fail(err)
    out_dir = Path(args.out) if args.out else stack_config.ROOT / "build" / "plan" / args.stack
    old_plan = None
    if args.allow_destroy and not args.against:
        return _fail("--allow-destroy only means something with --against OLD/plan.json (the plan to compare with)")
    if args.against:
        try:  # read first: the new plan may overwrite the folder it is in
            old_plan = transition_report.load_plan(args.against)
        except transition.TransitionError as err:
            return _fail(err)
    with runner.frozen_heap():
        try:
            result = runner.run(args.stack)
        except (stack_config.StackFileError, ConfigError) as err:
            return _fail(err)
        # The releases rendered from the real charts: required flows, undeclared flows, Pod Security.
        checks = verify.run(result)
        policy = report.policy_violations(result)
        failures = verify.failures(checks, policy)
        verdict = verify.verdict(args.stack, checks, failures)
        try:
            report.write(result, out_dir, verify.markdown(checks), verdict)
        except OSError as err:
            return _fail(f"cannot write the plan to {out_dir} ({err.strerror}); give a writable --out folder")
    sys.stdout.write(report.render(result, policy))
    print("\n".join(verify.text(checks)))
    print(f"\nWrote {out_dir}/plan.json, manifests/ and placement.md\n")
    failed = bool(failures)
    blocked: list = []
    if old_plan is not None:
        try:
            steps = transition.compute(old_plan, report.plan_document(result))
            transition_report.write(steps, args.stack, out_dir, args.allow_destroy or [], old_plan)
        except (transition.TransitionError, dynamic_diff.DynamicDiffError) as err:
            return _fail(err)
        except transition.PreviewWouldFail as err:
            print(f"{err}; fix the provider or the change", file=sys.stderr)
            return CHECK_FAILED
        except OSError as err:
            return _fail(f"cannot write the steps to {out_dir} ({err.strerror}); give a writable --out folder")
        c = transition_report.counts(steps.steps)
        print(f"Transition from {args.against}: " + ", ".join(f"{n} {op}" for op, n in c.items())
              + f"; wrote {out_dir}/steps.json and steps.md\n")
        blocked = transition_report.blocked(steps.steps, args.allow_destroy or [])
    sys.stdout.flush()
    # Last, on stderr when it failed: the one place a CI log or a test's captured error shows.
    print("\n".join(verdict), file=sys.stderr if failed else sys.stdout)
    for step in blocked:
        print(f"destructive: {step.op} {step.name} ({step.type}): {step.why}; "
              f"pass --allow-destroy {step.name} if that is intended", file=sys.stderr)
    return CHECK_FAILED if failed or blocked else OK


def _charts(args: argparse.Namespace) -> int:
    from sophia_infra.tools.plan import chart_cache, stack_config

    try:
        lines, complete = chart_cache.report(args.stack or ["dev", "production"], args.pull)
    except (stack_config.StackFileError, ConfigError) as err:
        return _fail(err)
    print("\n".join(lines))
    return OK if complete else COULD_NOT_CHECK


def _chart_tag(args: argparse.Namespace) -> int:
    from sophia_infra.tools import chart_tag

    try:
        outcome = chart_tag.run(remote=args.remote, check=args.check, push=args.push)
    except chart_tag.ChartTagError as err:
        print(f"error: {err}", file=sys.stderr)
        return CHECK_FAILED
    except chart_tag.GitError as err:
        return _fail(err)
    print(outcome.message())
    return OK


def _audit(args: argparse.Namespace) -> int:
    from sophia_infra.tools import audit

    allowlist = Path(args.allowlist or audit.ALLOWLIST)
    try:
        findings = audit.audit([Path(p) for p in args.paths], allowlist, allowlist_required=args.allowlist is not None)
    except audit.AuditError as err:
        return _fail(err)
    for finding in findings:
        print(finding)
    if findings:
        print(f"{len(findings)} address literal(s): move them to ESC or the stack outputs, "
              f"or allowlist them in {allowlist} with a reason", file=sys.stderr)
        return CHECK_FAILED
    return OK


def _outputs(args: argparse.Namespace) -> int:
    import json

    from sophia_infra.tools import outputs
    from sophia_infra.tools.plan import stack_config

    try:
        stack_config.require_stack(args.stack)
        data = outputs.read_outputs(args.stack, show_secrets=args.show_secrets)
        value = outputs.lookup(data, args.key) if args.key else data
    except (outputs.OutputsError, stack_config.StackFileError) as err:
        return _fail(err)
    print(value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True))
    return OK


def _validated(stack: str):
    """The stack's validated config, or None after printing why not."""
    from sophia_infra.tools.plan import stack_config

    try:
        return stack_config.load_validated(stack)
    except (stack_config.StackFileError, ConfigError) as err:
        _fail(err)
        return None


def _describe(args: argparse.Namespace) -> int:
    """Facts deploy.sh and the release workflow need about a service, read offline from the
    stack config and its release file; without a service, the release status of every one."""
    import json

    from sophia_infra.program.config import names
    from sophia_infra.tools import release
    from sophia_infra.program import releases

    cfg = _validated(args.stack)
    if cfg is None:
        return COULD_NOT_CHECK
    if args.service is None:
        applications = None
        if args.applications:
            try:
                text = sys.stdin.read() if args.applications == "-" else Path(args.applications).read_text()
                applications = json.loads(text)
            except (OSError, ValueError) as err:
                return _fail(f"--applications {args.applications}: not the JSON of kubectl get applications -o json ({err})")
        print("\n".join(release.status(cfg, args.stack, applications)))
        return OK
    svc = next((s for s in cfg.services if s.name == args.service), None)
    if svc is None:
        return _fail(f"stack '{args.stack}' has no service '{args.service}'; "
                     f"use one of {', '.join(s.name for s in cfg.services)}")
    print(f"namespace={names.SERVICE_NAMESPACES[svc.kind]}\ndelivery={cfg.delivery}\nkind={svc.kind}")
    # For the release workflow: where to push, what to build, where the release is recorded.
    print(f"repository={svc.image.repository}\nplatforms={','.join(release.needed_platforms(cfg, svc))}\n"
          f"releaseFile={releases.repo_path(args.stack, svc.name)}\nreleaseBranch={cfg.argocd.release_branch}")
    return OK


def _release(args: argparse.Namespace) -> int:
    """Record an app release in the workload's release file (and nothing else)."""
    from sophia_infra.tools import release

    platforms = [p for p in args.platforms.split(",") if p] if args.platforms else None
    try:
        plan = release.prepare(args.workload, args.stack, args.tag, args.digest, platforms, args.image)
    except release.ReleaseInputError as err:
        return _fail(f"{err}.")
    if plan.changed:
        try:
            release.write(plan)
        except OSError as err:
            return _fail(f"cannot write {plan.file} ({err.strerror}); check the work tree is writable")
    print("\n".join(release.describe(plan)))
    return OK


def _backups(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from sophia_infra.tools import backups

    cfg = _validated(args.stack)
    if cfg is None:
        return COULD_NOT_CHECK
    try:
        targets = backups.targets_for(cfg)
    except backups.BackupCheckError as err:
        return _fail(err)
    if not targets:
        return _fail(f"stack '{args.stack}' configures no backups (sophia:k3s.etcdS3, "
                     "sophia:platform.postgres.backup)")
    lines, ok = backups.report(targets, datetime.now(timezone.utc))
    print("\n".join(lines))
    return OK if ok else CHECK_FAILED


SSH_KEY_ENV = "SOPHIA_SSH_PRIVATE_KEY"


def run_over_ssh(user: str, address: str, key_file: str, script: str) -> int:
    """Run `script` as root on a host with the stack's SSH user and key (ssh(1), bounded dials)."""
    import subprocess

    from sophia_infra.program.cluster import scripts

    cmd = ["ssh", "-i", key_file, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=15",
           "-o", "StrictHostKeyChecking=accept-new", f"{user}@{address}", scripts.as_root(script)]
    return subprocess.run(cmd, stdin=subprocess.DEVNULL).returncode


def _etcd_restore(args: argparse.Namespace, runner=None) -> int:
    """Print (or, with --execute, run over SSH) the K3s restore from a named S3 snapshot."""
    import os
    import tempfile

    from sophia_infra.tools import outputs
    from sophia_infra.tools import etcd_restore as restore

    cfg = _validated(args.stack)
    if cfg is None:
        return COULD_NOT_CHECK
    try:
        steps = restore.restore_plan(cfg, args.snapshot)
    except restore.RestoreError as err:
        return _fail(f"{err}.")
    if not args.execute:
        print(f"# Restore of stack '{args.stack}' from etcd snapshot {args.snapshot}: run each step as root, in order "
              "(or again with --execute).")
        for i, step in enumerate(steps, 1):
            print(f"\n# step {i}: {step.what} on {step.node.name}\n{step.script}", end="")
        return OK
    key = os.environ.get(SSH_KEY_ENV)
    if not key:
        return _fail(f"{SSH_KEY_ENV} is not set; run it inside the stack's ESC environment "
                     f"(pulumi env run sophia-ai/{args.stack} -- python -m sophia_infra etcd-restore ...), which exports the SSH key")
    try:
        addresses = outputs.read_outputs(args.stack, show_secrets=True).get("nodeIps") or {}
    except outputs.OutputsError as err:
        return _fail(err)
    missing = [s.node.name for s in steps if s.node.name not in addresses]
    if missing:
        return _fail(f"the stack outputs have no address for {', '.join(sorted(set(missing)))}; run pulumi up first")
    run = runner or run_over_ssh
    with tempfile.TemporaryDirectory(prefix="sophia-ssh-") as tmp:
        key_file = os.path.join(tmp, "id")
        with open(os.open(key_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as fh:
            fh.write(key if key.endswith("\n") else key + "\n")
        for i, step in enumerate(steps, 1):
            print(f"step {i}/{len(steps)}: {step.what} on {step.node.name}", flush=True)
            code = run(cfg.ssh_user, addresses[step.node.name], key_file, step.script)
            if code != 0:
                print(f"step {i} failed on {step.node.name} (exit {code}); the later steps were not run", file=sys.stderr)
                return CHECK_FAILED
    print("etcd restored; check: kubectl get nodes")
    return OK


def _capacity(args: argparse.Namespace) -> int:
    import os

    from sophia_infra.program.lambda_cloud import api
    from sophia_infra.tools.lambda_cloud import capacity
    from sophia_infra.program.config.provision import provisioned

    cfg = _validated(args.stack)
    if cfg is None:
        return COULD_NOT_CHECK
    if not provisioned(cfg):
        return _fail(f"stack '{args.stack}' provisions no node on Lambda Cloud (no sophia:nodes[].provision); nothing to check")
    key = os.environ.get(capacity.API_KEY_ENV)
    if not key:
        return _fail(f"{capacity.API_KEY_ENV} is not set; export the Lambda Cloud API key (ESC: "
                     f"sophia.infrastructure.lambda_labs.api_key) as {capacity.API_KEY_ENV} and run it again")
    client = api.Client(key, base_url=os.environ.get(capacity.BASE_URL_ENV) or api.BASE_URL)
    try:
        lines, ok = capacity.report(cfg, client)
    except api.LambdaCloudError as err:
        return _fail(err)
    print("\n".join(lines))
    return OK if ok else CHECK_FAILED


# The widest a command's one-line summary may be: what `--help` leaves beside the names in
# an 80-column terminal (argparse indents the summaries to column 24).
SUMMARY_MAX = 78 - 24


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps each command's summary on its name's line. Python 3.11's argparse measures the
    command names one indent short of where it prints them, so the longest (etcd-restore)
    would get a line of its own."""

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction) and action.help is not argparse.SUPPRESS:
            longest = max(len(self._format_action_invocation(a)) for a in action._get_subactions())
            self._action_max_length = max(self._action_max_length,
                                          longest + self._current_indent + self._indent_increment)


def _command(sub, name: str, summary: str, help: str, codes: str):
    """A subcommand: `summary` is its line in the top-level --help, `help` its own description."""
    return sub.add_parser(name, help=summary, description=help[0].upper() + help[1:] + ".",
                          epilog=textwrap.fill(f"exit codes: {codes}", width=88, subsequent_indent="  "),
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sophia_infra", description=__doc__, epilog=EXIT_CODES,
                                     formatter_class=_HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    plan = _command(sub, "plan", "plan a stack offline and check policy and traffic",
                    "run the program offline under Pulumi's mock monitor",
                    "0 planned, every check passed; 1 planned and a check failed: a policy violation, a required "
                    "network flow denied or matching no pod, an undeclared cross-namespace flow allowed, or a pod "
                    "rejected by its namespace's Pod Security level (the files are written; the plan ends with one "
                    "line per failure on stderr), or with --against a destructive step (a data-holding or billed "
                    "resource deleted or replaced) that no --allow-destroy names, or a provider diff that would stop pulumi preview; "
                    "2 not planned: a stack or ESC file that is not valid YAML, an invalid configuration, or an --against "
                    "file that is not a plan.json")
    plan.add_argument("--stack", required=True, help="dev or production (a Pulumi.<stack>.yaml)")
    plan.add_argument("--out", help="output folder (default build/plan/<stack>)")
    plan.add_argument("--against", metavar="OLD",
                      help="an earlier plan's plan.json (typically of the base branch): also write steps.json and "
                           "steps.md, what pulumi up would do to go from OLD to this plan")
    plan.add_argument("--allow-destroy", metavar="NAME", action="append",
                      help="with --against: accept the destructive step of the resource NAME (repeatable)")
    plan.set_defaults(func=_plan)
    outs = _command(sub, "outputs", "read a deployed stack's outputs (addresses, endpoints)",
                    "read the stack's outputs (node addresses, endpoints, MCP registry)",
                    "0 printed; 2 not read: no Pulumi CLI, not logged in, unknown stack or key")
    outs.add_argument("--stack", required=True)
    outs.add_argument("key", nargs="?", help="dotted path, e.g. nodeIps.sophia-mcp (default: all)")
    outs.add_argument("--show-secrets", action="store_true", help="print secret outputs in clear text")
    outs.set_defaults(func=_outputs)
    describe = _command(sub, "describe", "a service's facts for deploy.sh; or release status",
                    "a service's namespace, delivery mode, image repository and platforms "
                        "(for deploy.sh and the release workflow); without SERVICE, every workload's released image",
                        "0 printed; 2 invalid configuration or unknown service (or an unreadable --applications)")
    describe.add_argument("--stack", required=True)
    describe.add_argument("service", nargs="?")
    describe.add_argument("--applications", metavar="FILE",
                          help="with no SERVICE: add Argo CD's sync and health from this `kubectl get applications.argoproj.io "
                               "-n argocd -o json` output (- = stdin)")
    describe.set_defaults(func=_describe)
    rel = _command(sub, "release", "record an app release in its release file",
                    "record an app release: set the image tag (and digest) in releases/<stack>/<workload>.yaml "
                   "after checking it against the stack, and say what rolls out",
                   "0 written (or already released); 2 not written: unknown stack or workload, a tag that is not pinned "
                   "(latest), a malformed digest, an image not built for a platform the workload runs on, or an invalid "
                   "stack configuration")
    rel.add_argument("workload", help="a workload of the stack (sophia:services[].name)")
    rel.add_argument("--stack", required=True, help="dev or production (a Pulumi.<stack>.yaml)")
    rel.add_argument("--tag", help="the exact version tag the image was pushed with (never latest)")
    rel.add_argument("--digest", help="the pushed image's digest, sha256:<64 hex>; pins the content the tag names")
    rel.add_argument("--platforms", help="comma-separated platforms the image was built for (checked against where the workload runs)")
    rel.add_argument("--image", help="the repository the image was pushed to (checked against the stack's image.repository)")
    rel.set_defaults(func=_release)
    bk = _command(sub, "backups", "check the newest etcd and PostgreSQL backups are fresh",
                    "check the newest etcd snapshot and PostgreSQL base backup are fresh",
                  "0 every backup is younger than its limit; 1 a backup is stale or missing; "
                  "2 not checked: invalid configuration, no backups configured, no S3 credentials, "
                  "access denied, a missing bucket or an unreachable endpoint")
    bk.add_argument("--stack", required=True)
    bk.set_defaults(func=_backups)
    audit = _command(sub, "audit", "find hard-coded IP addresses in code and config",
                    "find hard-coded IP addresses in code and config",
                     "0 no address literal; 1 address literals found (listed on stdout); "
                     "2 not checked: a path or the --allowlist file does not exist, or the allowlist has a bad entry")
    audit.add_argument("paths", nargs="+", help="files or folders to scan")
    audit.add_argument("--allowlist", help="CIDRs to accept, one per line (default .address-allowlist, if present)")
    audit.set_defaults(func=_audit)
    charts = _command(sub, "charts", "where the pinned charts are read from (--pull: fetch)",
                    "where the pinned upstream charts are read from for rendering (--pull: helm pull the missing), "
                    "and where the renders are cached",
                      "0 every chart the plans release has a source; 2 some have none (or could not be pulled)")
    charts.add_argument("--stack", action="append", help="stack(s) whose pins to use (default: dev and production)")
    charts.add_argument("--pull", action="store_true", help="helm pull missing charts into .cache/charts")
    charts.set_defaults(func=_charts)
    er = _command(sub, "etcd-restore", "print (or --execute) the restore from an etcd snapshot",
                    "print the K3s restore from a named etcd snapshot in S3 (stop the other servers, "
                  "cluster-reset on the first, rejoin the others); --execute runs it over SSH",
                  "0 printed (or restored); 1 a step failed on a host (the later ones were not run); 2 not run: invalid "
                  "configuration, no sophia:k3s.etcdS3, a bad snapshot name, no SOPHIA_SSH_PRIVATE_KEY or no stack outputs")
    er.add_argument("--stack", required=True)
    er.add_argument("--snapshot", required=True, help="the snapshot's name, as k3s etcd-snapshot ls --etcd-s3 lists it")
    er.add_argument("--execute", action="store_true", help="run the steps over SSH with the stack's user and key")
    er.set_defaults(func=_etcd_restore)
    cap = _command(sub, "capacity", "which regions have the stack's Lambda instance types",
                    "which configured Lambda Cloud instance types have capacity in which regions now (needs LAMBDA_API_KEY)",
                   "0 every provisioned node's region has capacity for its type; 1 some has none (listed); "
                   "2 not checked: invalid configuration, no provisioned node, no LAMBDA_API_KEY, the API refused the key or could not be reached")
    cap.add_argument("--stack", required=True)
    cap.set_defaults(func=_capacity)
    tag = _command(sub, "chart-tag", "create the sophia-service-<version> tag Argo CD reads",
                   "make the revision Argo CD reads charts/sophia-service at exist: tag HEAD sophia-service-<version> "
                   "(Chart.yaml's version) when that tag is new; refuse when it holds another chart",
                   "0 the tag holds HEAD's chart (or was created, or with --check does not exist yet); 1 the tag holds "
                   "another chart (bump the version); 2 not checked: not a git checkout, git missing, remote unreachable")
    tag.add_argument("--check", action="store_true", help="only check; create nothing (pull requests)")
    tag.add_argument("--remote", help="also look for the tag on this remote (e.g. origin)")
    tag.add_argument("--push", action="store_true", help="push a created tag to --remote (default origin)")
    tag.set_defaults(func=_chart_tag)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


def exit_without_collecting(code: int) -> NoReturn:
    """End the process. Its heap is frozen first: at exit Python would otherwise have the
    collector walk all of it once more (a quarter of a second after a plan) only for the OS to
    free the memory. Files are written and closed by then; atexit handlers still run."""
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    exit_without_collecting(main())
