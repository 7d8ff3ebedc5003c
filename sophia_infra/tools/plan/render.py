"""Render what the plan deploys through Helm, with the real pinned charts, as the cluster would get it.

Every Helm release the program registers (and, in Argo CD mode, every Application of the
local chart) is rendered with `helm template` and exactly the values the plan recorded for
it. Upstream charts are read in place from the first chart source that has them:

1. `../shared/charts-src/<chart>-<version>` (the pinned charts, beside the project), then
2. `.cache/charts/<chart>-<version>` (what `make setup` pulls with `helm pull` on a machine
   that can reach the chart repositories: `python -m sophia_infra charts --pull`).

A dependency chart that the source lacks cannot be rendered: the release is rendered without
it (its condition off, from a temporary copy of the chart outside the project) and the
result names what is missing, so reports say "not rendered" instead of guessing.

Renders are kept in `build/render-cache/` (CACHE_DIR), one JSON file per render, keyed by
content: a hash of every file of the chart folder (subcharts included), the values, helm's
version and the arguments of `helm template`. A changed chart folder, other values or another
helm never meet an old entry; the same content found elsewhere (../shared/charts-src or
.cache/charts) meets the same one. `rm -rf build/render-cache` (or `make clean`) clears it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from sophia_infra.program.config import names
from sophia_infra.tools.plan.mocks import SECRET, UNKNOWN

ROOT = Path(__file__).resolve().parents[3]
CHART_SOURCES = (ROOT.parent / "shared" / "charts-src", ROOT / ".cache" / "charts")
CACHE_DIR = ROOT / "build" / "render-cache"
RELEASE = "kubernetes:helm.sh/v3:Release"
APPLICATION = "kubernetes:argoproj.io/v1alpha1:Application"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# APIs the cluster serves when a release installs: kube-prometheus-stack's CRDs come first (every
# other release depends on it), so charts that check `.Capabilities` for them render their monitors.
CLUSTER_APIS = ("monitoring.coreos.com/v1",)


class RenderError(Exception):
    """A release that helm could not render (the message carries helm's own words)."""


@dataclass(frozen=True)
class ReleaseSpec:
    """One Helm release as the plan registers it."""

    resource: str            # the Pulumi resource name
    release: str             # the Helm release name
    namespace: str
    chart: str               # chart name (upstream) or the local chart's path
    version: Optional[str]   # None for the local chart
    values: dict = field(hash=False, compare=False)
    via: str = "helm"        # "helm" (helm.v3.Release) or "argocd" (an Application of the local chart)

    @property
    def local(self) -> bool:
        return self.version is None


@dataclass
class Rendered:
    spec: ReleaseSpec
    objects: list[dict]
    # Dependency charts absent from the chart source: their objects are not in `objects`.
    missing_subcharts: list[str] = field(default_factory=list)
    source: Optional[Path] = None


def _chart_name(chart: str) -> str:
    return chart.rstrip("/").rsplit("/", 1)[-1]


def _value_file(entry: str, chart_path: str, refs: dict[str, dict], root: Path) -> dict:
    """One `helm.valueFiles` entry as Argo CD resolves it: `$<ref>/path` in the repository of
    the source named <ref>, anything else relative to the chart. Both are read from this work
    tree (the plan runs on the commit that the release branch will hold)."""
    if entry.startswith("$"):
        ref, _, rest = entry[1:].partition("/")
        if ref not in refs:
            raise RenderError(f"the values file {entry} names no source with `ref: {ref}`; Argo CD would refuse it")
        file = root / rest
    else:
        file = root / chart_path / entry
    if not file.is_file():
        raise RenderError(f"the values file {entry} does not exist at {file}; Argo CD would fail to render the Application "
                          "(create it, e.g. python -m sophia_infra release WORKLOAD --stack STACK --tag TAG)")
    return yaml.load(file.read_text(), Loader=_Loader) or {}


def application_values(spec: dict, root: Path = ROOT) -> tuple[dict, dict]:
    """(the chart source, the values Argo CD renders it with) of an Application of the local
    chart: `spec.source`, or the `spec.sources` entry with a `path`, whose valueFiles (resolved
    through the `ref` sources) come first and valuesObject on top, as Argo CD merges them."""
    from sophia_infra.program.releases import argocd_values

    sources = spec.get("sources") or ([spec["source"]] if spec.get("source") else [])
    (chart,) = [s for s in sources if s.get("path")]
    refs = {s["ref"]: s for s in sources if s.get("ref")}
    helm = chart.get("helm") or {}
    files = [_value_file(f, chart["path"], refs, root) for f in helm.get("valueFiles") or []]
    return chart, argocd_values(files, helm.get("valuesObject") or {})


def release_specs(resources: Iterable[Any], root: Path = ROOT) -> list[ReleaseSpec]:
    """Every release of a plan's registrations (sophia_infra.tools.plan.mocks.Registration); an
    Application's release files are read from `root` (this work tree)."""
    specs = []
    for r in resources:
        if r.type == RELEASE:
            i = r.inputs
            chart = i["chart"]
            local = not i.get("version") and not chart.startswith("oci://") and "repositoryOpts" not in i
            specs.append(ReleaseSpec(resource=r.name, release=i.get("name") or r.name,
                                     namespace=i.get("namespace") or "default",
                                     chart=chart if local else _chart_name(chart),
                                     version=None if local else i["version"], values=i.get("values") or {}))
        elif r.type == APPLICATION:
            spec = r.inputs.get("spec") or {}
            src, values = application_values(spec, root)
            helm = src.get("helm") or {}
            specs.append(ReleaseSpec(resource=r.name, release=helm.get("releaseName") or r.inputs["metadata"]["name"],
                                     namespace=(spec.get("destination") or {}).get("namespace") or "default",
                                     chart=src["path"], version=None, values=values, via="argocd"))
    return sorted(specs, key=lambda s: (s.namespace, s.release))


def chart_source(chart: str, version: str) -> Optional[Path]:
    for base in CHART_SOURCES:
        path = base / f"{chart}-{version}"
        if (path / "Chart.yaml").is_file():
            return path
    return None


def missing_sources(specs: Iterable[ReleaseSpec]) -> list[str]:
    """`chart-version` of every upstream release no chart source has."""
    return sorted({f"{s.chart}-{s.version}" for s in specs if s.version is not None and chart_source(s.chart, s.version) is None})


def helm_binary() -> Optional[str]:
    local = ROOT / ".tools" / "bin" / "helm"
    return str(local) if local.is_file() else shutil.which("helm")


def absent_dependencies(chart_dir: Path) -> list[dict]:
    meta = yaml.load((chart_dir / "Chart.yaml").read_text(), Loader=_Loader) or {}
    present = {p.name for p in (chart_dir / "charts").iterdir()} if (chart_dir / "charts").is_dir() else set()

    def has(dep: dict) -> bool:
        name = dep.get("alias") or dep["name"]
        return name in present or dep["name"] in present or any(
            p.startswith(f"{dep['name']}-") and p.endswith(".tgz") for p in present)

    return [d for d in meta.get("dependencies") or [] if not has(d)]


def _without(chart_dir: Path, absent: list[dict], work: Path) -> Path:
    """A temporary copy of the chart that declares only the dependencies it has."""
    copy = work / chart_dir.name
    shutil.copytree(chart_dir, copy)
    for p in [copy, *copy.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o200)
    meta = yaml.load((copy / "Chart.yaml").read_text(), Loader=_Loader)
    gone = {d["name"] for d in absent}
    meta["dependencies"] = [d for d in meta.get("dependencies") or [] if d["name"] not in gone]
    (copy / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    (copy / "Chart.lock").unlink(missing_ok=True)
    return copy


def _lookup(values: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(values, dict) or part not in values:
            return None
        values = values[part]
    return values


def _condition(dep: dict, values: dict, defaults: dict) -> bool:
    """Helm's rule: the first condition path that resolves decides; none resolving = enabled."""
    for cond in (dep.get("condition") or "").split(","):
        cond = cond.strip()
        for source in (values, defaults):
            found = _lookup(source, cond) if cond else None
            if isinstance(found, bool):
                return found
    return True


def _set_path(values: dict, dotted: str, value: Any) -> None:
    node = values
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _check_values(spec: ReleaseSpec) -> None:
    text = json.dumps(spec.values)
    for marker in (SECRET, UNKNOWN):
        if json.dumps(marker) in text:
            raise RenderError(f"{spec.resource}: its Helm values hold a {marker} value; values must never carry secrets or unknowns")


# Bump when what an entry holds, or how it is keyed, changes: old entries are then never read.
CACHE_FORMAT = 2

_digests: dict[str, tuple[tuple, str]] = {}
_digests_lock = threading.Lock()


def _tree_signature(folder: Path) -> tuple:
    """(relative path, size, mtime, ctime, inode) of every file below `folder`, symlinks followed,
    in os.walk's order (a folder's files sorted, then its subfolders sorted). Any write, copy,
    extraction or rename changes one of them (ctime cannot be set back). Asked at every render,
    so it walks with scandir and joins names itself (os.walk plus relpath took twice as long)."""
    entries: list[tuple] = []

    def walk(path: str, prefix: str) -> None:
        try:
            with os.scandir(path) as it:
                listed = list(it)
        except OSError:
            return  # as os.walk: an unreadable folder contributes nothing
        subfolders = []
        for entry in sorted(listed, key=lambda e: e.name):
            try:
                is_folder = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_folder = False
            if is_folder:
                subfolders.append(entry)
                continue
            rel = prefix + entry.name
            try:
                st = entry.stat(follow_symlinks=True)
            except OSError:  # a dangling symlink: helm would fail on it, and so would a read
                entries.append((rel, -1, 0, 0, 0))
                continue
            entries.append((rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
        for entry in subfolders:
            walk(entry.path, prefix + entry.name + os.sep)

    walk(str(folder), "")
    return tuple(entries)


def chart_digest(folder: Path) -> str:
    """SHA-256 of a chart folder's content: every file below it (subcharts, CRDs, README
    included) by relative path and bytes. Read once per process while the files' sizes and
    modification times stay as they were; any change to them reads the folder again."""
    folder = Path(folder)
    signature = _tree_signature(folder)
    key = str(folder.resolve())
    with _digests_lock:
        known = _digests.get(key)
    if known and known[0] == signature:
        return known[1]
    h = hashlib.sha256()
    for rel, size, *_ in signature:
        data = (folder / rel).read_bytes() if size >= 0 else b"<dangling symlink>"
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
    digest = h.hexdigest()
    with _digests_lock:
        _digests[key] = (signature, digest)
    return digest


@functools.lru_cache(maxsize=None)
def _helm_version(helm: str, size: int, mtime_ns: int) -> str:
    proc = subprocess.run([helm, "version", "--template", "{{.Version}} {{.GitCommit}}"],
                          capture_output=True, text=True, timeout=60)
    return proc.stdout.strip() if proc.returncode == 0 else f"unknown helm ({proc.stderr.strip()})"


def helm_version(helm: str) -> str:
    """`helm version` of that binary (asked once per process while the file stays the same)."""
    st = os.stat(helm)
    return _helm_version(helm, st.st_size, st.st_mtime_ns)


def _helm_args(spec: ReleaseSpec) -> list[str]:
    """`helm template` arguments after the chart; CHART and VALUES stand for the two paths."""
    args = ["template", spec.release, "CHART", "--namespace", spec.namespace,
            "--values", "VALUES", "--kube-version", names.KUBERNETES_VERSION,
            # nginx-ingress's schema $refs remote URLs; values are checked against schemas elsewhere.
            "--skip-schema-validation"]
    for api in CLUSTER_APIS:
        args += ["--api-versions", api]
    return args


def cache_key(spec: ReleaseSpec, source: Path, helm: str) -> str:
    """The render's identity: chart content, values, helm's version and arguments (not the
    chart's path: the same content read from another folder is the same render)."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": CACHE_FORMAT, "chart": chart_digest(source), "values": spec.values,
                         "helm": helm_version(helm), "args": _helm_args(spec)},
                        sort_keys=True).encode())
    return h.hexdigest()[:32]


def _read_entry(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent, or not whole (another process writing it): render again
    return data if isinstance(data, dict) and data.get("format") == CACHE_FORMAT else None


def _write_entry(path: Path, data: dict) -> None:
    """Whole or not at all: written beside, then renamed (parallel test workers share the cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps({"format": CACHE_FORMAT, **data}))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cache_summary() -> str:
    """Where the render cache is, how big, and how to clear it (for the `charts` command)."""
    files = list(CACHE_DIR.glob("*.json")) if CACHE_DIR.is_dir() else []
    size = sum(f.stat().st_size for f in files)
    where = os.path.relpath(CACHE_DIR, Path.cwd()) if CACHE_DIR.is_relative_to(Path.cwd()) else str(CACHE_DIR)
    return (f"render cache: {where} ({len(files)} renders, {size / 1e6:.1f} MB; keyed by chart content, values "
            f"and helm; clear it with: rm -rf {where})")


# A rendered document's text -> its objects (pickled): releases rendered with other values share
# most documents (argo-cd's 1.2 MB of CRDs, every template the change does not touch), and YAML is
# slow to read. Bounded; a text parses to the same objects whatever the release.
_DOC_OBJECTS: dict[str, bytes] = {}
_DOC_LIMIT = 64 << 20
_doc_bytes = 0
_doc_lock = threading.Lock()
_DOCUMENT_START = re.compile(r"^---[ \t]*\n", re.M)


def _documents(text: str) -> list[dict]:
    """The objects (mappings with a kind) of helm's output, in order, as yaml.load_all reads them.

    The text is cut at lines that are only `---`: YAML forbids such a line inside any node, so
    each piece holds whole documents and parses as it does in the whole."""
    global _doc_bytes
    if re.search(r"^%", text, re.M):  # directives belong to the document after them: read it whole
        return [d for d in yaml.load_all(text, Loader=_Loader) if isinstance(d, dict) and d.get("kind")]
    out: list[dict] = []
    for piece in _DOCUMENT_START.split(text):
        if not piece.strip():
            continue
        with _doc_lock:
            packed = _DOC_OBJECTS.get(piece)
        if packed is None:
            objs = [d for d in yaml.load_all(piece, Loader=_Loader) if isinstance(d, dict) and d.get("kind")]
            packed = pickle.dumps(objs, protocol=pickle.HIGHEST_PROTOCOL)
            with _doc_lock:
                if _doc_bytes + len(piece) + len(packed) > _DOC_LIMIT:
                    _DOC_OBJECTS.clear()
                    _doc_bytes = 0
                _DOC_OBJECTS[piece] = packed
                _doc_bytes += len(piece) + len(packed)
        out += pickle.loads(packed)  # a fresh copy: callers may change the objects
    return out


def render(spec: ReleaseSpec, helm: Optional[str] = None, cache: bool = True) -> Rendered:
    """`helm template` of one release; raises RenderError when helm refuses or the chart is absent."""
    helm = helm or helm_binary()
    if helm is None:
        raise RenderError("helm is not installed; run scripts/install-tools.sh (make setup does)")
    _check_values(spec)
    source = (ROOT / spec.chart) if spec.local else chart_source(spec.chart, spec.version or "")
    if source is None or not source.is_dir():
        raise RenderError(f"{spec.chart}-{spec.version}: no chart source has it ({', '.join(str(c) for c in CHART_SOURCES)}); "
                          "run `python -m sophia_infra charts --pull` on a machine that reaches the chart repositories")
    cached = CACHE_DIR / f"{cache_key(spec, source, helm)}.json"
    if cache:
        data = _read_entry(cached)
        if data is not None:
            return Rendered(spec, data["objects"], data["missing"], source)

    values = json.loads(json.dumps(spec.values))
    absent = absent_dependencies(source)
    with tempfile.TemporaryDirectory(prefix="sophia-render-") as work:
        chart_dir = source
        if absent:
            chart_dir = _without(source, absent, Path(work))
            for dep in absent:
                for cond in (dep.get("condition") or "").split(","):
                    if cond.strip():
                        _set_path(values, cond.strip(), False)
        values_file = Path(work) / "values.json"
        values_file.write_text(json.dumps(values))
        paths = {"CHART": str(chart_dir), "VALUES": str(values_file)}
        cmd = [helm, *(paths.get(a, a) for a in _helm_args(spec))]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RenderError(f"helm template {spec.release} ({spec.chart}) failed: {proc.stderr.strip()}")
    objects = _documents(proc.stdout)
    for obj in objects:
        meta = obj.setdefault("metadata", {})
        if _namespaced(obj) and not meta.get("namespace"):
            meta["namespace"] = spec.namespace  # helm template leaves it to the install namespace
    # Report only what would have rendered: a dependency whose condition is off renders nothing anyway.
    defaults = yaml.load((source / "values.yaml").read_text(), Loader=_Loader) or {}
    missing = sorted(d["name"] for d in absent if _condition(d, spec.values, defaults))
    if cache:
        _write_entry(cached, {"objects": objects, "missing": missing})
    return Rendered(spec, objects, missing, source)


_CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "StorageClass",
    "PriorityClass", "RuntimeClass", "IngressClass", "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
    "APIService", "PersistentVolume", "ClusterIssuer", "Node",
}


def _namespaced(obj: dict) -> bool:
    return obj.get("kind") not in _CLUSTER_SCOPED


def render_all(specs: Iterable[ReleaseSpec], workers: int = 4, cache: bool = True) -> list[Rendered]:
    """Render every release (in parallel); raises RenderError naming the first that fails."""
    specs = list(specs)
    helm = helm_binary()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda s: render(s, helm, cache), specs))
