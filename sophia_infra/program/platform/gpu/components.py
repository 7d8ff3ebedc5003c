"""The GPU layer's components: the NVIDIA device plugin and GPU metrics."""

from __future__ import annotations

from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from sophia_infra.program.config import names
from sophia_infra.program.config.stack import StackConfig
from sophia_infra.program.platform.gpu import monitoring, values
from sophia_infra.program.platform.helm import config_map, custom_resource, release


class DevicePlugin(pulumi.ComponentResource):
    """The NVIDIA device plugin with per-GPU-type time-slicing configs."""

    def __init__(self, name: str, cfg: StackConfig, provider: k8s.Provider,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("sophia:gpu:DevicePlugin", name, None, opts)
        self.release = release(f"{name}-release", cfg, "nvidia-device-plugin", "nvidia-device-plugin",
                               names.GPU, values.device_plugin_values(cfg), provider, self)
        self.capacity = {n.name: n.gpu.capacity for n in cfg.nodes if n.gpu}
        self.register_outputs({"status": self.release.status, "capacity": self.capacity})


class GpuMetrics(pulumi.ComponentResource):
    """dcgm-exporter with its ServiceMonitor, a Grafana dashboard and GPU alerts.

    `prometheus` is the kube-prometheus-stack release: it installs the ServiceMonitor and
    PrometheusRule CRDs, so everything here waits for it."""

    def __init__(self, name: str, cfg: StackConfig, provider: k8s.Provider, prometheus: k8s.helm.v3.Release,
                 prometheus_release: str, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("sophia:gpu:GpuMetrics", name, None, opts)
        self.release = release(f"{name}-dcgm-exporter", cfg, "dcgm-exporter", "dcgm-exporter", names.GPU,
                               values.dcgm_exporter_values(cfg, prometheus_release), provider, self,
                               depends_on=[prometheus])
        self.dashboard = config_map(f"{name}-dashboard", monitoring.dashboard_configmap(), provider, self,
                                    depends_on=[prometheus])
        self.rule = custom_resource(f"{name}-rule", monitoring.prometheus_rule(cfg, prometheus_release),
                                    provider, self, depends_on=[prometheus])
        self.register_outputs({"status": self.release.status})
