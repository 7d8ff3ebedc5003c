"""The layout's rules, read from the source with `ast` (nothing is imported):

- the package has no import cycle: every import counts, at module level or inside a function,
  except those under `if TYPE_CHECKING:` (they never run; annotations only);
- the Pulumi program (`sophia_infra/program/`) never imports the operator tools
  (`sophia_infra/tools/`, the CLI `sophia_infra/__main__.py`), and neither does the Pulumi
  entry point `__main__.py`;
- the configuration package imports no layer: its arrows point to shared models and names only;
- the Pulumi entry point `__main__.py` stays short.

An import of a name from a package counts as an import of the package and, when the name is
a submodule, of that submodule too; importing `a.b.c` imports `a` and `a.b` first."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "sophia_infra"
PROGRAM, TOOLS = "sophia_infra.program", "sophia_infra.tools"
CONFIG = "sophia_infra.program.config"
# Kept at its old path only so that states written before the move still load their Lambda
# Cloud dynamic providers (Pulumi stores them by module reference); it imports the program only.
STATE_ALIASES = {"sophia_infra.lambda_cloud", "sophia_infra.lambda_cloud.provider"}
# The public path consumers import the outputs helper from (docs/outputs.md): an operator
# tool at a stable address, so the program must not import it either.
PUBLIC_TOOLS = {"sophia_infra.outputs"}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in sorted(PKG.rglob("*.py")) if "__pycache__" not in p.parts}


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, module: str) -> list[tuple[str, int]]:
    """(imported sophia_infra module, line) for every import that runs."""
    is_package = path.name == "__init__.py"
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, node.lineno))
            found.extend((f"{target}.{a.name}", node.lineno) for a in node.names
                         if f"{target}.{a.name}" in MODULES)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    out = []
    for target, line in found:
        if not (target == "sophia_infra" or target.startswith("sophia_infra.")):
            continue
        parts = target.split(".")
        # the module itself and the packages above it, as far as they are this package's
        out += [(".".join(parts[:k]), line) for k in range(1, len(parts) + 1) if ".".join(parts[:k]) in MODULES]
    return out


@functools.lru_cache(maxsize=None)
def _graph() -> dict:
    """module -> (imported module, line) of every import in it (parsed when a test first asks)."""
    return {m: _imports(p, m) for m, p in MODULES.items()}


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _tools(module: str) -> bool:
    return _within(module, TOOLS) or module == "sophia_infra.__main__" or module in PUBLIC_TOOLS


def test_the_tree_has_both_halves():
    assert any(_within(m, PROGRAM) for m in MODULES) and any(_within(m, TOOLS) for m in MODULES)
    assert all(_within(m, PROGRAM) or _tools(m) or m in STATE_ALIASES or m == "sophia_infra" for m in MODULES), (
        "every module belongs to the program (sophia_infra/program/) or the tools (sophia_infra/tools/, the CLI)")


def test_no_import_cycle():
    # Ancestors are skipped as edges of their own descendants (importing a.b runs a first,
    # a package importing its own submodules is not a cycle back through its child).
    edges = {m: sorted({t for t, _ in deps if t != m and not _within(m, t)}) for m, deps in _graph().items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in edges[m]:
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                lines = [f"{a} imports {b} ({MODULES[a].relative_to(ROOT)}:"
                         f"{next(line for x, line in _graph()[a] if x == b)})" for a, b in zip(cycle, cycle[1:])]
                pytest.fail("import cycle: " + "; ".join(lines))
            if t not in state:
                walk(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            walk(m)


def _offending(importers, forbidden) -> list[str]:
    return sorted({f"{MODULES[m].relative_to(ROOT)}:{line} imports {t}" for m in _graph() if importers(m)
                   for t, line in _graph()[m] if forbidden(t) and t != "sophia_infra"})


def test_the_program_never_imports_the_tools():
    bad = _offending(lambda m: _within(m, PROGRAM) or m in STATE_ALIASES, _tools)
    assert not bad, "the Pulumi program imports the operator tools:\n" + "\n".join(bad)


def test_the_pulumi_entry_point_imports_only_the_program():
    entry = ROOT / "__main__.py"
    bad = [f"__main__.py:{line} imports {t}" for t, line in _imports(entry, "__main__") if _tools(t)]
    assert not bad, "\n".join(bad)


def test_the_configuration_imports_no_layer():
    shared = {f"{CONFIG}.{m}" for m in ("models", "validators", "names", "instance_types")}
    bad = _offending(lambda m: _within(m, CONFIG),
                     lambda t: not _within(t, CONFIG) and t not in (PROGRAM, "sophia_infra"))
    assert not bad, "the configuration imports a layer or a tool:\n" + "\n".join(bad)
    # shared models, validators and names import no layer's settings
    bad = _offending(lambda m: m in shared, lambda t: _within(t, CONFIG) and t != CONFIG and t not in shared)
    assert not bad, "a shared configuration module imports a layer's settings:\n" + "\n".join(bad)


def test_the_pulumi_entry_point_is_short():
    lines = [x for x in (ROOT / "__main__.py").read_text().splitlines() if x.strip() and not x.lstrip().startswith("#")]
    assert len(lines) <= 15, f"__main__.py has {len(lines)} lines of code: the program belongs in sophia_infra/program/"


def test_the_rules_catch_what_they_should(tmp_path):
    """The reader sees a function-level import and skips TYPE_CHECKING."""
    f = tmp_path / "m.py"
    f.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sophia_infra.tools import audit\n"
                 "def f():\n    from sophia_infra.tools.plan import runner\n")
    got = {t for t, _ in _imports(f, "sophia_infra.program.m")}
    assert "sophia_infra.tools.plan.runner" in got and "sophia_infra.tools.audit" not in got


def test_the_public_outputs_path_counts_as_a_tool(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from sophia_infra.outputs import read_outputs\n")
    assert any(_tools(t) for t, _ in _imports(f, "sophia_infra.program.m"))


def test_old_states_still_find_the_lambda_providers():
    """Unpickling a provider stored by reference imports its module and looks the class up."""
    import importlib

    from sophia_infra.program.lambda_cloud import provider

    old = importlib.import_module("sophia_infra.lambda_cloud.provider")
    for name in ("InstanceProvider", "SshKeyProvider", "FirewallRulesProvider", "_Provider"):
        assert getattr(old, name) is getattr(provider, name)
