"""What the provisioned hosts cost, for the offline plan: from the dated table in prices.py."""

from __future__ import annotations

import sys
from datetime import date
from typing import Optional

from sophia_infra.program.config.stack import StackConfig
from sophia_infra.tools.lambda_cloud import prices
from sophia_infra.program.config.provision import provisioned


def rows(cfg: StackConfig) -> list[tuple[str, str, str, float]]:
    """(node, instance type, region, USD per hour) of every provisioned node."""
    return [(n.name, n.provision.instance_type, n.provision.region, prices.hourly_usd(n.provision.instance_type))
            for n in provisioned(cfg) if n.provision is not None]


def source_line() -> str:
    return f"offline prices as of {prices.AS_OF} ({prices.SOURCE}); `capacity` shows the live ones"


def render_text(cfg: StackConfig, today: Optional[date] = None) -> list[str]:
    """The cost lines of the plan's report; when the price table is old, a warning on stderr."""
    table = rows(cfg)
    if not table:
        return []
    stale = prices.staleness(today or date.today())
    if stale:
        print(f"warning: {stale}", file=sys.stderr)
    total = sum(r[3] for r in table)
    w = [max(len(r[0]) for r in table), max(len(r[1]) for r in table), max(len(r[2]) for r in table)]
    lines = ["Provisioned hosts (Lambda Cloud; " + source_line() + ")", ""]
    lines += [f"  {n.ljust(w[0])}  {t.ljust(w[1])}  {r.ljust(w[2])}  {prices.dollars(p)}/h" for n, t, r, p in table]
    lines.append(f"  total: {prices.dollars(total)}/h, {prices.dollars(total * prices.HOURS_PER_MONTH)}/month "
                 f"({prices.HOURS_PER_MONTH} h)")
    return lines


def render_markdown(cfg: StackConfig) -> list[str]:
    table = rows(cfg)
    if not table:
        return []
    total = sum(r[3] for r in table)
    lines = ["", "## Provisioned hosts (Lambda Cloud)", "", f"_{source_line()}_", "",
             "| node | instance type | region | per hour |", "|---|---|---|---|"]
    lines += [f"| {n} | {t} | {r} | {prices.dollars(p)} |" for n, t, r, p in table]
    lines += [f"| **total** | | | **{prices.dollars(total)}** ({prices.dollars(total * prices.HOURS_PER_MONTH)}/month) |"]
    return lines
