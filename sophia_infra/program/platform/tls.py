"""cert-manager and the certificates of the Ingress hosts (pure builders).

cert-manager (pinned chart, CRDs installed and upgraded by the release) runs in its own
namespace. One ClusterIssuer answers Let's Encrypt's HTTP-01 challenges through the NGINX
ingress class; each Ingress host gets a Certificate in the Ingress's namespace, whose
Secret the Ingress's `tls` section names. No TLS Secret is ever created by hand.

F5's NGINX Ingress Controller gives a host to the oldest Ingress that names it (docs.nginx.com,
"Host and Listener collisions"), so a separate solver Ingress for a host that already has an
Ingress would never be served: the solver for a known host edits that Ingress in place
(`http01.ingress.name`); any other name falls back to a solver Ingress of the class.

The first certificate of a host. The controller (nginx/kubernetes-ingress,
internal/configs/version1/nginx.ingress.tmpl) renders a server whose TLS Secret does not exist
with `ssl_reject_handshake on`, and, with `ssl-redirect` on by default (docs.nginx.com, ConfigMap
resource), answers every HTTP request of a TLS host, the challenge path included, with a
redirect to HTTPS. Let's Encrypt and cert-manager's self-check both follow it (cert-manager
pkg/issuer/acme/http/http.go, testReachability: redirects followed, the certificate not
verified), and the handshake is refused. So every Certificate asks for a temporary certificate
(`cert-manager.io/issue-temporary-certificate`, cert-manager pkg/apis/certmanager/v1/types.go):
the Secret exists, self-signed, before the ACME order, NGINX serves it and the redirected
challenge is answered; and cert-manager may reach the controller on 443 as well as 80.
"""

from __future__ import annotations

from typing import Any

from sophia_infra.program.config import names
from sophia_infra.program.config.stack import StackConfig
from sophia_infra.program.config.platform import tls_hosts

CERT_MANAGER_RELEASE = "cert-manager"
CLUSTER_ISSUER = "letsencrypt"
ACME_SERVERS = {
    "staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
    "production": "https://acme-v02.api.letsencrypt.org/directory",
}
# Pods cert-manager starts for an HTTP-01 challenge (label and port of its acmesolver pods).
SOLVER_POD = {"acme.cert-manager.io/http01-solver": "true"}
SOLVER_PORT = 8089
WEBHOOK_PORT = 10250  # the chart's webhook.securePort, which the API server calls
SELF_CHECK_PORTS = (80, 443)  # the HTTP-01 self-check to the controller, and where it is redirected
TEMPORARY_CERTIFICATE = {"cert-manager.io/issue-temporary-certificate": "true"}
PART_OF = {"app.kubernetes.io/part-of": "sophia-platform"}


def cert_manager_values(cfg: StackConfig, prometheus_release: str) -> dict[str, Any]:
    c = cfg.platform.cert_manager
    return {
        # The CRDs are templates of the release: installed with it and upgraded with the pin.
        "crds": {"enabled": True},
        # Leader election in its own namespace, not kube-system (no Role there).
        "global": {"leaderElection": {"namespace": names.CERT_MANAGER}},
        "resources": c.resources.k8s(),
        "webhook": {"resources": c.webhook_resources.k8s()},
        "cainjector": {"resources": c.cainjector_resources.k8s()},
        "startupapicheck": {"resources": c.webhook_resources.k8s()},
        # certmanager_certificate_expiration_timestamp_seconds, for the expiry alert.
        "prometheus": {"servicemonitor": {"enabled": True, "labels": {"release": prometheus_release}}},
    }


def _ingress_name(cfg: StackConfig, host_key: str) -> tuple[str, str, str]:
    """(namespace, Ingress name, TLS Secret) of the Ingress a host setting creates."""
    if host_key == "sophia:workloads.frontendHost":
        return names.APPS, "frontend", names.FRONTEND_TLS_SECRET  # charts/sophia-service names it after the service
    if host_key == "sophia:argocd.ingressHost":
        return names.ARGOCD, "argocd-server", names.ARGOCD_TLS_SECRET  # the argo-cd chart's server Ingress
    return names.MONITORING, "kube-prometheus-stack-grafana", names.GRAFANA_TLS_SECRET  # the grafana subchart's


def certificate_targets(cfg: StackConfig) -> list[tuple[str, str, str, str]]:
    """(host, namespace, Ingress name, TLS Secret) of every Ingress host."""
    return [(host, *_ingress_name(cfg, key)) for host, key in tls_hosts(cfg).items()]


def cluster_issuer(cfg: StackConfig) -> dict[str, Any]:
    t = cfg.platform.tls
    solvers: list[dict[str, Any]] = [
        {"selector": {"dnsNames": [host]}, "http01": {"ingress": {"name": ingress}}}
        for host, _, ingress, _ in certificate_targets(cfg)
    ]
    solvers.append({"http01": {"ingress": {"ingressClassName": cfg.workloads.ingress_class}}})
    return {
        "apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer",
        "metadata": {"name": CLUSTER_ISSUER, "labels": dict(PART_OF)},
        "spec": {"acme": {
            "server": ACME_SERVERS[t.server],
            "email": t.email,
            # One account key per server: staging and production accounts are different.
            "privateKeySecretRef": {"name": f"{CLUSTER_ISSUER}-{t.server}-account-key"},
            "solvers": solvers,
        }},
    }


def certificates(cfg: StackConfig) -> list[dict[str, Any]]:
    out = []
    for host, ns, ingress, secret in certificate_targets(cfg):
        out.append({
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": ingress, "namespace": ns, "labels": dict(PART_OF),
                         # The Secret exists before the first ACME order (see the module's docstring).
                         "annotations": dict(TEMPORARY_CERTIFICATE)},
            "spec": {"secretName": secret, "dnsNames": [host],
                     "issuerRef": {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": CLUSTER_ISSUER},
                     "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"}},
        })
    return out


def solver_namespaces(cfg: StackConfig) -> list[str]:
    """Namespaces where cert-manager starts HTTP-01 solver pods (those with a Certificate)."""
    return sorted({ns for _, ns, _, _ in certificate_targets(cfg)})


def grafana_ingress_values(cfg: StackConfig) -> dict[str, Any]:
    """kube-prometheus-stack's `grafana` subchart keys (grafana chart: ingress.enabled,
    ingressClassName, hosts, path, tls) for a Grafana host; {} without one."""
    host = cfg.platform.monitoring.grafana_host
    if not host:
        return {}
    return {"ingress": {"enabled": True, "ingressClassName": cfg.workloads.ingress_class, "hosts": [host],
                        "tls": [{"secretName": names.GRAFANA_TLS_SECRET, "hosts": [host]}]},
            "grafana.ini": {"server": {"root_url": f"https://{host}/"}}}
