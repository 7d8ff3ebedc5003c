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
from datetime import date, datetime, timedelta, timezone
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

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# A backup is late once the longest gap of its schedule has passed, plus this much for the
# backup itself to run and upload.
GRACE_HOURS = 1.0


def _expand(text: str, lo: int, hi: int, names: tuple[str, ...] = ()) -> set[int]:
    """The values of one cron field (already validated by sophia_infra.program.config.validators.cron)."""
    def number(t: str) -> int:
        return names.index(t.lower()) + lo if t.lower() in names else int(t)

    out: set[int] = set()
    for item in text.split(","):
        base, _, step = item.partition("/")
        if base in ("*", "?"):
            a, b = lo, hi
        else:
            first, dash, last = base.partition("-")
            a = number(first)
            b = number(last) if dash else (hi if step else a)
        out.update(range(a, b + 1, int(step) if step else 1))
    return out


def longest_gap_hours(schedule: str) -> float:
    """The longest time between two runs of a cron schedule (5 fields, or 6 with seconds first,
    as K3s and CloudNativePG read them: robfig/cron, where a restricted day of month and day
    of week both count), over the next two years."""
    fields = schedule.split()
    if len(fields) == 6:
        fields = fields[1:]  # seconds shift a run within its minute only
    minute, hour, dom, month, dow = fields
    minutes, hours = sorted(_expand(minute, 0, 59)), sorted(_expand(hour, 0, 23))
    doms, months = _expand(dom, 1, 31), _expand(month, 1, 12, _MONTHS)
    dows = _expand(dow, 0, 6, _DAYS)
    dom_any, dow_any = dom.startswith(("*", "?")), dow.startswith(("*", "?"))
    per_day = len(minutes) * len(hours)
    days = 14 if per_day > 48 else 731
    start = date(2026, 1, 1)
    runs: list[datetime] = []
    for i in range(days):
        d = start + timedelta(days=i)
        if d.month not in months:
            continue
        by_dom, by_dow = d.day in doms, (d.isoweekday() % 7) in dows
        if not ((by_dom and by_dow) if dom_any or dow_any else (by_dom or by_dow)):
            continue
        runs += [datetime(d.year, d.month, d.day, h, m) for h in hours for m in minutes]
    if len(runs) < 2:
        return float(days * 24)
    return max((b - a).total_seconds() for a, b in zip(runs, runs[1:])) / 3600


def allowed_age_hours(schedule: str, configured: float) -> float:
    """How old the newest backup may be: the schedule's longest gap plus GRACE_HOURS, or the
    configured limit (sophia:backups.*MaxAgeHours) when that is longer."""
    return max(configured, longest_gap_hours(schedule) + GRACE_HOURS)


def etcd_allowed_age_hours(cfg) -> float:
    return allowed_age_hours(cfg.k3s.etcd_snapshot_schedule, cfg.backups.etcd_max_age_hours)


def postgres_allowed_age_hours(cfg) -> float:
    return allowed_age_hours(cfg.platform.postgres.backup.schedule, cfg.backups.postgres_max_age_hours)


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
