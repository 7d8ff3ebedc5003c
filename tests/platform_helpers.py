"""Helpers of the GPU/platform tests: upstream chart values and CRDs (read in place from
../shared), a key-path checker for Helm values, and a mock run of the Platform component."""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import pytest
import yaml

from tests.conftest import SHARED

CHARTS = SHARED / "charts"
CRDS = SHARED / "crds"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Keys whose content is a Kubernetes API object (ResourceRequirements, SecurityContext,
# Affinity), not chart structure: the chart passes them through whatever the default shows.
K8S_OBJECT_KEYS = {"resources", "securityContext", "podSecurityContext", "containerSecurityContext", "affinity"}


def chart_dir(chart: str, version: str) -> Path:
    path = CHARTS / f"{chart}-{version}"
    if not (path / "values.yaml").is_file():
        pytest.skip(f"upstream chart data {path} is absent (the tests read pinned charts from ../shared/charts)")
    return path


def chart_defaults(chart: str, version: str) -> dict:
    return copy.deepcopy(_load_yaml(chart_dir(chart, version) / "values.yaml") or {})


@functools.lru_cache(maxsize=None)
def _load_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=_Loader)


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
    validator = cls(schema, registry=_local_registry())
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(merged)]


@functools.lru_cache(maxsize=None)
def _local_registry():
    """Charts' schemas $ref Kubernetes definitions by URL (nginx-ingress: kubernetes-json-schema
    on GitHub); answer them from kubernetes-validate's bundled 1.34 definitions, offline."""
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

    return Registry(retrieve=retrieve)


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


@functools.lru_cache(maxsize=None)
def _crd_validator(api_version: str, kind: str):
    import jsonschema

    group, version = api_version.split("/")
    crd = None
    for path in sorted(CRDS.glob(f"{group}_*.yaml")) if CRDS.is_dir() else []:
        doc = _load_yaml(path)
        if doc["spec"]["names"]["kind"] == kind:
            crd = doc
    if crd is None:
        return None
    ver = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    schema = _strict(ver["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)


def crd_errors(obj: dict) -> list[str]:
    """Validate a custom resource against its CRD's openAPIV3Schema from ../shared/crds."""
    validator = _crd_validator(obj["apiVersion"], obj["kind"])
    if validator is None:
        pytest.skip(f"the CRD of {obj['kind']} ({obj['apiVersion']}) is absent from {CRDS}")
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


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

    program()
    return MockRun(resources=monitor.registrations, platform=holder["platform"])
