"""CRDs that Helm does not upgrade, and the bundles that make them follow the chart pins.

Helm installs a chart's crds/ folder on the first install only and never upgrades it, so a
chart pin that moves would leave old CRDs behind. Per chart of the platform:

- kube-prometheus-stack: CRDs in the `crds` subchart's crds/; the chart's own upgrade Job
  (`crds.upgradeJob`, a Helm hook) applies them on every upgrade (platform.values).
- nginx-ingress: CRDs in crds/; the program applies the controller release's CRD bundle as
  Pulumi resources and installs the chart with skip_crds (below). The bundle is kept in this
  repository (sophia_infra/program/platform/crds/) and its sha256 is checked before it is
  applied, so a deploy fetches nothing from a URL.
- argo-cd, cloudnative-pg, plugin-barman-cloud: CRDs are templates (templates/crds/), so
  Helm upgrades them with the release.

Pure and light: the config schema's cross-check imports it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
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
# That file, copied byte for byte from the tag into this repository, and its sha256; a test
# compares its CRDs with the pinned chart's crds/. A new controller release needs both.
NGINX_INGRESS_CRDS_SHA256 = {"5.5.4": "9a79a8233162a61fc16820c17c62ec6c33f2c1666b69814f30603ef4e0b93098"}
PROJECT_ROOT = Path(__file__).resolve().parents[3]
CRDS_DIR = "sophia_infra/program/platform/crds"  # relative to the project, where `pulumi` runs the program


def nginx_ingress_app_version(cfg: "StackConfig") -> str:
    """The controller release of the pinned chart (`problems` refuses a pin not in the table)."""
    return NGINX_INGRESS_APP_VERSIONS[cfg.charts[INGRESS_CHART].version]


def nginx_ingress_crds_url(cfg: "StackConfig") -> str:
    return NGINX_INGRESS_CRDS_URL.format(app_version=nginx_ingress_app_version(cfg))


def nginx_ingress_crds_file(cfg: "StackConfig") -> str:
    """The kept bundle of the pinned chart's controller release (project-relative), once its sha256 matches."""
    app_version = nginx_ingress_app_version(cfg)
    path = f"{CRDS_DIR}/nginx-kubernetes-ingress-v{app_version}-crds.yaml"
    digest = hashlib.sha256((PROJECT_ROOT / path).read_bytes()).hexdigest()
    if digest != NGINX_INGRESS_CRDS_SHA256[app_version]:
        raise ValueError(f"{path} has sha256 {digest}, not the pinned {NGINX_INGRESS_CRDS_SHA256[app_version]}: "
                         f"restore it from {nginx_ingress_crds_url(cfg)} (git checkout -- {path}).")
    return path


def problems(cfg: "StackConfig") -> list[str]:
    """One sentence per chart pin whose CRD bundle the program does not know."""
    pin = cfg.charts.get(INGRESS_CHART)
    if pin is None or pin.version in NGINX_INGRESS_APP_VERSIONS:
        return []
    known = ", ".join(sorted(NGINX_INGRESS_APP_VERSIONS))
    return [f"sophia:charts.{INGRESS_CHART}.version: the program does not know which controller release (and so which CRDs) "
            f"chart {pin.version} ships; add it with its Chart.yaml appVersion to NGINX_INGRESS_APP_VERSIONS in "
            f"sophia_infra/program/config/chart_crds.py, or pin {known}."]
