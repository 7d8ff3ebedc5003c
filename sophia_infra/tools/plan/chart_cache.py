"""Where the pinned upstream charts come from for rendering: `python -m sophia_infra charts`.

The plan and the tests render the real charts (sophia_infra.tools.plan.render). Beside the project
they are in ../shared/charts-src; on a plain clone with access to the chart repositories,
`--pull` fetches each stack's pins with `helm pull` into .cache/charts/<chart>-<version>
(what `make setup` does when ../shared is absent). The last line says where the renders are
cached (build/render-cache, keyed by content) and how to clear it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from sophia_infra.tools.plan import render

CACHE = render.CHART_SOURCES[-1]


def pins(stacks: list[str]) -> dict[tuple[str, str], tuple[str, str]]:
    """(chart, version) -> (repository, chart name in it) of every upstream release the stacks' plans make."""
    from sophia_infra.tools.plan import runner

    out: dict[tuple[str, str], tuple[str, str]] = {}
    for stack in stacks:
        result = runner.run(stack)
        released = {(s.chart, s.version) for s in render.release_specs(result.resources) if not s.local}
        for key, pin in result.cfg.charts.items():
            name = pin.chart or key
            if (name, pin.version) in released:
                out[(name, pin.version)] = (pin.repository, name)
    return out


def pull(chart: str, version: str, repository: str, name: str, helm: str) -> str:
    """`helm pull` one chart into the cache; '' on success, else helm's reason."""
    with tempfile.TemporaryDirectory() as work:
        ref = [f"{repository.rstrip('/')}/{name}"] if repository.startswith("oci://") else [name, "--repo", repository]
        proc = subprocess.run([helm, "pull", *ref, "--version", version, "--untar", "--untardir", work],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            return proc.stderr.strip() or f"helm pull exited {proc.returncode}"
        target = CACHE / f"{chart}-{version}"
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(work) / name), target)
    return ""


def report(stacks: list[str], do_pull: bool) -> tuple[list[str], bool]:
    """One line per pinned chart saying where it is found, then where the render cache is;
    whether every chart has a source."""
    helm = render.helm_binary()
    lines, complete = [], True
    for (chart, version), (repository, name) in sorted(pins(stacks).items()):
        source = render.chart_source(chart, version)
        if source is None and do_pull and helm:
            why = pull(chart, version, repository, name, helm)
            source = render.chart_source(chart, version)
            if source is None:
                lines.append(f"{chart}-{version}: could not pull from {repository}: {why}")
                complete = False
                continue
        if source is None:
            complete = False
            lines.append(f"{chart}-{version}: no source (pull it with: python -m sophia_infra charts --pull)")
        else:
            absent = [d["name"] for d in render.absent_dependencies(source)]
            lines.append(f"{chart}-{version}: {source}" + (f" (lacks subcharts: {', '.join(absent)})" if absent else ""))
    lines.append(render.cache_summary())
    return lines, complete
