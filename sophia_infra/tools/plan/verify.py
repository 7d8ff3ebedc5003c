"""What the plan's releases would really run, checked: network flows and Pod Security.

Renders every release (sophia_infra.tools.plan.render), builds the cluster model and evaluates
the required flows, the undeclared cross-namespace flows and every pod against its
namespace's Pod Security level. When helm or a chart source is missing, the result says
what could not be checked instead of passing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from sophia_infra.tools.plan import cluster_model, flows, pod_security, render, report
from sophia_infra.tools.plan.runner import PlanResult


@dataclass
class Checks:
    skipped: Optional[str] = None  # why nothing was checked
    flows: list[flows.FlowResult] = field(default_factory=list)
    undeclared: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)   # Pod Security
    pods: int = 0
    unrendered: dict[str, list[str]] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        denied = [r for r in self.flows if r.status in ("denied", "no pod")]
        return bool(denied or self.undeclared or self.rejected)


def run(result: PlanResult) -> Checks:
    specs = render.release_specs(result.resources)
    if render.helm_binary() is None:
        return Checks(skipped="helm is not installed (scripts/install-tools.sh)")
    missing = render.missing_sources(specs)
    if missing:
        return Checks(skipped=f"no chart source holds {', '.join(missing)} (../shared/charts-src, or python -m sophia_infra charts --pull)")
    try:
        rendered = render.render_all(specs)
    except render.RenderError as err:
        return Checks(skipped=str(err))
    model = cluster_model.build(rendered, report.kubernetes_objects(result.resources))
    results, evaluator = flows.evaluate(result.cfg, model)
    checks = Checks(flows=results, undeclared=flows.unexpected(results, evaluator), unrendered=model.unrendered)
    for w in model.workloads:
        if w.origin == "k3s":
            continue
        checks.pods += 1
        level = model.namespaces[w.namespace].get("pod-security.kubernetes.io/enforce", "privileged")
        checks.rejected += [f"{w.description} at {level}: {v}"
                            for v in pod_security.violations(w.pod_spec, level, w.pod_metadata)]
    return checks


def failures(checks: Checks, policy: list[tuple[str, str, str]]) -> list[str]:
    """One line per failed verdict, each naming what failed and why: the plan exits 1 on any."""
    out = [f"policy [{rule}] {msg} ({urn.rsplit('::', 1)[-1]})" for urn, rule, msg in policy]
    for r in checks.flows:
        if r.status == "denied":
            out.append(f"required flow denied: {r.flow.name}: {r.detail}")
        elif r.status == "no pod":
            out.append(f"required flow has no pod: {r.flow.name}: {r.detail}")
    out += [f"undeclared cross-namespace flow allowed: {e}" for e in checks.undeclared]
    out += [f"Pod Security rejects {r}" for r in checks.rejected]
    return out


def verdict(stack: str, checks: Checks, failed: list[str]) -> list[str]:
    """The plan's verdict: a headline, then the failures (`failures`, one per line), for the
    terminal and the top of placement.md."""
    if failed:
        return [f"Plan of stack '{stack}' FAILED: {len(failed)} problem(s)", *(f"  - {f}" for f in failed)]
    if checks.skipped:
        return [f"Plan of stack '{stack}' passed the policy pack; network flows and Pod Security NOT checked: {checks.skipped}"]
    allowed = sum(r.status == "allowed" for r in checks.flows)
    return [f"Plan of stack '{stack}' OK: no policy violation, {allowed}/{len(checks.flows)} required flows allowed, "
            f"no undeclared flow, {checks.pods} pods admitted by Pod Security"]


def _counts(checks: Checks) -> str:
    by: dict[str, int] = {}
    for r in checks.flows:
        by[r.status] = by.get(r.status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(by.items()))


def text(checks: Checks) -> list[str]:
    if checks.skipped:
        return ["", f"Network flows and Pod Security: not checked: {checks.skipped}"]
    lines = ["", f"Network flows: {len(checks.flows)} required ({_counts(checks)}); "
             f"{len(checks.undeclared)} undeclared cross-namespace flow(s) allowed"]
    lines += [f"  [{r.status}] {r.flow.name}: {r.detail}" for r in checks.flows if r.status != "allowed"]
    lines += [f"  [undeclared] {e}" for e in checks.undeclared]
    lines += [f"Pod Security: {checks.pods} pods checked, {len(checks.rejected)} rejected"]
    lines += [f"  [rejected] {r}" for r in checks.rejected]
    for release, subs in sorted(checks.unrendered.items()):
        lines.append(f"  not rendered: {release}'s {', '.join(subs)} (absent from the chart source)")
    return lines


def markdown(checks: Checks) -> list[str]:
    if checks.skipped:
        return ["", "## Network flows", "", f"Not checked: {checks.skipped}."]
    lines = ["", *flows.markdown(checks.flows, checks.undeclared), "",
             "## Pod Security", "", f"{checks.pods} pods checked against their namespace's enforce level; "
             f"{len(checks.rejected)} rejected."]
    lines += [f"- {r}" for r in checks.rejected]
    for release, subs in sorted(checks.unrendered.items()):
        lines.append(f"- Not rendered: {release}'s {', '.join(subs)} (absent from the chart source).")
    return lines
