"""Wires the components together for one stack and returns its outputs."""

from __future__ import annotations

from typing import Any

import pulumi

from sophia_infra.cluster import Cluster
from sophia_infra.config import StackConfig
from sophia_infra.gpu import device_plugin_config_name
from sophia_infra.names import DEVICE_PLUGIN_CONFIG_LABEL
from sophia_infra.platform import Platform
from sophia_infra.services import Services


def _device_plugin_label(node) -> dict[str, str]:
    """Each GPU node selects its time-slicing config of the device plugin by label."""
    config = device_plugin_config_name(node)
    return {DEVICE_PLUGIN_CONFIG_LABEL: config} if config else {}


def build(cfg: StackConfig) -> dict[str, Any]:
    """Register every resource of the stack; return the stack outputs by name."""
    cluster = Cluster("sophia", cfg, extra_labels=_device_plugin_label)
    # Platform resources wait for the API (through the provider); workloads also wait for
    # every node to be labelled, since placement selects on gpu-type.
    platform = Platform("platform", cfg, cluster.provider)
    services = Services("services", cfg, cluster.provider, opts=pulumi.ResourceOptions(
        depends_on=[platform, *cluster.label_patches.values()]))
    return {**cluster.outputs, **platform.outputs, **services.outputs}
