"""CRDs follow the chart pins: Helm installs a chart's crds/ folder once and never upgrades it.

Checked against the pinned upstream charts (../shared/charts-src, or .cache/charts after
`python -m sophia_infra charts --pull`; skipped with a reason when neither has them): which charts ship CRDs in crds/ that the program's values put in effect, the
kube-prometheus-stack upgrade Job as `helm template` renders it with the program's values,
and the nginx-ingress CRD bundle, whose version comes from the chart pin.
"""

from __future__ import annotations

import base64
import bz2
import functools
import hashlib
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from sophia_infra.program.config import chart_crds
from sophia_infra.program.platform import values as v
from sophia_infra.program.platform.namespaces import POD_SECURITY, network_policies
from sophia_infra.program.services import argocd_values
from sophia_infra.tools.plan import render
from tests import helm_cache
from tests.conftest import ROOT, STACKS, parse_with, problems_of
from tests.platform_helpers import NO_SOURCE, _merge, run_platform
from tests import yaml_c

HELM = ROOT / ".tools" / "bin" / "helm"
RELEASE = "kubernetes:helm.sh/v3:Release"
CONFIG_FILE = "kubernetes:yaml/v2:ConfigFile"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def chart_src(chart: str, version: str) -> Path:
    path = render.chart_source(chart, version)
    if path is None:
        pytest.skip(f"no chart source holds {chart}-{version}: {NO_SOURCE}")
    return path


def chart_yaml(path: Path) -> dict:
    return yaml_c.load((path / "Chart.yaml").read_text())


def _lookup(values: dict, dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def crd_folders_in_effect(chart_dir: Path, values: dict) -> list[str]:
    """crds/ folders Helm would install for these values: the chart's own and those of the
    dependency charts whose condition holds (Helm takes the first condition path that is set)."""
    merged = _merge(yaml.load((chart_dir / "values.yaml").read_text(), Loader=_Loader) or {}, values)
    found = ["."] if (chart_dir / "crds").is_dir() else []
    for dep in chart_yaml(chart_dir).get("dependencies") or []:
        conditions = [c.strip() for c in (dep.get("condition") or "").split(",") if c.strip()]
        enabled = next((_lookup(merged, c) for c in conditions if isinstance(_lookup(merged, c), bool)), True)
        sub = chart_dir / "charts" / dep["name"]
        if enabled and (sub / "crds").is_dir():
            found.append(f"charts/{dep['name']}")
    return found


@functools.lru_cache(maxsize=None)
def releases(stack: str) -> dict[str, dict]:
    """chart name -> inputs of the platform's Helm releases under mocks (do not mutate)."""
    run = run_platform(stack)
    out = {}
    for r in run.of_type(RELEASE):
        chart = r.inputs["chart"].rstrip("/").rsplit("/", 1)[-1]
        out[chart] = r.inputs
    return out


# ----------------------------------------------------------------------------- findings per chart

@pytest.mark.parametrize("stack", STACKS)
def test_every_crds_folder_in_effect_has_an_upgrade_path(stack):
    """A chart whose crds/ Helm would install is either kube-prometheus-stack (its upgrade Job)
    or nginx-ingress (skip_crds + the controller's bundle); nothing else relies on crds/."""
    in_effect = {}
    for chart, inputs in releases(stack).items():
        folders = crd_folders_in_effect(chart_src(chart, inputs["version"]), inputs.get("values") or {})
        if folders:
            in_effect[chart] = folders
    assert in_effect == {"kube-prometheus-stack": ["charts/crds"], "nginx-ingress": ["."]}
    rel = releases(stack)
    assert rel["kube-prometheus-stack"]["values"]["crds"]["upgradeJob"]["enabled"] is True
    assert rel["nginx-ingress"]["skipCrds"] is True
    assert not rel["kube-prometheus-stack"].get("skipCrds")  # first install: Helm's crds/, then the Job


def test_the_condition_check_sees_a_subchart_turned_on():
    """The check above can fail: GPU feature discovery pulls in NFD, whose CRDs sit in crds/."""
    path = chart_src("nvidia-device-plugin", "0.20.0")
    assert crd_folders_in_effect(path, {}) == []
    assert crd_folders_in_effect(path, {"gfd": {"enabled": True}}) == ["charts/node-feature-discovery"]


@pytest.mark.parametrize("chart,version,values_key,template", [
    ("argo-cd", "10.1.1", "crds.install", "templates/crds/crd-application.yaml"),
    ("cloudnative-pg", "0.29.0", "crds.create", "templates/crds/crds.yaml"),
    ("plugin-barman-cloud", "0.7.0", "crds.create", "templates/crds/crds.yaml"),
])
def test_charts_whose_crds_are_templates_upgrade_them_with_the_release(chart, version, values_key, template):
    path = chart_src(chart, version)
    assert not (path / "crds").is_dir()
    text = (path / template).read_text()
    assert text.startswith("{{- if .Values." + values_key + " }}") and "kind: CustomResourceDefinition" in text
    assert "helm.sh/resource-policy: keep" in text or ".Values.crds.keep" in text  # uninstall keeps them
    cfg = parse_with("production")
    defaults = yaml.load((path / "values.yaml").read_text(), Loader=_Loader)
    ours = argocd_values(cfg) if chart == "argo-cd" else v.cnpg_values(cfg) if chart == "cloudnative-pg" else v.barman_values(cfg)
    assert _lookup(_merge(defaults, ours), values_key) is True


# ----------------------------------------------------------------------------- kube-prometheus-stack

def _renderable_copy(chart_dir: Path, work: Path) -> tuple[Path, dict]:
    """The chart without the dependency charts the source lacks (their conditions turned off)."""
    meta = chart_yaml(chart_dir)
    absent = [d for d in meta.get("dependencies") or [] if not (chart_dir / "charts" / d["name"]).is_dir()]
    off: dict = {}
    for dep in absent:
        for cond in (dep.get("condition") or "").split(","):
            if cond.strip():
                node = off
                *parents, leaf = cond.strip().split(".")
                for p in parents:
                    node = node.setdefault(p, {})
                node[leaf] = False
    target = work / chart_dir.name
    shutil.copytree(chart_dir, target)
    meta["dependencies"] = [d for d in meta.get("dependencies") or [] if d not in absent]
    (target / "Chart.yaml").chmod(0o644)
    (target / "Chart.yaml").write_text(yaml_c.dump(meta))
    return target, off


@functools.lru_cache(maxsize=None)
def render_upgrade_job(stack: str) -> tuple[dict[str, dict], Any]:
    """The CRD upgrade hook's objects as `helm template` renders them (do not mutate)."""
    with tempfile.TemporaryDirectory(prefix="sophia-crds-") as work:
        return _render_upgrade_job(Path(work), stack)


def _render_upgrade_job(tmp_path: Path, stack: str) -> tuple[dict[str, dict], Any]:
    if not HELM.is_file():
        pytest.skip(f"{HELM} is absent; run scripts/install-tools.sh (make setup does)")
    cfg = parse_with(stack)
    inputs = releases(stack)["kube-prometheus-stack"]
    chart_dir, off = _renderable_copy(chart_src("kube-prometheus-stack", inputs["version"]), tmp_path)
    # The version string a K3s API server reports, exactly: the chart derives kubectl's tag from it.
    kube_version = cfg.k3s.version
    args = ["template", v.PROMETHEUS_RELEASE, helm_cache.CHART, "--namespace", "monitoring",
            "--values", helm_cache.VALUES, "--kube-version", kube_version]
    for name in ("job", "crds", "serviceaccount", "clusterrole", "clusterrolebinding"):
        args += ["--show-only", f"charts/crds/templates/upgrade/{name}.yaml"]
    # Answered from the render cache when the chart, the values and helm are as in an earlier run.
    proc = helm_cache.run(str(HELM), args, chart_dir, _merge(_as_ints(inputs["values"]), off), timeout=300)
    assert proc.returncode == 0, proc.stderr
    objs = {d["kind"]: d for d in yaml.load_all(proc.stdout, Loader=_Loader) if d}
    return objs, cfg


def _as_ints(value: Any) -> Any:
    """The mock monitor's Struct makes numbers floats; write them as the program did."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _as_ints(x) for k, x in value.items()}
    if isinstance(value, list):
        return [_as_ints(x) for x in value]
    return value


@pytest.mark.parametrize("stack", STACKS)
def test_prometheus_crd_upgrade_job_runs_on_every_upgrade_with_pinned_images(stack):
    objs, cfg = render_upgrade_job(stack)
    assert set(objs) == {"Job", "ConfigMap", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    job = objs["Job"]
    assert job["metadata"]["namespace"] == "monitoring"
    hooks = set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
    assert {"pre-install", "pre-upgrade", "pre-rollback"} <= hooks
    pod = job["spec"]["template"]["spec"]
    containers = pod["initContainers"] + pod["containers"]
    images = {c["name"]: c["image"] for c in containers}
    k8s_version = cfg.k3s.version.split("+")[0]  # v1.34.2+k3s1 -> v1.34.2
    assert images == {"busybox": f"docker.io/busybox:{v.CRD_UPGRADE_BUSYBOX_TAG}",
                      "kubectl": f"registry.k8s.io/kubectl:{k8s_version}"}
    assert not any(i.endswith(":latest") for i in images.values())
    kubectl = next(c for c in pod["containers"] if c["name"] == "kubectl")
    assert kubectl["args"][:3] == ["apply", "--server-side", "--force-conflicts"]  # takes the CRDs over from Helm
    for c in containers:
        assert c["resources"] == cfg.platform.monitoring.agent_resources.k8s(), c["name"]


@pytest.mark.parametrize("stack", STACKS)
def test_prometheus_crd_upgrade_job_is_admitted_and_reaches_the_api(stack):
    """The monitoring namespace enforces baseline; the Job's pod meets restricted, which is
    stricter, and the namespace's policies let every pod reach the API server and DNS."""
    objs, cfg = render_upgrade_job(stack)
    assert POD_SECURITY["monitoring"] in ("baseline", "restricted")
    pod = objs["Job"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert all("hostPath" not in vol for vol in pod["volumes"])
    for c in pod["initContainers"] + pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert not sc.get("privileged") and not c.get("ports"), c["name"]
    assert pod["automountServiceAccountToken"] is True  # kubectl needs its token
    everyone = [p for p in network_policies(cfg, "monitoring") if p["spec"]["podSelector"] == {}]
    egress_ports = {port["port"] for p in everyone for rule in p["spec"].get("egress", []) for port in rule.get("ports", [])}
    assert {443, 6443, 53} <= egress_ports


def test_prometheus_crd_upgrade_job_applies_the_pinned_charts_crds():
    """The bundle in the hook's ConfigMap is the chart's crds/ at the operator version it runs."""
    objs, _ = render_upgrade_job("production")
    packed = bz2.decompress(base64.b64decode(objs["ConfigMap"]["binaryData"]["crds.bz2"])).decode()
    chart_dir = chart_src("kube-prometheus-stack", "88.5.3")
    crd_dir = chart_dir / "charts" / "crds" / "crds"
    names_in = lambda text: sorted(re.findall(r"^  name: (\S+)", text, re.M))  # noqa: E731
    folder = "".join(p.read_text() for p in sorted(crd_dir.glob("*.yaml")))
    assert names_in(packed) == names_in(folder) and "servicemonitors.monitoring.coreos.com" in names_in(packed)
    operator = chart_yaml(chart_dir)["appVersion"].lstrip("v")
    assert set(re.findall(r"operator.prometheus.io/version: (\S+)", packed)) == {operator}
    rules = objs["ClusterRole"]["rules"]
    assert rules[0]["resourceNames"] == names_in(folder)  # may touch those CRDs only


# ----------------------------------------------------------------------------- nginx-ingress

@pytest.mark.parametrize("stack", STACKS)
def test_nginx_crd_bundle_follows_the_chart_pin(stack):
    cfg = parse_with(stack)
    pin = cfg.charts[chart_crds.INGRESS_CHART].version
    chart_dir = chart_src("nginx-ingress", pin)
    app_version = str(chart_yaml(chart_dir)["appVersion"])
    assert chart_crds.NGINX_INGRESS_APP_VERSIONS[pin] == app_version
    # The URL is the one the chart's own upgrade note gives, at the chart's appVersion.
    notes = (chart_dir / "templates" / "NOTES.txt").read_text()
    (upstream,) = re.findall(r"https://[^\n]*?/deploy/crds\.yaml", notes)
    assert chart_crds.NGINX_INGRESS_CRDS_URL.replace("{app_version}", "{{ .Chart.AppVersion }}") == upstream
    assert chart_crds.nginx_ingress_crds_url(cfg) == f"https://raw.githubusercontent.com/nginx/kubernetes-ingress/v{app_version}/deploy/crds.yaml"


@pytest.mark.parametrize("stack", STACKS)
def test_nginx_crds_are_applied_before_the_chart_which_skips_its_own(stack):
    run = run_platform(stack)
    (crds,) = run.of_type(CONFIG_FILE)
    assert crds.name == "platform-nginx-ingress-crds"
    # The bundle kept in this repository, not a URL fetched at deploy time.
    assert crds.inputs == {"file": "sophia_infra/program/platform/crds/nginx-kubernetes-ingress-v5.5.4-crds.yaml"}
    assert crds.parent.endswith("sophia:platform:Platform::platform")
    assert crds.provider.startswith(run.urn("k8s"))  # the cluster's provider, not the default one
    ingress = run.named("platform-nginx-ingress")
    assert crds.urn in ingress.dependencies
    assert ingress.inputs["skipCrds"] is True
    others = [r for r in run.of_type(RELEASE) if r.name != ingress.name]
    assert all(not r.inputs.get("skipCrds") for r in others)


def test_the_kept_nginx_crd_bundle_is_the_pinned_charts_crds_with_the_pinned_checksum():
    """Byte for byte the release's deploy/crds.yaml (its sha256); CRD for CRD the chart's crds/."""
    for pin, app_version in chart_crds.NGINX_INGRESS_APP_VERSIONS.items():
        path = ROOT / chart_crds.CRDS_DIR / f"nginx-kubernetes-ingress-v{app_version}-crds.yaml"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == chart_crds.NGINX_INGRESS_CRDS_SHA256[app_version]
        kept = {d["metadata"]["name"]: d for d in yaml_c.load_all(path.read_text()) if d}
        chart = {d["metadata"]["name"]: d for f in sorted((chart_src("nginx-ingress", pin) / "crds").glob("*.yaml"))
                 for d in yaml_c.load_all(f.read_text()) if d}
        nap = {name for name in chart if name.split(".", 1)[1].startswith(("appprotect.", "appprotectdos."))}
        assert kept == {name: crd for name, crd in chart.items() if name not in nap}
        assert len(kept) == 6


def test_a_changed_nginx_crd_bundle_is_refused(tmp_path, monkeypatch):
    cfg = parse_with("production")
    path = chart_crds.nginx_ingress_crds_file(cfg)
    (tmp_path / path).parent.mkdir(parents=True)
    (tmp_path / path).write_bytes((ROOT / path).read_bytes().replace(b"k8s.nginx.org", b"k8s.nginx.example", 1))
    monkeypatch.setattr(chart_crds, "PROJECT_ROOT", tmp_path)
    with pytest.raises(ValueError, match=rf"^{re.escape(path)} has sha256 [0-9a-f]{{64}}, not the pinned "
                                         rf"{chart_crds.NGINX_INGRESS_CRDS_SHA256['5.5.4']}: restore it from "):
        chart_crds.nginx_ingress_crds_file(cfg)


def test_nginx_crds_the_bundle_leaves_out_are_not_needed():
    """deploy/crds.yaml lacks App Protect WAF/DoS (crds-nap-*.yaml); the program enables neither."""
    chart_dir = chart_src("nginx-ingress", "2.6.4")
    chart_groups = sorted({p.name.split("_")[0] for p in (chart_dir / "crds").glob("*.yaml")})
    assert chart_groups == ["appprotect.f5.com", "appprotectdos.f5.com", "externaldns.nginx.org", "k8s.nginx.org"]
    merged = _merge(yaml.load((chart_dir / "values.yaml").read_text(), Loader=_Loader),
                    v.nginx_ingress_values(parse_with("production")))
    assert merged["controller"]["appprotect"]["enable"] is False
    assert merged["controller"]["appprotectdos"]["enable"] is False


def test_an_nginx_chart_pin_without_a_known_controller_release_is_refused():
    def bump(raw):
        raw["charts"]["nginx-ingress"]["version"] = "2.7.0"

    problems = [p for p in problems_of("production", bump) if "nginx-ingress" in p]
    assert problems == ["sophia:charts.nginx-ingress.version: the program does not know which controller release "
                        "(and so which CRDs) chart 2.7.0 ships; add it with its Chart.yaml appVersion to "
                        "NGINX_INGRESS_APP_VERSIONS in sophia_infra/program/config/chart_crds.py, or pin 2.6.4."]
