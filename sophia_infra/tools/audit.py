"""Address audit: find IP literals and URLs with literal addresses in code and config.

Addresses belong in ESC and come out as stack outputs; a literal in the repo is a
hard-coded address. Documentation ranges, loopback and unspecified addresses are fine,
and so is anything matched by the allowlist file (one CIDR per line, `# why` after it).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

ALLOWLIST = ".address-allowlist"
# Not the project's own files: tools, builds, and .cache (the upstream charts `charts --pull` fetches).
SKIP_DIRS = {".git", ".venv", ".tools", "build", ".cache", "node_modules", "__pycache__", ".pytest_cache"}
SUFFIXES = {".py", ".yaml", ".yml", ".json", ".sh", ".tpl", ".txt", ".toml", ".cfg", ".ini", ".md", ".j2", ".conf", ".env"}
NAMES = {"Makefile", "Dockerfile", "run"}

ALWAYS_ALLOWED = [ipaddress.ip_network(n) for n in (
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32",  # documentation
    "127.0.0.0/8", "::1/128",  # loopback
    "0.0.0.0/32", "::/128",  # unspecified
)]

_IPV4 = re.compile(r"(?<![\w.])((?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3})(?:/(\d{1,2}))?(?![\w.])")
_IPV6 = re.compile(r"(?<![\w:.])([0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})(?:/(\d{1,3}))?(?![\w:])")


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    literal: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.literal}"


class AuditError(Exception):
    """The audit could not run (a missing path, a bad allowlist); one sentence."""


def load_allowlist(path: Path, required: bool = False) -> list:
    if not path.is_file():
        if required:
            raise AuditError(f"{path} does not exist; give an allowlist file (one CIDR per line) or leave --allowlist out")
        return []
    nets = []
    for number, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        entry = raw.split("#", 1)[0].strip()
        if entry:
            try:
                nets.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise AuditError(f"{path}:{number}: '{entry}' is not an address or CIDR range; write one CIDR per line, `# why` after it") from None
    return nets


def _literals(line: str) -> Iterator[tuple[str, object]]:
    for m in _IPV4.finditer(line):
        if line[:m.start()].endswith("=="):  # a pinned four-part version, not an address
            continue
        try:
            yield m.group(0), ipaddress.ip_network(m.group(0), strict=False)
        except ValueError:  # an impossible prefix (/33): the address itself is still a literal
            try:
                yield m.group(0), ipaddress.ip_network(m.group(0).split("/")[0])
            except ValueError:
                continue  # not an address at all (999.1.1.1)
    for m in _IPV6.finditer(line):
        text = m.group(0)
        if text.count(":") < 2 or not re.search(r"[0-9A-Fa-f]", text):
            continue
        try:
            yield text, ipaddress.ip_network(text, strict=False)
        except ValueError:
            continue


def _allowed(net, allow: list) -> bool:
    if net.prefixlen == 0:  # 0.0.0.0/0 and ::/0 name every address, not a host
        return True
    return any(net.version == a.version and net.subnet_of(a) for a in ALWAYS_ALLOWED + allow)


def scan_text(text: str, path: Path, allow: list) -> list[Finding]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for literal, net in _literals(line):
            if not _allowed(net, allow):
                found.append(Finding(path, number, literal))
    return found


def files(paths: Iterable[Path]) -> Iterator[Path]:
    for root in paths:
        if root.is_file():
            yield root
            continue
        for p in sorted(root.rglob("*")):
            if any(part in SKIP_DIRS for part in p.relative_to(root).parts):
                continue
            if p.is_file() and (p.suffix in SUFFIXES or p.name in NAMES):
                yield p


def audit(paths: Iterable[Path], allowlist: Path, allowlist_required: bool = False) -> list[Finding]:
    """Findings in `paths`; AuditError when a path does not exist (nothing checked is not a pass)."""
    paths = list(paths)
    for path in paths:
        if not path.exists():
            raise AuditError(f"{path} does not exist; give files or folders to scan")
    allow = load_allowlist(allowlist, allowlist_required)
    found = []
    for p in files(paths):
        try:
            text = p.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        found.extend(scan_text(text, p, allow))
    return found
