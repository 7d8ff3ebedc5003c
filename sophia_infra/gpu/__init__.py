"""GPU layer: NVIDIA device plugin (time-slicing per GPU type) and GPU metrics."""

from sophia_infra.gpu.values import device_plugin_config_name

__all__ = ["device_plugin_config_name"]
