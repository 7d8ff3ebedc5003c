"""The kubeconfig K3s writes, pointed at the address operators and Pulumi can reach."""

from __future__ import annotations

import yaml

from sophia_infra.program.cluster.scripts import API_PORT
from sophia_infra.program.config.validators import url_host


class KubeconfigError(ValueError):
    pass


def rewrite(raw: str, endpoint: str, name: str) -> str:
    """Set the server to https://<endpoint>:6443 and name cluster, user and context
    `name` (K3s calls them all "default", which collides when merged elsewhere)."""
    if not raw or not raw.strip():
        raise KubeconfigError(
            "the control plane's kubeconfig came back empty; `pulumi refresh` clears command output "
            "(pulumi-command #94): run `pulumi up --replace` on the read-kubeconfig command to read it again")
    doc = yaml.safe_load(raw)
    if not isinstance(doc, dict) or not doc.get("clusters") or not doc.get("users"):
        raise KubeconfigError("the control plane's kubeconfig has no clusters or users; check /etc/rancher/k3s/k3s.yaml")
    cluster = doc["clusters"][0]
    user = doc["users"][0]
    cluster["name"] = name
    cluster["cluster"]["server"] = f"https://{url_host(endpoint)}:{API_PORT}"
    user["name"] = name
    doc["clusters"], doc["users"] = [cluster], [user]
    doc["contexts"] = [{"name": name, "context": {"cluster": name, "user": name}}]
    doc["current-context"] = name
    return yaml.safe_dump(doc, sort_keys=False)
