"""What each registration waits for: its own dependencies, its provider, and everything its
parent component waits for.

The SDK sends a resource's registration only once its dependencies and its parent have
registered, and a component registers only once its own dependencies are done, so a child
of a component waits for what the component waits for without listing it. The engine orders
deletes the same way round: its dependency graph counts a resource's parent (and provider)
as dependencies. Tests and the benchmark's longest chain read the plan's registrations
through this instead of the recorded `dependencies` alone.
"""

from __future__ import annotations

from typing import Iterable

from sophia_infra.tools.plan.mocks import Registration


def provider_urn(reference: str) -> str:
    """A provider reference is "<urn>::<id>"."""
    return reference.rsplit("::", 1)[0]


def waits_for(resources: Iterable[Registration]) -> dict[str, set[str]]:
    """URN -> the URNs it waits for itself or through its ancestor components (not transitively
    through its dependencies: those have their own entry; nor its parents' registrations)."""
    by_urn = {r.urn: r for r in resources}
    found: dict[str, set[str]] = {}

    def of(urn: str) -> set[str]:
        if urn not in found:
            r = by_urn[urn]
            direct = set(r.dependencies)
            if r.provider:
                direct.add(provider_urn(r.provider))
            if r.parent in by_urn:
                direct |= of(r.parent)
            found[urn] = direct
        return found[urn]

    for urn in by_urn:
        of(urn)
    return found
