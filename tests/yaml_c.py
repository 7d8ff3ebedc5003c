"""YAML for the tests through libyaml (PyYAML's C loader and emitter): the same documents as
yaml.safe_load/safe_dump, several times faster; the tests read and write a few thousand
rendered objects a run. Falls back to the pure-Python ones where PyYAML was built without it."""

from __future__ import annotations

from typing import Any, Iterator

import yaml

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def load_all(text: str) -> Iterator[Any]:
    return yaml.load_all(text, Loader=_Loader)


def dump(doc: Any, **kw: Any) -> str:
    return yaml.dump(doc, Dumper=_Dumper, **kw)
