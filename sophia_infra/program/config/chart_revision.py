"""The revision Argo CD reads charts/sophia-service at: the tag of the chart's own version (pure).

Every Application takes the chart from this repository at `sophia-service-<version>`, the
version in charts/sophia-service/Chart.yaml of the commit `pulumi up` runs from. The tag
exists by construction: the deploy workflow runs `python -m sophia_infra chart-tag --push`
before `pulumi up`, which creates it at that commit when it is new, and refuses (as does
`chart-tag --check` on every pull request) when the tag exists but holds another chart,
i.e. templates/ or values.schema.json changed without a version bump. So the chart at the
revision the Applications name is the chart the program wrote its values for, and a new
chart reaches the cluster in the same `pulumi up` as the values written for it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART_PATH = "charts/sophia-service"
TAG_PREFIX = "sophia-service-"


class ChartTagError(Exception):
    """The tag exists but holds another chart: one sentence saying what to do."""


def chart_version(root: Path = ROOT) -> str:
    return _version_in((root / CHART_PATH / "Chart.yaml").read_text())


@functools.lru_cache(maxsize=8)
def _version_in(chart_yaml: str) -> str:
    """Chart.yaml's version; keyed by the file's text, so an edited file is read again (every
    Application asks, 15 times a run)."""
    return str(yaml.safe_load(chart_yaml)["version"])


def chart_tag(version: Optional[str] = None) -> str:
    """`sophia-service-<version>`: the git tag of a chart version (Helm's own `<name>-<version>`)."""
    return TAG_PREFIX + (version if version is not None else chart_version())


@dataclass(frozen=True)
class TagDecision:
    tag: str
    create: bool  # False: the tag exists and holds this very chart


def decide(tag: str, tagged_tree: Optional[str], head_tree: str) -> TagDecision:
    """What to do with `tag` given the git tree id of the chart directory at the tag (None:
    no such tag) and at the commit being deployed."""
    if tagged_tree is None:
        return TagDecision(tag, create=True)
    if tagged_tree != head_tree:
        raise ChartTagError(
            f"{CHART_PATH} differs from the chart tagged {tag}, so Argo CD would render the old chart with "
            f"this commit's values; bump `version` in {CHART_PATH}/Chart.yaml (a new version gets a new tag).")
    return TagDecision(tag, create=False)
