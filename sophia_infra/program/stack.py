"""Wires the components together for one stack and returns its outputs."""

from __future__ import annotations

from typing import Any

import pulumi

from sophia_infra.program.cluster import Cluster
from sophia_infra.program.config.stack import StackConfig
from sophia_infra.program.platform.gpu import device_plugin_config_name
from sophia_infra.program.config.names import DEVICE_PLUGIN_CONFIG_LABEL
from sophia_infra.program.platform import Platform
from sophia_infra.program.services import Services


def _device_plugin_label(node) -> dict[str, str]:
    """Each GPU node selects its time-slicing config of the device plugin by label."""
    config = device_plugin_config_name(node)
    return {DEVICE_PLUGIN_CONFIG_LABEL: config} if config else {}


def build(cfg: StackConfig) -> dict[str, Any]:
    """Register every resource of the stack; return the stack outputs by name."""
    cluster = Cluster("sophia", cfg, extra_labels=_device_plugin_label)
    # Everything above the cluster waits until every node has joined and is labelled: the
    # platform's stateful charts (Prometheus, PostgreSQL, Valkey) bind local-path volumes
    # that pin their pods to the first node they land on, and workloads place by gpu-type.
    # (Each label patch waits for its node's membership or registration.) The platform's
    # children wait through it: a child registers only once its parent has, and a
    # component registers only once its depends_on are done.
    nodes_ready = list(cluster.label_patches.values())
    platform = Platform("platform", cfg, cluster.provider, opts=pulumi.ResourceOptions(depends_on=nodes_ready))
    services = Services("services", cfg, cluster.provider, opts=pulumi.ResourceOptions(
        depends_on=[platform, *nodes_ready]))
    return {**cluster.outputs, **platform.outputs, **services.outputs}
