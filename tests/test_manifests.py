"""Every Kubernetes object the program creates directly, as the offline plan writes it to
`manifests/`, validates: built-in kinds with kubernetes-validate for the cluster's Kubernetes
version (strict, and with JSON-schema integers that must be integers: `port: 5432.0` is
what `kubectl apply` rejects), custom resources against their CRDs (from the pinned charts)."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest

from sophia_infra.program.config import names
from sophia_infra.tools.plan import report
from sophia_infra.tools.plan.mocks import SECRET
from tests.platform_helpers import crd_errors, plan
from tests import yaml_c

BUILT_IN_GROUPS = ("v1", "apps/", "batch/", "policy/", "autoscaling/", "networking.k8s.io/", "rbac.authorization.k8s.io/",
                   "storage.k8s.io/", "scheduling.k8s.io/", "node.k8s.io/")

# JSON Schema 2020-12 counts 2.0 as an integer; the API server's decoder does not.
_IntegerStrict = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)))


@pytest.fixture
def integer_strict(monkeypatch):
    """kubernetes_validate.validate with integers that must be ints (it builds a Draft202012Validator)."""
    monkeypatch.setattr(kubernetes_validate.utils.jsonschema.validators, "Draft202012Validator", _IntegerStrict)
    return lambda obj: kubernetes_validate.validate(obj, names.KUBERNETES_VERSION, strict=True)


def _written(stack: str, out: Path) -> list[dict]:
    report.write(plan(stack), out)  # the stack's plan, run once per test process
    return [yaml_c.load(p.read_text()) for p in sorted((out / "manifests").glob("*.yaml"))]


def test_the_check_refuses_a_float_where_an_integer_belongs(integer_strict):
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
               "spec": {"ports": [{"port": 5432}]}}
    integer_strict(service)
    service["spec"]["ports"][0]["port"] = 5432.0
    with pytest.raises(kubernetes_validate.ValidationError, match="5432.0 is not of type 'integer'"):
        integer_strict(service)


@pytest.mark.parametrize("stack", ["dev", "production"])
def test_every_written_object_validates(stack, tmp_path, integer_strict):
    objects = _written(stack, tmp_path)
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "NetworkPolicy", "ResourceQuota", "Secret", "ConfigMap"} <= kinds
    failures = []
    for obj in objects:
        where = f"{obj['kind']} {obj['metadata'].get('namespace', '-')}/{obj['metadata']['name']}"
        if obj["apiVersion"] == "v1" or obj["apiVersion"].startswith(BUILT_IN_GROUPS):
            try:
                integer_strict(obj)
            except kubernetes_validate.ValidationError as err:
                failures.append(f"{where}: {err.message}")
        else:
            failures += [f"{where}: {e}" for e in crd_errors(obj)]
    assert not failures, "\n".join(failures)


def _floats(value, path=""):
    if isinstance(value, float):
        yield path
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _floats(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _floats(v, f"{path}[{i}]")


@pytest.mark.parametrize("stack", ["dev", "production"])
def test_no_manifest_has_a_float(stack, tmp_path):
    # Custom resources too (their CRDs' integers): the program sets no fractional number.
    bad = [f"{o['kind']}/{o['metadata']['name']}{p}" for o in _written(stack, tmp_path) for p in _floats(o)]
    assert not bad, bad


def test_secret_manifests_name_their_keys(tmp_path):
    secrets = [o for o in _written("production", tmp_path) if o["kind"] == "Secret"]
    assert secrets
    for s in secrets:
        values = {**(s.get("stringData") or {}), **(s.get("data") or {})}
        assert values and set(values.values()) == {SECRET}, s["metadata"]["name"]
