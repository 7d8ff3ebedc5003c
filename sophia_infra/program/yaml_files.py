"""Reading the project's YAML files (stack files, ESC definitions, release files) safely:
bounded size, aliases and depth, no key given twice, and every syntax problem as
`file:line:column: what`. The program reads release files with it; the offline plan reads
stack and ESC files with it (sophia_infra.tools.plan.stack_config)."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Optional

import yaml
from yaml.composer import ComposerError

# Bounds of what a stack or ESC file may ask of the reader, so that an alias bomb ("billion
# laughs"), a self-referencing anchor or a deeply nested document fails at once, in bounded
# memory, instead of exhausting it later (json.dumps and the ESC evaluation expand aliases).
# Real files are a few kB with no or a handful of `<<: *defaults`.
MAX_FILE_BYTES = 1024 * 1024
MAX_ALIASES = 100           # `*name` uses per file
MAX_ALIASED_VALUES = 10_000  # values the aliases of one file stand for, all together
MAX_DEPTH = 64              # nesting of mappings and lists


class StackFileError(Exception):
    """A stack or ESC file that cannot be read; the message says which and why."""


class StackFileSyntaxError(StackFileError):
    """A file that is not valid YAML; the message is `file:line:column: what`."""


class _OneKeyOnce(yaml.constructor.SafeConstructor):
    """Refuses a key given twice in one mapping (the Pulumi CLI does too)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:
                continue  # an unhashable key: SafeLoader reports it
            if first is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    None, None, f"'{key}' is given twice (first on line {first.line + 1}); keep one", key_node.start_mark)
        return super().construct_mapping(node, deep)


class _StrictLoader(_OneKeyOnce, yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping, an alias of a node that
    contains it, and aliases, alias expansion or nesting beyond the bounds."""

    def __init__(self, stream):
        super().__init__(stream)
        self._open_anchors: set[str] = set()  # anchors of the nodes being composed
        self._sizes: dict[int, int] = {}       # id(node) -> values it stands for, aliases expanded
        self._aliases = 0
        self._aliased_values = 0
        self._depth = 0

    def fetch_flow_collection_start(self, TokenClass):
        # The scanner reads ahead of the composer (a `[` or `{` may start a key, decided up to
        # 1,024 characters later), one pass over the open levels per token: `[[[[…` thousands
        # deep cost seconds before compose_node saw depth 65. Refused here, at the same `[` and
        # with the same words: the open block collections (indents) and flow levels are the depth.
        if len(self.indents) + self.flow_level + 1 > MAX_DEPTH:
            raise ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep; flatten the value", self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self._check_alias(event)
            return super().compose_node(parent, index)
        anchor = getattr(event, "anchor", None)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise ComposerError(
                None, None, f"nested more than {MAX_DEPTH} levels deep; flatten the value", event.start_mark)
        if anchor is not None:
            self._open_anchors.add(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open_anchors.discard(anchor)
        children = node.value if isinstance(node, yaml.SequenceNode) else (
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
        self._sizes[id(node)] = 1 + sum(self._sizes.get(id(c), 1) for c in children)
        return node

    def _check_alias(self, event: yaml.AliasEvent) -> None:
        name = event.anchor
        if name in self._open_anchors:
            raise ComposerError(
                None, None, f"the alias *{name} is inside the value it names (a structure that contains itself); "
                "write the value out", event.start_mark)
        target = self.anchors.get(name)
        if target is None:
            return  # SafeLoader reports the undefined alias
        self._aliases += 1
        if self._aliases > MAX_ALIASES:
            raise ComposerError(
                None, None, f"more than {MAX_ALIASES} aliases in one file (*{name}); write the values out", event.start_mark)
        self._aliased_values += self._sizes.get(id(target), 1)
        if self._aliased_values > MAX_ALIASED_VALUES:
            raise ComposerError(
                None, None, f"the alias *{name} brings the values that aliases stand for above {MAX_ALIASED_VALUES} "
                "(an alias bomb); write the values out or alias less", event.start_mark)

_LIBYAML = getattr(yaml, "CSafeLoader", None)


if _LIBYAML is not None:
    class _FastLoader(_OneKeyOnce, _LIBYAML):  # type: ignore[misc, valid-type]
        """libyaml's SafeLoader (about 6x faster), for files the bounds have nothing to say about."""


def _plain_and_shallow(text: str) -> bool:
    """True when the file has no alias and nests at most MAX_DEPTH deep: libyaml's event stream
    (a state machine, no recursion) tells, before its recursive composer may see the file."""
    assert _LIBYAML is not None
    depth = 0
    for event in yaml.parse(text, Loader=_LIBYAML):
        kind = type(event)
        if kind is yaml.AliasEvent:
            return False
        if kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            depth -= 1
    return True


def _load(text: str):
    """The document in `text`, parsed once per distinct text (the tests and the plan read the
    same stack and ESC files hundreds of times a run); a copy each time, so a caller's changes
    stay its own."""
    return copy.deepcopy(_parse(text))


@functools.lru_cache(maxsize=64)
def _parse(text: str):
    """The document in `text`. Files without aliases and within MAX_DEPTH (every real one) load
    with libyaml; the rest, and any file libyaml finds a problem in, with _StrictLoader, which
    enforces the bounds and words every problem the same way."""
    if _LIBYAML is not None:
        try:
            if _plain_and_shallow(text):
                return yaml.load(text, Loader=_FastLoader)
        except yaml.YAMLError:
            pass  # _StrictLoader names the problem, with its position
    return yaml.load(text, Loader=_StrictLoader)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _yaml_problem(err: yaml.YAMLError) -> tuple[Optional[yaml.Mark], str]:
    """Where and what, in one line: PyYAML's problem, with its context's position."""
    if not isinstance(err, yaml.MarkedYAMLError):
        return None, str(err).replace("\n", " ")
    what = err.problem or err.context or "not valid YAML"
    if err.context and err.context.startswith("found duplicate anchor") and err.context_mark is not None:
        anchor = err.context.split("'")[1] if "'" in err.context else "?"
        return err.problem_mark, (f"the anchor &{anchor} is defined twice (first on line {err.context_mark.line + 1}); "
                                  "rename one")
    if "'\\t'" in what or "\t" in what:
        what += "; indent with spaces, not tabs"
    mark = err.problem_mark or err.context_mark
    ctx = err.context_mark
    if err.context and ctx is not None and mark is not None and (ctx.line, ctx.column) != (mark.line, mark.column):
        what += f" ({err.context} that starts at line {ctx.line + 1}, column {ctx.column + 1})"
    return mark, what


def _read_yaml(path: Path) -> dict:
    """A stack or ESC file as a mapping; any syntax problem as `file:line:column: what`."""
    if not path.exists():
        raise StackFileError(f"{path.name} does not exist")
    name = _display(path)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise StackFileSyntaxError(f"{name}:1:1: the file has {size} bytes, more than a stack or ESC file may "
                                   f"({MAX_FILE_BYTES}); is it the right file?")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise StackFileSyntaxError(f"{name}:{line}:{column}: byte 0x{data[err.start]:02x} is not UTF-8; save the file as UTF-8") from None
    try:
        loaded = _load(text) or {}
    except yaml.YAMLError as err:
        mark, what = _yaml_problem(err)
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else name
        raise StackFileSyntaxError(f"{where}: {what}") from None
    if not isinstance(loaded, dict):
        raise StackFileSyntaxError(f"{name}:1:1: the file is not a YAML mapping; write `key: value` at the top level")
    return loaded
