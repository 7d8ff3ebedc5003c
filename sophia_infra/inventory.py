"""The node inventory other code reads from the stack outputs instead of hard-coding."""

from __future__ import annotations

from sophia_infra.config import StackConfig


def node_inventory(cfg: StackConfig) -> dict[str, dict]:
    """Node name -> role, architecture, GPU type/count/sharing and address (plain values)."""
    out = {}
    for node in cfg.nodes:
        host = cfg.host(node)
        out[node.name] = {
            "role": node.role,
            "arch": node.arch,
            "gpuType": node.gpu.type if node.gpu else None,
            "gpuCount": node.gpu.count if node.gpu else 0,
            "gpuSharing": node.gpu.sharing if node.gpu else 1,
            "address": host.address,
            "privateAddress": host.private_address,
        }
    return out
