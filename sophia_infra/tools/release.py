"""`python -m sophia_infra release WORKLOAD --stack S --tag T [--digest D]`: an app release.

Edits the workload's release file (releases/<stack>/<workload>.yaml) and nothing else, after
checking the input against the stack's configuration, and says what will roll out. CI's
reusable workflow (.github/workflows/release.yml) runs this same command, then commits the
file; `git revert` of that commit is the rollback. Bad input is one sentence and leaves the
file untouched.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sophia_infra.program import releases
from sophia_infra.program.config.stack import ConfigError, Service, StackConfig


class ReleaseInputError(Exception):
    """Input `release` refuses; the message is one sentence naming the input."""


@dataclass(frozen=True)
class Plan:
    stack: str
    cfg: StackConfig
    svc: Service
    before: Optional[releases.Release]
    after: releases.Release
    file: Path

    @property
    def changed(self) -> bool:
        return self.before is None or (self.before.tag, self.before.digest) != (self.after.tag, self.after.digest)


def _stack_config(stack: str, root: Path) -> StackConfig:
    from sophia_infra.tools.plan import stack_config

    if not (root / f"Pulumi.{stack}.yaml").is_file():
        known = stack_config.known_stacks(root)
        raise ReleaseInputError(f"--stack {stack}: there is no stack '{stack}' (no Pulumi.{stack}.yaml); use one of {', '.join(known)}")
    try:
        return stack_config.load_validated(stack, root)
    except ConfigError as err:
        raise ReleaseInputError(f"--stack {stack}: the stack configuration is invalid: " + " ".join(err.problems).rstrip(".")) from None
    except stack_config.StackFileError as err:
        raise ReleaseInputError(str(err)) from None


def needed_platforms(cfg: StackConfig, svc: Service) -> list[str]:
    """Platforms the image must be built for: every one the stack declares for it (the pods may
    run on any of them), which covers linux/arm64 for a workload placed on GH200 nodes."""
    return list(svc.image.platforms)


def _placed_arches(cfg: StackConfig, svc: Service) -> list[str]:
    if svc.placement is None:
        return []
    return sorted({n.platform for n in cfg.nodes_with_gpu(svc.placement.gpu_type)})


def prepare(workload: str, stack: str, tag: Optional[str] = None, digest: Optional[str] = None,
            platforms: Optional[list[str]] = None, image: Optional[str] = None,
            root: Path = releases.ROOT) -> Plan:
    """Check a release and work out the new release file; ReleaseInputError on bad input."""
    if tag is None and digest is None:
        raise ReleaseInputError("give the image to release: --tag (and, from the build, --digest)")
    cfg = _stack_config(stack, root)
    index = next((i for i, s in enumerate(cfg.services) if s.name == workload), None)
    if index is None:
        raise ReleaseInputError(f"WORKLOAD {workload}: stack {stack} has no workload '{workload}'; "
                                f"use one of {', '.join(s.name for s in cfg.services)}")
    svc = cfg.services[index]
    if tag is not None and (problem := releases.tag_problem(tag)):
        raise ReleaseInputError(f"--tag {tag}: {problem}")
    if digest is not None and (problem := releases.digest_problem(digest)):
        raise ReleaseInputError(f"--digest {digest}: {problem}")
    if image is not None and image != svc.image.repository:
        raise ReleaseInputError(f"--image {image}: '{workload}' in stack {stack} runs {svc.image.repository} "
                                f"(sophia:services[{index}].image.repository); push to that repository or change it there")
    placed = _placed_arches(cfg, svc)
    missing = sorted(set(placed) - set(svc.image.platforms))
    if missing:  # the config check refuses this too; said here in the release's own terms
        raise ReleaseInputError(f"WORKLOAD {workload}: it runs on {svc.placement.gpu_type if svc.placement else ''} nodes "
                                f"({', '.join(missing)}) but sophia:services[{index}].image.platforms declares only "
                                f"{', '.join(svc.image.platforms)}; build a {', '.join(missing)} image and declare it")
    if platforms is not None:
        unknown = sorted(set(platforms) - {"linux/amd64", "linux/arm64"})
        if unknown:
            raise ReleaseInputError(f"--platforms {','.join(platforms)}: '{unknown[0]}' is not a platform this cluster runs; use linux/amd64 and linux/arm64")
        lacking = sorted(set(needed_platforms(cfg, svc)) - set(platforms))
        if lacking:
            where = (f"it runs on {svc.placement.gpu_type} nodes ({', '.join(placed)})" if svc.placement and set(lacking) & set(placed)
                     else f"sophia:services[{index}].image.platforms declares {', '.join(svc.image.platforms)}")
            raise ReleaseInputError(f"--platforms {','.join(platforms)}: the image of '{workload}' is built for "
                                    f"{', '.join(sorted(platforms))} only, but {where}; build it for {', '.join(lacking)} too")
    if svc.image.tag is not None:
        raise ReleaseInputError(f"WORKLOAD {workload}: sophia:services[{index}].image.tag pins '{svc.image.tag}' in "
                                f"Pulumi.{stack}.yaml; remove it there first, so the release file is the one place the tag lives")
    try:
        before = releases.read(stack, workload, root)
    except releases.ReleaseFileError:
        before = None  # a broken file is replaced whole
    if tag is None:
        if before is None:
            raise ReleaseInputError(f"--digest {digest}: '{workload}' has no release file in stack {stack} yet, so there is no tag "
                                    "to pin; give --tag as well")
        tag = before.tag
    if digest is None and before is not None and before.tag == tag:
        digest = before.digest  # the same tag again: its digest still holds
    if digest is None and cfg.environment == "production":
        raise ReleaseInputError(f"--tag {tag}: stack {stack} is production, which runs images by digest (a tag can be "
                                "re-pushed with other content); give --digest sha256:... of the pushed image, as "
                                "`docker buildx imagetools inspect IMAGE:TAG` prints it")
    after = releases.Release(tag, digest, releases.repo_path(stack, workload))
    return Plan(stack, cfg, svc, before, after, releases.path(stack, workload, root))


def write(plan: Plan) -> None:
    """Replace the release file atomically (a reader never sees half a file)."""
    plan.file.parent.mkdir(parents=True, exist_ok=True)
    text = releases.render(plan.stack, plan.svc.name, plan.after)
    fd, tmp = tempfile.mkstemp(prefix=f".{plan.svc.name}.", suffix=".yaml", dir=plan.file.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, plan.file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def describe(plan: Plan) -> list[str]:
    """What will roll out, and how."""
    repo = plan.svc.image.repository
    rel = releases.repo_path(plan.stack, plan.svc.name)
    old = plan.before.ref(repo) if plan.before else "(no release file yet)"
    if not plan.changed:
        return [f"{rel}: {plan.svc.name} in {plan.stack} already runs {plan.after.ref(repo)}; nothing to change."]
    lines = [f"{rel}: {plan.svc.name} in {plan.stack}", f"  from {old}", f"  to   {plan.after.ref(repo)}"]
    if not plan.after.digest:
        lines.append("  (no digest: the tag is trusted not to move; pass --digest from the build to pin the content)")
    if plan.cfg.delivery == "argocd":
        branch = plan.cfg.argocd.release_branch
        lines.append(f"Rolls out when this file is committed to {branch} (sophia:argocd.releaseBranch): Argo CD syncs "
                     f"the Application argocd/{plan.svc.name} by itself; no pulumi up. Rollback: ./deploy.sh rollback {plan.stack} {plan.svc.name}.")
    else:
        lines.append(f"Rolls out with the next pulumi up of stack {plan.stack} (./deploy.sh deploy {plan.stack}), which upgrades "
                     f"the Helm release {plan.svc.name}; commit the file with it.")
    return lines


# ----------------------------------------------------------------------------- release status

def _argo_status(app: dict) -> dict[str, str]:
    status = app.get("status") or {}
    sync = status.get("sync") or {}
    revisions = sync.get("revisions") or ([sync["revision"]] if sync.get("revision") else [])
    return {"sync": sync.get("status") or "-", "health": (status.get("health") or {}).get("status") or "-",
            "revision": ",".join(r[:12] for r in revisions) or "-",
            "images": " ".join((status.get("summary") or {}).get("images") or [])}


def status(cfg: StackConfig, stack: str, applications: Optional[dict] = None, root: Path = releases.ROOT) -> list[str]:
    """One line per workload: the image its release file gives, and, with `applications`
    (`kubectl get applications.argoproj.io -n argocd -o json`), what Argo CD reports."""
    apps = {a.get("metadata", {}).get("name"): a for a in (applications or {}).get("items") or []}
    header = ["WORKLOAD", "RELEASED IMAGE"] + (["SYNC", "HEALTH", "REVISIONS", "RUNNING"] if applications is not None else [])
    rows = [header]
    for svc in cfg.services:
        try:
            release: Optional[releases.Release] = releases.in_force(svc, stack, root)
        except (releases.ReleaseFileError, ConfigError):
            release = None
        ref = release.ref(svc.image.repository) if release else "(no valid release file)"
        row = [svc.name, ref]
        if applications is not None:
            app = apps.get(svc.name)
            if app is None:
                row += ["(no Application)", "-", "-", "-"]
            else:
                s = _argo_status(app)
                # Argo CD lists the images it deployed: is the released one among them yet?
                running = "yes" if release and ref in s["images"].split() else ("rolling out" if s["images"] else "-")
                row += [s["sync"], s["health"], s["revision"], running]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
