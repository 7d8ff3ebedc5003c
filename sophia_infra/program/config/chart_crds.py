"""CRDs that Helm does not upgrade, and the bundles that make them follow the chart pins.

Helm installs a chart's crds/ folder on the first install only and never upgrades it, so a
chart pin that moves would leave old CRDs behind. Per chart of the platform:

- kube-prometheus-stack: CRDs in the `crds` subchart's crds/; the chart's own upgrade Job
  (`crds.upgradeJob`, a Helm hook) applies them on every upgrade (platform.values).
- nginx-ingress: CRDs in crds/; the program applies the controller release's CRD bundle as
  Pulumi resources and installs the chart with skip_crds (below).
- argo-cd, cloudnative-pg, plugin-barman-cloud: CRDs are templates (templates/crds/), so
  Helm upgrades them with the release.

Pure and light: the config schema's cross-check imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sophia_infra.program.config.stack import StackConfig

INGRESS_CHART = "nginx-ingress"
# The NGINX Ingress Controller release each nginx-ingress chart version ships (its Chart.yaml
# appVersion); a test compares every entry with the pinned chart's Chart.yaml.
NGINX_INGRESS_APP_VERSIONS = {"2.6.4": "5.5.4"}
# The bundle the chart's NOTES.txt says to apply on upgrade, per controller release:
# https://github.com/nginx/kubernetes-ingress/blob/v5.5.4/deploy/crds.yaml (tag v5.5.4 =
# commit f92a24e4fd2b). Its six CRDs equal the chart's crds/ ones, minus App Protect WAF/DoS
# (deploy/crds-nap-*.yaml), which the program does not enable.
NGINX_INGRESS_CRDS_URL = "https://raw.githubusercontent.com/nginx/kubernetes-ingress/v{app_version}/deploy/crds.yaml"


def nginx_ingress_app_version(cfg: "StackConfig") -> str:
    """The controller release of the pinned chart (`problems` refuses a pin not in the table)."""
    return NGINX_INGRESS_APP_VERSIONS[cfg.charts[INGRESS_CHART].version]


def nginx_ingress_crds_url(cfg: "StackConfig") -> str:
    return NGINX_INGRESS_CRDS_URL.format(app_version=nginx_ingress_app_version(cfg))


def problems(cfg: "StackConfig") -> list[str]:
    """One sentence per chart pin whose CRD bundle the program does not know."""
    pin = cfg.charts.get(INGRESS_CHART)
    if pin is None or pin.version in NGINX_INGRESS_APP_VERSIONS:
        return []
    known = ", ".join(sorted(NGINX_INGRESS_APP_VERSIONS))
    return [f"sophia:charts.{INGRESS_CHART}.version: the program does not know which controller release (and so which CRDs) "
            f"chart {pin.version} ships; add it with its Chart.yaml appVersion to NGINX_INGRESS_APP_VERSIONS in "
            f"sophia_infra/program/config/chart_crds.py, or pin {known}."]
