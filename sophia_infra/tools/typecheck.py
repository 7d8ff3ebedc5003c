"""`make typecheck`: pyright over the program, its clean verdict kept by the content of what it reads.

pyright has no incremental mode on the command line: every run parses ~1,100 files (the program
and the SDKs it imports) and checks 86, about 19 CPU-s, a tenth of what `make test` uses. Its
verdict depends only on the files it checks, its configuration, its own version, the Python
version and the packages installed beside it. So a clean run is kept in build/typecheck/ under
the digest of all of them (input_key); the next run over the very same inputs prints that verdict
again instead of starting pyright. Any changed byte of a checked file, any package or version is
a new run; a failing run is never kept; `make clean` (or deleting the folder) forces a run.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEPT = Path("build", "typecheck")  # below the project's root
CACHE = ROOT / KEPT
SOURCE_SUFFIXES = (".py", ".pyi")


def _excluded(relative: str, patterns: list[str]) -> bool:
    """pyright's exclude: a pattern matches the file or a folder above it."""
    parts = relative.split("/")
    ancestors = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(fnmatch.fnmatchcase(a, p) or fnmatch.fnmatchcase(a, p.removeprefix("**/"))
               for a in ancestors for p in patterns)


def checked_files(root: Path = ROOT) -> list[Path]:
    """The project's files pyright reads: its `include` minus its `exclude` and the folders it
    leaves out by itself (hidden ones, node_modules), and the local stubs (`typings/`) if any.
    A virtualenv inside (policy/venv) is read whole: a superset only costs a needless run."""
    config = json.loads((root / "pyrightconfig.json").read_text())
    patterns = [*config.get("exclude", []), "**/.*", "**/node_modules"]
    tops = [root / entry for entry in [*config.get("include", ["."]), config.get("stubPath", "typings")]]
    found: set[Path] = set()
    for top in tops:
        for path in [top] if top.is_file() else top.rglob("*") if top.is_dir() else []:
            if path.suffix in SOURCE_SUFFIXES and path.is_file() \
                    and not _excluded(path.relative_to(root).as_posix(), patterns):
                found.add(path)
    return sorted(found)


def installed_distributions() -> list[str]:
    """name-version of every distribution in this interpreter's site-packages (pyright reads the
    SDKs from there, and the pyright wheel is one of them)."""
    site = {Path(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")}
    return sorted(d.name for s in site if s.is_dir() for d in s.glob("*.dist-info"))


def input_key(root: Path = ROOT) -> str:
    """Digest of everything the verdict depends on: pyright's configuration, every checked file
    (path and bytes), the Python version and the installed distributions."""
    digest = hashlib.sha256((root / "pyrightconfig.json").read_bytes() + b"\0")
    digest.update(sys.version.encode() + b"\0")
    for dist in installed_distributions():
        digest.update(dist.encode() + b"\0")
    for path in checked_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def check(root: Path = ROOT, args: tuple[str, ...] = ()) -> int:
    """pyright's exit code over the project at `root`; printed: its report, or the kept one. With
    arguments (files, options) pyright always runs and nothing is kept."""
    kept = root / KEPT / f"{input_key(root)}.txt"
    if not args and kept.is_file():
        print(f"typecheck: nothing pyright reads has changed since it passed ({kept.relative_to(root)}):")
        print(kept.read_text(), end="")
        return 0
    env = {**os.environ, "PYRIGHT_PYTHON_IGNORE_WARNINGS": "1"}  # no PyPI "newer version" look-up
    proc = subprocess.run([sys.executable, "-m", "pyright", *args], cwd=root, env=env,
                          stdout=subprocess.PIPE, text=True)
    print(proc.stdout, end="")
    if proc.returncode == 0 and not args:
        kept.parent.mkdir(parents=True, exist_ok=True)
        partial = kept.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(proc.stdout)
        partial.replace(kept)  # whole or absent
    return proc.returncode


if __name__ == "__main__":
    sys.exit(check(args=tuple(sys.argv[1:])))
