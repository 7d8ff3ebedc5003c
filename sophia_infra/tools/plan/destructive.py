"""What counts as destructive: a delete or replacement that loses data or costs money
(docs/operating.md, "What counts as destructive"). `plan --against` exits 1 on such a step unless
`--allow-destroy NAME` accepts it."""

from __future__ import annotations

from typing import Any

from sophia_infra.tools.plan.provider_rules import get_path, MISSING

LAMBDA_INSTANCE = "pulumi-python:dynamic/lambda:Instance"
CNPG_CLUSTER = "kubernetes:postgresql.cnpg.io/v1:Cluster"
CONTROL_PLANE = "sophia:k3s:ControlPlane"
CLUSTER = "sophia:k3s:Cluster"


def _parent_type(urn: str) -> str:
    """The parent's type from a URN (`...::<parent types>$<type>::<name>`)."""
    types_ = urn.split("::")[-2].split("$")
    return types_[-2] if len(types_) > 1 else ""


def reason(op: str, type_: str, name: str, urn: str, old: dict[str, Any]) -> str:
    """Why deleting or replacing this resource (`old`: its entry in the old plan) loses data or
    money, or "" when it does not."""
    if op not in ("delete", "replace"):
        return ""
    if (old.get("options") or {}).get("retainOnDelete"):
        return ""  # deleted or replaced, the old object stays where it is
    inputs = old.get("inputs") or {}
    if type_ == LAMBDA_INSTANCE:
        return "terminates a Lambda Cloud instance: everything on its disk is gone, and a new one is billed"
    if type_ == CNPG_CLUSTER:
        return "deletes a CloudNativePG cluster and its volumes: the database (only the S3 backups remain)"
    if type_ == "kubernetes:core/v1:PersistentVolumeClaim":
        return "deletes a PersistentVolumeClaim and, with local-path, its data"
    if type_ == "kubernetes:core/v1:Namespace":
        return "deleting a namespace deletes every object in it, volumes included"
    if type_ == "kubernetes:helm.sh/v3:Release":
        chart = str(inputs.get("chart", "")).rsplit("/", 1)[-1]
        values = inputs.get("values") or {}
        if chart == "valkey":
            return "uninstalls Valkey: its PersistentVolumeClaim (the AOF/RDB data) goes with it"
        if chart == "kube-prometheus-stack" and get_path(
                values, ".prometheus.prometheusSpec.storageSpec") not in (None, MISSING):
            return "uninstalls kube-prometheus-stack: Prometheus' volume (the metrics history) goes with it"
    if type_ == "command:remote:Command" and _parent_type(urn) == CONTROL_PLANE and name.endswith("-install"):
        return "runs the control plane's uninstall: K3s and etcd (the whole cluster's state) are removed"
    if type_ == "random:index/randomPassword:RandomPassword" and _parent_type(urn) == CLUSTER \
            and name.endswith("-token") and not name.endswith("-agent-token"):
        return "a new K3s server token: etcd's bootstrap data is encrypted with it"
    return ""
