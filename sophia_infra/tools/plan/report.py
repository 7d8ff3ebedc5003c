"""What the offline plan prints and writes: counts, placement, outputs, plan.json, manifests."""

from __future__ import annotations

import functools
import importlib.util
import json
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from sophia_infra.tools import placement
from sophia_infra.tools.lambda_cloud import cost
from sophia_infra.tools.plan import stack_config
from sophia_infra.tools.plan.mocks import Registration
from sophia_infra.tools.plan.runner import PlanResult

# Kubernetes resource types that are not whole objects of their own.
_NOT_OBJECTS = ("kubernetes:index:Provider", "kubernetes:helm.sh/", "kubernetes:yaml/", "kubernetes:kustomize")


def kubernetes_objects(resources: Iterable[Registration]) -> list[dict]:
    """Every Kubernetes object the program creates directly, as a manifest."""
    objects = []
    for r in resources:
        if not r.type.startswith("kubernetes:") or r.type.startswith(_NOT_OBJECTS) or r.type.endswith("Patch"):
            continue
        obj = {k: v for k, v in r.inputs.items() if not k.startswith("__")}
        meta = dict(obj.get("metadata") or {})
        meta.setdefault("name", r.name)  # the provider auto-names; the mock keeps the resource name
        obj["metadata"] = meta
        objects.append(obj)
    return objects


def manifest_filename(obj: dict) -> str:
    meta = obj["metadata"]
    parts = [obj.get("kind", "object"), meta.get("namespace", "cluster"), meta["name"]]
    return "_".join(p.lower() for p in parts) + ".yaml"


def canonical(value: Any) -> Any:
    """Mappings with sorted keys, all the way down: the same plan always reads the same."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def plan_document(result: PlanResult) -> dict[str, Any]:
    """plan.json: resources in URN order (registration order varies from run to run), each with
    what `plan --against` needs to tell what an update does (tools/plan/transition.py): options,
    inputs (secrets masked), the URNs each input came from, and a keyed fingerprint of each
    secret (mocks.fingerprint), so a changed secret shows without its value."""
    return {
        "stack": result.stack,
        "resources": [
            {"urn": r.urn, "type": r.type, "name": r.name, "custom": r.custom, "parent": r.parent or None,
             "dependencies": sorted(r.dependencies), "provider": r.provider or None,
             "options": canonical(r.options), "inputs": canonical(r.inputs),
             "propertyDependencies": canonical(r.property_dependencies),
             "secretFingerprints": canonical(r.secret_fingerprints),
             **({"outputs": canonical(r.outputs)} if r.outputs else {})}
            for r in sorted(result.resources, key=lambda r: r.urn)
        ],
        "outputs": canonical(result.outputs),
    }


def manifest(obj: dict) -> dict:
    """A manifest as kubectl shows one: apiVersion, kind, metadata first, then sorted keys."""
    head = [k for k in ("apiVersion", "kind", "metadata") if k in obj]
    return {k: canonical(obj[k]) for k in head + sorted(k for k in obj if k not in head)}


def resource_counts(result: PlanResult) -> Counter:
    return Counter(r.type for r in result.resources if r.type != "pulumi:pulumi:Stack")


# libyaml's emitter when PyYAML has it: the same YAML as safe_dump, several times faster.
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def write(result: PlanResult, out_dir: Path, checks_md: Iterable[str] = (), verdict: Iterable[str] = ()) -> None:
    """plan.json, manifests/ and placement.md (starting with `verdict`, with `checks_md`: the flows
    and Pod Security sections)."""
    cfg = result.cfg
    if out_dir.exists():
        shutil.rmtree(out_dir)
    (out_dir / "manifests").mkdir(parents=True)
    (out_dir / "plan.json").write_text(json.dumps(plan_document(result), indent=2) + "\n")
    for obj in kubernetes_objects(sorted(result.resources, key=lambda r: r.urn)):
        (out_dir / "manifests" / manifest_filename(obj)).write_text(
            yaml.dump(manifest(obj), Dumper=_Dumper, sort_keys=False))
    md = "\n".join([placement.render_markdown(cfg, result.stack).rstrip("\n"), *cost.render_markdown(cfg)])
    head = list(verdict)
    if head:  # the verdict first: a reader of a failed plan sees why before the tables
        md = "\n".join([f"**{head[0]}**", *head[1:], "", md])
    (out_dir / "placement.md").write_text("\n".join([md, *checks_md]) + "\n")


def _policy_rules():
    """The policy pack's rules module (policy/rules.py), loaded once by path."""
    name = "sophia_policy_rules"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, stack_config.ROOT / "policy" / "rules.py")
        assert spec is not None and spec.loader is not None  # a .py path always has a loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@functools.lru_cache(maxsize=None)
def policy_pack_config(stack: str) -> dict:
    """The stack's policy pack config (policy/config/<stack>.json), as `pulumi preview
    --policy-pack-config` reads it, read once per process (do not mutate);
    rules.PackConfigError (a ValueError) names a mistake."""
    return _policy_rules().pack_config(stack)


def policy_violations(result: PlanResult, advisory: bool = False,
                      pack_config: Optional[dict] = None) -> list[tuple[str, str, str]]:
    """(resource URN, rule, message) from the policy pack's own mandatory rules (advisory=True:
    its advisory ones, which pulumi preview reports without blocking), each rule at its level in
    the stack's policy pack config (`pack_config`, else policy/config/<stack>.json)."""
    rules = _policy_rules()
    config = policy_pack_config(result.stack) if pack_config is None else pack_config
    return [(r.urn, rule, msg) for r in sorted(result.resources, key=lambda r: r.urn)
            for rule, msg in rules.evaluate(r.type, r.inputs, advisory=advisory, pack_config=config)]


def allowed_by_config(result: PlanResult, pack_config: Optional[dict] = None,
                      violations: Optional[list[tuple[str, str, str]]] = None) -> list[tuple[str, str, str]]:
    """What the config's properties let through: findings of the enforced rules that take
    properties (images-by-digest's tagOnlyAllowed) without them, less those with them
    (`violations`: policy_violations under that same config, when already evaluated)."""
    rules = _policy_rules()
    config = policy_pack_config(result.stack) if pack_config is None else pack_config
    if not any(rules.level_of(rule, config)[1] for rule in rules.RULES):
        return []
    bare = {name: (level, {}) for name, (level, _) in config.items()}
    enforced = policy_violations(result, pack_config=config) if violations is None else violations
    return sorted(set(policy_violations(result, pack_config=bare)) - set(enforced))


def unneeded_allowances(result: PlanResult, pack_config: Optional[dict] = None) -> list[str]:
    """Workloads images-by-digest's tagOnlyAllowed lists that run by digest already (or do not
    exist): the list should lose them, so that a later tag-only release of one is refused."""
    rules = _policy_rules()
    config = policy_pack_config(result.stack) if pack_config is None else pack_config
    listed = (config.get("images-by-digest", ("", {}))[1]).get("tagOnlyAllowed") or []
    tag_only = {(rules.service_chart_values(r.type, r.inputs) or {}).get("name")
                for r in result.resources if rules.images_by_digest(r.type, r.inputs)}
    return [name for name in listed if name not in tag_only]


def render(result: PlanResult, violations: Optional[list[tuple[str, str, str]]] = None) -> str:
    """The plan as text; `violations`: the policy pack's findings when already evaluated."""
    cfg = result.cfg
    counts = resource_counts(result)
    lines = [f"Offline plan of stack '{result.stack}': {sum(counts.values())} resources", ""]
    width = max((len(t) for t in counts), default=0)
    lines += [f"  {t.ljust(width)}  {n}" for t, n in sorted(counts.items())]
    lines += ["", "GPU placement", "", placement.render_text(cfg)]
    provisioned = cost.render_text(cfg)
    lines += ["", *provisioned] if provisioned else []
    lines += ["", "Outputs", ""]
    for name, value in result.outputs.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        lines.append(f"  {name}: {text}")
    if violations is None:
        violations = policy_violations(result)
    lines += ["", f"Policy (policy/rules.py): {len(violations)} violation(s)"]
    lines += [f"  [{rule}] {msg}" for _, rule, msg in violations]
    advisories = policy_violations(result, advisory=True)
    if advisories:
        lines += ["", f"Policy advisories (reported, not blocking): {len(advisories)}"]
        lines += [f"  [{rule}] {msg}" for _, rule, msg in advisories]
    allowed = allowed_by_config(result, violations=violations)
    if allowed:
        lines += ["", f"Allowed by policy/config/{result.stack}.json until released by digest: {len(allowed)}"]
        lines += [f"  [{rule}] {msg}" for _, rule, msg in allowed]
    unneeded = unneeded_allowances(result)
    if unneeded:
        lines += ["", f"policy/config/{result.stack}.json: tagOnlyAllowed lists {', '.join(unneeded)}, which "
                  "run(s) by digest already (or no longer exist); take them off, so that a tag-only release is refused"]
    return "\n".join(lines) + "\n"
