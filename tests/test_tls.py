"""cert-manager and the Ingress hosts' certificates: values against the pinned chart, objects
against the cert-manager CRDs, the Ingresses' tls sections, ordering, refusals."""

from __future__ import annotations

import json

from sophia_infra.program.config import names
from sophia_infra.program.platform import tls
from sophia_infra.program.platform import values as v
from sophia_infra.program.platform.namespaces import POD_SECURITY, network_policies
from sophia_infra.program.services import argocd_values
from sophia_infra.program.services.values import structural_values
from tests.conftest import parse_with, problems_of
from tests.platform_helpers import chart_defaults, crd_errors, run_platform, schema_errors, unknown_keys



def _hosts(r):
    r["workloads"] = {"frontendHost": "app.example.com"}
    r["argocd"] = {**(r.get("argocd") or {}), "ingressHost": "cd.example.com"}
    r["platform"]["monitoring"] = {"grafanaHost": "grafana.example.com"}


def test_cert_manager_values_are_keys_of_the_pinned_chart_and_install_the_crds():
    cfg = parse_with("production")
    vals = tls.cert_manager_values(cfg, v.PROMETHEUS_RELEASE)
    assert unknown_keys(vals, chart_defaults("cert-manager", "v1.21.1")) == []
    assert schema_errors(vals, "cert-manager", "v1.21.1") == []
    assert vals["crds"]["enabled"] is True
    assert cfg.charts["cert-manager"].repository == "https://charts.jetstack.io"
    assert parse_with("dev").charts["cert-manager"].version == "v1.21.1"


def test_issuer_and_certificates_validate_against_the_crds():
    cfg = parse_with("production", _hosts)
    issuer = tls.cluster_issuer(cfg)
    certs = tls.certificates(cfg)
    for obj in [issuer, *certs]:
        assert crd_errors(obj) == [], obj["kind"]
    acme = issuer["spec"]["acme"]
    assert acme["server"] == "https://acme-v02.api.letsencrypt.org/directory"
    assert acme["email"] == "platform@example.com"
    # Known hosts are solved in their own Ingress (F5 NGINX gives a host to its oldest Ingress);
    # anything else through a solver Ingress of the nginx class.
    assert acme["solvers"][-1] == {"http01": {"ingress": {"ingressClassName": "nginx"}}}
    assert {"selector": {"dnsNames": ["app.example.com"]}, "http01": {"ingress": {"name": "frontend"}}} in acme["solvers"]
    by_host = {c["spec"]["dnsNames"][0]: c for c in certs}
    assert set(by_host) == {"app.example.com", "cd.example.com", "grafana.example.com"}
    assert by_host["app.example.com"]["metadata"]["namespace"] == names.APPS
    assert by_host["app.example.com"]["spec"]["secretName"] == names.FRONTEND_TLS_SECRET
    assert by_host["cd.example.com"]["spec"]["secretName"] == "argocd-server-tls"
    assert all(c["spec"]["issuerRef"] == {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "letsencrypt"}
               for c in certs)
    # A self-signed Secret before the first order: F5 NGINX rejects the handshake of a host
    # without one, and the challenge is redirected to HTTPS.
    assert all(c["metadata"]["annotations"] == {"cert-manager.io/issue-temporary-certificate": "true"} for c in certs)


def test_staging_server_is_selectable():
    cfg = parse_with("dev")
    assert cfg.platform.tls.server == "staging"
    issuer = tls.cluster_issuer(cfg)["spec"]["acme"]
    assert issuer["server"] == "https://acme-staging-v02.api.letsencrypt.org/directory"
    assert issuer["privateKeySecretRef"]["name"] == "letsencrypt-staging-account-key"


def test_ingresses_name_the_certificates_secrets():
    cfg = parse_with("production", _hosts)
    frontend = next(s for s in cfg.services if s.name == "frontend")
    assert structural_values(cfg, frontend)["ingress"]["tlsSecretName"] == names.FRONTEND_TLS_SECRET
    assert argocd_values(cfg)["server"]["ingress"]["tls"] is True  # the chart's argocd-server-tls
    grafana = v.kube_prometheus_stack_values(cfg)["grafana"]["ingress"]
    assert grafana["tls"] == [{"secretName": names.GRAFANA_TLS_SECRET, "hosts": ["grafana.example.com"]}]
    # Without a host, no Ingress and no TLS Secret name.
    plain = parse_with("production")
    assert structural_values(plain, next(s for s in plain.services if s.name == "frontend"))["ingress"]["tlsSecretName"] == ""


def test_cert_manager_namespace_is_restricted_and_isolated():
    cfg = parse_with("production", _hosts)
    assert POD_SECURITY[names.CERT_MANAGER] == "restricted"
    pols = {p["metadata"]["name"]: p for p in network_policies(cfg, names.CERT_MANAGER)}
    assert {"default-deny", "allow-dns", "allow-api-server", "allow-webhooks", "allow-acme", "allow-prometheus"} <= set(pols)
    assert pols["allow-webhooks"]["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 10250}]
    acme = pols["allow-acme"]["spec"]["egress"]
    assert {p["port"] for p in acme[0]["ports"]} == {80, 443}
    # The HTTP-01 self-check to the controller's pods, and after its redirect to HTTPS.
    assert acme[1]["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": names.INGRESS}},
                              "podSelector": {"matchLabels": {"app.kubernetes.io/name": "nginx-ingress"}}}]
    assert {p["port"] for p in acme[1]["ports"]} == {80, 443}
    ingress = {p["metadata"]["name"]: p for p in network_policies(cfg, names.INGRESS)}
    assert {p["port"] for p in ingress["allow-acme-self-check"]["spec"]["ingress"][0]["ports"]} == {80, 443}
    # The solver pods are reachable from the ingress controller only, on 8089.
    apps = {p["metadata"]["name"]: p for p in network_policies(cfg, names.APPS)}
    rule = apps["allow-ingress-to-acme-solver"]["spec"]
    assert rule["podSelector"] == {"matchLabels": {"acme.cert-manager.io/http01-solver": "true"}}
    assert rule["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8089}]
    assert "allow-ingress-to-acme-solver" not in {p["metadata"]["name"] for p in network_policies(parse_with("production"), names.APPS)}


def test_cert_manager_comes_before_its_custom_resources():
    def change(c):
        c["sophia:workloads"] = json.dumps({"frontendHost": "app.example.com"})
    run = run_platform("production", change)
    cm = run.urn("tls-cert-manager")
    issuer = run.named("tls-cluster-issuer")
    assert cm in issuer.dependencies
    assert issuer.urn in run.named("tls-certificate-frontend").dependencies
    assert cm in run.named("postgres-barman-plugin").dependencies  # the plugin's chart creates an Issuer and Certificates
    assert run.urn("platform-kube-prometheus-stack") in run.named("tls-cert-manager").dependencies  # its ServiceMonitor
    assert run.named("tls-cert-manager").inputs["namespace"] == names.CERT_MANAGER
    assert not run.of_type("kubernetes:core/v1:Secret") or all(
        not s.inputs["metadata"]["name"].endswith("-tls") for s in run.of_type("kubernetes:core/v1:Secret"))  # never by hand


def test_a_host_without_an_acme_contact_is_refused():
    def change(r):
        r["workloads"] = {"frontendHost": "app.example.com"}
        r["platform"].pop("tls")
    (msg,) = problems_of("production", change)
    assert msg.startswith("sophia:platform.tls.email: sophia:workloads.frontendHost is set")


def test_tls_settings_are_checked():
    problems = problems_of("dev", lambda r: r["platform"].__setitem__("tls", {"email": "not-an-address", "server": "prod"}))
    assert any(p.startswith("sophia:platform.tls.email:") for p in problems)
    assert any(p.startswith("sophia:platform.tls.server:") for p in problems)
    (msg,) = problems_of("production", lambda r: r["charts"].pop("cert-manager"))
    assert msg.startswith("sophia:charts.cert-manager:")
