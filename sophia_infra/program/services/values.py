"""Helm values of the sophia-service chart for each workload (pure: no Pulumi resources).

Two parts, merged the way Argo CD merges them (`releases.argocd_values`):

- `structural_values`: everything the stack config owns (placement, GPU, replicas,
  resources, secrets' names, ports, the image's repository): an Argo CD Application's
  `helm.valuesObject`, so Pulumi's inputs never carry what an app release changes;
- the workload's release (`releases/<stack>/<name>.yaml`: image tag and digest), which Argo CD
  reads as a `valueFiles` entry from the release branch.

`service_values` is both merged: what the helm.v3.Release of dev installs and what Argo CD
renders in production, so a workload renders the same objects whichever way it is delivered.
The values name Secrets and ConfigMaps, never secret values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from sophia_infra.program.config import names
from sophia_infra.program import releases
from sophia_infra.program.config.stack import Service, StackConfig
from sophia_infra.program.config.services import Resources, workloads

ROOT = Path(__file__).resolve().parents[3]
CHART_DIR = ROOT / "charts" / "sophia-service"
# The chart's path inside the git repository (Argo CD's `source.path`).
CHART_REPO_PATH = "charts/sophia-service"

MCP_PATH = "/mcp"
MCP_REGISTRY_CONFIGMAP = "mcp-registry"
MCP_REGISTRY_ENV = "MCP_REGISTRY"
# The platform layer's Portkey/OpenRouter routing ConfigMap for the backend
# (sophia_infra.program.platform.values.LLM_GATEWAY_CONFIGMAP; a test keeps the two equal).
LLM_GATEWAY_CONFIGMAP = "llm-gateway"
REGISTRY_SECRET = "registry-credentials"
RUN_AS_USER = 10001

_DEFAULT_RESOURCES = {
    "backend": Resources(cpuRequest="250m", memoryRequest="512Mi", cpuLimit="1", memoryLimit="1Gi"),
    "frontend": Resources(cpuRequest="100m", memoryRequest="128Mi", cpuLimit="500m", memoryLimit="256Mi"),
    "mcp": Resources(cpuRequest="100m", memoryRequest="256Mi", cpuLimit="500m", memoryLimit="512Mi"),
    # Embeddings on a GPU slice: the host side still needs memory for the model.
    "gpu": Resources(cpuRequest="500m", memoryRequest="2Gi", cpuLimit="2", memoryLimit="8Gi"),
}


def namespace(svc: Service) -> str:
    return names.SERVICE_NAMESPACES[svc.kind]


def secret_name(svc: Service) -> str:
    """The workload's own Secret (only its keys), or "" when it has no secrets."""
    return f"{svc.name}-secrets" if svc.secrets else ""


def host(svc: Service) -> str:
    return f"{svc.name}.{namespace(svc)}.svc.cluster.local"


def endpoint(svc: Service) -> str:
    """In-cluster URL of the workload (MCP servers: their Streamable HTTP endpoint)."""
    base = f"http://{host(svc)}:{svc.port}"
    return base + MCP_PATH if svc.kind == "mcp" else base


def endpoints(cfg: StackConfig) -> dict[str, str]:
    return {svc.name: endpoint(svc) for svc in cfg.services}


def mcp_registry(cfg: StackConfig) -> dict[str, str]:
    """MCP server name -> its Streamable HTTP URL inside the cluster."""
    return {svc.name: endpoint(svc) for svc in cfg.services if svc.kind == "mcp"}


def has_hpa(svc: Service) -> bool:
    return (svc.max_replicas or 0) > svc.replicas


def architectures(cfg: StackConfig, svc: Service) -> list[str]:
    """Node architectures the pods may run on: the image's, narrowed to the placed nodes'."""
    archs = [p.split("/", 1)[1] for p in svc.image.platforms]
    if svc.placement:
        placed = {n.arch for n in cfg.nodes_with_gpu(svc.placement.gpu_type)}
        archs = [a for a in archs if a in placed] or archs
    return archs


def resources(cfg: StackConfig, svc: Service) -> dict[str, Any]:
    override = workloads(cfg).resources.get(svc.name)
    if override:
        return override.k8s()
    if svc.gpu:
        key = "gpu"
    elif svc.kind == "mcp":
        key = "mcp"
    else:
        key = svc.name if svc.name in _DEFAULT_RESOURCES else "backend"
    return _DEFAULT_RESOURCES[key].k8s()


def _allowed_peers(svc: Service) -> list[dict[str, Any]]:
    """Who may connect: browsers via NGINX to the apps, the apps to each other, the backend to MCP."""
    if svc.kind == "mcp":
        return [{"namespace": names.APPS, "podLabels": {"app.kubernetes.io/name": "backend"}}]
    peers: list[dict[str, Any]] = [{"namespace": names.INGRESS, "podLabels": {}}]
    if svc.name != "frontend":
        peers.append({"namespace": names.APPS, "podLabels": {"app.kubernetes.io/name": "frontend"}})
    return peers


def _database_env(cfg: StackConfig, svc: Service) -> dict[str, str]:
    """The backend's PostgreSQL: the serving cluster's Services (sophia:platform.postgres.clusterName,
    so switching to a recovered cluster moves the backend), database and user; plain names (the
    password is in its Secret)."""
    if svc.name != "backend":
        return {}
    from sophia_infra.program.platform.namespaces import POSTGRES_PORT
    from sophia_infra.program.platform.values import postgres_host

    return {"POSTGRES_HOST": postgres_host(cfg), "POSTGRES_READ_HOST": postgres_host(cfg, read_only=True),
            "POSTGRES_PORT": str(POSTGRES_PORT),
            "POSTGRES_DB": cfg.platform.postgres.database, "POSTGRES_USER": cfg.platform.postgres.owner}


def _env(svc: Service) -> dict[str, str]:
    env = {"PORT": str(svc.port)}
    if svc.kind == "mcp":
        env.update({
            "MCP_TRANSPORT": "streamable-http",
            "MCP_HOST": "0.0.0.0",
            "MCP_PORT": str(svc.port),
            "MCP_PATH": MCP_PATH,
            # Host/Origin values the server must accept (DNS-rebinding protection).
            "MCP_ALLOWED_HOSTS": ",".join([svc.name, f"{svc.name}.{namespace(svc)}",
                                           f"{svc.name}.{namespace(svc)}.svc", host(svc)]),
        })
    return env


def service_values(cfg: StackConfig, svc: Service, release: Optional[releases.Release] = None,
                   stack: Optional[str] = None) -> dict[str, Any]:
    """Values of charts/sophia-service for one workload, release included (identical in both
    delivery modes). Without `release`: the one in force in `stack` (default: the stack named
    like the config's environment, as dev and production are)."""
    if release is None:
        release = releases.in_force(svc, stack or cfg.environment)
    return releases.argocd_values([release.values()], structural_values(cfg, svc))


def structural_values(cfg: StackConfig, svc: Service) -> dict[str, Any]:
    """The values the stack config owns: all but the release's image tag and digest."""
    w = workloads(cfg)
    ingress_host = w.frontend_host if svc.name == "frontend" else None
    return {
        "name": svc.name,
        "kind": svc.kind,
        # No pullPolicy: the chart pulls a digest-pinned image IfNotPresent and a tag-only one Always.
        "image": {"repository": svc.image.repository},
        "imagePullSecrets": [REGISTRY_SECRET] if w.private_images else [],
        "replicas": svc.replicas,
        "autoscaling": {
            "maxReplicas": svc.max_replicas if has_hpa(svc) else 0,
            "targetCPUUtilizationPercentage": w.target_cpu_utilization,
        },
        "port": svc.port,
        "healthPath": w.health_paths.get(svc.name, "/health"),
        "gpu": svc.gpu,
        "placement": {
            "gpuType": svc.placement.gpu_type if svc.placement else "",
            "architectures": architectures(cfg, svc),
        },
        "resources": resources(cfg, svc),
        "env": {
            "secretName": secret_name(svc),
            "configMapNames": [MCP_REGISTRY_CONFIGMAP, LLM_GATEWAY_CONFIGMAP] if svc.name == "backend" else [],
            "vars": {**_env(svc), **_database_env(cfg, svc)},
        },
        "securityContext": {"runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER, "fsGroup": RUN_AS_USER},
        "networkPolicy": {
            "enabled": True,
            "allowFrom": _allowed_peers(svc),
            # Prometheus may reach the port only where there is something to scrape.
            "monitoringNamespace": names.MONITORING if svc.metrics_path else "",
        },
        "metrics": {"enabled": bool(svc.metrics_path), "path": svc.metrics_path or "/metrics", "interval": "30s"},
        "ingress": {
            "enabled": bool(ingress_host),
            "className": w.ingress_class,
            "host": ingress_host or "",
            "path": "/",
            # cert-manager writes it (the platform's Certificate for the host): sophia_infra.program.platform.tls.
            "tlsSecretName": names.FRONTEND_TLS_SECRET if ingress_host else "",
        },
        "podAnnotations": {},
    }
