"""The platform's own workloads: backend, frontend and the MCP servers.

`Services` creates, per workload, a Secret holding only that workload's keys (and the
backend's `mcp-registry` ConfigMap), then delivers charts/sophia-service. What an app
release changes (the image tag and digest) is read from the workload's release file,
`releases/<stack>/<name>.yaml` (sophia_infra.program.releases), in both modes:

- `sophia:delivery: helm` (dev): one `helm.v3.Release` of the local chart per workload, with
  the release file merged into the structural values (`values.service_values`);
- `sophia:delivery: argocd` (production): the pinned argo-cd chart, a repository Secret
  (read access to this repo, from ESC), an AppProject limited to the platform namespaces and
  this repository, and one multi-source Application per workload: the chart at the pinned
  `targetRevision` with the structural values as `helm.valuesObject`, and the release file
  as `helm.valueFiles` from the release branch (a `ref: values` source). Pulumi's inputs
  carry no image tag, so an app release is a git commit that Argo CD rolls out by itself and
  `pulumi preview` shows no change. Applications sync automatically, except those with an
  emergency pause in force (`sophia:argocd.rollbacks`, `deploy.sh rollback --emergency`).

Secret values only ever travel in Kubernetes Secrets created here (never in Helm values
or Application specs) and stay secret Outputs end to end.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from sophia_infra.program.config import names
from sophia_infra.program import releases
from sophia_infra.program.config.chart_revision import chart_tag
from sophia_infra.program.services import argocd_scope
from sophia_infra.program.config.stack import StackConfig
from sophia_infra.program.secrets import secret
from sophia_infra.program.config.services import ARGOCD_CHART, REPO_CREDENTIAL_SECRETS, workloads
from sophia_infra.program.services.values import (CHART_DIR, CHART_REPO_PATH, MCP_REGISTRY_CONFIGMAP, MCP_REGISTRY_ENV, REGISTRY_SECRET, endpoints, has_hpa, mcp_registry, namespace, secret_name, service_values, structural_values)

__all__ = ["Services", "service_values", "structural_values", "mcp_registry", "argocd_values", "application_spec",
           "application_metadata", "app_project_spec", "paused_for_rollback", "rollback_warning",
           "repository_secret_data", "REPOSITORY_SECRET"]

IN_CLUSTER = argocd_scope.IN_CLUSTER
PROJECT = "sophia"
# On an Application whose auto-sync is paused for a rollback: what it was rolled back to.
ROLLBACK_ANNOTATION = "sophia.ai/rollback"
# cert-manager's HTTP-01 paths in an Ingress it edits in place (pkg/issuer/acme/http/ingress.go:
# `/.well-known/acme-challenge/<token>`), as a jq path: Argo CD deletes what it selects,
# del(<expression>), from live and desired before diffing (util/argo/normalizers/diff_normalizer.go).
ACME_CHALLENGE_PATHS = '.spec.rules[]?.http.paths[]? | select((.path // "") | startswith("/.well-known/acme-challenge/"))'
# The Argo CD repository Secret (argocd.argoproj.io/secret-type: repository) for this repo.
REPOSITORY_SECRET = "sophia-infra-repository"
# Resource kinds charts/sophia-service renders: all the AppProject lets Applications create.
CHART_KINDS = [
    ("", "ServiceAccount"), ("", "Service"), ("apps", "Deployment"),
    ("autoscaling", "HorizontalPodAutoscaler"), ("policy", "PodDisruptionBudget"),
    ("networking.k8s.io", "NetworkPolicy"), ("networking.k8s.io", "Ingress"),
    ("monitoring.coreos.com", "ServiceMonitor"),
]


def _chart_path() -> str:
    """The chart's path as Helm should read it: relative to the project (Pulumi's cwd) when possible."""
    rel = os.path.relpath(CHART_DIR)
    return rel if not rel.startswith("..") else str(CHART_DIR)


def _resources(cpu: str, memory: str, cpu_limit: str, memory_limit: str) -> dict[str, Any]:
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu_limit, "memory": memory_limit}}


# Sync, reconcile and repository metrics, scraped through ServiceMonitors (kube-prometheus-stack
# selects every ServiceMonitor in the cluster).
_ARGOCD_METRICS = {"enabled": True, "serviceMonitor": {"enabled": True}}


def argocd_values(cfg: StackConfig) -> dict[str, Any]:
    """Values of the argo-cd chart: no secret in them (argocd-secret is created by Services)."""
    s = cfg.argocd
    values: dict[str, Any] = {
        "crds": {"keep": True},
        # The platform layer's policies govern the argocd namespace (same-namespace traffic,
        # Prometheus on the "metrics" ports, the ingress controller to the server when it has
        # a host); the chart's own would let every namespace reach the server and metrics.
        "global": {"networkPolicy": {"create": False}},
        "configs": {
            # argocd-secret (admin password hash, server key) is a Pulumi-managed Secret.
            "secret": {"createSecret": False},
            "cm": {"exec.enabled": False},
            "params": {"server.insecure": bool(s.ingress_host)},
        },
        "dex": {"enabled": s.dex, **({"resources": _resources("10m", "64Mi", "200m", "256Mi")} if s.dex else {})},
        "controller": {"resources": _resources("250m", "512Mi", "1", "1Gi"), "metrics": _ARGOCD_METRICS},
        "server": {"resources": _resources("50m", "128Mi", "500m", "256Mi"), "metrics": _ARGOCD_METRICS},
        "repoServer": {"resources": _resources("100m", "256Mi", "1", "1Gi"), "metrics": _ARGOCD_METRICS},
        "applicationSet": {"resources": _resources("50m", "64Mi", "250m", "256Mi"), "metrics": _ARGOCD_METRICS},
        "notifications": {"resources": _resources("20m", "64Mi", "200m", "128Mi"), "metrics": _ARGOCD_METRICS},
        "redis": {"resources": _resources("50m", "64Mi", "250m", "256Mi")},
        "redisSecretInit": {"resources": _resources("10m", "32Mi", "100m", "64Mi")},
    }
    # Confined to the AppProject's namespaces and kinds (argocd_scope): no cluster-admin.
    scope = argocd_scope.chart_values()
    values["createClusterRoles"] = scope["createClusterRoles"]
    values["configs"].update({k: v for k, v in scope["configs"].items() if k != "cm"})
    values["configs"]["cm"].update(scope["configs"]["cm"])
    if s.ingress_host:
        values["global"]["domain"] = s.ingress_host
        values["server"]["ingress"] = {
            "enabled": True,
            "ingressClassName": workloads(cfg).ingress_class,
            # TLS from the Secret argocd-server-tls, which cert-manager writes (sophia_infra.program.platform.tls).
            "tls": True,
        }
    return values


def app_project_spec(cfg: StackConfig) -> dict[str, Any]:
    """The AppProject: this repository only, the platform namespaces only, the chart's kinds only."""
    return {
        "description": "Sophia AI workloads (charts/sophia-service)",
        "sourceRepos": [cfg.argocd.repo_url],
        "destinations": [{"server": IN_CLUSTER, "namespace": ns} for ns in argocd_scope.DESTINATIONS],
        # Nothing cluster-scoped: the platform layer creates the namespaces (Pod Security labels).
        "clusterResourceWhitelist": [],
        "namespaceResourceWhitelist": [{"group": g, "kind": k} for g, k in CHART_KINDS],
    }


def paused_for_rollback(cfg: StackConfig) -> dict[str, str]:
    """Workloads whose auto-sync stays off because a rollback is in force (sophia:argocd.rollbacks)."""
    return dict(sorted(cfg.argocd.rollbacks.items())) if cfg.delivery == "argocd" else {}


def rollback_warning(cfg: StackConfig, stack: str) -> Optional[str]:
    """What preview and the offline plan say while rollbacks are in force (None when none is)."""
    paused = paused_for_rollback(cfg)
    if not paused:
        return None
    which = ", ".join(f"{name} (rolled back to {why})" for name, why in paused.items())
    return (f"Argo CD auto-sync is paused for a rollback of: {which}; this update keeps it paused "
            f"(sophia:argocd.rollbacks). Once a fixed release is out, run ./deploy.sh resume SERVICE {stack} "
            "for each, which clears the entry and turns auto-sync back on.")


def application_metadata(cfg: StackConfig, svc) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": svc.name,
        "namespace": names.ARGOCD,
        # Deleting the Application deletes what it deployed.
        "finalizers": ["resources-finalizer.argocd.argoproj.io"],
        "labels": {"app.kubernetes.io/part-of": "sophia-ai"},
    }
    rollback = paused_for_rollback(cfg).get(svc.name)
    if rollback is not None:
        # Seen by whoever looks at the Application in the cluster: why auto-sync is off.
        meta["annotations"] = {ROLLBACK_ANNOTATION: rollback}
    return meta


def application_spec(cfg: StackConfig, svc, values: dict[str, Any], stack: str,
                     release_file: bool = True) -> dict[str, Any]:
    """The Application of one workload: two sources of this repository, the chart at the
    pinned revision with the structural `values` (helm.valuesObject), and the release branch
    (`ref: values`) whose releases/<stack>/<name>.yaml is the chart's values file. Argo CD
    merges valueFiles first, valuesObject on top; the two never hold the same key.
    Without a `release_file` (a tag pinned in the stack config instead) the chart source
    alone, and `values` carry the tag.

    Synced automatically (prune, self-heal) unless an emergency pause of it is in force: then
    without `automated`, so that neither Argo CD nor a later `pulumi up` undoes it."""
    # No CreateNamespace: the namespaces are the platform layer's, and Argo CD manages nothing
    # cluster-scoped (argocd_scope).
    sync_options = ["ServerSideApply=true"]
    sync_policy: dict[str, Any] = {}
    if svc.name not in paused_for_rollback(cfg):
        sync_policy["automated"] = {"prune": True, "selfHeal": True}
    sync_policy["syncOptions"] = sync_options
    sync_policy["retry"] = {"limit": 5, "backoff": {"duration": "10s", "factor": 2, "maxDuration": "3m"}}
    spec: dict[str, Any] = {
        "project": PROJECT,
        "sources": [{
            "repoURL": cfg.argocd.repo_url,
            # The tag of Chart.yaml's version, created by `chart-tag` before `pulumi up`.
            "targetRevision": chart_tag(),
            "path": CHART_REPO_PATH,
            "helm": {"releaseName": svc.name,
                     **({"valueFiles": [releases.value_file(stack, svc.name)]} if release_file else {}),
                     "valuesObject": values},
        }],
        "destination": {"server": IN_CLUSTER, "namespace": namespace(svc)},
        "syncPolicy": sync_policy,
        "revisionHistoryLimit": 10,
    }
    if release_file:
        spec["sources"].append({"repoURL": cfg.argocd.repo_url, "targetRevision": cfg.argocd.release_branch,
                                "ref": releases.VALUES_REF})
    ignore: list[dict[str, Any]] = []
    if has_hpa(svc):
        # The HPA owns the replica count: neither report drift nor reset it on sync.
        ignore.append({"group": "apps", "kind": "Deployment", "name": svc.name, "jsonPointers": ["/spec/replicas"]})
    if (values.get("ingress") or {}).get("enabled"):
        # cert-manager solves HTTP-01 in this Ingress (the ClusterIssuer's http01.ingress.name):
        # it prepends /.well-known/acme-challenge/<token> to the host's paths and removes it when
        # done. Ingress rules are an atomic list to server-side apply, so self-heal would revert
        # the path mid-challenge: its diff ignores those paths, and the sync keeps their live values
        # (argo-cd controller/sync.go normalizeTargetResources: for an Ingress the patch carries
        # the whole live `rules`, so a rules change from git lands once the challenge is over).
        ignore.append({"group": "networking.k8s.io", "kind": "Ingress", "name": svc.name,
                       "jqPathExpressions": [ACME_CHALLENGE_PATHS]})
    if ignore:
        spec["ignoreDifferences"] = ignore
        sync_options.append("RespectIgnoreDifferences=true")
    return spec


def repository_secret_data(cfg: StackConfig) -> dict[str, pulumi.Input[str]]:
    """stringData of Argo CD's repository Secret: this repo's URL and the ESC credentials
    (secret Outputs); empty when sophia:argocd.repoCredentials is none (a public repository)."""
    fields = REPO_CREDENTIAL_SECRETS[cfg.argocd.repo_credentials]
    if not fields:
        return {}
    data: dict[str, pulumi.Input[str]] = {"type": "git", "url": cfg.argocd.repo_url}
    for field, key in sorted(fields.items()):
        data[field] = pulumi.Output.secret(secret(key))
    return data


def _dockerconfigjson(server: str, user: pulumi.Output[str], token: pulumi.Output[str]) -> pulumi.Output[str]:
    def build(args: list[str]) -> str:
        u, t = args
        auth = base64.b64encode(f"{u}:{t}".encode()).decode()
        return json.dumps({"auths": {server: {"username": u, "password": t, "auth": auth}}})

    return pulumi.Output.secret(pulumi.Output.all(user, token).apply(build))


class Services(pulumi.ComponentResource):
    """Backend, frontend and the MCP servers of one stack, delivered by Helm or Argo CD.

    Needs the namespaces names.APPS, names.MCP and names.ARGOCD and the backend's
    `llm-gateway` ConfigMap (the platform layer creates them): pass
    `opts=ResourceOptions(depends_on=[platform])`. Every child waits for those through the
    component: the component registers only once they are done, and a child only once its
    parent has; the engine orders deletes the same way round (its dependency graph counts a
    resource's parent as a dependency). So the children do not repeat the platform's ~100
    resources in their own dependencies.
    """

    outputs: dict[str, Any]

    def __init__(self, name: str, cfg: StackConfig, provider: k8s.Provider,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("sophia:services:Services", name, None, opts)
        if cfg.delivery not in ("helm", "argocd"):
            raise ValueError(f"sophia:delivery: '{cfg.delivery}' is not a delivery mode; use helm or argocd")
        self._name, self._cfg, self._provider = name, cfg, provider
        self._stack = pulumi.get_stack()
        # Every workload's release (its release file, checked: one sentence per problem).
        self.release_of: dict[str, releases.Release] = releases.for_stack(cfg, self._stack)
        tag_only = releases.tag_only_warning(cfg, self._stack, self.release_of)
        if tag_only:
            pulumi.log.warn(tag_only)
        settings = workloads(cfg)

        # What each workload renders with (structural values + its release) in both modes.
        self.values: dict[str, dict[str, Any]] = {s.name: service_values(cfg, s, self.release_of[s.name])
                                                  for s in cfg.services}
        self.mcp_registry: dict[str, str] = mcp_registry(cfg)
        self.endpoints: dict[str, str] = endpoints(cfg)
        self.secrets: dict[str, k8s.core.v1.Secret] = {}
        self.pull_secrets: dict[str, k8s.core.v1.Secret] = {}
        self.releases: dict[str, k8s.helm.v3.Release] = {}
        self.applications: dict[str, k8s.apiextensions.CustomResource] = {}
        self.argocd_release: Optional[k8s.helm.v3.Release] = None
        self.app_project: Optional[k8s.apiextensions.CustomResource] = None
        self.argocd_roles: list[pulumi.Resource] = []
        self.repository_secret: Optional[k8s.core.v1.Secret] = None
        self.registry_config_map: Optional[k8s.core.v1.ConfigMap] = None

        # --- Secrets and ConfigMaps the workloads read (both delivery modes)
        if settings.private_images and cfg.services:
            dockercfg = _dockerconfigjson(settings.registry_server, secret("dockerUsername"), secret("dockerAccessToken"))
            for ns in sorted({namespace(s) for s in cfg.services}):
                self.pull_secrets[ns] = k8s.core.v1.Secret(
                    f"{name}-{ns}-{REGISTRY_SECRET}",
                    metadata=self._meta(REGISTRY_SECRET, ns),
                    type="kubernetes.io/dockerconfigjson",
                    string_data={".dockerconfigjson": dockercfg},
                    opts=self._child())
        for svc in cfg.services:
            if not svc.secrets:
                continue
            self.secrets[svc.name] = k8s.core.v1.Secret(
                f"{name}-{svc.name}-secrets",
                metadata=self._meta(secret_name(svc), namespace(svc), svc.name),
                type="Opaque",
                string_data={env: pulumi.Output.secret(secret(key)) for env, key in sorted(svc.secrets.items())},
                opts=self._child())
        if any(s.name == "backend" for s in cfg.services):
            self.registry_config_map = k8s.core.v1.ConfigMap(
                f"{name}-{MCP_REGISTRY_CONFIGMAP}",
                metadata=self._meta(MCP_REGISTRY_CONFIGMAP, names.APPS, "backend"),
                data={MCP_REGISTRY_ENV: json.dumps(self.mcp_registry, sort_keys=True, indent=2)},
                opts=self._child())
        inputs_of: dict[str, list[pulumi.Resource]] = {}
        for svc in cfg.services:
            needs: list[pulumi.Resource] = []
            if svc.name in self.secrets:
                needs.append(self.secrets[svc.name])
            if namespace(svc) in self.pull_secrets:
                needs.append(self.pull_secrets[namespace(svc)])
            if svc.name == "backend" and self.registry_config_map is not None:
                needs.append(self.registry_config_map)
            inputs_of[svc.name] = needs

        # --- delivery
        if cfg.delivery == "helm":
            self._helm(inputs_of)
        else:
            self._argocd(inputs_of)

        self.outputs = {"mcpRegistry": dict(self.mcp_registry), "endpoints": dict(self.endpoints)}
        self.register_outputs(self.outputs)

    # ------------------------------------------------------------------ helpers
    def _child(self, depends_on: Optional[list[pulumi.Resource]] = None) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, provider=self._provider, depends_on=depends_on)

    @staticmethod
    def _meta(name: str, ns: str, workload: Optional[str] = None) -> k8s.meta.v1.ObjectMetaArgsDict:
        labels = {"app.kubernetes.io/part-of": "sophia-ai", "app.kubernetes.io/managed-by": "pulumi"}
        if workload:
            labels["app.kubernetes.io/name"] = workload
        return {"name": name, "namespace": ns, "labels": labels}

    # ------------------------------------------------------------------ helm (dev)
    def _helm(self, inputs_of: dict[str, list[pulumi.Resource]]) -> None:
        chart = _chart_path()
        for svc in self._cfg.services:
            self.releases[svc.name] = k8s.helm.v3.Release(
                f"{self._name}-{svc.name}",
                name=svc.name,
                chart=chart,
                namespace=namespace(svc),
                values=self.values[svc.name],
                atomic=True,
                cleanup_on_fail=True,
                max_history=5,
                timeout=600,
                opts=self._child(depends_on=inputs_of[svc.name]))

    # ------------------------------------------------------------------ argocd (production)
    def _argocd(self, inputs_of: dict[str, list[pulumi.Resource]]) -> None:
        cfg, s, name = self._cfg, self._cfg.argocd, self._name
        pin = cfg.charts[ARGOCD_CHART]
        before_release: list[pulumi.Resource] = []
        ns_opts = self._child()
        if s.create_namespace:
            argocd_ns = k8s.core.v1.Namespace(
                f"{name}-argocd-namespace",
                metadata={"name": names.ARGOCD, "labels": {
                    "app.kubernetes.io/part-of": "argocd",
                    "pod-security.kubernetes.io/enforce": "baseline",
                    "pod-security.kubernetes.io/warn": "restricted"}},
                opts=self._child())
            before_release.append(argocd_ns)
            ns_opts = self._child(depends_on=[argocd_ns])
        server_key = random.RandomPassword(f"{name}-argocd-server-secretkey", length=48, special=False,
                                           opts=pulumi.ResourceOptions(parent=self))
        argocd_secret = k8s.core.v1.Secret(
            f"{name}-argocd-secret",
            metadata={"name": "argocd-secret", "namespace": names.ARGOCD, "labels": {
                "app.kubernetes.io/name": "argocd-secret", "app.kubernetes.io/part-of": "argocd"}},
            type="Opaque",
            string_data={
                "admin.password": pulumi.Output.secret(secret("argocdAdminPasswordBcrypt")),
                "admin.passwordMtime": s.admin_password_mtime,
                "server.secretkey": pulumi.Output.secret(server_key.result),
            },
            opts=ns_opts)
        before_release.append(argocd_secret)
        self.argocd_release = k8s.helm.v3.Release(
            f"{name}-argo-cd",
            name="argo-cd",
            chart=ARGOCD_CHART,
            version=pin.version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=pin.repository),
            namespace=names.ARGOCD,
            values=argocd_values(cfg),
            atomic=True,
            cleanup_on_fail=True,
            max_history=5,
            timeout=900,
            opts=self._child(depends_on=before_release))
        repo_data = repository_secret_data(cfg)
        if repo_data:
            # Argo CD's read access to this repository (chart and release files), from ESC.
            self.repository_secret = k8s.core.v1.Secret(
                f"{name}-argocd-repository",
                metadata={"name": REPOSITORY_SECRET, "namespace": names.ARGOCD, "labels": {
                    "argocd.argoproj.io/secret-type": "repository", "app.kubernetes.io/part-of": "argocd"}},
                type="Opaque",
                string_data=repo_data,
                opts=ns_opts)
        self.app_project = k8s.apiextensions.CustomResource(
            f"{name}-appproject",
            api_version="argoproj.io/v1alpha1",
            kind="AppProject",
            metadata={"name": PROJECT, "namespace": names.ARGOCD},
            spec=app_project_spec(cfg),
            opts=self._child(depends_on=[self.argocd_release]))
        # What the controller and the server may do in each destination namespace (argocd_scope).
        self.argocd_roles = []
        for m in argocd_scope.role_manifests(CHART_KINDS):
            res = f"{name}-argocd-{m['kind'].lower()}-{m['metadata']['namespace']}-{m['metadata']['name']}"
            if m["kind"] == "Role":
                self.argocd_roles.append(k8s.rbac.v1.Role(res, metadata=m["metadata"], rules=m["rules"], opts=ns_opts))
            else:
                self.argocd_roles.append(k8s.rbac.v1.RoleBinding(res, metadata=m["metadata"], role_ref=m["roleRef"],
                                                                 subjects=m["subjects"], opts=ns_opts))
        warning = rollback_warning(cfg, pulumi.get_stack())
        if warning:
            # Without resource=: a resource's warning waits for its URN and may never be sent.
            pulumi.log.warn(warning)
        repo = [self.repository_secret] if self.repository_secret is not None else []
        for svc in cfg.services:
            # valuesObject: the structural values only; the image comes from the release file
            # (or, for a tag pinned in the stack config, from the values as before).
            from_file = self.release_of[svc.name].file is not None
            values = structural_values(cfg, svc) if from_file else self.values[svc.name]
            self.applications[svc.name] = k8s.apiextensions.CustomResource(
                f"{name}-app-{svc.name}",
                api_version="argoproj.io/v1alpha1",
                kind="Application",
                metadata=application_metadata(cfg, svc),
                spec=application_spec(cfg, svc, values, self._stack, release_file=from_file),
                opts=self._child(depends_on=[self.argocd_release, self.app_project, *self.argocd_roles, *repo,
                                             *inputs_of[svc.name]]))
