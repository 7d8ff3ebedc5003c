"""Wires the components together for one stack and returns its outputs."""

from __future__ import annotations

from typing import Any

from sophia_infra.cluster import Cluster
from sophia_infra.config import StackConfig


def build(cfg: StackConfig) -> dict[str, Any]:
    """Register every resource of the stack; return the stack outputs by name."""
    cluster = Cluster("sophia", cfg)
    return dict(cluster.outputs)
