"""Lambda Cloud instance types this program can provision: the GPU each carries and its CPU
architecture, so a node's declared gpu.type/arch can be checked against its instance type.

Names as `GET /instance-types` lists them (Lambda Cloud API, docs-api.lambda.ai/api/cloud,
"List available instance types"); only types whose GPU is one of config/cluster.py's GPU_TYPES.
The GH200 is a Grace Hopper superchip: its CPU is the arm64 Grace, everything else is x86-64.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InstanceType:
    name: str
    gpu_type: str
    gpu_count: int
    arch: str  # "amd64" or "arm64", as sophia:nodes[].arch spells it


_TYPES = [
    InstanceType("gpu_1x_gh200", "GH200", 1, "arm64"),
    InstanceType("gpu_1x_a100", "A100", 1, "amd64"),
    InstanceType("gpu_1x_a100_sxm4", "A100", 1, "amd64"),
    InstanceType("gpu_2x_a100", "A100", 2, "amd64"),
    InstanceType("gpu_4x_a100", "A100", 4, "amd64"),
    InstanceType("gpu_8x_a100", "A100", 8, "amd64"),
    InstanceType("gpu_8x_a100_80gb_sxm4", "A100", 8, "amd64"),
    InstanceType("gpu_1x_a6000", "A6000", 1, "amd64"),
    InstanceType("gpu_2x_a6000", "A6000", 2, "amd64"),
    InstanceType("gpu_4x_a6000", "A6000", 4, "amd64"),
    InstanceType("gpu_1x_a10", "A10", 1, "amd64"),
    InstanceType("gpu_1x_rtx6000", "RTX6000", 1, "amd64"),
]

INSTANCE_TYPES: dict[str, InstanceType] = {t.name: t for t in _TYPES}
