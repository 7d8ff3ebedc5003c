"""Helpers of the GPU/platform tests: the plans and their releases rendered from the pinned
charts, upstream chart values, schemas and CRDs (read from the pinned chart sources:
../shared/charts-src, or .cache/charts after `python -m sophia_infra charts --pull`), a key-path
checker for Helm values, and a mock run of the Platform component."""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import pytest
import yaml

from sophia_infra.tools.plan import render
from tests.conftest import SHARED
from tests import yaml_c

# CRDs of custom resources that no pinned chart carries (none today): read from ../shared/crds.
CRDS = SHARED / "crds"
NO_SOURCE = ("lay ../shared/charts-src beside the project or run python -m sophia_infra charts --pull "
             "where the chart repositories are reachable")
CRD = "CustomResourceDefinition"

# Keys whose content is a Kubernetes API object (ResourceRequirements, SecurityContext,
# Affinity), not chart structure: the chart passes them through whatever the default shows.
K8S_OBJECT_KEYS = {"resources", "securityContext", "podSecurityContext", "containerSecurityContext", "affinity"}


def chart_dir(chart: str, version: str) -> Path:
    """The pinned chart's source folder (its own values.yaml and values.schema.json)."""
    path = render.chart_source(chart, version)
    if path is None or not (path / "values.yaml").is_file():
        pytest.skip(f"no chart source holds {chart}-{version}: {NO_SOURCE}")
    return path


def chart_defaults(chart: str, version: str) -> dict:
    return copy.deepcopy(_load_yaml(chart_dir(chart, version) / "values.yaml") or {})


@functools.lru_cache(maxsize=None)
def _load_yaml(path: Path) -> Any:
    return yaml_c.load(path.read_text())


def unknown_keys(values: Any, defaults: Any, allow: Iterable[str] = (), path: str = "") -> list[str]:
    """Key paths of `values` that the chart's values.yaml does not have.

    Below a key whose upstream default is `{}`, `[]` or null the chart takes free-form
    content (maps of labels, resources, tolerations...), so nothing there is checked.
    `allow` lists paths that are known to be valid elsewhere (subchart values)."""
    allow = set(allow)
    if not isinstance(values, dict):
        return []
    if not isinstance(defaults, dict) or not defaults:
        return []
    out = []
    for key, val in values.items():
        p = f"{path}.{key}" if path else str(key)
        if p in allow:
            continue
        if key not in defaults:
            out.append(p)
            continue
        if key in K8S_OBJECT_KEYS:
            continue
        out += unknown_keys(val, defaults[key], allow, p)
    return out


def schema_errors(values: Any, chart: str, version: str) -> list[str]:
    """Errors of the chart's values.schema.json (if the chart ships one) for the merged values."""
    import jsonschema

    path = chart_dir(chart, version) / "values.schema.json"
    if not path.is_file():
        return []
    schema = json.loads(path.read_text())  # small files
    merged = _merge(chart_defaults(chart, version), values)
    cls = jsonschema.validators.validator_for(schema)
    validator = cls(schema, registry=_local_registry(_remote_documents(schema)))
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(merged)]


def _remote_documents(schema: Any) -> tuple[str, ...]:
    """The documents (URLs without their fragment) that a schema's `$ref`s name."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and "://" in ref:
                found.add(ref.split("#", 1)[0])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return tuple(sorted(found))


@functools.lru_cache(maxsize=None)
def _local_registry(documents: tuple[str, ...] = ()):
    """Charts' schemas $ref Kubernetes definitions by URL (nginx-ingress: kubernetes-json-schema
    on GitHub); answer them from kubernetes-validate's bundled 1.34 definitions, offline. The
    documents a schema names are in the registry from the start (read and crawled once, not at
    each of the schema's many `$ref`s); any other is looked up, and refused, when asked for."""
    import kubernetes_validate
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7

    from sophia_infra.program.config import names

    local = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{names.KUBERNETES_VERSION}-local" / "_definitions.json"

    def retrieve(uri: str):
        if uri.endswith("/_definitions.json") and local.is_file():
            doc = json.loads(local.read_text())
            doc.pop("$id", None)
            doc["definitions"] = doc.get("$defs", doc.get("definitions"))  # refs use #/definitions/...
            return Resource.from_contents(doc, default_specification=DRAFT7)
        raise LookupError(f"no offline copy of {uri}")

    registry = Registry(retrieve=retrieve)
    for uri in documents:
        try:
            registry = registry.with_resource(uri, retrieve(uri))
        except LookupError:
            pass  # not offline: the validation reports the $ref it cannot resolve, as before
    return registry.crawl()


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base.get(k), v)
        return out
    return copy.deepcopy(over)


# ----------------------------------------------------------------------------- CRDs

def _strict(schema: Any) -> Any:
    """A CRD schema where unknown fields are errors (the API server would silently prune them)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


class _KubernetesYAML(yaml_c.Loader):  # type: ignore[valid-type, misc]
    """YAML as the API server reads it: a plain `=` (an enum value of operators) is the string "="
    (PyYAML would take it for YAML 1.1's `value` tag, which it cannot build)."""


_KubernetesYAML.add_constructor("tag:yaml.org,2002:value", _KubernetesYAML.construct_yaml_str)


@functools.lru_cache(maxsize=None)
def _crd_files(chart_dir: Path) -> tuple[Path, ...]:
    """The files Helm installs as CRDs: the crds/ folder of the chart and of every chart below it."""
    return tuple(sorted(p for p in chart_dir.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and p.is_file()
                        and any(part == "crds" and (chart_dir.joinpath(*p.relative_to(chart_dir).parts[:i]) / "Chart.yaml").is_file()
                                for i, part in enumerate(p.relative_to(chart_dir).parts[:-1]))))


@functools.lru_cache(maxsize=None)
def _pinned_chart_dirs() -> tuple[Path, ...]:
    """The sources of the charts production pins (those a chart source holds)."""
    from tests.conftest import parse_with

    charts = parse_with("production").charts
    found = (render.chart_source(pin.chart or key, pin.version) for key, pin in sorted(charts.items()))
    return tuple(path for path in found if path is not None)


@functools.lru_cache(maxsize=None)
def _crds_in(path: Path) -> tuple[dict, ...]:
    return tuple(d for d in yaml.load_all(path.read_text(), Loader=_KubernetesYAML)
                 if isinstance(d, dict) and d.get("kind") == CRD)


def _is(doc: dict, group: str, kind: str) -> bool:
    return doc["spec"]["group"] == group and doc["spec"]["names"]["kind"] == kind


@functools.lru_cache(maxsize=None)
def crd(api_version: str, kind: str) -> dict:
    """The CRD of a custom resource as the pinned charts install it (do not mutate): from a crds/
    folder of a chart production pins, else rendered by the chart's templates with exactly the
    values the plan gives it (argo-cd, cloudnative-pg, plugin-barman-cloud, cert-manager), else
    ../shared/crds for a CRD no pinned chart carries; skips when none has it."""
    group = api_version.split("/")[0]
    files = [f for d in _pinned_chart_dirs() for f in _crd_files(d)]
    # Only the files that name the group and the kind are read first: the monitoring CRDs alone
    # are megabytes of YAML. The others are read last, in case one spells them otherwise.
    named = [f for f in files if group in (text := f.read_text()) and kind in text]
    for doc in (d for f in named for d in _crds_in(f)):
        if _is(doc, group, kind):
            return doc
    for r in rendered("production"):
        for obj in r.objects:
            if obj.get("kind") == CRD and _is(obj, group, kind):
                return obj
    for doc in (d for f in files if f not in named for d in _crds_in(f)):
        if _is(doc, group, kind):
            return doc
    for path in sorted(CRDS.glob(f"{group}_*.yaml")) if CRDS.is_dir() else []:
        doc = _load_yaml(path)
        if doc["spec"]["names"]["kind"] == kind:
            return doc
    pytest.skip(f"the CRD of {kind} ({api_version}) is in no pinned chart and absent from {CRDS}")


def crd_schema(api_version: str, kind: str) -> dict:
    """The openAPIV3Schema of that version of the CRD (do not mutate)."""
    version = api_version.split("/")[1]
    ver = next(v for v in crd(api_version, kind)["spec"]["versions"] if v["name"] == version)
    return ver["schema"]["openAPIV3Schema"]


@functools.lru_cache(maxsize=None)
def _crd_validator(api_version: str, kind: str):
    import jsonschema

    schema = _strict(crd_schema(api_version, kind))
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)


def crd_errors(obj: dict) -> list[str]:
    """Validate a custom resource against its CRD's openAPIV3Schema (unknown fields are errors)."""
    validator = _crd_validator(obj["apiVersion"], obj["kind"])
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


# ----------------------------------------------------------------------------- the plans, rendered

# Production with everything optional on: PostgreSQL backups (the Barman plugin release),
# an Argo CD UI host, a frontend host and a Grafana host (their Ingresses, Certificates, the
# ACME solver pods and the flows to them).
EVERYTHING = "production+everything"
VARIANTS = {EVERYTHING: ("production", {
    "sophia:platform": {"postgres": {"backup": {"enabled": True, "bucket": "sophia-backups",
                                                "endpoint": "https://objects.example.com"}},
                        "monitoring": {"grafanaHost": "grafana.example.com"}},
    "sophia:argocd": {"ingressHost": "cd.example.com"},
    "sophia:workloads": {"frontendHost": "app.example.com"},
})}
# Production with the Istio mesh: istio-base, istio-cni and istiod rendered, sidecars injected
# into the app and MCP pods as istiod would (cluster_model), and the mesh's own flows.
MESH = "production+istio"
VARIANTS[MESH] = ("production", {"sophia:platform": {"istio": {"enabled": True}}})


@functools.lru_cache(maxsize=None)
def plan(stack: str):
    """The offline plan of a stack (or of a VARIANT), once per test process (do not mutate)."""
    from sophia_infra.tools.plan import stack_config

    if stack not in VARIANTS:
        return plan_with(stack, *stack_config.load(stack))
    base, changes = VARIANTS[stack]
    config, secret_keys = stack_config.load(base)
    config = dict(config)
    for key, value in changes.items():
        merged = {**json.loads(config.get(key, "{}")), **value}
        config[key] = json.dumps(merged)
    return plan_with(base, config, secret_keys)


def plan_with(stack: str, config: dict[str, str], secret_keys: Optional[list[str]] = None):
    """runner.run of `stack` with this config, once per test process for the same config and
    release files (do not mutate): tests that start from the same stack share its run."""
    from sophia_infra.program import releases

    files = tuple((w, releases.path(stack, w).read_bytes()) for w in releases.files(stack))
    return _plan_with(stack, tuple(sorted(config.items())), tuple(secret_keys or ()), files)


@functools.lru_cache(maxsize=None)
def _plan_with(stack: str, config: tuple[tuple[str, str], ...], secret_keys: tuple[str, ...], _releases: tuple):
    from sophia_infra.tools.plan import runner

    return runner.run(stack, config=dict(config), secret_keys=list(secret_keys))


def share_render_cache(project: Path) -> None:
    """A copy of the project reads and writes this project's render cache (keyed by content:
    the same renders), so a plan there renders only what differs."""
    render.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    (project / "build").mkdir()
    (project / "build" / "render-cache").symlink_to(render.CACHE_DIR)


@functools.lru_cache(maxsize=None)
def rendered(stack: str) -> tuple[render.Rendered, ...]:
    """Every release of the plan rendered from the pinned charts (the render cache shares them
    between test processes); skips, with the reason, without helm or a chart source."""
    if render.helm_binary() is None:
        pytest.skip("helm is not installed (scripts/install-tools.sh; make test puts it on PATH)")
    specs = render.release_specs(plan(stack).resources)
    missing = render.missing_sources(specs)
    if missing:
        pytest.skip(f"no chart source holds {', '.join(missing)}: {NO_SOURCE}")
    return tuple(render.render_all(specs))


# ----------------------------------------------------------------------------- mock run

@dataclass
class MockRun:
    resources: list  # sophia_infra.tools.plan.mocks.Registration
    platform: Any

    def of_type(self, typ: str) -> list:
        return [r for r in self.resources if r.type == typ]

    def named(self, suffix: str):
        matches = [r for r in self.resources if r.name.endswith(suffix)]
        assert len(matches) == 1, f"{len(matches)} resources named *{suffix}"
        return matches[0]

    def urn(self, suffix: str) -> str:
        return self.named(suffix).urn


def run_platform(stack: str, change: Optional[Callable[[dict], None]] = None,
                 check: Optional[Callable[[Any], Any]] = None) -> MockRun:
    """Build Platform for `stack` under Pulumi mocks with the stack's config plus ESC placeholders.

    `change(config)` edits the flat config (key -> JSON text) first; `check(platform)` runs
    inside the Pulumi test context (it may be async, e.g. to await `output.is_secret()`)."""
    import pulumi
    import pulumi_kubernetes as k8s
    from pulumi.runtime import settings as pulumi_settings

    from sophia_infra.program.config import stack as stack_schema
    from sophia_infra.tools.plan import stack_config
    from sophia_infra.tools.plan.mocks import PlanMocks, RecordingMonitor
    from sophia_infra.program.platform import Platform

    values, secret_keys = stack_config.load(stack)
    values = dict(values)
    if change:
        change(values)
    monitor = RecordingMonitor(PlanMocks())
    pulumi_settings.ROOT.set(None)
    pulumi.runtime.set_all_config(values, list(secret_keys))
    pulumi.runtime.set_mocks(monitor.mocks, project="sophia-infra", stack=stack, preview=False, monitor=monitor)
    holder: dict[str, Any] = {}

    @pulumi.runtime.test
    def program():
        cfg = stack_schema.load()
        provider = k8s.Provider("k8s", kubeconfig="apiVersion: v1\nkind: Config\n")
        platform = Platform("platform", cfg, provider)
        holder["platform"] = platform
        if check:
            return check(platform)
        return None

    from sophia_infra.tools.plan import runner

    with runner.as_the_plan_runs():  # a third faster
        program()
    return MockRun(resources=monitor.registrations, platform=holder["platform"])
