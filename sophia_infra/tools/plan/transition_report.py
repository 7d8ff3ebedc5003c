"""The transition preview's files and verdict: steps.json, steps.md, the destructive steps that
block, and reading the old plan.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from sophia_infra.tools.plan.transition import OPS, Step, Transition, TransitionError


def blocked(steps: list[Step], allowed: Iterable[str]) -> list[Step]:
    """The destructive (or protected) steps not named by --allow-destroy."""
    names = set(allowed)
    return [s for s in steps if (s.destructive or (s.protected and s.op in ("replace", "delete")))
            and s.name not in names]


def document(steps: list[Step]) -> list[dict[str, Any]]:
    """steps.json: one entry per resource, in the engine's order."""
    return [s.document() for s in steps]


def counts(steps: list[Step]) -> dict[str, int]:
    return {op: sum(s.op == op for s in steps) for op in OPS}


def markdown(stack: str, steps: list[Step], sequence: list[tuple[str, str]], allowed: Iterable[str] = (),
             notes: Iterable[str] = ()) -> str:
    """steps.md: counts, then the destructive steps, then the other changes, then the order."""
    c = counts(steps)
    lines = [f"## Transition preview of stack '{stack}'", "",
             " · ".join(f"{c[op]} {op}" for op in OPS), ""]
    lines += [f"> {n}" for n in notes]
    if any(notes):
        lines.append("")
    names = set(allowed)
    destructive = [s for s in steps if s.destructive]
    if destructive:
        lines += ["### Destructive", "", "| resource | op | delete first | allowed | why |", "|---|---|---|---|---|"]
        lines += [f"| `{s.name}` | {s.op} | {'yes' if s.delete_before_replace else 'no'} | "
                  f"{'yes (--allow-destroy)' if s.name in names else '**no**'} | {_cell(s.why)} |" for s in destructive]
        lines.append("")
    changed = [s for s in steps if s.op != "same" and not s.destructive]
    if changed:
        lines += ["### Changes", "", "| resource | type | op | delete first | keys | why |", "|---|---|---|---|---|---|"]
        lines += [f"| `{s.name}` | `{s.type}` | {s.op} | {'yes' if s.delete_before_replace else 'no'} | "
                  f"{_cell(', '.join(s.keys))} | {_cell(s.why)} |" for s in changed]
        lines.append("")
    if not destructive and not changed:
        lines += ["No change: `pulumi up` would do nothing.", ""]
    order = [(op, name) for op, name in sequence if op != "same"]
    if order:
        lines += ["### Order", "", *(f"{i}. {op} `{name}`" for i, (op, name) in enumerate(order, 1)), ""]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def load_plan(path: str) -> dict[str, Any]:
    """An earlier plan's plan.json, or a TransitionError saying in one sentence why not."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except OSError as err:
        raise TransitionError(f"--against {path}: cannot read it ({err.strerror}); give the plan.json an earlier "
                              "`plan --out DIR` wrote") from None
    except ValueError as err:
        raise TransitionError(f"--against {path}: not JSON ({err}); give the plan.json an earlier plan wrote") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("resources"), list) or "stack" not in doc \
            or not all(isinstance(r, dict) and {"urn", "type", "name"} <= r.keys() for r in doc["resources"]):
        raise TransitionError(f"--against {path}: not a plan.json (no stack and resources with urn, type and name)")
    return doc


def notes(old_doc: dict[str, Any]) -> list[str]:
    """What the old plan cannot tell (it was written before plan.json recorded it)."""
    out = []
    resources = old_doc.get("resources") or []
    if resources and not any("secretFingerprints" in r for r in resources):
        out.append("The old plan has no secret fingerprints (written before they were recorded): a changed "
                   "secret value does not show.")
    if resources and not any("propertyDependencies" in r for r in resources):
        out.append("The old plan has no property dependencies: the dependents of a delete-first replacement "
                   "are not found.")
    return out


def write(transition: Transition, stack: str, out_dir: Any, allowed: Iterable[str], old_doc: dict[str, Any]) -> None:
    """steps.json and steps.md into the plan's folder."""
    out = Path(out_dir)
    (out / "steps.json").write_text(json.dumps(document(transition.steps), indent=2) + "\n")
    (out / "steps.md").write_text(markdown(stack, transition.steps, transition.sequence, allowed, notes(old_doc)) + "\n")
