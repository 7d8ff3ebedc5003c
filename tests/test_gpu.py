"""GPU layer: time-slicing per GPU type, the device plugin and dcgm-exporter values, GPU alerts."""

from __future__ import annotations

import json

import kubernetes_validate

from sophia_infra.program.config import names
from sophia_infra.program.platform.gpu import device_plugin_config_name
from sophia_infra.program.platform.gpu import monitoring, values
from tests.conftest import parse_with
from tests.platform_helpers import chart_defaults, crd_errors, run_platform, unknown_keys
from tests import yaml_c

PROM = "kube-prometheus-stack"


def _pin(cfg, chart):
    return cfg.charts[chart].version


def test_config_name_per_gpu_type_and_sharing(stack):
    cfg = parse_with(stack)
    for node in cfg.nodes:
        name = device_plugin_config_name(node)
        if node.gpu is None:
            assert name is None
        else:
            assert name == f"{node.gpu.type.lower()}-x{node.gpu.sharing}"
            # a DNS-label-like value, valid as a node label value
            assert len(name) <= 63 and name.replace("-", "").isalnum()


def test_every_gpu_node_label_selects_a_config_that_advertises_its_capacity(stack):
    cfg = parse_with(stack)
    cmap = values.device_plugin_config_map(cfg)
    for node in (n for n in cfg.nodes if n.gpu):
        doc = yaml_c.load(cmap[device_plugin_config_name(node)])
        assert doc["version"] == "v1"
        if node.gpu.sharing == 1:
            assert "sharing" not in doc
        else:
            ts = doc["sharing"]["timeSlicing"]
            assert ts["failRequestsGreaterThanOne"] is True
            assert ts["resources"] == [{"name": "nvidia.com/gpu", "replicas": node.gpu.sharing}]
    # unlabelled GPU nodes fall back to whole, unshared GPUs
    default = yaml_c.load(cmap[values.DEFAULT_CONFIG])
    assert "sharing" not in default


def test_device_plugin_values_use_the_k3s_runtime_class_and_chart_keys(stack):
    cfg = parse_with(stack)
    vals = values.device_plugin_values(cfg)
    assert vals["runtimeClassName"] == names.NVIDIA_RUNTIME_CLASS
    assert vals["gfd"]["enabled"] is False
    assert vals["resources"]["requests"] and vals["resources"]["limits"]
    assert vals["config"]["default"] in vals["config"]["map"]
    defaults = chart_defaults("nvidia-device-plugin", _pin(cfg, "nvidia-device-plugin"))
    assert unknown_keys(vals, defaults) == []
    # the chart's own affinity selects the label the cluster layer sets on GPU nodes
    terms = defaults["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert any(e["key"] == names.GPU_PRESENT_LABEL for t in terms for e in t["matchExpressions"])
    assert "affinity" not in vals


def test_gpu_feature_discovery_is_a_setting():
    cfg = parse_with("production", lambda raw: raw["platform"].update(devicePlugin={"gpuFeatureDiscovery": True}))
    assert values.device_plugin_values(cfg)["gfd"]["enabled"] is True


def test_node_agents_tolerate_the_gpu_nodes_taints():
    def taint(raw):
        raw["nodes"][1]["taints"] = ["dedicated=gpu:NoSchedule"]
    cfg = parse_with("production", taint)
    for vals in (values.device_plugin_values(cfg), values.dcgm_exporter_values(cfg, PROM)):
        assert {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in vals["tolerations"]
        assert any(t["key"] == "nvidia.com/gpu" for t in vals["tolerations"])


def test_dcgm_exporter_values(stack):
    cfg = parse_with(stack)
    vals = values.dcgm_exporter_values(cfg, PROM)
    assert vals["runtimeClassName"] == names.NVIDIA_RUNTIME_CLASS
    assert vals["nodeSelector"] == {names.GPU_PRESENT_LABEL: "true"}
    assert vals["serviceMonitor"]["enabled"] is True
    assert vals["serviceMonitor"]["additionalLabels"]["release"] == PROM
    assert vals["resources"]["limits"]["memory"]
    assert unknown_keys(vals, chart_defaults("dcgm-exporter", _pin(cfg, "dcgm-exporter"))) == []


def test_gpu_alerts_validate_against_the_prometheusrule_crd_and_cover_the_failures():
    cfg = parse_with("production")
    rule = monitoring.prometheus_rule(cfg, PROM)
    assert crd_errors(rule) == []
    exprs = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "DCGM_FI_DEV_GPU_UTIL" in exprs["GpuIdle"]
    assert "DCGM_FI_DEV_FB_USED" in exprs["GpuMemoryPressure"] and "DCGM_FI_DEV_FB_FREE" in exprs["GpuMemoryPressure"]
    assert "DCGM_FI_DEV_XID_ERRORS" in exprs["GpuXidError"]
    assert rule["metadata"]["namespace"] == names.MONITORING


def test_crd_check_catches_a_misspelt_field():
    rule = monitoring.prometheus_rule(parse_with("production"), PROM)
    rule["spec"]["groups"][0]["rules"][0]["expresion"] = "up"
    assert crd_errors(rule)


def test_gpu_dashboard_configmap():
    cm = monitoring.dashboard_configmap()
    kubernetes_validate.validate(cm, names.KUBERNETES_VERSION, strict=True)
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dash = json.loads(next(iter(cm["data"].values())))
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    for metric in ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_XID_ERRORS"):
        assert metric in exprs


def test_gpu_resources_wait_for_the_monitoring_crds_under_mocks():
    run = run_platform("production")
    kps = run.urn("platform-kube-prometheus-stack")
    assert kps in run.named("gpu-metrics-rule").dependencies
    assert kps in run.named("gpu-metrics-dcgm-exporter").dependencies
    assert kps in run.named("gpu-metrics-dashboard").dependencies
    plugin = run.named("device-plugin-release")
    assert plugin.inputs["namespace"] == names.GPU
    assert plugin.inputs["values"]["runtimeClassName"] == "nvidia"
    assert plugin.inputs["version"] == "0.20.0"
    assert run.platform.outputs["gpuCapacity"] == {"sophia-control": 1, "sophia-ai-core": 4, "sophia-mcp": 4,
                                                   "sophia-data": 2, "sophia-dev": 4}
    types = {r.type for r in run.resources}
    assert "kubernetes:node.k8s.io/v1:RuntimeClass" not in types  # K3s ships it
