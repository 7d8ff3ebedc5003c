"""Shared test helpers: the stacks' real configuration, and ways to break it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from sophia_infra import config
from sophia_infra.plan import stack_config

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
STACKS = ("dev", "production")


def raw_stack(stack: str) -> tuple[dict[str, Any], set[str]]:
    """(top-level key -> value, secret keys) exactly as the program would read them."""
    values, secret_keys = stack_config.load(stack)
    raw = {}
    for key, structured in config.TOP_LEVEL_KEYS.items():
        text = values.get(f"{config.NAMESPACE}:{key}")
        raw[key] = json.loads(text) if (text is not None and structured) else text
    secrets = {k.split(":", 1)[1] for k in secret_keys}
    return raw, secrets


def parse_with(stack: str, change: Callable[[dict], None] | None = None,
               drop_secrets: tuple[str, ...] = (), plain_secrets: tuple[str, ...] = ()) -> config.StackConfig:
    raw, secrets = raw_stack(stack)
    raw = copy.deepcopy(raw)
    if change:
        change(raw)

    def lookup(key: str):
        if key in drop_secrets or key not in secrets and key not in plain_secrets:
            return None
        return key not in plain_secrets

    return config.parse(raw, lookup)


def problems_of(stack: str, change: Callable[[dict], None] | None = None, **kw) -> list[str]:
    with pytest.raises(config.ConfigError) as err:
        parse_with(stack, change, **kw)
    return err.value.problems


@pytest.fixture(params=STACKS)
def stack(request) -> str:
    return request.param
