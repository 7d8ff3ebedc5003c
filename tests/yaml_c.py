"""YAML for the tests through libyaml (PyYAML's C loader and emitter): the same documents as
yaml.safe_load/safe_dump, several times faster; the tests read and write a few thousand
rendered objects a run. Falls back to the pure-Python ones where PyYAML was built without it."""

from __future__ import annotations

from typing import Any, Iterator

import yaml

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def load(text: str) -> Any:
    return yaml.load(text, Loader=Loader)


def load_all(text: str) -> Iterator[Any]:
    return yaml.load_all(text, Loader=Loader)


def dump(doc: Any, **kw: Any) -> str:
    return yaml.dump(doc, Dumper=Dumper, **kw)
