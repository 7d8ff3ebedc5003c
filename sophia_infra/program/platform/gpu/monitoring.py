"""Pure builders of the GPU dashboard ConfigMap and the GPU PrometheusRule."""

from __future__ import annotations

import json
from typing import Any

from sophia_infra.program.config import names
from sophia_infra.program.config.stack import StackConfig

DASHBOARD_NAME = "gpu-dashboard"
RULE_NAME = "gpu-alerts"
PART_OF = {"app.kubernetes.io/part-of": "sophia-platform"}


def _panel(pid: int, title: str, expr: str, unit: str, y: int, x: int = 0) -> dict[str, Any]:
    return {
        "id": pid, "type": "timeseries", "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": "A", "expr": expr, "legendFormat": "{{Hostname}} gpu{{gpu}} {{exported_pod}}"}],
    }


def dashboard_json() -> dict[str, Any]:
    panels = [
        _panel(1, "GPU utilisation", "DCGM_FI_DEV_GPU_UTIL", "percent", 0, 0),
        _panel(2, "Graphics engine active", "DCGM_FI_PROF_GR_ENGINE_ACTIVE", "percentunit", 0, 12),
        _panel(3, "Framebuffer used", "DCGM_FI_DEV_FB_USED", "decmbytes", 8, 0),
        _panel(4, "Framebuffer used ratio",
               "DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)", "percentunit", 8, 12),
        _panel(5, "Temperature", "DCGM_FI_DEV_GPU_TEMP", "celsius", 16, 0),
        _panel(6, "Power draw", "DCGM_FI_DEV_POWER_USAGE", "watt", 16, 12),
        _panel(7, "Last XID error", "DCGM_FI_DEV_XID_ERRORS", "none", 24, 0),
        _panel(8, "nvidia.com/gpu requested vs allocatable",
               'sum by (node) (kube_pod_container_resource_requests{resource="nvidia_com_gpu"}) / '
               'sum by (node) (kube_node_status_allocatable{resource="nvidia_com_gpu"})', "percentunit", 24, 12),
    ]
    return {
        "uid": "sophia-gpu", "title": "Sophia GPUs", "schemaVersion": 39, "version": 1,
        "editable": False, "time": {"from": "now-6h", "to": "now"}, "refresh": "30s", "tags": ["gpu", "dcgm"],
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus",
                                 "current": {"text": "Prometheus", "value": "prometheus"}}]},
        "panels": panels,
    }


def dashboard_configmap() -> dict[str, Any]:
    """A ConfigMap the Grafana sidecar loads (label grafana_dashboard: "1")."""
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": DASHBOARD_NAME, "namespace": names.MONITORING,
                     "labels": {"grafana_dashboard": "1", **PART_OF}},
        "data": {"sophia-gpu.json": json.dumps(dashboard_json(), indent=1, sort_keys=True)},
    }


def prometheus_rule(cfg: StackConfig, prometheus_release: str) -> dict[str, Any]:
    s = cfg.platform.gpu_metrics
    by = "Hostname, gpu, UUID"
    rules = [
        {
            "alert": "GpuIdle",
            "expr": f"avg by ({by}) (avg_over_time(DCGM_FI_DEV_GPU_UTIL[30m])) < {s.idle_utilization_percent}",
            "for": s.idle_for,
            "labels": {"severity": "info"},
            "annotations": {
                "summary": "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} is idle",
                "description": f"Utilisation has stayed below {s.idle_utilization_percent}% for {s.idle_for}: the node pays for a GPU nothing uses.",
            },
        },
        {
            "alert": "GpuMemoryPressure",
            "expr": f"max by ({by}) (DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)) > {s.memory_pressure_ratio}",
            "for": "10m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} framebuffer {{ $value | humanizePercentage }} full",
                "description": "Time-sliced pods share GPU memory without isolation; one more allocation can fail with out-of-memory for every pod on this GPU.",
            },
        },
        {
            "alert": "GpuXidError",
            "expr": f"max by ({by}) (DCGM_FI_DEV_XID_ERRORS) > 0",
            "for": "0m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "GPU {{ $labels.gpu }} on {{ $labels.Hostname }} reported XID error {{ $value }}",
                "description": "An XID error is a driver-reported GPU fault; check `nvidia-smi -q` and dmesg on the node, and drain it if the error repeats.",
            },
        },
        {
            "alert": "GpuMetricsMissing",
            "expr": 'absent(DCGM_FI_DEV_GPU_UTIL)',
            "for": "15m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "No GPU metrics from dcgm-exporter",
                "description": "dcgm-exporter reports nothing: the GPU alerts above cannot fire. Check the nvidia-gpu namespace.",
            },
        },
    ]
    return {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
        "metadata": {"name": RULE_NAME, "namespace": names.MONITORING,
                     "labels": {"release": prometheus_release, **PART_OF}},
        "spec": {"groups": [{"name": "sophia.gpu", "rules": rules}]},
    }
