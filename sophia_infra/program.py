"""Wires the components together for one stack and returns its outputs."""

from __future__ import annotations

from typing import Any

from sophia_infra.config import StackConfig
from sophia_infra.inventory import node_inventory


def build(cfg: StackConfig) -> dict[str, Any]:
    """Register every resource of the stack; return the stack outputs by name."""
    inventory = node_inventory(cfg)
    return {
        "controlPlaneIp": cfg.host(cfg.control_plane).address,
        "nodeIps": {name: node["address"] for name, node in inventory.items()},
        "nodes": inventory,
    }
