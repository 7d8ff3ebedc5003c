"""Hostile strings in the values of charts/sophia-service: refused by values.schema.json, or
rendered as exactly that string, never as extra YAML.

Every value the templates read is covered: the values below switch every optional part of the
chart on, each of their leaves (and each key of a free-form map) in turn gets every payload,
and a reference to `.Values` in a template that no leaf covers fails the suite. Each payload is
either refused by helm's schema validation at that value, or the rendered objects are the
baseline's with exactly the payload in place of the value (no extra key, no lost one). Then the
same payload with `--skip-schema-validation` shows the templates alone quote (strings) or cast
(numbers) it: the schema is not the only guard.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator

import jsonschema
import pytest

from sophia_infra.program.services.values import CHART_DIR
from tests import helm_cache
from tests import yaml_c

HELM = shutil.which("helm")
needs_helm = pytest.mark.skipif(HELM is None, reason="helm is not on PATH (make test puts .tools/bin on PATH; scripts/install-tools.sh installs it)")
SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())
TEMPLATES = CHART_DIR / "templates"
RELEASE, NAMESPACE = "rel", "sophia-apps"
SCHEMA_REFUSED = "values don't meet the specifications of the schema"

# Every optional part on, so that every line of every template that interpolates a value renders.
BASE: dict[str, Any] = {
    "name": "svc-name",
    "kind": "app",
    "image": {"repository": "registry.example.com/sophia/app", "tag": "1.2.3", "pullPolicy": "IfNotPresent",
              "digest": "sha256:" + "fedcba9876543210" * 4},
    "imagePullSecrets": ["registry-credentials"],
    "replicas": 2,
    "autoscaling": {"maxReplicas": 4, "targetCPUUtilizationPercentage": 70},
    "port": 8080,
    "healthPath": "/health",
    "gpu": 1,
    "placement": {"gpuType": "A100", "architectures": ["amd64"]},
    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
    "env": {"secretName": "svc-secrets", "configMapNames": ["mcp-registry"], "vars": {"PORT": "8080"}},
    "securityContext": {"runAsUser": 10001, "runAsGroup": 10002, "fsGroup": 10003},
    "networkPolicy": {"enabled": True, "monitoringNamespace": "monitoring",
                      "allowFrom": [{"namespace": "sophia-apps", "podLabels": {"app.kubernetes.io/name": "frontend"}}]},
    "metrics": {"enabled": True, "path": "/metrics", "interval": "30s"},
    "ingress": {"enabled": True, "className": "nginx", "host": "app.example.com", "path": "/", "tlsSecretName": "app-tls"},
    "podAnnotations": {"example.com/owner": "platform"},
}
# The other branches of the templates: a digest instead of a tag, node affinity for two
# architectures instead of a nodeSelector. Only the leaves a variant changes or adds run on it.
VARIANTS: dict[str, dict[str, Any]] = {"base": BASE}
_digest = copy.deepcopy(BASE)
_digest["image"]["tag"] = "sha256:" + "0123456789abcdef" * 4
_digest["placement"]["architectures"] = ["amd64", "arm64"]
VARIANTS["digest-two-archs"] = _digest

# {v} is the value (or key) being replaced.
PAYLOADS = {
    "trailing-newline": "{v}\n",                                     # what `re.match('^...$')` lets through
    "newline-nested-key": "{v}\n  host: 169.254.169.254",            # a key added to the enclosing mapping (a probe's host)
    "newline-top-level-key": "{v}\ndefaultBackend: {{service: {{name: x}}}}",  # a key added further out (the Ingress)
    "colon-hash-quote": '{v}: x # "y',                                 # YAML syntax without a newline
}
# Without the schema, one payload with every hazard at once per value.
EVERY_HAZARD = "every-hazard"
ALL_PAYLOADS = {**PAYLOADS, EVERY_HAZARD: '{v}\n  host: 169.254.169.254\ndefaultBackend: {{service: {{name: x}}}} # "y": z'}

Path = tuple  # of str (mapping keys) and int (list indices)


@dataclass(frozen=True)
class Case:
    variant: str
    path: Path
    key: bool       # True: the payload replaces the map key at `path`, not its value
    payload: str    # a name in PAYLOADS

    @property
    def id(self) -> str:
        where = _dotted(self.path) + ("{key}" if self.key else "")
        return f"{self.variant}:{where}:{self.payload}"


def _dotted(path: Path) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(path))


def _resolve(schema: Any) -> Any:
    while isinstance(schema, dict) and "$ref" in schema:
        schema = SCHEMA["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _child_schema(schema: Any, step: str | int) -> Any:
    schema = _resolve(schema)
    if isinstance(step, int):
        return schema.get("items", {})
    return schema.get("properties", {}).get(step) or schema.get("additionalProperties") or {}


def _is_free_map(schema: Any) -> bool:
    """A map whose keys the user chooses (env vars, labels, annotations): its keys are input too."""
    schema = _resolve(schema)
    return not schema.get("properties") and isinstance(schema.get("additionalProperties"), dict)


def leaves(values: Any, schema: Any = SCHEMA, path: Path = ()) -> Iterator[tuple[Path, bool]]:
    """(path, is_key) of every scalar, and of every key of a free-form map, in the values."""
    if isinstance(values, dict):
        free = _is_free_map(schema)
        for k, v in values.items():
            if free:
                yield path + (k,), True
            yield from leaves(v, _child_schema(schema, k), path + (k,))
    elif isinstance(values, list):
        for i, v in enumerate(values):
            yield from leaves(v, _child_schema(schema, i), path + (i,))
    else:
        yield path, False


def _get(values: Any, path: Path) -> Any:
    for step in path:
        values = values[step]
    return values


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def inject(case: Case) -> tuple[dict, str, str]:
    """(values with the payload in place, the payload, the text it replaced)."""
    values = copy.deepcopy(VARIANTS[case.variant])
    parent = _get(values, case.path[:-1])
    last = case.path[-1]
    original = last if case.key else _text(parent[last])
    payload = ALL_PAYLOADS[case.payload].format(v=original)
    if case.key:
        parent[payload] = parent.pop(last)
    else:
        parent[last] = payload
    return values, payload, original


def _leaves() -> list[tuple[str, Path, bool]]:
    out, seen = [], {}
    for variant, values in VARIANTS.items():
        for path, key in leaves(values):
            if variant != "base" and seen.get((path, key), object()) == _get(values, path):
                continue  # unchanged from the base: judged there
            if variant == "base":
                seen[(path, key)] = _get(values, path)
            out.append((variant, path, key))
    return out


LEAVES = _leaves()
CASES = [Case(variant, path, key, p) for variant, path, key in LEAVES for p in PAYLOADS]
UNCHECKED = [Case(variant, path, key, EVERY_HAZARD) for variant, path, key in LEAVES]


# ----------------------------------------------------------------------------- helm

def helm_template(values: dict, skip_schema: bool = False) -> subprocess.CompletedProcess:
    """`helm template` of the chart with these values (answered from the render cache when the
    chart, the values and helm are as in an earlier run: tests/helm_cache.py)."""
    assert HELM is not None
    args = ["template", RELEASE, helm_cache.CHART, "--namespace", NAMESPACE, "-f", helm_cache.VALUES]
    if skip_schema:
        args.append("--skip-schema-validation")
    return helm_cache.run(HELM, args, CHART_DIR, values, timeout=60)


def documents(text: str) -> list[dict]:
    return [d for d in yaml_c.load_all(text) if d]


@lru_cache(maxsize=None)
def baseline(variant: str) -> list[dict]:
    proc = helm_template(VARIANTS[variant])
    assert proc.returncode == 0, proc.stderr
    return documents(proc.stdout)


@lru_cache(maxsize=None)
def outcomes() -> dict[Case, subprocess.CompletedProcess]:
    """Every case rendered once, in parallel: CASES with the schema, UNCHECKED without it."""
    def one(case: Case) -> tuple[Case, subprocess.CompletedProcess]:
        return case, helm_template(inject(case)[0], skip_schema=case.payload == EVERY_HAZARD)

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return dict(pool.map(one, CASES + UNCHECKED))


@lru_cache(maxsize=None)
def harmless(variant: str, path: Path) -> list[dict]:
    """The objects without the schema when a number or flag is a plain string ("0" for numbers)."""
    values = copy.deepcopy(VARIANTS[variant])
    parent = _get(values, path[:-1])
    parent[path[-1]] = "yes" if isinstance(parent[path[-1]], bool) else "0"
    proc = helm_template(values, skip_schema=True)
    assert proc.returncode == 0, proc.stderr
    return documents(proc.stdout)


def _trim(text: str, length: int) -> str:
    text = text[:length]
    return text[:-1] if text.endswith("-") else text


# What _helpers.tpl makes of a value before quoting it: the name (trunc 53 | trimSuffix "-")
# and the app.kubernetes.io/version label of image.tag (replace ":" "-" | trunc 63 | trimSuffix "-").
FORMS = (lambda t: t, lambda t: _trim(t, 53), lambda t: _trim(t.replace(":", "-"), 63))


def restore(node: Any, payload: str, original: str) -> Any:
    """The rendered objects with the payload (and its forms) put back to the original text."""
    swaps = sorted({form(payload): form(original) for form in FORMS}.items(), key=lambda kv: -len(kv[0]))

    def text(s: str) -> str:
        for a, b in swaps:
            if a and a != b:
                s = s.replace(a, b)
        return s

    if isinstance(node, dict):
        return {(text(k) if isinstance(k, str) else k): restore(v, payload, original) for k, v in node.items()}
    if isinstance(node, list):
        return [restore(v, payload, original) for v in node]
    return text(node) if isinstance(node, str) else node


def occurs(node: Any, payload: str) -> bool:
    if isinstance(node, dict):
        return any(k == payload or occurs(v, payload) for k, v in node.items())
    if isinstance(node, list):
        return any(occurs(v, payload) for v in node)
    return isinstance(node, str) and payload in node


def assert_exactly_in_place(text: str, case: Case) -> None:
    _, payload, original = inject(case)
    docs = documents(text)
    assert restore(docs, payload, original) == baseline(case.variant), \
        f"{case.id}: the rendered objects differ from the baseline by more than the value itself"
    assert any(occurs(docs, form(payload)) for form in FORMS), f"{case.id}: the value does not appear in the rendered objects"


def _pointer(path: Path) -> str:
    """JSON pointer (RFC 6901), as helm names the value it refuses."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


# ----------------------------------------------------------------------------- coverage

_VALUES_REF = re.compile(r"\.Values((?:\.[A-Za-z0-9_]+)+)")
_ASSIGN = re.compile(r"\$([A-Za-z0-9_]+)\s*:?=\s*\.Values((?:\.[A-Za-z0-9_]+)+)")


def template_references() -> set[str]:
    """Dotted value paths the templates read, `$x := .Values.y` variables resolved."""
    refs: set[str] = set()
    for tpl in sorted(TEMPLATES.iterdir()):
        text = tpl.read_text()
        refs |= {m.group(1).lstrip(".") for m in _VALUES_REF.finditer(text)}
        for var, target in _ASSIGN.findall(text):
            refs |= {target.lstrip(".") + m.group(1)
                     for m in re.finditer(rf"\${var}((?:\.[A-Za-z0-9_]+)+)", text)}
    return refs


def test_every_value_the_templates_read_is_covered():
    covered = {_dotted(c.path) for c in CASES}
    missing = sorted(ref for ref in template_references()
                     if not any(leaf == ref or leaf.startswith((ref + ".", ref + "[")) for leaf in covered))
    assert not missing, (f"templates read {missing}, which no injection case covers: add them to BASE "
                         "(or a VARIANT) in tests/test_chart_injection.py")
    # The reader of the templates finds what it should (it is what the check above rests on).
    assert {"healthPath", "metrics.path", "ingress.className", "networkPolicy.allowFrom", "env.vars"} <= template_references()


def test_every_payload_meets_every_leaf_and_free_key():
    leaves_base = set(leaves(BASE))
    assert (("env", "vars", "PORT"), True) in leaves_base and (("podAnnotations", "example.com/owner"), True) in leaves_base
    assert (("networkPolicy", "allowFrom", 0, "podLabels", "app.kubernetes.io/name"), True) in leaves_base
    assert (("image", "repository"), True) not in leaves_base  # fixed keys: additionalProperties is false
    assert len([c for c in CASES if c.variant == "base"]) == len(PAYLOADS) * len(leaves_base)
    # The variant adds the digest tag and the second architecture (the `range` of the affinity).
    assert {(c.path, c.key) for c in CASES if c.variant != "base"} == {
        (("image", "tag"), False), (("placement", "architectures", 1), False)}


@pytest.mark.parametrize("variant", VARIANTS)
def test_base_values_are_valid(variant):
    jsonschema.validate(VARIANTS[variant], SCHEMA)


@needs_helm
@pytest.mark.parametrize("variant", VARIANTS)
def test_base_values_render_every_template(variant):
    proc = helm_template(VARIANTS[variant])
    assert proc.returncode == 0, proc.stderr
    rendered = set(re.findall(r"^# Source: sophia-service/templates/(\S+)$", proc.stdout, re.M))
    assert rendered == {p.name for p in TEMPLATES.glob("*.yaml")}
    assert HELM is not None
    lint = helm_cache.run(HELM, ["lint", "--strict", helm_cache.CHART, "--namespace", NAMESPACE, "-f", helm_cache.VALUES],
                          CHART_DIR, VARIANTS[variant], timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr


# ----------------------------------------------------------------------------- the cases

@needs_helm
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_hostile_value_is_refused_or_rendered_exactly(case):
    out = outcomes()[case]
    if out.returncode:
        assert SCHEMA_REFUSED in out.stderr, f"{case.id}: helm failed, but not in the schema:\n{out.stderr}"
        where = "invalid propertyName" if case.key else f"at '{_pointer(case.path)}'"
        assert where in out.stderr, f"{case.id}: refused, but not at the value:\n{out.stderr}"
    else:
        assert_exactly_in_place(out.stdout, case)


@needs_helm
@pytest.mark.parametrize("case", UNCHECKED, ids=lambda c: c.id)
def test_templates_quote_or_cast_without_the_schema(case):
    out = outcomes()[case]
    assert out.returncode == 0, f"{case.id}: the templates break on the value:\n{out.stderr}"
    if case.key or isinstance(_get(VARIANTS[case.variant], case.path), str):
        assert_exactly_in_place(out.stdout, case)
    else:
        # A number or a flag: `| int` makes any string a number (0), `if` finds it true; so the
        # payload must render exactly as a string without YAML in it would, key for key.
        assert documents(out.stdout) == harmless(case.variant, case.path), \
            f"{case.id}: the value changed the objects beyond what a plain string does"


@needs_helm
def test_python_jsonschema_agrees_with_helm():
    """The tests (and any Python caller) validate with jsonschema, where `$` also matches before a
    final newline: the schema's one-line rule makes both refuse the same values."""
    validator = jsonschema.Draft202012Validator(SCHEMA)
    disagree = [case.id for case in CASES
                if validator.is_valid(inject(case)[0]) != (outcomes()[case].returncode == 0)]
    assert not disagree


def test_a_pattern_alone_lets_a_trailing_newline_through_in_python():
    """Why the schema has #/$defs/oneLineValues beside its patterns."""
    path_only = {k: v for k, v in SCHEMA["$defs"]["httpPath"].items()}
    assert jsonschema.Draft202012Validator(path_only).is_valid("/health\n")
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid({**BASE, "healthPath": "/health\n"})


@needs_helm
@pytest.mark.parametrize("value", ["/health\n", "/health\r\n  host: x", "/health\u2028  host: x", "/health\x85x", "/he\x00alth"])
def test_helm_refuses_line_breaks_of_every_kind(value):
    proc = helm_template({**BASE, "healthPath": value})
    assert proc.returncode != 0 and "at '/healthPath'" in proc.stderr, proc.stderr


@needs_helm
@pytest.mark.parametrize("field,value", [
    ("healthPath", "/healthz"), ("healthPath", "/api/v1/health"), ("healthPath", "/-/ready"),
    ("metrics.interval", "1m30s"), ("metrics.interval", "500ms"), ("ingress.className", "nginx-internal"),
    ("ingress.host", "app.sophia.example.com"), ("image.repository", "registry.example.com:5000/team/app"),
    ("image.repository", "Registry.Example.com/team/my__app--x"), ("image.repository", "ghcr.io/sophia-ai/mcp.slack"),
    ("healthPath", "/status;full=1"), ("podAnnotations", {"example.com/config": '{"a": "b: c # d"}'}),
])
def test_ordinary_values_still_pass(field, value):
    values = copy.deepcopy(BASE)
    *parents, last = field.split(".")
    _get(values, tuple(parents))[last] = value
    proc = helm_template(values)
    assert proc.returncode == 0, proc.stderr


@needs_helm
@pytest.mark.parametrize("field,value", [
    ("ingress.path", "/app;"),              # ';' ends an NGINX directive
    ("healthPath", "/health?full=1"),       # a query is not a path
    ("healthPath", "health"),               # not absolute
    ("image.repository", "registry.example.com/Team/app"),  # upper case only in the registry host
    ("metrics.interval", "30"),             # no unit
    ("ingress.className", "Nginx_Class"),   # not an IngressClass name
])
def test_values_outside_what_the_consumers_accept_are_refused(field, value):
    values = copy.deepcopy(BASE)
    *parents, last = field.split(".")
    _get(values, tuple(parents))[last] = value
    proc = helm_template(values)
    assert proc.returncode != 0 and f"at '/{field.replace('.', '/')}'" in proc.stderr, proc.stderr
