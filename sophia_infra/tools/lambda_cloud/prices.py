"""Hourly on-demand prices of the Lambda Cloud instance types, for the offline plan.

A dated table, so the plan can show a cost without network or key. It is not the live
price: `python -m sophia_infra capacity --stack S` reads the current prices from the API
(`GET /instance-types`, `price_cents_per_hour`). Update the table and AS_OF together.
"""

from __future__ import annotations

from datetime import date
from typing import Optional

AS_OF = "2025-06-01"
# Older than this, the plan warns that its costs may be out of date (prices change a few times a year).
MAX_AGE_DAYS = 90
SOURCE = "Lambda's public on-demand price list (https://lambda.ai/pricing), per instance, USD"
HOURS_PER_MONTH = 730  # 365 * 24 / 12, the usual cloud billing month

# Instance type -> US cents per hour (the unit GET /instance-types uses).
CENTS_PER_HOUR: dict[str, int] = {
    "gpu_1x_gh200": 149,
    "gpu_1x_a100": 129,
    "gpu_1x_a100_sxm4": 129,
    "gpu_2x_a100": 258,
    "gpu_4x_a100": 516,
    "gpu_8x_a100": 1032,
    "gpu_8x_a100_80gb_sxm4": 1432,
    "gpu_1x_a6000": 80,
    "gpu_2x_a6000": 160,
    "gpu_4x_a6000": 320,
    "gpu_1x_a10": 75,
    "gpu_1x_rtx6000": 50,
}


def hourly_usd(instance_type: str) -> float:
    return CENTS_PER_HOUR[instance_type] / 100


def dollars(amount: float) -> str:
    return f"${amount:,.2f}"


def staleness(today: date) -> Optional[str]:
    """One line saying the table is old (its date and age), or None while it is recent."""
    age = (today - date.fromisoformat(AS_OF)).days
    if age <= MAX_AGE_DAYS:
        return None
    return (f"the offline Lambda Cloud price table is dated {AS_OF} ({age} days ago), so these costs may be out of date; "
            "`python -m sophia_infra capacity` shows today's prices (then update prices.py and its AS_OF)")
