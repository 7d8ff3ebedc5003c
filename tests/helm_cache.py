"""The tests' own helm commands (`helm template`, `helm lint`) through the render cache.

A helm command on a chart folder with a values file gives the same exit code and output for the
same chart content, values, helm and arguments, so its result is kept in build/render-cache
beside the plan's renders, under the same kind of key (sophia_infra.tools.plan.render: a hash of
every file of the chart folder, the values, helm's version and the arguments). A changed
template, schema, value or helm runs helm again; an unchanged one is answered from the cache, in
this run's other test workers and in the next run. In the entry the paths of the chart and of
the values file are markers, read back as this call's paths.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Optional

from sophia_infra.tools.plan import render

CHART, VALUES = "CHART", "VALUES"  # in `args`: the chart folder, the values file
_MARKS = {CHART: "@@sophia-chart-folder@@", VALUES: "@@sophia-values-file@@"}  # in a cached output


def _key(helm: str, args: list[str], chart: Path, values: Any) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"format": render.CACHE_FORMAT, "kind": "helm command", "chart": render.chart_digest(chart),
                         "values": values, "helm": render.helm_version(helm), "args": args}, sort_keys=True).encode())
    return h.hexdigest()[:32]


def run(helm: str, args: list[str], chart: Path, values: Optional[Any] = None,
        timeout: int = 120) -> subprocess.CompletedProcess:
    """`helm *args` where CHART in `args` stands for the chart folder and VALUES for a file holding
    `values` (as JSON); answered from the render cache when this exact command ran before."""
    entry = render.CACHE_DIR / f"{_key(helm, args, chart, values)}.json"
    with tempfile.TemporaryDirectory(prefix="sophia-helm-") as work:
        values_file = Path(work) / "values.json"
        paths = {CHART: str(chart), VALUES: str(values_file)}
        cmd = [helm, *(paths.get(a, a) for a in args)]

        def back(text: str) -> str:
            return text.replace(_MARKS[CHART], paths[CHART]).replace(_MARKS[VALUES], paths[VALUES])

        cached = render._read_entry(entry)
        if cached is not None and cached.get("kind") == "helm command":
            return subprocess.CompletedProcess(cmd, cached["returncode"], back(cached["stdout"]), back(cached["stderr"]))
        if values is not None:
            values_file.write_text(json.dumps(values))
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

        def placeholders(text: str) -> str:
            return text.replace(paths[VALUES], _MARKS[VALUES]).replace(paths[CHART], _MARKS[CHART])

        render._write_entry(entry, {"kind": "helm command", "returncode": proc.returncode,
                                    "stdout": placeholders(proc.stdout), "stderr": placeholders(proc.stderr)})
        return proc
