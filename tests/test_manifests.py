"""Every Kubernetes object the program creates directly, as the offline plan writes it,
validates: built-in kinds with kubernetes-validate for the cluster's Kubernetes version,
custom resources against their CRDs (../shared/crds)."""

from __future__ import annotations

import kubernetes_validate
import pytest

from sophia_infra import names
from sophia_infra.plan import report, runner
from sophia_infra.plan.mocks import SECRET
from tests.platform_helpers import CRDS, crd_errors

BUILT_IN_GROUPS = ("v1", "apps/", "batch/", "policy/", "autoscaling/", "networking.k8s.io/", "rbac.authorization.k8s.io/",
                   "storage.k8s.io/", "scheduling.k8s.io/", "node.k8s.io/")


def _objects(stack: str) -> list[dict]:
    out = []
    for obj in report.kubernetes_objects(runner.run(stack).resources):
        # pulumi-kubernetes marks a Secret's data/stringData secret as a whole: only the keys are hidden.
        for field in ("data", "stringData"):
            if obj.get(field) == SECRET:
                obj[field] = {"masked": SECRET}
        out.append(obj)
    return out


@pytest.mark.parametrize("stack", ["dev", "production"])
def test_every_direct_object_validates(stack):
    objects = _objects(stack)
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "NetworkPolicy", "ResourceQuota", "Secret", "ConfigMap"} <= kinds
    failures = []
    for obj in objects:
        where = f"{obj['kind']} {obj['metadata'].get('namespace', '-')}/{obj['metadata']['name']}"
        if obj["apiVersion"] == "v1" or obj["apiVersion"].startswith(BUILT_IN_GROUPS):
            try:
                kubernetes_validate.validate(obj, names.KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as err:
                failures.append(f"{where}: {err.message}")
        else:
            if not CRDS.is_dir():
                pytest.skip(f"{CRDS} is absent: custom resources cannot be checked")
            failures += [f"{where}: {e}" for e in crd_errors(obj)]
    assert not failures, "\n".join(failures)
