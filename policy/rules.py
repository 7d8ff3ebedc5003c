"""The platform's rules, as pure functions over a resource's type and inputs (mandatory,
except those marked advisory: reported, not blocking).

Standard library only: the policy pack (`__main__.py`, run by `pulumi preview
--policy-pack policy`) and the offline plan (`python -m sophia_infra plan`) both
evaluate these same functions.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

INGRESS_NAMESPACE = "nginx-ingress"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TYPE_LABEL = "gpu-type"
NVIDIA_RUNTIME_CLASS = "nvidia"

_WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
_SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|api[_-]?key|private[_-]?key|credential", re.I)
_IPV4 = re.compile(r"(?<![\w.])((?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3})(/\d{1,2})?(?![\w.])")
_NOT_HOSTS = [ipaddress.IPv4Network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "127.0.0.0/8", "0.0.0.0/32")]


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    check: Callable[..., list[str]]
    # Advisory: pulumi-policy reports it without blocking; the offline plan lists it apart. A
    # policy pack config file (policy/config/<stack>.json) can change a rule's level.
    advisory: bool = False
    # JSON schema of the properties the rule takes from that file; a rule with one is called
    # with them as `config`.
    config_schema: dict | None = None

    def run(self, resource_type: str, props: dict, config: dict | None = None) -> list[str]:
        if self.config_schema is None:
            return self.check(resource_type, props)
        return self.check(resource_type, props, config=config or {})


def kind_of(resource_type: str) -> str:
    """`kubernetes:apps/v1:Deployment` -> `Deployment`; CustomResources keep their kind."""
    return resource_type.rsplit(":", 1)[-1] if resource_type.startswith("kubernetes:") else ""


def pod_spec(resource_type: str, props: dict) -> dict | None:
    kind = kind_of(resource_type)
    if kind not in _WORKLOAD_KINDS:
        return None
    spec = props.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return ((spec.get("template") or {}).get("spec")) or {}


SERVICE_CHART = "charts/sophia-service"


def service_chart_values(resource_type: str, props: dict) -> dict | None:
    """Values of this repo's service chart, whether Pulumi installs it or ArgoCD does."""
    if resource_type == "kubernetes:helm.sh/v3:Release" and str(props.get("chart", "")).endswith(SERVICE_CHART):
        return props.get("values") or {}
    if kind_of(resource_type) == "Application":
        spec = props.get("spec") or {}
        # A single source, or the chart's among several (the others: `ref` sources of values files).
        for source in spec.get("sources") or [spec.get("source") or {}]:
            if str(source.get("path", "")).endswith(SERVICE_CHART):
                return (source.get("helm") or {}).get("valuesObject") or {}
    return None


def _release_file_gives_the_image(resource_type: str, props: dict) -> bool:
    """An Application whose image tag comes from a release file (a `$ref/...` values file that
    the program and `python -m sophia_infra release` check), not from its inputs."""
    if kind_of(resource_type) != "Application":
        return False
    spec = props.get("spec") or {}
    return any(str(f).startswith("$") for s in spec.get("sources") or [] for f in (s.get("helm") or {}).get("valueFiles") or [])


def _containers(spec: dict) -> Iterator[dict]:
    yield from spec.get("initContainers") or []
    yield from spec.get("containers") or []


def _name(props: dict) -> str:
    meta = props.get("metadata") or {}
    return f"{meta.get('namespace', '-')}/{meta.get('name', '?')}"


def _service(props: dict, values: dict) -> str:
    return f"service '{values.get('name') or props.get('name') or (props.get('metadata') or {}).get('name')}'"


def containers_have_limits(resource_type: str, props: dict) -> list[str]:
    values = service_chart_values(resource_type, props)
    if values is not None:
        limits = (values.get("resources") or {}).get("limits") or {}
        missing = [r for r in ("cpu", "memory") if r not in limits]
        return [f"{_service(props, values)}: no {' or '.join(missing)} limit in resources.limits"] if missing else []
    spec = pod_spec(resource_type, props)
    if spec is None:
        return []
    out = []
    for c in _containers(spec):
        limits = (c.get("resources") or {}).get("limits") or {}
        missing = [r for r in ("cpu", "memory") if r not in limits]
        if missing:
            out.append(f"{_name(props)}: container '{c.get('name')}' has no {' or '.join(missing)} limit; set resources.limits")
    return out


def gpu_pods_use_nvidia_runtime_and_gpu_type(resource_type: str, props: dict) -> list[str]:
    values = service_chart_values(resource_type, props)
    if values is not None:  # the chart adds runtimeClassName and the toleration for a GPU
        if (values.get("gpu") or 0) > 0 and not (values.get("placement") or {}).get("gpuType"):
            return [f"{_service(props, values)}: requests a GPU but has no placement.gpuType"]
        return []
    spec = pod_spec(resource_type, props)
    if spec is None:
        return []
    wants_gpu = any(GPU_RESOURCE in ((c.get("resources") or {}).get(k) or {})
                    for c in _containers(spec) for k in ("limits", "requests"))
    if not wants_gpu:
        return []
    out = []
    if spec.get("runtimeClassName") != NVIDIA_RUNTIME_CLASS:
        out.append(f"{_name(props)}: requests {GPU_RESOURCE} but runtimeClassName is not '{NVIDIA_RUNTIME_CLASS}'")
    selects = GPU_TYPE_LABEL in (spec.get("nodeSelector") or {})
    terms = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
             .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or []
    selects = selects or any(e.get("key") == GPU_TYPE_LABEL for t in terms for e in t.get("matchExpressions") or [])
    if not selects:
        out.append(f"{_name(props)}: requests {GPU_RESOURCE} but selects no '{GPU_TYPE_LABEL}' node")
    return out


def images_are_pinned(resource_type: str, props: dict) -> list[str]:
    values = service_chart_values(resource_type, props)
    if values is not None:
        tag = str((values.get("image") or {}).get("tag") or "")
        if not tag and _release_file_gives_the_image(resource_type, props):
            return []
        return [] if tag and tag != "latest" else [f"{_service(props, values)}: image tag '{tag}' is not pinned"]
    spec = pod_spec(resource_type, props)
    if spec is None:
        return []
    out = []
    for c in _containers(spec):
        image = c.get("image") or ""
        if "@sha256:" in image:
            continue
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        if not tag or tag == "latest":
            out.append(f"{_name(props)}: container '{c.get('name')}' image '{image}' is not pinned; use an exact tag or digest")
    return out


# This repository (policy/..): where an Application's release files ($values/releases/...) live.
REPO_ROOT = Path(__file__).resolve().parent.parent
# A digest in a release file as `python -m sophia_infra release` writes it.
_DIGEST_LINE = re.compile(r'^\s+digest:\s*["\']?sha256:[a-f0-9]{64}["\']?\s*$', re.M)


# images-by-digest's properties in a policy pack config: the workloads that may still run by tag
# because they have not been released by digest yet (every other one must run by digest).
IMAGES_BY_DIGEST_CONFIG = {
    "properties": {
        "tagOnlyAllowed": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Workloads (sophia:services[].name) not yet released by digest: allowed a tag only.",
        },
    },
}


def images_by_digest(resource_type: str, props: dict, root: Path | None = None,
                     config: dict | None = None) -> list[str]:
    """Argo CD Applications (production's delivery) of the service chart run their image by digest:
    a digest in valuesObject, a sha256 tag, or a digest in every release file they read
    (config `tagOnlyAllowed`: workloads exempt until their first release by digest)."""
    if kind_of(resource_type) != "Application":
        return []
    values = service_chart_values(resource_type, props)
    if values is None or values.get("name") in set((config or {}).get("tagOnlyAllowed") or ()):
        return []
    image = values.get("image") or {}
    if image.get("digest") or str(image.get("tag") or "").startswith("sha256:"):
        return []
    spec = props.get("spec") or {}
    files = [str(f) for s in spec.get("sources") or [] for f in (s.get("helm") or {}).get("valueFiles") or []
             if str(f).startswith("$")]
    if not files:
        return [f"{_service(props, values)}: image tag '{image.get('tag')}' has no digest; release it with --digest"]
    out = []
    for f in files:
        path = (root or REPO_ROOT) / f.split("/", 1)[1]
        text = path.read_text() if path.is_file() else ""
        if not _DIGEST_LINE.search(text):
            out.append(f"{_service(props, values)}: {f.split('/', 1)[1]} names an image tag without a digest; "
                       "release it with python -m sophia_infra release ... --digest sha256:...")
    return out


def _service_types(values: Any, path: str = "") -> Iterator[str]:
    if isinstance(values, dict):
        for k, v in values.items():
            here = f"{path}.{k}" if path else k
            if k == "type" and v == "LoadBalancer":
                yield path
            yield from _service_types(v, here)
    elif isinstance(values, list):
        for i, v in enumerate(values):
            yield from _service_types(v, f"{path}[{i}]")


def no_load_balancer_but_ingress(resource_type: str, props: dict) -> list[str]:
    if kind_of(resource_type) == "Service":
        ns = (props.get("metadata") or {}).get("namespace")
        if (props.get("spec") or {}).get("type") == "LoadBalancer" and ns != INGRESS_NAMESPACE:
            return [f"{_name(props)}: only the ingress controller may be a LoadBalancer Service; use ClusterIP behind the ingress"]
    if resource_type == "kubernetes:helm.sh/v3:Release" and props.get("namespace") != INGRESS_NAMESPACE:
        return [f"release '{props.get('name')}': values set a LoadBalancer at {p}; only the ingress controller may"
                for p in _service_types(props.get("values") or {})]
    return []


def no_secret_looking_keys_in_configmaps(resource_type: str, props: dict) -> list[str]:
    if kind_of(resource_type) != "ConfigMap":
        return []
    keys = list((props.get("data") or {})) + list((props.get("binaryData") or {}))
    return [f"{_name(props)}: key '{k}' looks like a secret; put it in a Secret" for k in keys if _SECRET_KEY.search(k)]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            if k != "ipBlock":  # NetworkPolicy can only name peers outside the cluster by IP
                yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def no_address_literals(resource_type: str, props: dict) -> list[str]:
    """Kubernetes objects and chart values reach hosts by DNS name, never by IP address.
    (Ranges such as a NetworkPolicy's ipBlock are networks, not hosts, and pass.)"""
    if not resource_type.startswith("kubernetes:") or resource_type.startswith("kubernetes:index:Provider"):
        return []
    found = []
    for text in _strings(props):
        for m in _IPV4.finditer(text):
            net = ipaddress.IPv4Network(m.group(0), strict=False)  # _IPV4 matches IPv4 only
            if net.prefixlen < 32 or any(net.subnet_of(n) for n in _NOT_HOSTS):
                continue
            found.append(m.group(0))
    name = _name(props) if props.get("metadata") else props.get("name", "?")
    return [f"{name}: address literal {a} in the inputs; use a DNS name or a stack output" for a in sorted(set(found))]


RULES = [
    Rule("containers-have-limits", "Every container sets CPU and memory limits.", containers_have_limits),
    Rule("gpu-pods-use-nvidia-runtime", "GPU pods set runtimeClassName nvidia and select a gpu-type node.",
         gpu_pods_use_nvidia_runtime_and_gpu_type),
    Rule("images-pinned", "Every image is pinned to a tag or digest, never latest.", images_are_pinned),
    Rule("images-by-digest", "Argo CD workloads (production) run their image by digest, not by tag alone.",
         images_by_digest, advisory=True, config_schema=IMAGES_BY_DIGEST_CONFIG),
    Rule("no-load-balancer-but-ingress", "Only the ingress controller is a LoadBalancer Service.",
         no_load_balancer_but_ingress),
    Rule("no-secrets-in-configmaps", "ConfigMaps carry no secret-looking keys.", no_secret_looking_keys_in_configmaps),
    Rule("no-address-literals", "Kubernetes inputs carry no IP address literals.", no_address_literals),
]


def evaluate(resource_type: str, props: dict, advisory: bool = False,
             pack_config: dict[str, tuple[str, dict]] | None = None) -> list[tuple[str, str]]:
    """(rule name, message) for every violation of every mandatory rule (advisory=True: of the
    advisory ones), each rule at its level under `pack_config` (parse_pack_config's result)."""
    found = []
    for rule in RULES:
        level, config = level_of(rule, pack_config)
        if level == "disabled" or (level == "advisory") != advisory:
            continue
        found += [(rule.name, msg) for msg in rule.run(resource_type, props, config)]
    return found


# A policy pack config file, as `pulumi preview/up --policy-pack-config FILE` reads it (pulumi's
# plugin.parsePolicyPackConfig): a JSON object mapping a policy name to an enforcement level, or to
# an object of the policy's properties and its "enforcementLevel" (optional to pulumi, required
# here). Pulumi also takes "all" for every policy; these files name each rule, so a reader sees
# every level.
LEVELS = ("advisory", "mandatory", "remediate", "disabled")
CONFIG_DIR = REPO_ROOT / "policy" / "config"


class PackConfigError(ValueError):
    """A policy pack config file pulumi would refuse, or that names no rule of this pack."""


def parse_pack_config(text: str, source: str) -> dict[str, tuple[str, dict]]:
    """{name: (level, properties)} from a config file's text; one sentence on a mistake."""
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as err:
        raise PackConfigError(f"{source}: not JSON ({err.msg} at line {err.lineno}); "
                              "see pulumi's --policy-pack-config format") from None
    if not isinstance(data, dict):
        raise PackConfigError(f"{source}: must be a JSON object of policy names")
    rules = {r.name: r for r in RULES}
    parsed: dict[str, tuple[str, dict]] = {}
    for name, value in data.items():
        if name not in rules:
            raise PackConfigError(f"{source}: '{name}' is no policy of this pack; name one of {', '.join(rules)}")
        props = dict(value) if isinstance(value, dict) else {}
        level = value if isinstance(value, str) else str(props.pop("enforcementLevel", ""))
        if not isinstance(value, (str, dict)) or level not in LEVELS:
            # An object without one would reach the analyzer with the protocol's default level.
            raise PackConfigError(f"{source}: '{name}' needs an enforcement level ({', '.join(LEVELS)}), "
                                  "alone or as the enforcementLevel of an object of its properties")
        allowed = (rules[name].config_schema or {}).get("properties") or {}
        for key, prop in props.items():
            if key not in allowed:
                raise PackConfigError(f"{source}: '{name}' takes no property '{key}'"
                                      + (f"; it takes {', '.join(allowed)}" if allowed else ""))
            if not (isinstance(prop, list) and all(isinstance(x, str) for x in prop)):
                raise PackConfigError(f"{source}: '{name}.{key}' must be a list of names")
        parsed[name] = (level, props)
    return parsed


def pack_config(stack: str, root: Path | None = None) -> dict[str, tuple[str, dict]]:
    """The stack's policy pack config (policy/config/<stack>.json), {} when it has none."""
    path = (root / "policy" / "config" if root else CONFIG_DIR) / f"{stack}.json"
    return parse_pack_config(path.read_text(), f"policy/config/{path.name}") if path.is_file() else {}


def level_of(rule: Rule, pack_config: dict[str, tuple[str, dict]] | None) -> tuple[str, dict]:
    """The rule's level and properties as pulumi-policy's analyzer resolves them: the config's
    level, else the rule's own (advisory) or the pack's (mandatory). remediate blocks like
    mandatory (the analyzer reports a remaining violation so; no rule here remediates)."""
    own, config = (pack_config or {}).get(rule.name, (None, {}))
    level = own or ("advisory" if rule.advisory else "mandatory")
    return ("mandatory" if level == "remediate" else level), config
