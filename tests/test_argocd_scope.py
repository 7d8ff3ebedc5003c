"""Argo CD is not cluster-admin: rendered from the pinned argo-cd chart with the program's values,
plus the Roles the program writes, the application controller (and the server) are bound to
nothing cluster-wide, manage exactly the kinds the AppProject allows in exactly its destination
namespaces, and every kind charts/sophia-service renders is among them (else a sync would fail).
Bindings are followed as the API server does (tests/test_rendered.py::_grafana_grants)."""

from __future__ import annotations

import functools

import pytest

from sophia_infra.program.config import names
from sophia_infra.program.services import CHART_KINDS, app_project_spec, argocd_scope, argocd_values, service_values
from sophia_infra.program.services.values import namespace
from sophia_infra.tools.plan import render
from tests.conftest import parse_with

HELM = render.helm_binary()
pytestmark = pytest.mark.skipif(HELM is None, reason="helm is not installed (scripts/install-tools.sh; make test puts it on PATH)")


def _render(spec: render.ReleaseSpec) -> list[dict]:
    if render.missing_sources([spec]):
        pytest.skip(f"no chart source holds {spec.chart} {spec.version}: lay ../shared/charts-src beside the project")
    return render.render(spec).objects


@functools.lru_cache(maxsize=None)
def objects() -> tuple:
    cfg = parse_with("production")
    spec = render.ReleaseSpec(resource="argo-cd", release="argo-cd", namespace=names.ARGOCD, chart="argo-cd",
                              version=cfg.charts["argo-cd"].version, values=argocd_values(cfg))
    return tuple(_render(spec) + argocd_scope.role_manifests(CHART_KINDS))


def grants(account: str) -> list[tuple[str | None, dict]]:
    """(namespace the rule holds in, None = cluster-wide; rule) of every rule bound to argocd/<account>."""
    objs = objects()
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o.get("rules") or []
             for o in objs if o.get("kind") in ("Role", "ClusterRole")}
    out = []
    for b in (o for o in objs if o.get("kind") in ("RoleBinding", "ClusterRoleBinding")):
        if not any((s.get("name"), s.get("namespace", b["metadata"].get("namespace"))) == (account, names.ARGOCD)
                   for s in b.get("subjects") or []):
            continue
        ref = b["roleRef"]
        where = None if b["kind"] == "ClusterRoleBinding" else b["metadata"]["namespace"]
        key = (ref["kind"], None if ref["kind"] == "ClusterRole" else b["metadata"].get("namespace"), ref["name"])
        assert key in roles, f"{b['kind']} {b['metadata']['name']} binds a role nobody creates"
        out += [(where, rule) for rule in roles[key]]
    return out


WRITE = {"create", "update", "patch", "delete", "deletecollection", "*"}


@pytest.mark.parametrize("account", [argocd_scope.CONTROLLER_ACCOUNT, argocd_scope.SERVER_ACCOUNT,
                                     "argocd-notifications-controller", "argocd-applicationset-controller"])
def test_no_argo_cd_component_is_bound_cluster_wide(account):
    assert [r for where, r in grants(account) if where is None] == []
    assert not [o for o in objects() if o.get("kind") == "ClusterRole"]


def test_the_controller_writes_exactly_the_projects_kinds_in_exactly_its_destinations():
    cfg = parse_with("production")
    project = app_project_spec(cfg)
    destinations = {d["namespace"] for d in project["destinations"]}
    allowed = {(k["group"], argocd_scope.resource_of(k["kind"])) for k in project["namespaceResourceWhitelist"]}
    writes: dict[str, set] = {}
    for where, rule in grants(argocd_scope.CONTROLLER_ACCOUNT):
        assert "*" not in rule.get("resources", []) and "*" not in rule.get("apiGroups", []), rule
        if WRITE & set(rule["verbs"]) and where != names.ARGOCD:
            writes.setdefault(where, set()).update((g, r) for g in rule["apiGroups"] for r in rule["resources"])
    assert set(writes) == destinations == {names.APPS, names.MCP}
    assert all(w == allowed for w in writes.values()), writes
    assert project["clusterResourceWhitelist"] == []


def test_the_server_reads_and_writes_nothing_in_the_destinations():
    for where, rule in grants(argocd_scope.SERVER_ACCOUNT):
        if where != names.ARGOCD:
            assert not WRITE & set(rule["verbs"]), rule


def test_the_in_cluster_destination_is_limited_to_the_projects_namespaces():
    (secret,) = [o for o in objects() if o.get("kind") == "Secret"
                 and (o["metadata"].get("labels") or {}).get("argocd.argoproj.io/secret-type") == "cluster"]
    data = secret["stringData"]
    project = app_project_spec(parse_with("production"))
    assert data["server"] == argocd_scope.IN_CLUSTER == project["destinations"][0]["server"]
    assert set(data["namespaces"].split(",")) == {d["namespace"] for d in project["destinations"]}
    assert "clusterResources" not in data
    (cm,) = [o for o in objects() if o.get("kind") == "ConfigMap" and o["metadata"]["name"] == "argocd-cm"]
    assert cm["data"]["resource.respectRBAC"] == "normal"


def test_every_kind_the_service_chart_renders_is_one_the_project_allows():
    cfg = parse_with("production", lambda raw: raw.update(workloads={**(raw.get("workloads") or {}), "frontendHost": "app.example.com"}))
    project = app_project_spec(cfg)
    allowed = {(k["group"], k["kind"]) for k in project["namespaceResourceWhitelist"]}
    rendered = set()
    for svc in cfg.services:
        spec = render.ReleaseSpec(resource=svc.name, release=svc.name, namespace=namespace(svc),
                                  chart="charts/sophia-service", version=None, values=service_values(cfg, svc))
        for o in _render(spec):
            rendered.add((o["apiVersion"].rsplit("/", 1)[0] if "/" in o["apiVersion"] else "", o["kind"]))
            assert o["metadata"].get("namespace", spec.namespace) in argocd_scope.DESTINATIONS
    assert {"Deployment", "Ingress", "HorizontalPodAutoscaler"} <= {k for _, k in rendered}
    assert rendered <= allowed, rendered - allowed
