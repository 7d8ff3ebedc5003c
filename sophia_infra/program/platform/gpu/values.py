"""Pure builders of the GPU layer's Helm values: no Pulumi, testable on their own.

Time-slicing is configured per node: the device plugin's `config.map` holds one config per
(GPU type, sharing) pair the stack has, and each GPU node carries the label
`nvidia.com/device-plugin.config=<name>` (set by the cluster layer through
`device_plugin_config_name(node)`), which selects its config.
"""

from __future__ import annotations

from typing import Any, Optional

import yaml

from sophia_infra.program.config import names
from sophia_infra.program.config.cluster import Node
from sophia_infra.program.config.stack import StackConfig

# The config a GPU node without the label gets: whole GPUs, no sharing (under-advertises,
# never over-advertises).
DEFAULT_CONFIG = "default"


def device_plugin_config_name(node: Node) -> Optional[str]:
    """Value of the node label `nvidia.com/device-plugin.config` for `node` (None without a GPU)."""
    if node.gpu is None:
        return None
    return f"{node.gpu.type.lower()}-x{node.gpu.sharing}"


def _plugin_config(sharing: int) -> str:
    doc: dict[str, Any] = {"version": "v1", "flags": {"migStrategy": "none", "failOnInitError": True}}
    if sharing > 1:
        doc["sharing"] = {"timeSlicing": {
            # Time-sliced GPUs share memory with no isolation: a pod asking for 2 slices would
            # get 2 slices of the same GPU, not 2 GPUs, so refuse it.
            "failRequestsGreaterThanOne": True,
            "resources": [{"name": "nvidia.com/gpu", "replicas": sharing}],
        }}
    return yaml.safe_dump(doc, sort_keys=False)


def device_plugin_config_map(cfg: StackConfig) -> dict[str, str]:
    """config name -> device plugin config file, one per (GPU type, sharing) of the stack."""
    out = {DEFAULT_CONFIG: _plugin_config(1)}
    for node in cfg.nodes:
        name = device_plugin_config_name(node)
        if name and node.gpu:
            out[name] = _plugin_config(node.gpu.sharing)
    return out


def node_tolerations(cfg: StackConfig) -> list[dict[str, Any]]:
    """Tolerations for node agents: the GPU taint, the control plane's, and every taint a GPU node has."""
    tols = [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "CriticalAddonsOnly", "operator": "Exists"},
    ]
    for node in cfg.nodes:
        if not node.gpu:
            continue
        for taint in node.taints:
            kv, effect = taint.rsplit(":", 1)
            key, _, value = kv.partition("=")
            tol = {"key": key, "operator": "Equal", "value": value, "effect": effect} if value else \
                {"key": key, "operator": "Exists", "effect": effect}
            if tol not in tols:
                tols.append(tol)
    return tols


def device_plugin_values(cfg: StackConfig) -> dict[str, Any]:
    s = cfg.platform.device_plugin
    return {
        "runtimeClassName": names.NVIDIA_RUNTIME_CLASS,
        "config": {"map": device_plugin_config_map(cfg), "default": DEFAULT_CONFIG},
        # The chart's default affinity already selects nvidia.com/gpu.present=true, which
        # the cluster layer sets on every GPU node.
        "tolerations": node_tolerations(cfg),
        "resources": s.resources.k8s(),
        "gfd": {"enabled": s.gpu_feature_discovery},
    }


def dcgm_exporter_values(cfg: StackConfig, prometheus_release: str) -> dict[str, Any]:
    s = cfg.platform.gpu_metrics
    return {
        "runtimeClassName": names.NVIDIA_RUNTIME_CLASS,
        "nodeSelector": {names.GPU_PRESENT_LABEL: "true"},
        "tolerations": node_tolerations(cfg),
        "resources": s.resources.k8s(),
        "serviceMonitor": {
            "enabled": True,
            # kube-prometheus-stack selects every ServiceMonitor (NilUsesHelmValues: false);
            # the release label also matches its default selector, should that change.
            "additionalLabels": {"release": prometheus_release},
        },
        # Pod labels in metrics let dashboards show which workload uses which GPU slice.
        "kubernetes": {"enablePodLabels": True},
    }
