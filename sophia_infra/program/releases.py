"""Release files: what changes per app release, one small file per stack and workload in git.

`releases/<stack>/<workload>.yaml` holds only the image tag and (preferably) its digest:

    image:
      tag: "1.4.2"
      digest: sha256:...

Everything structural (placement, GPU, replicas, resources, secrets, ports) stays in the stack
config, owned by Pulumi. Both delivery modes read these files: Helm (dev) merges the file into
the release's values; Argo CD (production) reads it from the release branch as a `valueFiles`
entry of a second (`ref: values`) source, so an app release is a commit, not a `pulumi up`,
and Pulumi's inputs do not change with it. One file per workload: two releases at once never
touch the same file. `python -m sophia_infra release` is the one writer.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional

from sophia_infra.program.config.stack import ConfigError

if TYPE_CHECKING:
    from sophia_infra.program.config.stack import Service, StackConfig

ROOT = Path(__file__).resolve().parents[2]
RELEASES_DIR = "releases"
# The name of the Argo CD source that holds the release files (`$values/releases/...`).
VALUES_REF = "values"

_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")

HEADER = ("# The image of {workload} in stack {stack}: what an app release changes (one commit each).\n"
          "# Written by `python -m sophia_infra release`; everything else is in Pulumi.{stack}.yaml.\n"
          "# Rollback: ./deploy.sh rollback {stack} {workload} (a git revert of the release commit).\n")


class ReleaseFileError(Exception):
    """A release file that cannot be used; the message is one sentence naming the file and the fix."""


@dataclass(frozen=True)
class Release:
    tag: str
    digest: Optional[str] = None
    # The release file it was read from (repo path); None for a tag pinned in the stack config.
    file: Optional[str] = None

    def values(self) -> dict[str, Any]:
        """The release as chart values (what the file holds)."""
        image: dict[str, Any] = {"tag": self.tag}
        if self.digest:
            image["digest"] = self.digest
        return {"image": image}

    def ref(self, repository: str) -> str:
        """The image reference the pods run: repository:tag, pinned by @digest when known."""
        return f"{repository}:{self.tag}" + (f"@{self.digest}" if self.digest else "")


def repo_path(stack: str, workload: str) -> str:
    """The file's path inside the git repository (what Argo CD's `$values/...` names)."""
    return f"{RELEASES_DIR}/{stack}/{workload}.yaml"


def path(stack: str, workload: str, root: Path = ROOT) -> Path:
    return root / repo_path(stack, workload)


def value_file(stack: str, workload: str) -> str:
    """The Application's `helm.valueFiles` entry of the workload's release file."""
    return f"${VALUES_REF}/{repo_path(stack, workload)}"


def tag_problem(tag: str) -> Optional[str]:
    """Why `tag` cannot be released (None when it can): pinned, never latest, not a digest."""
    if tag.lower() == "latest":
        return f"the tag '{tag}' is not pinned (latest moves by itself); give the exact version tag the image was pushed with, such as 1.4.2"
    if tag.startswith("sha256:"):
        return f"the tag '{tag}' is a digest; give it as the digest (--digest) and the version tag as the tag"
    if not _TAG.match(tag):
        return f"'{tag}' is not an image tag; use letters, digits, '_', '.' and '-' (at most 128, not starting with '.' or '-'), such as 1.4.2"
    return None


def digest_problem(digest: str) -> Optional[str]:
    if not DIGEST.match(digest):
        return (f"'{digest}' is not an image digest; give sha256: followed by 64 lower-case hex digits "
                "(what `docker buildx imagetools inspect IMAGE` prints as Digest)")
    return None


def parse(data: Any, where: str) -> Release:
    """A release file's content (already YAML-decoded) as a Release; ReleaseFileError if malformed."""
    if not isinstance(data, dict) or set(data) != {"image"} or not isinstance(data["image"], dict):
        raise ReleaseFileError(f"{where}: a release file holds exactly `image: {{tag: ..., digest: ...}}`; "
                               "rewrite it with python -m sophia_infra release")
    image = data["image"]
    unknown = sorted(set(image) - {"tag", "digest"})
    if unknown:
        raise ReleaseFileError(f"{where}: image.{unknown[0]} is not a key of a release file (only tag and digest are); "
                               "structural settings belong in the stack config")
    tag = image.get("tag")
    if not isinstance(tag, str) or not tag:
        raise ReleaseFileError(f"{where}: image.tag is missing or not a string; write it quoted, such as tag: \"1.4.2\"")
    problem = tag_problem(tag)
    digest = image.get("digest")
    if problem is None and digest is not None:
        problem = digest_problem(digest) if isinstance(digest, str) else f"image.digest {digest!r} is not a string"
    if problem:
        raise ReleaseFileError(f"{where}: {problem}")
    return Release(tag=tag, digest=digest)


def read(stack: str, workload: str, root: Path = ROOT) -> Optional[Release]:
    """The workload's release in `stack`, or None when it has no release file."""
    from sophia_infra.program.yaml_files import StackFileError, _display, _read_yaml

    file = path(stack, workload, root)
    if not file.is_file():
        return None
    try:
        data = _read_yaml(file)
    except StackFileError as err:
        # `file:line:column: what`, with the path as the repository names it.
        text, shown = str(err), _display(file)
        raise ReleaseFileError(repo_path(stack, workload) + text[len(shown):] if text.startswith(shown) else text) from None
    found = parse(data, repo_path(stack, workload))
    return Release(found.tag, found.digest, repo_path(stack, workload))


def render(stack: str, workload: str, release: Release) -> str:
    """The text of a release file (the tag always quoted: 1.10 is not the number 1.1)."""
    lines = [HEADER.format(stack=stack, workload=workload), "image:\n", f"  tag: {json.dumps(release.tag)}\n"]
    if release.digest:
        lines.append(f"  digest: {release.digest}\n")
    return "".join(lines)


def files(stack: str, root: Path = ROOT) -> list[str]:
    """Workload names that have a release file in `stack`."""
    folder = root / RELEASES_DIR / stack
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def problems(cfg: "StackConfig", stack: str, root: Path = ROOT) -> list[str]:
    """What is wrong with the stack's release files, one sentence each (empty = every workload has
    exactly one source of its tag, and Argo CD delivery has a release file for every workload)."""
    return _survey(cfg, stack, root)[0]


def _survey(cfg: "StackConfig", stack: str, root: Path) -> tuple[list[str], dict[str, Optional[Release]]]:
    """The problems, and each workload's release file (None: it has none), each file read once."""
    out: list[str] = []
    found: dict[str, Optional[Release]] = {}
    for i, svc in enumerate(cfg.services):
        where = repo_path(stack, svc.name)
        try:
            release = found[svc.name] = read(stack, svc.name, root)
        except ReleaseFileError as err:
            out.append(f"{err}.")
            continue
        tag = svc.image.tag
        if release is not None and tag is not None:
            out.append(f"sophia:services[{i}].image.tag: '{tag}' is set in Pulumi.{stack}.yaml and {where} gives "
                       f"'{svc.name}' its image too; remove image.tag from the stack file (the release file is the one place an app release writes).")
        elif release is None and tag is None:
            out.append(f"{where}: does not exist and sophia:services[{i}].image.tag is unset, so '{svc.name}' has no image tag; "
                       f"create it with python -m sophia_infra release {svc.name} --stack {stack} --tag TAG.")
    names = {s.name for s in cfg.services}
    for name in files(stack, root):
        if name not in names:
            out.append(f"{repo_path(stack, name)}: there is no service '{name}' in sophia:services of stack {stack}; "
                       "git rm the file or correct its name.")
    return out, found


def for_stack(cfg: "StackConfig", stack: str, root: Path = ROOT) -> dict[str, Release]:
    """The release in force of every workload (release file, else the stack's own image.tag);
    ConfigError with one sentence per problem."""
    found, release_files = _survey(cfg, stack, root)
    if found:
        raise ConfigError(found)
    # No problem means: a workload without a release file pins image.tag in the stack config.
    return {svc.name: release_files[svc.name] or Release(tag=str(svc.image.tag)) for svc in cfg.services}


def in_force(svc: "Service", stack: str, root: Path = ROOT) -> Release:
    """The workload's release: its release file, else the stack config's pinned image.tag."""
    release = read(stack, svc.name, root)
    if release is not None:
        return release
    if svc.image.tag is None:
        raise ConfigError([f"{repo_path(stack, svc.name)}: does not exist and '{svc.name}' has no image.tag; "
                           f"create it with python -m sophia_infra release {svc.name} --stack {stack} --tag TAG."])
    return Release(tag=svc.image.tag)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of two values sets: maps merge key by key, anything else is replaced,
    and a null in `override` removes the key."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def argocd_values(value_files: Iterable[dict[str, Any]], values_object: dict[str, Any]) -> dict[str, Any]:
    """The values Argo CD hands to `helm template`: valueFiles in order, then valuesObject on top
    (its documented precedence: parameters > valuesObject > values > valueFiles > the chart's values.yaml)."""
    merged: dict[str, Any] = {}
    for values in value_files:
        merged = merge(merged, values)
    return merge(merged, values_object)


def tag_only(cfg: "StackConfig", released: dict[str, Release]) -> list[str]:
    """The workloads of a production stack whose release names a tag but no digest (sorted)."""
    if cfg.environment != "production":
        return []
    return sorted(name for name, r in released.items() if not r.digest and not r.tag.startswith("sha256:"))


def tag_only_warning(cfg: "StackConfig", stack: str, released: dict[str, Release]) -> Optional[str]:
    """What preview and the offline plan say about production workloads run by tag only (None if none)."""
    names = tag_only(cfg, released)
    if not names:
        return None
    return (f"stack {stack} is production but {len(names)} workload(s) run by image tag only, with no digest: "
            f"{', '.join(names)}; a tag can be re-pushed with other content, so release each with its digest "
            f"(python -m sophia_infra release WORKLOAD --stack {stack} --tag TAG --digest sha256:..., which the release "
            "workflow does) and the pods run exactly the image that was built.")
