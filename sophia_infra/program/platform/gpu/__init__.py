"""GPU layer: NVIDIA device plugin (time-slicing per GPU type) and GPU metrics."""

from sophia_infra.program.platform.gpu.values import device_plugin_config_name

__all__ = ["device_plugin_config_name"]
