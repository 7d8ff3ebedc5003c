"""Restore the cluster's etcd from a named S3 snapshot, as K3s documents it (pure builders).

docs.k3s.io/cli/etcd-snapshot, "Restoring Snapshots" (embedded etcd, several servers):
1. stop K3s on every server but the first;
2. on the first server (clusterInit), stop K3s and run
   `k3s server --cluster-reset --cluster-reset-restore-path=<snapshot> --etcd-s3 ...`: it
   downloads the snapshot, restores it, resets membership to this one member and exits;
   then start K3s normally;
3. on every other server, remove the old etcd data (`/var/lib/rancher/k3s/server/db/`, moved
   aside here rather than deleted) and start K3s, which joins the restored cluster.
Agents keep running and reconnect. The S3 keys are read from the 0600 file the secrets
command wrote (never from the command line); bucket, endpoint, folder and region are the
stack's `sophia:k3s.etcdS3`. Each script is bounded and shellcheck-clean.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from sophia_infra.program.cluster import scripts
from sophia_infra.program.config.cluster import Node
from sophia_infra.program.config.stack import StackConfig

DB_DIR = "/var/lib/rancher/k3s/server/db"
RESET_SECONDS = 900  # download + restore of the snapshot; K3s exits when done
STOP_SECONDS = 120
_SNAPSHOT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")


class RestoreError(ValueError):
    """A restore that cannot be built (no S3 snapshots configured, a bad snapshot name)."""


@dataclass(frozen=True)
class Step:
    node: Node
    what: str
    script: str


def check_snapshot(name: str) -> str:
    """A snapshot name as K3s lists it (`k3s etcd-snapshot ls`): no path, no spaces."""
    if not _SNAPSHOT.fullmatch(name):
        raise RestoreError(f"'{name[:80]}' is not a snapshot name; give it as `k3s etcd-snapshot ls` or "
                           "`python -m sophia_infra backups` lists it, e.g. etcd-snapshot-sophia-control-1763900000")
    return name


def _stop(node: Node) -> str:
    svc = scripts.service_name(node)
    return f"""if systemctl is-active --quiet {svc}; then
  echo "stopping {svc} on {node.name}"
  timeout {STOP_SECONDS} systemctl stop {svc}
fi
"""


def stop_server_script(node: Node) -> str:
    return scripts._PRELUDE + _stop(node)


def reset_script(cfg: StackConfig, node: Node, snapshot: str) -> str:
    """On the first server: restore `snapshot` from S3 into a one-member etcd, then start K3s."""
    s3 = cfg.k3s.etcd_s3
    if s3 is None:
        raise RestoreError("sophia:k3s.etcdS3 is not set, so there are no S3 snapshots to restore from; "
                           "restore a local snapshot on the server with k3s server --cluster-reset --cluster-reset-restore-path=<file>")
    flags = ["--cluster-reset", f"--cluster-reset-restore-path={shlex.quote(check_snapshot(snapshot))}",
             "--etcd-s3", f"--etcd-s3-bucket={shlex.quote(s3.bucket)}", f"--etcd-s3-endpoint={shlex.quote(s3.endpoint)}",
             f"--etcd-s3-folder={shlex.quote(s3.folder)}"]
    if s3.region:
        flags.append(f"--etcd-s3-region={shlex.quote(s3.region)}")
    lines = " \\\n  ".join(flags)
    return scripts._PRELUDE + scripts._k3s_functions(node) + _stop(node) + f"""if [ ! -s {scripts.S3_ENV_PATH} ]; then
  echo "no etcd S3 credentials in {scripts.S3_ENV_PATH}; run pulumi up once (the secrets command writes them) or restore by hand" >&2
  exit 1
fi
# The S3 keys as K3s reads them (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), never on the command line.
set -a
# shellcheck disable=SC1091
. {scripts.S3_ENV_PATH}
set +a
echo "restoring etcd on {node.name} from {snapshot}"
if ! timeout {RESET_SECONDS} k3s server \\
  {lines}; then
  echo "the restore from {snapshot} failed; see the output above (is the name in k3s etcd-snapshot ls --etcd-s3?)" >&2
  exit 1
fi
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
echo "etcd restored; starting k3s"
if ! restart_k3s; then
  echo "k3s did not come back after the restore; see: journalctl -u k3s" >&2
  exit 1
fi
echo "k3s is running from {snapshot}"
"""


def rejoin_server_script(node: Node) -> str:
    """On another server: set its old etcd data aside and start K3s, which joins the restored cluster."""
    svc = scripts.service_name(node)
    return scripts._PRELUDE + scripts._k3s_functions(node) + _stop(node) + f"""if [ -d {DB_DIR} ]; then
  aside="{DB_DIR}.before-restore-$(date +%Y%m%dT%H%M%S)"
  mv {DB_DIR} "$aside"
  echo "old etcd data moved to $aside"
fi
if ! restart_k3s; then
  echo "{svc} did not rejoin the restored cluster; see: journalctl -u {svc}" >&2
  exit 1
fi
echo "{node.name} rejoined the restored cluster"
"""


def restore_plan(cfg: StackConfig, snapshot: str) -> list[Step]:
    """The steps in order: stop the other servers, reset the first from the snapshot, rejoin the others."""
    first = cfg.control_plane
    others = [n for n in cfg.workers if n.role == "control-plane"]
    steps = [Step(n, "stop K3s", stop_server_script(n)) for n in others]
    steps.append(Step(first, f"restore etcd from {check_snapshot(snapshot)} and start K3s", reset_script(cfg, first, snapshot)))
    steps += [Step(n, "set the old etcd data aside and rejoin", rejoin_server_script(n)) for n in others]
    return steps
