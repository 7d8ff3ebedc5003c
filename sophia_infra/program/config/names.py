"""Names every layer agrees on: namespaces, labels, in-cluster service hosts."""

# Kubernetes version of the pinned K3s release (tests validate objects against it).
KUBERNETES_VERSION = "1.34.0"

# Namespaces, one per concern.
APPS = "sophia-apps"          # backend, frontend
MCP = "sophia-mcp"            # the MCP servers
DATA = "sophia-data"          # PostgreSQL, Valkey
MONITORING = "monitoring"     # kube-prometheus-stack, dcgm-exporter's ServiceMonitor
ARGOCD = "argocd"
INGRESS = "nginx-ingress"
GPU = "nvidia-gpu"            # device plugin, dcgm-exporter (privileged)
ISTIO = "istio-system"        # optional service mesh (privileged: the Istio CNI node agent)
CERT_MANAGER = "cert-manager"  # cert-manager: ACME certificates, the Barman plugin's TLS

# TLS Secrets of the Ingress hosts: cert-manager writes them (Certificates of the platform
# layer), the Ingresses name them. None is ever created by hand.
FRONTEND_TLS_SECRET = "frontend-tls"
ARGOCD_TLS_SECRET = "argocd-server-tls"  # the name the argo-cd chart's `server.ingress.tls` uses
GRAFANA_TLS_SECRET = "grafana-tls"

# Node labels the cluster layer sets and every placement selects on.
GPU_TYPE_LABEL = "gpu-type"
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
DEVICE_PLUGIN_CONFIG_LABEL = "nvidia.com/device-plugin.config"
ROLE_LABEL = "sophia.ai/role"
ARCH_LABEL = "kubernetes.io/arch"

# The RuntimeClass K3s creates itself when it finds the NVIDIA container runtime.
NVIDIA_RUNTIME_CLASS = "nvidia"

# Where each kind of service runs.
SERVICE_NAMESPACES = {"app": APPS, "mcp": MCP}
