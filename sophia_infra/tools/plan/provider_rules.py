"""How each provider the program uses decides between "no change", "update" and "replace" for
one resource, from its old and new inputs: one small function per provider family, each citing
the upstream source of its rule (the versions pinned in requirements.txt). Pure: plain JSON in
(plan.json's inputs, with each secret replaced by its fingerprint and "[unknown]" for a value
not known until the update runs), a `Diff` out. The engine's own rules (replaceOnChanges,
ignoreChanges, delete-before-replace, dependents, order) are in transition.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from sophia_infra.tools.plan import dynamic_diff

UNKNOWN = dynamic_diff.UNKNOWN
MISSING = object()  # a path that is not there


@dataclass
class Diff:
    keys: list[str] = field(default_factory=list)          # top-level input keys that change
    replaces: list[str] = field(default_factory=list)      # the changes that force a replacement
    delete_before_replace: Optional[bool] = None           # the provider's wish (None: no opinion)
    why: str = ""


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Top-level keys whose values differ (added, removed, changed or unknown); `__*` keys are the
    SDK's bookkeeping (the serialized dynamic provider), not inputs."""
    keys = sorted((set(old) | set(new)))
    return [k for k in keys if not k.startswith("__")
            and (new.get(k, MISSING) == UNKNOWN or old.get(k, MISSING) != new.get(k, MISSING))]


def get_path(obj: Any, path: str) -> Any:
    """`.spec.selector` of a nested mapping, or MISSING."""
    for part in path.strip(".").split("."):
        if obj == UNKNOWN:
            return UNKNOWN
        if not isinstance(obj, dict) or part not in obj:
            return MISSING
        obj = obj[part]
    return obj


def _differs(old: Any, new: Any, path: str) -> bool:
    a, b = get_path(old, path), get_path(new, path)
    return b == UNKNOWN or a != b


# ----------------------------------------------------------------------------- pulumi-command

def diff_command(old: dict[str, Any], new: dict[str, Any]) -> Diff:
    """pulumi-command v1.2.1, provider/pkg/provider/remote/command.go (`CommandInputs`): only
    `Triggers` carries `provider:"replaceOnChanges"`, which pulumi-go-provider's infer `Diff`
    turns into an update-replace; every other input (connection, create, update, delete, stdin,
    environment, logging, addPreviousOutputInEnv) is an in-place update, which runs `update`
    (or `create` when `update` is unset; commandController.go `Update`). The provider never asks
    for delete-before-replace: only the resource option does."""
    keys = changed_keys(old, new)
    replaces = [k for k in keys if k == "triggers"]
    why = "triggers changed: replaced" if replaces else (f"{', '.join(keys)} changed: `update` runs" if keys else "")
    return Diff(keys, replaces, None, why)


# ----------------------------------------------------------------------------- pulumi-kubernetes

ALWAYS_FORCE_NEW: tuple[str, ...] = (".metadata.name", ".metadata.namespace")
_SELECTOR = (".spec.selector",)
# pulumi-kubernetes v4.34, provider/pkg/provider/diff.go `forceNew` (group/version -> kind ->
# paths; a path covers everything under it, the selector's matchLabels/matchExpressions too).
FORCE_NEW = {
    "apps/v1": {"Deployment": _SELECTOR, "DaemonSet": _SELECTOR,
                "StatefulSet": (".spec.podManagementPolicy", ".spec.revisionHistoryLimit", ".spec.selector",
                                ".spec.serviceName", ".spec.volumeClaimTemplates")},
    "core/v1": {"PersistentVolumeClaim": (".spec.accessModes", ".spec.selector", ".spec.storageClassName",
                                          ".spec.volumeName"),
                "ResourceQuota": (".spec.scopes",), "Secret": (".type",), "Service": (".spec.clusterIP",)},
    "rbac.authorization.k8s.io/v1": {"ClusterRoleBinding": (".roleRef",), "RoleBinding": (".roleRef",)},
    "storage.k8s.io/v1": {"StorageClass": (".parameters", ".provisioner")},
    "batch/v1": {"Job": (".spec.completions", ".spec.parallelism", ".spec.selector", ".spec.template")},
}


def group_version_kind(type_: str) -> tuple[str, str]:
    """kubernetes:apps/v1:Deployment -> ("apps/v1", "Deployment"); a *Patch resource counts as its kind."""
    parts = type_.split(":")
    kind = parts[-1]
    return parts[1] if len(parts) > 2 else "", kind[:-len("Patch")] if kind.endswith("Patch") else kind


def force_new_paths(type_: str, new: dict[str, Any], provider_inputs: dict[str, Any]) -> list[str]:
    """diff.go `forceNewProperties`: the metadata's name and namespace always; for a Secret its
    type and data unless the provider has `enableSecretMutable` (and the Secret is not
    `immutable`); a ConfigMap's data likewise with `enableConfigMapMutable`; else the kind's."""
    group_version, kind = group_version_kind(type_)
    paths: list[str] = list(ALWAYS_FORCE_NEW)
    kinds = FORCE_NEW.get(group_version)
    if kinds is None:
        return paths
    immutable = new.get("immutable") is True
    if group_version == "core/v1" and kind == "Secret" and (
            str(provider_inputs.get("enableSecretMutable")).lower() != "true" or immutable):
        return paths + [".type", ".stringData", ".data"]
    if kind in kinds:
        return paths + list(kinds[kind])
    if group_version == "core/v1" and kind == "ConfigMap" and (
            str(provider_inputs.get("enableConfigMapMutable")).lower() != "true" or immutable):
        return paths + [".binaryData", ".data"]
    return paths


def diff_kubernetes(type_: str, old: dict[str, Any], new: dict[str, Any],
                    provider_inputs: Optional[dict[str, Any]] = None) -> Diff:
    """pulumi-kubernetes v4.34, provider/pkg/provider/provider.go `Diff`: a change at a
    force-new path (`force_new_paths`) replaces, every other change is an update (a patch).
    Delete-before-replace when the object is named (not auto-named) and keeps its name and
    namespace: two objects cannot share them (the `deleteBeforeReplace :=` conditions there)."""
    keys = changed_keys(old, new)
    replaces = [p for p in force_new_paths(type_, new, provider_inputs or {}) if _differs(old, new, p)]
    named = get_path(new, ".metadata.name") not in (MISSING, UNKNOWN)
    same_place = all(get_path(old, p) == get_path(new, p) for p in ALWAYS_FORCE_NEW)
    dbr = bool(replaces) and named and same_place
    if replaces:
        why = f"{', '.join(replaces)} cannot change in place: replaced" + (
            ", deleting first (same name)" if dbr else "")
    else:
        why = f"{', '.join(keys)} changed: patched in place" if keys else ""
    return Diff(keys, replaces, dbr if replaces else None, why)


def diff_helm_release(old: dict[str, Any], new: dict[str, Any]) -> Diff:
    """pulumi-kubernetes v4.34, provider/pkg/provider/helm_release.go `Diff`: its only
    `forceNewFields` are `.name` and `.namespace` (a new Helm release), and it answers
    `DeleteBeforeReplace: false`; every other change, a chart version or values included, is a
    `helm upgrade` in place (one step, whatever it does to the objects inside)."""
    keys = changed_keys(old, new)
    replaces = [k for k in ("name", "namespace") if k in keys]
    if replaces:
        why = f"release {', '.join(replaces)} changed: a new Helm release, the old one uninstalled"
    elif keys:
        what = "chart version" if "version" in keys else ", ".join(keys)
        why = f"{what} changed: helm upgrade in place"
    else:
        why = ""
    return Diff(keys, replaces, False if replaces else None, why)


def diff_kubernetes_provider(old: dict[str, Any], new: dict[str, Any]) -> Diff:
    """pulumi-kubernetes v4.34, provider/pkg/provider/provider.go `DiffConfig`: a changed
    `clusterIdentifier` replaces the provider; with one set and unchanged, a new kubeconfig,
    context or cluster is an update; without one, a changed (or unknown) kubeconfig, context or
    cluster replaces it, and with it every resource it manages."""
    keys = changed_keys(old, new)
    identity = ("kubeconfig", "context", "cluster")
    if "clusterIdentifier" in keys:
        replaces = ["clusterIdentifier"]
    elif new.get("clusterIdentifier") not in (None, UNKNOWN):
        replaces = []
    else:
        replaces = [k for k in identity if k in keys]
    if replaces:
        why = f"{', '.join(replaces)} changed: a new provider, so every resource on it is replaced"
    else:
        why = f"{', '.join(keys)} changed; clusterIdentifier unchanged: updated in place" if keys else ""
    return Diff(keys, replaces, None, why)


# ----------------------------------------------------------------------------- pulumi-random

def diff_random(old: dict[str, Any], new: dict[str, Any]) -> Diff:
    """terraform-provider-random v3 (pulumi-random v4.21), internal/provider/resource_password.go:
    every attribute (`length`, `special`, `upper`, ..., `keepers`) has the `RequiresReplace`
    plan modifier: any change is a new password."""
    keys = changed_keys(old, new)
    return Diff(keys, list(keys), None, f"{', '.join(keys)} changed: a new password" if keys else "")


# ----------------------------------------------------------------------------- dynamic providers

def diff_dynamic(type_: str, resource_id: str, old: dict[str, Any], new: dict[str, Any]) -> Diff:
    """The program's own provider (sophia_infra/program/lambda_cloud/provider.py), asked through
    the pinned SDK's servicer (dynamic_diff.py). When it does not say (DIFF_UNKNOWN) the engine
    compares the inputs itself (pkg/resource/deploy/step_generator.go `diffResource`)."""
    result = dynamic_diff.diff(type_, resource_id, old, new)
    keys = changed_keys(old, new)
    replaces = list(result.replaces)
    if result.changes is False:
        return Diff([], [], None, "")
    if replaces:
        return Diff(sorted(set(keys) | set(replaces)), replaces, result.delete_before_replace,
                    f"the provider replaces it for {', '.join(replaces)}"
                    + (", deleting first" if result.delete_before_replace else ""))
    if result.changes is None and not keys:
        return Diff([], [], None, "")
    return Diff(keys, [], None, f"{', '.join(keys) or 'inputs'} changed: the provider updates it in place")


def diff_component(old: dict[str, Any], new: dict[str, Any]) -> Diff:
    """A component (no provider): the engine compares its inputs deeply
    (step_generator.go `diff`, `!custom`); a change is an update that runs nothing."""
    keys = changed_keys(old, new)
    return Diff(keys, [], None, f"{', '.join(keys)} changed (a component: nothing runs)" if keys else "")


def family(type_: str, custom: bool) -> str:
    if not custom:
        return "component"
    if type_ == "pulumi:providers:kubernetes":
        return "kubernetes-provider"
    if type_.startswith("pulumi:providers:"):
        return "provider"
    if type_.startswith("command:"):
        return "command"
    if type_ == "kubernetes:helm.sh/v3:Release":
        return "helm-release"
    if type_.startswith("kubernetes:"):
        return "kubernetes"
    if type_.startswith("random:"):
        return "random"
    if type_.startswith("pulumi-python:dynamic"):
        return "dynamic"
    return "other"


def diff(type_: str, custom: bool, resource_id: str, old: dict[str, Any], new: dict[str, Any],
         provider_inputs: Optional[dict[str, Any]] = None) -> Diff:
    """The provider's decision for one resource, by its family."""
    kind = family(type_, custom)
    if kind == "component":
        return diff_component(old, new)
    if kind == "command":
        return diff_command(old, new)
    if kind == "helm-release":
        return diff_helm_release(old, new)
    if kind == "kubernetes":
        return diff_kubernetes(type_, old, new, provider_inputs)
    if kind == "kubernetes-provider":
        return diff_kubernetes_provider(old, new)
    if kind == "random":
        return diff_random(old, new)
    if kind == "dynamic":
        return diff_dynamic(type_, resource_id, old, new)
    # Another provider: the engine's legacy diff, an update on any change (step_generator.go).
    keys = changed_keys(old, new)
    return Diff(keys, [], None, f"{', '.join(keys)} changed" if keys else "")
