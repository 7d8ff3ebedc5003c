"""How old the newest backup may be, from its schedule: the longest gap of a cron schedule
plus a grace period, or the configured limit when longer. The data-safety alerts
(sophia_infra.program.platform.alerts) and the `backups` command use the same numbers; pure,
so the command loads it without the Pulumi SDK."""

from __future__ import annotations

from datetime import date, datetime, timedelta


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
