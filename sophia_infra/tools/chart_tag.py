"""`python -m sophia_infra chart-tag`: make the chart revision the Applications name exist.

Reads the chart version at HEAD, looks for the tag `sophia-service-<version>` (locally and,
with --remote, on the remote), and then:

- the tag holds the same chart directory (same git tree) as HEAD: nothing to do;
- the tag holds another chart: refuse (exit 1), the version needs a bump;
- no tag: create it at HEAD (and push it with --push), unless --check.

The decision is sophia_infra.program.config.chart_revision.decide; this module is the git wiring.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from sophia_infra.program.config.chart_revision import CHART_PATH, ROOT, ChartTagError, TagDecision, chart_tag, decide


class GitError(Exception):
    """git could not answer (not a repository, an unreachable remote): one sentence."""


def _git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=120)
    except FileNotFoundError as err:
        raise GitError("git is not installed; install it and run chart-tag again") from err
    if check and out.returncode != 0:
        raise GitError(f"git {' '.join(args)} failed: {out.stderr.strip() or out.stdout.strip()}")
    return out


def _tree(root: Path, rev: str) -> Optional[str]:
    out = _git(root, "rev-parse", "-q", "--verify", f"{rev}:{CHART_PATH}", check=False)
    return out.stdout.strip() if out.returncode == 0 else None


@dataclass(frozen=True)
class Outcome:
    decision: TagDecision
    created: bool
    pushed: bool

    def message(self) -> str:
        tag = self.decision.tag
        if not self.decision.create:
            return f"{tag} exists and holds this commit's {CHART_PATH}: Argo CD reads the chart the values are written for."
        if self.created:
            return f"created {tag} at HEAD" + (" and pushed it" if self.pushed else "") + "."
        return f"{tag} does not exist yet; the deploy workflow creates it at the commit it deploys (chart-tag --push)."


def run(root: Path = ROOT, remote: Optional[str] = None, check: bool = False, push: bool = False) -> Outcome:
    """Raises ChartTagError when the tag holds another chart, GitError when git cannot answer."""
    chart = yaml.safe_load(_git(root, "show", f"HEAD:{CHART_PATH}/Chart.yaml").stdout)
    tag = chart_tag(str(chart["version"]))
    if remote is not None and _git(root, "ls-remote", "--tags", remote, f"refs/tags/{tag}").stdout.strip():
        _git(root, "fetch", "--quiet", "--no-tags", remote, f"+refs/tags/{tag}:refs/tags/{tag}")
    head_tree = _tree(root, "HEAD")
    if head_tree is None:
        raise GitError(f"HEAD has no {CHART_PATH}; run chart-tag in a checkout of this repository")
    decision = decide(tag, _tree(root, f"refs/tags/{tag}"), head_tree)
    created = pushed = False
    if decision.create and not check:
        _git(root, "tag", tag, "HEAD")
        created = True
        if push:
            _git(root, "push", "--quiet", remote or "origin", f"refs/tags/{tag}")
            pushed = True
    return Outcome(decision, created, pushed)


__all__ = ["run", "Outcome", "GitError", "ChartTagError"]
