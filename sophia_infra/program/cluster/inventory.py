"""The node inventory other code reads from the stack outputs instead of hard-coding."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import pulumi

from sophia_infra.program.config.stack import StackConfig

if TYPE_CHECKING:
    from sophia_infra.program.cluster.addresses import NodeAddresses


def node_inventory(cfg: StackConfig, addresses: Optional["NodeAddresses"] = None) -> dict[str, dict]:
    """Node name -> role, architecture, GPU type/count/sharing and address (a provisioned
    node's address is its instance's, an Output; the rest are plain values)."""
    out = {}
    for node in cfg.nodes:
        out[node.name] = {
            "role": node.role,
            "arch": node.arch,
            "gpuType": node.gpu.type if node.gpu else None,
            "gpuCount": node.gpu.count if node.gpu else 0,
            "gpuSharing": node.gpu.sharing if node.gpu else 1,
            "address": addresses.address(node) if addresses else cfg.hosts[node.name].address,
            "privateAddress": addresses.private_address(node) if addresses else cfg.hosts[node.name].private_address,
        }
    return out


def keep_secret(cfg: StackConfig, value):
    """`value` (addresses, or what holds them) as a secret Output when sophia:hosts came as a
    secret (fn::secret in ESC): an address given secret stays secret in the stack outputs."""
    return pulumi.Output.secret(value) if cfg.is_secret("hosts") else value
