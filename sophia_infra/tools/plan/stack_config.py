"""A stack's configuration as the Pulumi CLI would hand it to the program, offline.

The engine merges the ESC environment's `values.pulumiConfig` with the stack file's
`config:` (the stack file wins) and passes every value as a string, objects as JSON.
Offline, the ESC environment is the placeholder definition in `esc/`; this module
evaluates the small part of ESC those files use: `${path}` references and `fn::secret`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from sophia_infra.program.yaml_files import (MAX_ALIASED_VALUES, MAX_ALIASES, MAX_DEPTH, MAX_FILE_BYTES,  # noqa: F401
                                            StackFileError, StackFileSyntaxError, _display, _read_yaml,
                                            _StrictLoader, _yaml_problem)

ROOT = Path(__file__).resolve().parents[3]
_REF = re.compile(r"\$\{([A-Za-z0-9_.-]+)\}")

@dataclass(frozen=True)
class Secret:
    value: Any


def _lookup(values: dict, path: str, source: str) -> Any:
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise StackFileError(f"{source}: ${{{path}}} refers to a value the environment does not define")
        node = node[part]
    return node


def _evaluate(node: Any, values: dict, source: str) -> Any:
    """Resolve fn::secret and ${...}; a value that touches a secret becomes a Secret."""
    if isinstance(node, dict):
        if set(node) == {"fn::secret"}:
            inner = _evaluate(node["fn::secret"], values, source)
            return inner if isinstance(inner, Secret) else Secret(inner)
        out = {k: _evaluate(v, values, source) for k, v in node.items()}
        if any(isinstance(v, Secret) for v in out.values()):
            return Secret({k: _unwrap(v) for k, v in out.items()})
        return out
    if isinstance(node, list):
        items = [_evaluate(v, values, source) for v in node]
        if any(isinstance(v, Secret) for v in items):
            return Secret([_unwrap(v) for v in items])
        return items
    if isinstance(node, str):
        whole = _REF.fullmatch(node)
        if whole:
            return _evaluate(_lookup(values, whole.group(1), source), values, source)
        secret = False

        def sub(m: re.Match) -> str:
            nonlocal secret
            v = _evaluate(_lookup(values, m.group(1), source), values, source)
            secret = secret or isinstance(v, Secret)
            return str(_unwrap(v))

        text = _REF.sub(sub, node)
        return Secret(text) if secret else text
    return node


def _unwrap(v: Any) -> Any:
    return v.value if isinstance(v, Secret) else v


def esc_pulumi_config(env_file: Path) -> dict[str, Any]:
    """The `values.pulumiConfig` of an ESC environment definition, evaluated."""
    values = _read_yaml(env_file).get("values") or {}
    # Each key is evaluated on its own: a secret anywhere in a value makes that key secret.
    return {k: _evaluate(v, values, env_file.name) for k, v in (values.get("pulumiConfig") or {}).items()}


def known_stacks(root: Path = ROOT) -> list[str]:
    """The stacks this project defines: one Pulumi.<stack>.yaml each."""
    return sorted(p.name[len("Pulumi."):-len(".yaml")] for p in root.glob("Pulumi.*.yaml"))


def require_stack(stack: str, root: Path = ROOT) -> None:
    """A StackFileError naming the valid stacks, unless `stack` has a stack file."""
    if not (root / f"Pulumi.{stack}.yaml").is_file():
        known = known_stacks(root)
        choice = f"use one of {', '.join(known)}" if known else f"create Pulumi.{stack}.yaml"
        raise StackFileError(f"there is no stack '{stack}' (Pulumi.{stack}.yaml does not exist); {choice}")


def load(stack: str, root: Path = ROOT) -> tuple[dict[str, str], list[str]]:
    """(config key -> string value as the engine passes it, secret keys) for a stack."""
    require_stack(stack, root)
    stack_file = root / f"Pulumi.{stack}.yaml"
    data = _read_yaml(stack_file)
    merged: dict[str, Any] = {}
    for env in data.get("environment") or []:
        project_env = env.split("/")[-1]
        merged.update(esc_pulumi_config(root / "esc" / f"sophia-ai-{project_env}.yaml"))
    for key, value in (data.get("config") or {}).items():
        if isinstance(value, dict) and "secure" in value:
            raise StackFileError(f"{stack_file.name}: {key} is encrypted with the stack's key; keep secrets in ESC so the offline plan can use placeholders")
        merged[key] = value

    config, secret_keys = {}, []
    for key, value in merged.items():
        if isinstance(value, Secret):
            secret_keys.append(key)
            value = value.value
        config[key] = value if isinstance(value, str) else json.dumps(value)
    return config, secret_keys


def raw_config(stack: str, root: Path = ROOT) -> tuple[dict[str, Any], dict[str, bool]]:
    """(top-level key -> value as the schema reads it, secret key -> is it marked secret)."""
    return _schema_view(*load(stack, root))


def _schema_view(values: dict[str, str], secret_keys: list[str]) -> tuple[dict[str, Any], dict[str, bool]]:
    from sophia_infra.program.config import stack as schema

    raw: dict[str, Any] = {}
    for key, structured in schema.TOP_LEVEL_KEYS.items():
        text = values.get(f"{schema.NAMESPACE}:{key}")
        raw[key] = json.loads(text) if (text is not None and structured) else text
    prefix = f"{schema.NAMESPACE}:"
    present = {k[len(prefix):]: k in secret_keys for k in values if k.startswith(prefix)}
    for key, is_secret in present.items():
        if key not in raw and not is_secret:
            raw[key] = values[prefix + key]  # not in the schema: parse names it
    return raw, present


def load_validated(stack: str, root: Path = ROOT):
    """The stack's validated StackConfig, offline (placeholder secrets count as present)."""
    from sophia_infra.program.config import stack as schema

    values, secret_keys = load(stack, root)
    raw, present = _schema_view(values, secret_keys)
    others = [k for k in values if not k.startswith(f"{schema.NAMESPACE}:")]
    cfg = schema.parse(raw, present.get, other_keys=others)
    problems = schema.check_stack_name(cfg, stack)
    if problems:
        raise schema.ConfigError(problems)
    return cfg
