"""Backup check: the newest etcd snapshot and PostgreSQL base backup, and their ages.

Reads the bucket layouts as their writers leave them:
- K3s etcd snapshots: `<folder>/etcd-snapshot-<node>-<unix-time>[.zip]` (scheduled) and
  `<folder>/on-demand-<node>-<unix-time>[.zip]`; `.metadata/` entries are not snapshots.
- CloudNativePG (Barman Cloud): `<path>/<cluster>/base/<backup-id>/backup.info` (with
  `status=DONE` and `end_time=...` once complete) next to `data.tar`; WALs in `wals/`.
A backup is stale once it is older than its schedule allows: the schedule's longest gap
plus an hour (`allowed_age_hours`), or sophia:backups.*MaxAgeHours when that is longer.
Credentials come from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), for
example through `pulumi env run sophia-ai/production -- python -m sophia_infra backups ...`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Optional

_SNAPSHOT = re.compile(r"(^|/)(etcd-snapshot|on-demand)-.+-(\d{9,11})(\.zip)?$")


@dataclass(frozen=True)
class Newest:
    what: str
    location: str
    finished: datetime

    def age_hours(self, now: datetime) -> float:
        return (now - self.finished).total_seconds() / 3600


# ----------------------------------------------------------------------------- schedules
# (sophia_infra.program.backup_schedule: the alerts use them too)
from sophia_infra.program.backup_schedule import (GRACE_HOURS, allowed_age_hours,  # noqa: E402,F401
                                                          etcd_allowed_age_hours, longest_gap_hours,
                                                          postgres_allowed_age_hours)


# ----------------------------------------------------------------------------- the bucket layouts

def _list(s3: Any, bucket: str, prefix: str) -> list[dict]:
    objects = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        objects.extend(page.get("Contents", []))
    return objects


def newest_etcd_snapshot(s3: Any, bucket: str, folder: str) -> Optional[Newest]:
    prefix = folder.strip("/") + "/" if folder else ""
    best = None
    for obj in _list(s3, bucket, prefix):
        key = obj["Key"]
        if "/.metadata/" in f"/{key}":
            continue
        m = _SNAPSHOT.search(key)
        if not m:
            continue
        when = datetime.fromtimestamp(int(m.group(3)), tz=timezone.utc)
        if best is None or when > best.finished:
            best = Newest("etcd snapshot", f"s3://{bucket}/{key}", when)
    return best


def _backup_info(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def newest_base_backup(s3: Any, bucket: str, path: str, cluster: str) -> Optional[Newest]:
    prefix = "/".join(p for p in (path.strip("/"), cluster, "base") if p) + "/"
    best = None
    for obj in _list(s3, bucket, prefix):
        if not obj["Key"].endswith("/backup.info"):
            continue
        info = _backup_info(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode())
        if info.get("status") != "DONE":
            continue  # running or failed backups do not count
        end = info.get("end_time")
        when = datetime.fromisoformat(end.strip()) if end else obj["LastModified"]
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        if best is None or when > best.finished:
            best = Newest("PostgreSQL base backup", f"s3://{bucket}/{obj['Key'].rsplit('/', 1)[0]}", when)
    return best


@dataclass(frozen=True)
class Target:
    what: str
    bucket: str
    max_age_hours: float
    newest: Optional[Newest]


def report(targets: list[Target], now: datetime) -> tuple[list[str], bool]:
    """Lines to print and whether every target has a backup younger than its limit."""
    lines, ok = [], True
    for t in targets:
        if t.newest is None:
            lines.append(f"FAIL {t.what}: none found in s3://{t.bucket}")
            ok = False
            continue
        age = t.newest.age_hours(now)
        fresh = age <= t.max_age_hours
        ok = ok and fresh
        lines.append(f"{'ok  ' if fresh else 'FAIL'} {t.what}: {t.newest.location} finished "
                     f"{t.newest.finished:%Y-%m-%d %H:%M UTC}, {age:.1f} h ago (limit {t.max_age_hours:g} h)")
    return lines, ok


class BackupCheckError(Exception):
    """The backups could not be checked at all (credentials, endpoint, permissions)."""


def s3_client(endpoint_url: str, region: Optional[str]):
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise BackupCheckError("boto3 is not installed; install the tools with `pip install -r requirements-dev.txt`") from None
    # Bounded: an unreachable endpoint is an answer, not a hang.
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region or "us-east-1",
                        config=Config(connect_timeout=10, read_timeout=30))


def _why(err: Exception, key: str) -> str:
    """The reason an S3 call failed and the fix, for the errors an operator can cause."""
    from botocore import exceptions as bx

    if isinstance(err, (bx.NoCredentialsError, bx.PartialCredentialsError, bx.CredentialRetrievalError)):
        return ("no S3 credentials were found; run it inside the stack's ESC environment "
                "(`pulumi env run sophia-ai/<stack> -- python -m sophia_infra backups --stack <stack>`) "
                "or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if isinstance(err, bx.ConnectionError):
        return f"the endpoint cannot be reached ({type(err).__name__}); check {key}.endpoint and the network"
    if isinstance(err, bx.ClientError):
        code = str(err.response.get("Error", {}).get("Code", "")) or "an error"
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"):
            return f"access was denied ({code}); check that the key pair may list and read the bucket"
        if code in ("NoSuchBucket", "404"):
            return f"the bucket does not exist ({code}); check {key}.bucket"
        return f"S3 answered {code}; check {key}"
    return f"{type(err).__name__}: {err}"


def _checked(what: str, bucket: str, endpoint: str, key: str, read: Callable[[], Optional[Newest]]) -> Optional[Newest]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return read()
    except (BotoCoreError, ClientError) as err:
        raise BackupCheckError(f"cannot check the {what}s in s3://{bucket} ({endpoint}): {_why(err, key)}") from None


def targets_for(cfg, client_for=s3_client) -> list[Target]:
    """What the stack backs up, per its config: etcd snapshots and PostgreSQL base backups,
    each with the age its schedule allows (allowed_age_hours). Raises BackupCheckError, one
    sentence, when a bucket cannot be read."""
    from sophia_infra.program.config.platform import postgres_backups

    targets = []
    etcd = cfg.k3s.etcd_s3
    if etcd:
        url = f"https://{etcd.endpoint}"
        s3 = client_for(url, etcd.region)
        newest = _checked("etcd snapshot", etcd.bucket, url, "sophia:k3s.etcdS3",
                          lambda: newest_etcd_snapshot(s3, etcd.bucket, etcd.folder))
        targets.append(Target("etcd snapshot", etcd.bucket, etcd_allowed_age_hours(cfg), newest))
    pg = cfg.platform.postgres
    if postgres_backups(cfg):
        s3 = client_for(pg.backup.endpoint, pg.backup.region)
        newest = _checked("PostgreSQL base backup", pg.backup.bucket, pg.backup.endpoint, "sophia:platform.postgres.backup",
                          lambda: newest_base_backup(s3, pg.backup.bucket, pg.backup.path, pg.cluster_name))
        targets.append(Target("PostgreSQL base backup", pg.backup.bucket, postgres_allowed_age_hours(cfg), newest))
    return targets
