"""`provision:` of a node: the stack launches the host on Lambda Cloud instead of reading its
address from ESC. The checks that span keys (instance type against the node's GPU and arch,
no ESC address for a provisioned node) run in config.cross_check, before anything registers."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal, Optional

from pydantic import Field, field_validator

from sophia_infra.program.config.instance_types import INSTANCE_TYPES
from sophia_infra.program.config.models import Strict

if TYPE_CHECKING:
    from sophia_infra.program.config.stack import StackConfig

API_KEY_SECRET = "lambdaLabsApiKey"  # ESC: sophia.infrastructure.lambda_labs.api_key
_REGION = re.compile(r"^[a-z]+(-[a-z]+)+-\d+$")  # us-east-3, europe-central-1
_NAME = re.compile(r"^[a-zA-Z][0-9a-zA-Z-]{0,59}$")  # Lambda's file-system name rule


class Provision(Strict):
    provider: Literal["lambda"]
    instance_type: str = Field(alias="instanceType")
    region: str
    # A Lambda persistent file system (same region) to attach; it outlives the instance.
    file_system: Optional[str] = Field(default=None, alias="fileSystem")
    # The image family to boot (e.g. lambda-stack-24-04); unset = Lambda's default image.
    image_family: Optional[str] = Field(default=None, alias="imageFamily")

    @field_validator("instance_type")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in INSTANCE_TYPES:
            raise ValueError(f"'{v}' is not a Lambda Cloud instance type this program knows; use one of "
                             f"{', '.join(INSTANCE_TYPES)}")
        return v

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        if not _REGION.match(v):
            raise ValueError(f"'{v}' is not a Lambda Cloud region name; write it like us-east-3")
        return v

    @field_validator("file_system", "image_family")
    @classmethod
    def _name(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not _NAME.match(v):
            raise ValueError(f"'{v}' is not a Lambda Cloud name; use a letter, then letters, digits and '-'")
        return v


def provisioned(cfg: "StackConfig") -> list:
    return [n for n in cfg.nodes if n.provision is not None]


def cross_check(cfg: "StackConfig") -> list[str]:
    """One sentence per provisioned node whose instance type does not carry what it declares."""
    problems = []
    for i, node in enumerate(cfg.nodes):
        if node.provision is None:
            continue
        path = f"sophia:nodes[{i}]"
        it = INSTANCE_TYPES[node.provision.instance_type]
        if node.gpu is None or node.gpu.type != it.gpu_type:
            declared = f"declares gpu.type {node.gpu.type}" if node.gpu else "declares no GPU"
            problems.append(f"{path}.provision.instanceType: {it.name} carries {it.gpu_type} GPUs but node "
                            f"'{node.name}' {declared}; set gpu.type: {it.gpu_type} or pick a "
                            f"{node.gpu.type if node.gpu else 'matching'} instance type.")
        elif node.gpu.count != it.gpu_count:
            problems.append(f"{path}.gpu.count: {it.name} has {it.gpu_count} GPU(s) but node '{node.name}' declares "
                            f"{node.gpu.count}; set gpu.count: {it.gpu_count} or pick an instance type with {node.gpu.count}.")
        if node.arch != it.arch:
            problems.append(f"{path}.arch: {it.name} runs {it.arch} but node '{node.name}' declares {node.arch}; "
                            f"set arch: {it.arch}.")
        if node.name in cfg.hosts:
            problems.append(f"sophia:hosts.{node.name}: node '{node.name}' is provisioned by the stack "
                            f"({path}.provision), so it has no address in ESC; remove sophia:hosts.{node.name}.")
    return problems


# Lambda's account-wide firewall rules do not apply to instances in these regions (Lambda Cloud
# API reference, "Firewall": "Firewall rules do not apply to the us-south-1 region").
NO_FIREWALL_RULES_REGIONS = ("us-south-1",)


def warnings(cfg: "StackConfig") -> list[str]:
    """One sentence per provisioned node where the Lambda firewall rules do not apply: only the
    host firewall (ufw, sophia:k3s.firewall, required for public nodes) filters its traffic,
    and only from when its firewall command has run."""
    return [f"sophia:nodes[{i}].provision.region: Lambda's firewall rules do not apply in {node.provision.region}, so "
            f"node '{node.name}' is open on every port until its host firewall (ufw) is applied and is then "
            "protected by ufw alone; choose another region to have both."
            for i, node in enumerate(cfg.nodes)
            if node.provision is not None and node.provision.region in NO_FIREWALL_RULES_REGIONS]
