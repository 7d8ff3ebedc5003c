"""Where each workload lands, and the GPU use per node: pure functions over the config.

The scheduler decides for real; this is the plan an operator reviews: a workload placed
on a GPU type may land on any node of that type, so its replicas are spread over those
nodes the way topology spread would (most free GPU first, then fewest pods).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sophia_infra.program.config.stack import Service, StackConfig


@dataclass
class NodeUse:
    name: str
    role: str
    arch: str
    gpu_type: str | None
    capacity: int  # nvidia.com/gpu units advertised (count x sharing)
    physical: int
    sharing: int
    pods: dict[str, int] = field(default_factory=dict)  # service -> replicas here
    requested: int = 0  # nvidia.com/gpu requested here

    @property
    def free(self) -> int:
        return self.capacity - self.requested


@dataclass(frozen=True)
class Placement:
    nodes: list[NodeUse]
    # Services with no gpuType: they go to any node whose architecture the image has.
    unplaced: list[Service]


def plan_placement(cfg: StackConfig) -> Placement:
    nodes = {
        n.name: NodeUse(
            name=n.name, role=n.role, arch=n.arch,
            gpu_type=n.gpu.type if n.gpu else None,
            capacity=n.gpu.capacity if n.gpu else 0,
            physical=n.gpu.count if n.gpu else 0,
            sharing=n.gpu.sharing if n.gpu else 1,
        )
        for n in cfg.nodes
    }
    unplaced = []
    for svc in cfg.services:
        if svc.placement is None:
            unplaced.append(svc)
            continue
        targets = [nodes[n.name] for n in cfg.nodes_with_gpu(svc.placement.gpu_type)]
        for _ in range(svc.replicas):
            best = max(targets, key=lambda u: (u.free, -sum(u.pods.values())))
            best.pods[svc.name] = best.pods.get(svc.name, 0) + 1
            best.requested += svc.gpu
    return Placement(nodes=list(nodes.values()), unplaced=unplaced)


def _workloads(use: NodeUse, cfg: StackConfig) -> str:
    gpu = {s.name: s.gpu for s in cfg.services}
    parts = [f"{name} x{n}" + (f" ({gpu[name] * n} GPU)" if gpu[name] else "") for name, n in use.pods.items()]
    return ", ".join(parts) or "-"


def _gpu_cell(use: NodeUse) -> str:
    if not use.gpu_type:
        return "none"
    share = f" x{use.sharing} shared" if use.sharing > 1 else ""
    return f"{use.gpu_type} {use.physical}{share}"


def table_rows(cfg: StackConfig) -> list[list[str]]:
    placement = plan_placement(cfg)
    # Services without a GPU type are in the services table ("any" node of their arch).
    return [[u.name, u.role, f"linux/{u.arch}", _gpu_cell(u), _workloads(u, cfg), f"{u.requested}/{u.capacity}"]
            for u in placement.nodes]


HEADER = ["node", "role", "arch", "GPU", "workloads (replicas)", "GPU requested/capacity"]
SERVICE_HEADER = ["service", "kind", "node type", "arch", "replicas", "GPU/pod", "endpoint"]


def service_rows(cfg: StackConfig) -> list[list[str]]:
    """Every service: where it lands, how many, its GPU request and its in-cluster endpoint."""
    from sophia_infra.program.services.values import architectures, endpoint

    rows = []
    for svc in cfg.services:
        replicas = f"{svc.replicas}-{svc.max_replicas}" if svc.max_replicas and svc.max_replicas > svc.replicas else str(svc.replicas)
        rows.append([svc.name, svc.kind, svc.placement.gpu_type if svc.placement else "any",
                     ",".join(architectures(cfg, svc)), replicas, str(svc.gpu), endpoint(svc)])
    return rows


def quota_lines(cfg: StackConfig) -> list[str]:
    """The GPU ResourceQuota of each workload namespace against the cluster's capacity."""
    from sophia_infra.program.config import names
    from sophia_infra.program.config.platform import gpu_demand, gpu_quota, total_gpu_capacity

    capacity = total_gpu_capacity(cfg)
    return [f"{ns}: requests.nvidia.com/gpu quota {gpu_quota(cfg, ns)}, peak demand {gpu_demand(cfg, ns)}, "
            f"cluster capacity {capacity} (count x sharing)" for ns in names.SERVICE_NAMESPACES.values()]


def _text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _md_table(rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])] + ["| " + " | ".join(r) + " |" for r in rows[1:]]


def render_text(cfg: StackConfig) -> str:
    out = _text_table([HEADER] + table_rows(cfg))
    if cfg.services:
        out += "\n\n" + _text_table([SERVICE_HEADER] + service_rows(cfg))
    return out + "\n\n" + "\n".join(quota_lines(cfg))


def render_markdown(cfg: StackConfig, stack: str) -> str:
    out = [f"# GPU placement: `{stack}`", ""] + _md_table([HEADER] + table_rows(cfg))
    if cfg.services:
        out += ["", "## Services", ""] + _md_table([SERVICE_HEADER] + service_rows(cfg))
    out += ["", "## GPU quotas", ""] + [f"- {line}" for line in quota_lines(cfg)]
    out += ["", "```mermaid", "flowchart LR"]
    placement = plan_placement(cfg)
    for u in placement.nodes:
        out.append(f'  {_mid(u.name)}["{u.name}<br/>{_gpu_cell(u)}<br/>linux/{u.arch}<br/>GPU {u.requested}/{u.capacity}"]')
        for svc, n in u.pods.items():
            out.append(f"  svc_{_mid(svc)}([{svc}]) -->|x{n}| {_mid(u.name)}")
    if placement.unplaced:
        out.append('  anywhere["any node of the image\'s architecture"]')
        for svc in placement.unplaced:
            out.append(f"  svc_{_mid(svc.name)}([{svc.name}]) -->|x{svc.replicas}| anywhere")
    out += ["```", ""]
    return "\n".join(out)


def _mid(name: str) -> str:
    return name.replace("-", "_")
