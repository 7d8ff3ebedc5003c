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
from sophia_infra.program.platform import namespaces as ns
from sophia_infra.program.platform.helm import release

PLATFORM = "k3s"


# istiod's ports (istiod chart templates/deployment.yaml): xDS with TLS for the sidecars, and
# the injection and validation webhooks behind the istiod Service's 443.
ISTIOD_WEBHOOK_PORT = 15017


def namespace_manifest() -> dict:
    # The CNI node agent writes into the host's CNI directories: privileged, like the GPU agents.
    labels = {"app.kubernetes.io/part-of": "sophia-ai"}
    for mode in ("enforce", "warn", "audit"):
        labels[f"pod-security.kubernetes.io/{mode}"] = "privileged"
        labels[f"pod-security.kubernetes.io/{mode}-version"] = ns.PSA_VERSION
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": names.ISTIO, "labels": labels}}


def network_policies(cfg: StackConfig) -> list[dict]:
    """istio-system denies by default like every platform namespace, then allows what the mesh
    needs: the sidecars of the meshed namespaces to istiod's xDS, the API server to istiod's
    webhooks (from the node addresses, and from the pod network's gateway as flannel
    forwards host traffic), istiod and the CNI agent to the API server, DNS."""
    everything: dict = {}
    return [
        ns.policy(names.ISTIO, "default-deny", everything, ingress=[], egress=[]),
        ns.policy(names.ISTIO, "allow-dns", everything, egress=[ns.dns_rule()]),
        ns.policy(names.ISTIO, "allow-api-server", everything, egress=[ns.api_server_rule(cfg)]),
        ns.policy(names.ISTIO, "allow-sidecars", {"matchLabels": ns.ISTIOD_POD}, ingress=[{
            "from": [ns.namespace_peer(m) for m in ns.MESHED], "ports": ns.ports([ns.ISTIOD_XDS_PORT])}]),
        ns.policy(names.ISTIO, "allow-webhooks", {"matchLabels": ns.ISTIOD_POD}, ingress=[{
            "from": ns.webhook_callers(cfg), "ports": ns.ports([ISTIOD_WEBHOOK_PORT])}]),
    ]


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
        self.policies = [
            k8s.networking.v1.NetworkPolicy(f"{name}-networkpolicy-{p['metadata']['name']}", metadata=p["metadata"],
                                            spec=p["spec"], opts=pulumi.ResourceOptions(parent=self, provider=provider,
                                                                                        depends_on=[self.namespace]))
            for p in network_policies(cfg)]
        self.base = release(f"{name}-base", cfg, "istio-base", "istio-base", names.ISTIO, {}, provider, self,
                            depends_on=[self.namespace])
        self.cni = release(f"{name}-cni", cfg, "istio-cni", "istio-cni", names.ISTIO, cni_values(cfg), provider, self,
                           depends_on=[self.base])
        self.istiod = release(f"{name}-istiod", cfg, "istiod", "istiod", names.ISTIO, istiod_values(cfg), provider, self,
                              depends_on=[self.cni])
        self.register_outputs({})
