"""`python -m sophia_infra capacity --stack S`: which configured instance types have capacity
in which regions right now, with the live price (GET /instance-types)."""

from __future__ import annotations

from sophia_infra.program.config.stack import StackConfig
from sophia_infra.program.lambda_cloud import api
from sophia_infra.tools.lambda_cloud import prices
from sophia_infra.program.config.provision import provisioned

API_KEY_ENV = "LAMBDA_API_KEY"
BASE_URL_ENV = "LAMBDA_API_BASE_URL"  # another endpoint (tests use a local fake)


def report(cfg: StackConfig, client: api.Client) -> tuple[list[str], bool]:
    """(lines, whether every provisioned node's region has capacity for its type now)."""
    live = client.instance_types()
    lines, ok = [], True
    for node in provisioned(cfg):
        p = node.provision
        assert p is not None
        entry = live.get(p.instance_type)
        if entry is None:
            lines.append(f"{node.name}: {p.instance_type} is not offered by Lambda Cloud now; pick another instance type")
            ok = False
            continue
        regions = entry["regions"]
        here = p.region in regions
        ok = ok and here
        cents = entry.get("price_cents_per_hour")
        price = prices.dollars(cents / 100) + "/h" if isinstance(cents, (int, float)) else "price unknown"
        where = ", ".join(regions) if regions else "no region"
        verdict = "has capacity" if here else "NO capacity"
        lines.append(f"{node.name}: {p.instance_type} ({price}) {verdict} in {p.region}; capacity now in: {where}")
    return lines, ok
