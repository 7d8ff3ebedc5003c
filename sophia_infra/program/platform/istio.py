"""Optional Istio sidecar mesh: `sophia:platform:Istio` (off unless sophia:platform.istio.enabled).

istio-base (CRDs) -> istio-cni (node agent that sets up traffic redirection, so injected
pods need no NET_ADMIN init container and stay within the restricted profile) -> istiod.
`global.platform: k3s` makes the charts use K3s's CNI directories. The app and MCP
namespaces get `istio-injection: enabled` (platform/namespaces.py).
"""

from __future__ import annotations

from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from sophia_infra.program.config import names
from sophia_infra.program.config.stack import StackConfig
from sophia_infra.program.platform.helm import release

PLATFORM = "k3s"


def namespace_manifest() -> dict:
    # The CNI node agent writes into the host's CNI directories: privileged, like the GPU agents.
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": names.ISTIO, "labels": {
        "app.kubernetes.io/part-of": "sophia-ai",
        "pod-security.kubernetes.io/enforce": "privileged"}}}


def cni_values(cfg: StackConfig) -> dict[str, Any]:
    return {"global": {"platform": PLATFORM}, "resources": cfg.platform.istio.cni_resources.k8s()}


def istiod_values(cfg: StackConfig) -> dict[str, Any]:
    return {"global": {"platform": PLATFORM},
            "pilot": {"cni": {"enabled": True}, "resources": cfg.platform.istio.istiod_resources.k8s()}}


class Istio(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, provider: k8s.Provider, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("sophia:platform:Istio", name, None, opts)
        m = namespace_manifest()
        self.namespace = k8s.core.v1.Namespace(f"{name}-namespace", metadata=m["metadata"],
                                               opts=pulumi.ResourceOptions(parent=self, provider=provider))
        self.base = release(f"{name}-base", cfg, "istio-base", "istio-base", names.ISTIO, {}, provider, self,
                            depends_on=[self.namespace])
        self.cni = release(f"{name}-cni", cfg, "istio-cni", "istio-cni", names.ISTIO, cni_values(cfg), provider, self,
                           depends_on=[self.base])
        self.istiod = release(f"{name}-istiod", cfg, "istiod", "istiod", names.ISTIO, istiod_values(cfg), provider, self,
                              depends_on=[self.cni])
        self.register_outputs({})
