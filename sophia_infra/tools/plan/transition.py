"""What `pulumi up` would do to go from one plan to another: `plan --against OLD/plan.json`.

Pure: two plan documents (report.plan_document) in, the steps out, one per resource, in the order
the engine runs them. The engine's rules modelled here, from pulumi/pulumi
`pkg/resource/deploy/step_generator.go` (v3.272) unless said otherwise:

- a resource only in the new plan is created; one only in the old plan is deleted, after every
  create and update, in reverse dependency order (`GenerateDeletes`, `ScheduleDeletes`);
- otherwise its provider's Diff decides (provider_rules.py), then the resource options:
  `ignoreChanges` drops keys before the diff, `replaceOnChanges` turns a change at a matching
  path into a replacement (`diff`/`applyReplaceOnChanges`), a replaced provider replaces every
  resource on it;
- a replacement is create-before-delete (the old object deleted at the end, `delete-replaced`)
  unless delete-before-replace: the resource option when it is set (`deleteBeforeReplaceDefined`,
  either way), the provider's wish otherwise. Before such a delete the engine deletes the
  dependents that must go too (`calculateDependentReplacements`): it walks the OLD state's
  dependents, sets each input whose property dependencies name a replaced resource to unknown and
  asks that resource's provider again; `depends_on` alone never replaces;
- under `pulumi preview` an input computed from a resource that is created or replaced in the
  same update is unknown: dependents are diffed with "[unknown]" there, as the preview diffs them;
- `protect` is read from the old state: a protected resource cannot be replaced or deleted
  (the update stops); `retainOnDelete` keeps the step but leaves the object in place.

Not modelled: the outputs of an *updated* resource are taken as unchanged (a preview may show
more unknowns), except the outputs a dynamic resource's provider fills in, which a preview does
not know (`_Engine._hide_filled_outputs`; plan.json records them as `outputs`); `pulumi
refresh` drift; the children a remote component (yaml/v2) or a Helm Release creates inside the
cluster (a Release's changes are one `helm upgrade`); parallelism: the order below is one valid
sequential order, and `waits_for` says what truly waits for what. docs/architecture.md ("The
transition preview") has the whole list.
"""

from __future__ import annotations

import copy
import heapq
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from sophia_infra.tools.plan import destructive, provider_rules
from sophia_infra.tools.plan.provider_rules import UNKNOWN

STACK_TYPE = "pulumi:pulumi:Stack"
OPS = ("create", "update", "replace", "delete", "same")


class TransitionError(Exception):
    """The two plans cannot be compared (one sentence)."""


class PreviewWouldFail(Exception):
    """A provider's diff fails on this transition, as it would under `pulumi preview` (one sentence)."""


def _ask(resource: dict[str, Any], old_inputs: dict[str, Any], new_inputs: dict[str, Any],
         provider_inputs: dict[str, Any], custom: bool = True) -> provider_rules.Diff:
    try:
        return provider_rules.diff(resource["type"], custom, _resource_id(resource), old_inputs, new_inputs,
                                   provider_inputs)
    except provider_rules.dynamic_diff.DynamicDiffError as err:
        raise PreviewWouldFail(f"pulumi preview would stop at {resource['name']}: its provider's diff fails "
                               f"({err})") from None


@dataclass
class Step:
    urn: str
    type: str
    name: str
    op: str
    delete_before_replace: bool = False
    keys: list[str] = field(default_factory=list)
    destructive: bool = False
    why: str = ""
    protected: bool = False

    def document(self) -> dict[str, Any]:
        return {"urn": self.urn, "type": self.type, "name": self.name, "op": self.op,
                "deleteBeforeReplace": self.delete_before_replace, "keys": self.keys,
                "destructive": self.destructive, "why": self.why}


# ----------------------------------------------------------------------------- plan documents

def _unescape(part: str) -> str:
    return part.replace("~1", "/").replace("~0", "~")


def comparable_inputs(resource: dict[str, Any], fingerprints: bool = True) -> dict[str, Any]:
    """The inputs with each masked secret replaced by its fingerprint (mocks.fingerprint), so two
    plans compare secrets by value without holding them (`fingerprints=False`: left "[secret]",
    to compare with a plan written before fingerprints were recorded)."""
    inputs = copy.deepcopy(resource.get("inputs") or {})
    for pointer, fp in sorted((resource.get("secretFingerprints") or {}).items() if fingerprints else ()):
        parts = [_unescape(p) for p in pointer.split("/")[1:]]
        if not parts:
            continue
        node: Any = inputs
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        else:
            last = parts[-1]
            if isinstance(node, list) and last.isdigit() and int(last) < len(node):
                node[int(last)] = f"[secret {fp}]"
            elif isinstance(node, dict) and last in node:
                node[last] = f"[secret {fp}]"
    return inputs


def _provider_urn(reference: Optional[str]) -> Optional[str]:
    return reference.rsplit("::", 1)[0] if reference else None


def _waits(resource: dict[str, Any]) -> set[str]:
    """What a resource's step waits for: its dependencies, its provider and its parent."""
    deps = set(resource.get("dependencies") or [])
    for urns in (resource.get("propertyDependencies") or {}).values():
        deps |= set(urns)
    provider = _provider_urn(resource.get("provider"))
    if provider:
        deps.add(provider)
    if resource.get("parent"):
        deps.add(resource["parent"])
    return deps


def topological(resources: dict[str, dict[str, Any]]) -> list[str]:
    """URNs in dependency order (ties by URN, so the order is the same every time)."""
    waits = {u: _waits(r) & resources.keys() for u, r in resources.items()}
    dependents: dict[str, list[str]] = {u: [] for u in resources}
    for u, ws in waits.items():
        for w in ws:
            dependents[w].append(u)
    remaining = {u: len(ws) for u, ws in waits.items()}
    ready = [u for u, n in remaining.items() if n == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        u = heapq.heappop(ready)
        order.append(u)
        for d in dependents[u]:
            remaining[d] -= 1
            if remaining[d] == 0:
                heapq.heappush(ready, d)
    if len(order) != len(resources):
        raise TransitionError("the plan's dependencies form a cycle, which no engine could order")
    return order


def waits_for(doc: dict[str, Any], urn: str, other: str) -> bool:
    """Does `urn`'s step wait, directly or through others, for `other`'s (in this plan)?"""
    by_urn = {r["urn"]: r for r in doc["resources"]}
    seen, todo = set(), [urn]
    while todo:
        u = todo.pop()
        for w in _waits(by_urn.get(u, {})):
            if w == other:
                return True
            if w not in seen and w in by_urn:
                seen.add(w)
                todo.append(w)
    return False


# ----------------------------------------------------------------------------- engine rules

def _matches(pattern: str, key: str, old: Any, new: Any) -> bool:
    """replaceOnChanges: `key` or `key.*`/`key[*]` matches a change under `key`; `triggers[*]`
    matches a changed element, not a list that appears or disappears (sdk/go/common/resource
    `PropertyPath.Contains`)."""
    root = pattern.split("[", 1)[0].split(".", 1)[0]
    if root != key:
        return False
    if pattern == key or pattern == "*":
        return True
    return isinstance(old, (list, dict)) and (isinstance(new, (list, dict)) or new == UNKNOWN)


def _ignored(patterns: Iterable[str], key: str) -> bool:
    return any(p.split("[", 1)[0].split(".", 1)[0] == key for p in patterns)


def _unknown_inputs(resource: dict[str, Any], inputs: dict[str, Any], gone: set[str],
                    unknown_outputs: Optional[dict[str, list[Any]]] = None) -> tuple[dict[str, Any], list[str]]:
    """`inputs` with every key whose property dependencies name a resource in `gone` unknown, and
    every key that carries one of the `unknown_outputs` (urn -> output values a preview does not
    know) of a resource it depends on."""
    import json

    out, hit = dict(inputs), []
    for key, urns in (resource.get("propertyDependencies") or {}).items():
        if key not in out:
            continue
        text = None
        carried = False
        for u in set(urns) & (unknown_outputs or {}).keys():
            text = text if text is not None else json.dumps(out[key])
            carried = carried or any(json.dumps(v)[1:-1] in text for v in (unknown_outputs or {})[u])
        if gone.intersection(urns) or carried:
            out[key] = UNKNOWN
            hit.append(key)
    return out, hit


def _dbr(options: dict[str, Any], provider_wish: Optional[bool]) -> bool:
    """An explicit delete_before_replace wins both ways (the Python SDK sends
    deleteBeforeReplaceDefined); otherwise the provider's wish (step_generator.go)."""
    if options.get("deleteBeforeReplaceDefined") or options.get("deleteBeforeReplace"):
        return bool(options.get("deleteBeforeReplace"))
    return bool(provider_wish)


def _provider_inputs(doc_by_urn: dict[str, dict[str, Any]], resource: dict[str, Any]) -> dict[str, Any]:
    provider = doc_by_urn.get(_provider_urn(resource.get("provider")) or "")
    return comparable_inputs(provider) if provider else {}


def _resource_id(resource: dict[str, Any]) -> str:
    return f"{resource['name']}-id"


def _aliases(resource: dict[str, Any]) -> list[str]:
    return [a for a in (resource.get("options") or {}).get("aliases") or [] if isinstance(a, str)]


def compute(old_doc: dict[str, Any], new_doc: dict[str, Any]) -> "Transition":
    """The steps from `old_doc` to `new_doc`, one per resource, ordered by each one's first
    engine step, and the engine's steps themselves (`create-replacement`, `delete-replaced`, ...)
    in the order `pulumi up` runs them (the `sequence`; `--show-replacement-steps` names)."""
    if old_doc.get("stack") != new_doc.get("stack"):
        raise TransitionError(f"the old plan is of stack '{old_doc.get('stack')}' and the new one of "
                              f"'{new_doc.get('stack')}'; compare two plans of one stack")
    engine = _Engine(old_doc, new_doc)
    for urn in topological(engine.new):
        engine.register(urn)
    engine.delete_the_rest()
    return engine.result()


def _match(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> dict[str, str]:
    """New URN -> the old URN it continues (the same URN, or one of its aliases)."""
    matched = {}
    for urn, r in new.items():
        alias = urn if urn in old else next((a for a in _aliases(r) if a in old), None)
        if alias:
            matched[urn] = alias
    return matched


class _Engine:
    """The step generator's state through one update (step_generator.go)."""

    def __init__(self, old_doc: dict[str, Any], new_doc: dict[str, Any]):
        self.old = {r["urn"]: r for r in old_doc["resources"] if r["type"] != STACK_TYPE}
        self.new = {r["urn"]: r for r in new_doc["resources"] if r["type"] != STACK_TYPE}
        self.matched = _match(self.old, self.new)    # new urn -> old urn
        self.old_order = topological(self.old)
        self.steps: dict[str, Step] = {}
        self.sequence: list[tuple[str, str]] = []    # (engine op, new or old urn)
        self.unknown_from: set[str] = set()          # new URNs whose outputs a preview does not know yet
        self.unknown_outputs: dict[str, list[Any]] = {}  # updated dynamic resources: outputs a preview does not know
        self.replaced_old: set[str] = set()          # old URNs replaced
        self.dependents_dbr: dict[str, str] = {}     # old urn -> the delete-first replacement it goes with
        self.deleted_early: set[str] = set()         # old URNs deleted before their replacement's create

    # -- one registration

    def register(self, urn: str) -> None:
        r = self.new[urn]
        old_urn = self.matched.get(urn)
        if old_urn is None:
            self.steps[urn] = Step(urn, r["type"], r["name"], "create", why="new in this plan")
            self.unknown_from.add(urn)
            self.sequence.append(("create", urn))
            return
        o = self.old[old_urn]
        options = r.get("options") or {}
        old_inputs = comparable_inputs(o)
        new_inputs, unknown_keys = _unknown_inputs(r, comparable_inputs(r, "secretFingerprints" in o),
                                                   self.unknown_from, self.unknown_outputs)
        for key in list(new_inputs):
            if _ignored(options.get("ignoreChanges") or [], key):
                new_inputs[key] = old_inputs.get(key, new_inputs[key])
        d = _ask(o, old_inputs, new_inputs, _provider_inputs(self.new, r), bool(r.get("custom")))
        replaces, why = self._replacements(r, old_urn, d, old_inputs, new_inputs)
        if unknown_keys and (replaces or d.keys):
            why += f" ({', '.join(unknown_keys)} unknown until a replaced or new resource exists)"
        keys = sorted(set(d.keys) | set(k for k in replaces if k in old_inputs or k in new_inputs))
        if replaces:
            dbr = True if old_urn in self.dependents_dbr else _dbr(options, d.delete_before_replace)
            self.steps[urn] = Step(urn, r["type"], r["name"], "replace", dbr, keys, why=why.strip(),
                                   protected=bool((o.get("options") or {}).get("protect")))
            self.unknown_from.add(urn)
            self.replaced_old.add(old_urn)
            if dbr:
                self._delete_first(old_urn)
            self.sequence.append(("create-replacement", urn))
        elif d.keys:
            self.steps[urn] = Step(urn, r["type"], r["name"], "update", False, keys, why=why.strip())
            self.sequence.append(("update", urn))
            self._hide_filled_outputs(r, new_inputs)
        else:
            self.steps[urn] = Step(urn, r["type"], r["name"], "same")
            self.sequence.append(("same", urn))

    def _replacements(self, r: dict[str, Any], old_urn: str, d: provider_rules.Diff,
                      old_inputs: dict[str, Any], new_inputs: dict[str, Any]) -> tuple[list[str], str]:
        """The provider's replacements, then the engine's: replaceOnChanges, a replaced provider,
        a delete-first replacement this resource depends on."""
        replaces, why = list(d.replaces), d.why
        for key in d.keys:
            if key not in replaces and any(_matches(p, key, old_inputs.get(key), new_inputs.get(key))
                                           for p in (r.get("options") or {}).get("replaceOnChanges") or []):
                replaces.append(key)
        if replaces and not d.replaces:
            why = f"{', '.join(replaces)} changed, which its replaceOnChanges option turns into a replacement"
        provider = _provider_urn(r.get("provider"))
        if provider in self.steps and self.steps[provider].op == "replace":
            replaces = replaces or ["provider"]
            why = f"its provider {self.steps[provider].name} is replaced"
        if old_urn in self.dependents_dbr:
            root = self.dependents_dbr[old_urn]
            replaces = replaces or ["(dependency)"]
            why = (f"{why}; " if why and d.replaces else "") + \
                f"deleted before {self.old[root]['name']} is replaced (its inputs come from it), then created again"
        return replaces, why

    def _delete_first(self, old_urn: str) -> None:
        """A delete-before-replace: the dependents it takes along are deleted first (dependents
        first), then the resource itself; their creates come at their own turn."""
        if old_urn in self.deleted_early:
            return
        for dep in self._dependent_replacements(old_urn):
            self.dependents_dbr.setdefault(dep, old_urn)
        for dep in reversed([u for u, root in self.dependents_dbr.items() if root == old_urn]):
            if dep not in self.deleted_early:
                self.sequence.append(("delete-replaced", dep))
                self.deleted_early.add(dep)
        self.sequence.append(("delete-replaced", old_urn))
        self.deleted_early.add(old_urn)

    def _dependent_replacements(self, root: str) -> list[str]:
        """calculateDependentReplacements: the old state's dependents that a delete-first
        replacement of `root` replaces too (their inputs from the replace set unknown, their
        provider asked again; a replaced provider replaces its resources), in old order."""
        replace_set = {root}
        found = []
        for urn in self.old_order[self.old_order.index(root) + 1:]:
            r = self.old[urn]
            if not r.get("custom") or urn in replace_set:
                continue
            if _provider_urn(r.get("provider")) in replace_set:
                replace_set.add(urn)
                found.append(urn)
                continue
            inputs = comparable_inputs(r)
            unknowns, hit = _unknown_inputs(r, inputs, replace_set)
            if hit and _ask(r, inputs, unknowns, _provider_inputs(self.old, r)).replaces:
                replace_set.add(urn)
                found.append(urn)
        return found

    def _hide_filled_outputs(self, r: dict[str, Any], new_inputs: dict[str, Any]) -> None:
        """A preview does not run a dynamic provider's update: the servicer's Configure does not
        say it supports previews (pulumi/dynamic/__main__.py), so the engine hands back the new
        inputs as the outputs (sdk/go/common/resource/plugin/provider_plugin.go `Update`); its id
        stays. An output the provider fills in (an instance's address) then reads as its input
        placeholder: a dependent that carries it sees a value that changes."""
        if provider_rules.family(r["type"], bool(r.get("custom"))) != "dynamic":
            return
        filled = [v for k, v in sorted((r.get("outputs") or {}).items())
                  if isinstance(v, str) and len(v) > 3 and new_inputs.get(k) != v]
        if filled:
            self.unknown_outputs[r["urn"]] = filled

    # -- the end of the program

    def delete_the_rest(self) -> None:
        """What the program no longer registers, and the old halves of create-before-delete
        replacements: deleted last, dependents first."""
        gone = set(self.old) - set(self.matched.values())
        for urn in reversed(self.old_order):
            o = self.old[urn]
            if urn in gone:
                retained = bool((o.get("options") or {}).get("retainOnDelete"))
                self.steps[urn] = Step(urn, o["type"], o["name"], "delete",
                                       why="no longer in the program" + ("; retainOnDelete: left in place" if retained else ""),
                                       protected=bool((o.get("options") or {}).get("protect")))
                if urn in self.deleted_early:  # already deleted with a delete-first replacement it depended on
                    self.sequence[:] = [("delete", u) if (op, u) == ("delete-replaced", urn) else (op, u)
                                        for op, u in self.sequence]
                else:
                    self.sequence.append(("delete", urn))
            elif urn in self.replaced_old and urn not in self.deleted_early:
                self.sequence.append(("delete-replaced", urn))

    def result(self) -> "Transition":
        for urn, step in self.steps.items():
            old_r = self.old.get(self.matched.get(urn, urn)) or self.new.get(urn) or {}
            reason = destructive.reason(step.op, step.type, step.name, step.urn, old_r)
            if reason:
                step.destructive = True
                step.why = f"{step.why}. DESTRUCTIVE: {reason}" if step.why else f"DESTRUCTIVE: {reason}"
            if step.protected and step.op in ("replace", "delete"):
                step.why += ". PROTECTED in the state: pulumi up stops here"
        to_new = {o: n for n, o in self.matched.items()}
        first: dict[str, int] = {}
        for i, (_, urn) in enumerate(self.sequence):
            first.setdefault(urn if urn in self.new else to_new.get(urn, urn), i)
        names = {**{u: r["name"] for u, r in self.old.items()}, **{u: r["name"] for u, r in self.new.items()}}
        return Transition(sorted(self.steps.values(), key=lambda st: first[st.urn]),
                          [(op, names[urn]) for op, urn in self.sequence])


@dataclass
class Transition:
    steps: list[Step]
    sequence: list[tuple[str, str]]  # the engine's own steps: (op, resource name), in order

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    def changes(self) -> dict[str, str]:
        """name -> op of every resource that changes."""
        return {s.name: s.op for s in self.steps if s.op != "same"}
