"""Helm releases from the stack's chart pins (`sophia:charts`)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s

from sophia_infra.program.config.stack import StackConfig


def chart_source(cfg: StackConfig, chart: str) -> dict[str, Any]:
    """`chart`, `version` and (for classic repositories) `repository_opts` of a pinned chart."""
    pin = cfg.charts[chart]
    name = pin.chart or chart
    if pin.repository.startswith("oci://"):
        return {"chart": f"{pin.repository.rstrip('/')}/{name}", "version": pin.version}
    return {"chart": name, "version": pin.version,
            "repository_opts": k8s.helm.v3.RepositoryOptsArgs(repo=pin.repository)}


def release(resource_name: str, cfg: StackConfig, chart: str, release_name: str, namespace: str,
            values: Any, provider: k8s.Provider, parent: pulumi.Resource,
            depends_on: Sequence[pulumi.Resource] = (), timeout: int = 600,
            skip_crds: bool = False) -> k8s.helm.v3.Release:
    """A Helm release that waits for its workloads, rolls back if they never get ready.

    `skip_crds`: leave the chart's crds/ folder alone (the program applies those CRDs itself)."""
    return k8s.helm.v3.Release(
        resource_name,
        name=release_name,
        namespace=namespace,
        values=values,
        skip_await=False,
        skip_crds=skip_crds,
        atomic=True,
        cleanup_on_fail=True,
        timeout=timeout,
        **chart_source(cfg, chart),
        opts=pulumi.ResourceOptions(parent=parent, provider=provider, depends_on=list(depends_on)),
    )


def custom_resource(resource_name: str, manifest: dict, provider: k8s.Provider, parent: pulumi.Resource,
                    depends_on: Sequence[pulumi.Resource] = (), keep: bool = False) -> k8s.apiextensions.CustomResource:
    """A custom resource from a manifest dict (apiVersion, kind, metadata, spec).

    `keep`: Pulumi never deletes it, neither by a replacement nor by a removal (protect: the
    engine refuses to, preview included, until `pulumi state unprotect`; retain_on_delete: even
    then it only leaves the state, and the object stays in the cluster)."""
    extra = set(manifest) - {"apiVersion", "kind", "metadata", "spec"}
    if extra:
        raise ValueError(f"{manifest['kind']} {manifest['metadata']['name']}: only spec is supported, not {sorted(extra)}")
    return k8s.apiextensions.CustomResource(
        resource_name, api_version=manifest["apiVersion"], kind=manifest["kind"],
        metadata=manifest["metadata"], spec=manifest.get("spec"),
        opts=pulumi.ResourceOptions(parent=parent, provider=provider, depends_on=list(depends_on),
                                    protect=keep or None, retain_on_delete=keep or None),
    )


def config_map(resource_name: str, manifest: dict, provider: k8s.Provider, parent: pulumi.Resource,
               depends_on: Sequence[pulumi.Resource] = ()) -> k8s.core.v1.ConfigMap:
    return k8s.core.v1.ConfigMap(resource_name, metadata=manifest["metadata"], data=manifest["data"],
                                 opts=pulumi.ResourceOptions(parent=parent, provider=provider, depends_on=list(depends_on)))


def ns_of(namespace: Optional[pulumi.Resource]) -> list[pulumi.Resource]:
    return [namespace] if namespace is not None else []
