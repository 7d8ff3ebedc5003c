"""Every command in README.md and docs/*.md is run, or checked when it cannot run here.

Each fenced `sh`/`bash`/`console`/`python` block carries a marker on the line before its fence:

- `<!-- runs: offline -->`: run here, from the repository with `.venv/bin` on PATH; must exit 0;
- `<!-- runs: fake-pulumi -->`: likewise, with a fake `pulumi` on PATH answering
  `pulumi stack output` from the program's real outputs (tests/fake_pulumi.py);
- `<!-- runs: ci -->`: `make` targets too long to run inside a test (CI runs them): the Makefile
  must have them;
- `<!-- needs: WHAT -->` (WHAT in NEEDS): cannot run here; a shell block must pass `bash -n` and
  name only commands that exist (on PATH, bash builtins, repository scripts, or KNOWN_EXTERNALS),
  a Python block must compile and its imports resolve.

In every block, `python -m sophia_infra CMD`, `make TARGET`, `./deploy.sh CMD` and
`pulumi CMD` must name what exists. A block without a marker fails, and so does an unlabelled
fence. Relative links between the pages must resolve, anchors included."""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.fake_pulumi import install, stack_plans  # noqa: F401  (a session fixture)
from tests import yaml_c

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND_LANGS = {"sh", "bash", "console", "python"}
OTHER_LANGS = {"yaml", "text", "mermaid", "json"}
RUNS = {"offline", "fake-pulumi", "ci"}
NEEDS = {"pulumi-cli", "cluster", "credentials", "network", "git-remote"}
# Commands an operator has that this machine need not: named explicitly, nothing else passes.
KNOWN_EXTERNALS = {"pulumi", "kubectl", "curl", "gh", "jq", "git", "helm", "argocd", "ssh"}
PULUMI_COMMANDS = {"config", "destroy", "env", "import", "login", "preview", "refresh", "stack", "state", "up", "whoami"}
MAX_EXECUTED = 10  # each one costs a subprocess; keep the test short
BIN_PATH = f"{ROOT / '.tools' / 'bin'}:{ROOT / '.venv' / 'bin'}"

FENCE = re.compile(r"^(\s*)```(.*)$")
MARKER = re.compile(r"^\s*<!--\s*(runs|needs):\s*([\w-]+)\s*-->\s*$")


@dataclass
class Block:
    page: str
    line: int  # of the opening fence
    lang: str
    code: str
    marker: tuple[str, str] | None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def blocks_of(text: str, page: str) -> list[Block]:
    """Every fenced block of a page, with the marker on the non-blank line before it."""
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang = m.group(1), m.group(2).strip()
        start, body = i, []
        i += 1
        while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        mm = MARKER.match(before)
        out.append(Block(page, start + 1, lang, "\n".join(body) + "\n", (mm.group(1), mm.group(2)) if mm else None))
    return out


def _page_blocks() -> list[Block]:
    return [b for p in PAGES for b in blocks_of(p.read_text(), str(p.relative_to(ROOT)))]


BLOCKS = _page_blocks()
COMMAND_BLOCKS = [b for b in BLOCKS if b.lang in COMMAND_LANGS]


def label_problems(blocks: list[Block]) -> list[str]:
    out = []
    for b in blocks:
        if not b.lang:
            out.append(f"{b.id}: a fence without a language; label it ({', '.join(sorted(COMMAND_LANGS | OTHER_LANGS))})")
        elif b.lang not in COMMAND_LANGS | OTHER_LANGS:
            out.append(f"{b.id}: unknown fence language {b.lang!r}")
        elif b.lang in COMMAND_LANGS:
            if b.marker is None:
                out.append(f"{b.id}: a {b.lang} block without a marker; put <!-- runs: offline --> "
                           f"(or fake-pulumi, ci) or <!-- needs: WHAT --> on the line before its fence")
            elif (b.marker[0] == "runs" and b.marker[1] not in RUNS) or (b.marker[0] == "needs" and b.marker[1] not in NEEDS):
                out.append(f"{b.id}: unknown marker {b.marker[0]}: {b.marker[1]}")
    return out


def shell_commands(block: Block) -> str:
    """The shell text of a block (a console block's `$ ` lines)."""
    if block.lang == "console":
        return "\n".join(line[2:] for line in block.code.splitlines() if line.startswith("$ ")) + "\n"
    return block.code


def command_words(script: str) -> list[str]:
    """The first word of every simple command: after pipes, `&&`, `;`, `$(`, assignments."""
    words = []
    for line in script.replace("\\\n", " ").splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line)
        for segment in re.split(r"\|\||&&|[|;]|\$\(|`", line):
            try:
                tokens = shlex.split(segment)
            except ValueError:
                tokens = segment.split()
            tokens = [t for t in tokens if t != "!"]
            while tokens and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", tokens[0]):
                tokens.pop(0)
            if tokens:
                words.append(tokens[0].rstrip(")"))
    return words


@pytest.fixture(scope="session")
def cli_commands() -> set[str]:
    """The subcommands `python -m sophia_infra --help` lists (asked in-process: no second interpreter)."""
    import contextlib
    import io

    from sophia_infra.__main__ import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["--help"])
    # The COMMAND list: one indented `name  summary` line per subcommand.
    found = set(re.findall(r"^    ([a-z][\w-]*)  +\S", out.getvalue(), re.M))
    assert len(found) >= 9, out.getvalue()
    return found


@functools.cache
def make_targets() -> set[str]:
    return set(re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(), flags=re.M))


@functools.cache
def deploy_commands() -> set[str]:
    usage = subprocess.run([str(ROOT / "deploy.sh"), "--help"], capture_output=True, text=True).stdout
    return set(re.findall(r"^  (\w+) ", usage, flags=re.M))


@functools.cache
def _bash_builtins() -> set[str]:
    out = subprocess.run(["bash", "-c", "compgen -b; compgen -k"], capture_output=True, text=True).stdout
    return set(out.split())


def name_problems(block: Block, cli: set[str], targets: set[str], deploy: set[str]) -> list[str]:
    """Subcommands named in a block that do not exist."""
    code, out = block.code, []
    for cmd in re.findall(r"-m[ \t]+sophia_infra[ \t]+([a-z][\w-]*)", code):
        if cmd not in cli:
            out.append(f"{block.id}: `python -m sophia_infra {cmd}`: no such command (have {', '.join(sorted(cli))})")
    if block.lang == "python":
        return out
    script = shell_commands(block)
    for target in re.findall(r"(?:^|[;&|][ \t]*)make[ \t]+([\w.-]+)", script, flags=re.M):
        if target not in targets:
            out.append(f"{block.id}: `make {target}`: the Makefile has no such target")
    for cmd in re.findall(r"\./deploy\.sh[ \t]+(?:--[\w-]+[ \t]+)*(\w+)", script):
        if cmd not in deploy:
            out.append(f"{block.id}: `./deploy.sh {cmd}`: deploy.sh has no such command")
    for cmd in re.findall(r"(?:^|[;&|(][ \t]*)pulumi[ \t]+([a-z][\w-]*)", script, flags=re.M):
        if cmd not in PULUMI_COMMANDS:
            out.append(f"{block.id}: `pulumi {cmd}`: not a pulumi command this project uses ({', '.join(sorted(PULUMI_COMMANDS))})")
    return out


def shell_problems(block: Block, builtins: set[str]) -> list[str]:
    script = shell_commands(block)
    syntax = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    if syntax.returncode != 0:
        return [f"{block.id}: bash -n: {syntax.stderr.strip()}"]
    out = []
    path = f"{BIN_PATH}:{os.environ.get('PATH', '')}"
    for word in command_words(script):
        ok = (word in builtins or word in KNOWN_EXTERNALS
              or ((ROOT / word).exists() if "/" in word else shutil.which(word, path=path) is not None))
        if not ok:
            out.append(f"{block.id}: `{word}` is not a command here, a repository script or a known external "
                       f"({', '.join(sorted(KNOWN_EXTERNALS))})")
    return out


def _spec(module: str):
    try:
        return importlib.util.find_spec(module)
    except (ImportError, AttributeError):  # a parent that is a module, not a package
        return None


def python_problems(block: Block) -> list[str]:
    try:
        tree = ast.parse(compile(block.code, block.id, "exec", flags=ast.PyCF_ONLY_AST))
    except SyntaxError as e:
        return [f"{block.id}: does not compile: {e}"]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules = [(node.module, [a.name for a in node.names])]
        else:
            continue
        for module, names in modules:
            if _spec(module.split(".")[0]) is None or _spec(module) is None:
                out.append(f"{block.id}: imports {module}, which does not exist")
                continue
            if module.split(".")[0] == "sophia_infra":
                loaded = importlib.import_module(module)
                out += [f"{block.id}: {module} has no {n}" for n in names
                        if not hasattr(loaded, n) and _spec(f"{module}.{n}") is None]
    return out


# ----------------------------------------------------------------------------- the pages' blocks


def test_every_command_block_is_labelled_and_marked():
    assert label_problems(BLOCKS) == []


def test_the_pages_have_command_blocks_of_every_kind():
    kinds = {b.marker for b in COMMAND_BLOCKS}
    assert {("runs", "offline"), ("runs", "fake-pulumi"), ("runs", "ci"), ("needs", "pulumi-cli")} <= kinds


def test_the_executed_blocks_are_few():
    executed = [b.id for b in COMMAND_BLOCKS if b.marker in (("runs", "offline"), ("runs", "fake-pulumi"))]
    assert 0 < len(executed) <= MAX_EXECUTED, executed


@pytest.mark.parametrize("block", COMMAND_BLOCKS, ids=[b.id for b in COMMAND_BLOCKS])
def test_named_commands_exist(block, cli_commands):
    assert name_problems(block, cli_commands, make_targets(), deploy_commands()) == []


NOT_RUN = [b for b in COMMAND_BLOCKS if b.marker and b.marker[0] == "needs"]


@pytest.mark.parametrize("block", NOT_RUN, ids=[b.id for b in NOT_RUN])
def test_a_block_that_cannot_run_here_is_well_formed(block):
    problems = python_problems(block) if block.lang == "python" else shell_problems(block, _bash_builtins())
    assert problems == []


CI = [b for b in COMMAND_BLOCKS if b.marker == ("runs", "ci")]


@pytest.mark.parametrize("block", CI, ids=[b.id for b in CI])
def test_ci_blocks_are_make_targets_ci_runs(block):
    ci_script = (ROOT / ".ci" / "run").read_text()
    for word, line in zip(command_words(block.code), block.code.strip().splitlines()):
        target = shlex.split(line.split("#")[0])[1:]
        assert word == "make" and len(target) == 1 and target[0] in make_targets(), line
        assert f"make {target[0]}" in ci_script, f"{block.id}: .ci/run does not run `make {target[0]}`"


RUN = [b for b in COMMAND_BLOCKS if b.marker in (("runs", "offline"), ("runs", "fake-pulumi"))]


@pytest.mark.parametrize("block", RUN, ids=[b.id for b in RUN])
def test_a_runnable_block_runs(block, tmp_path, stack_plans):  # noqa: F811
    path = f"{BIN_PATH}:{os.environ.get('PATH', '')}"
    if block.marker == ("runs", "fake-pulumi"):
        install(tmp_path / "bin", stack_plans)
        path = f"{tmp_path / 'bin'}:{path}"
    env = {**os.environ, "PATH": path}
    if block.lang == "python":
        cmd = [sys.executable, "-c", block.code]
    else:
        cmd = ["bash", "-euo", "pipefail", "-c", shell_commands(block)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{block.id} exited {proc.returncode}:\n{proc.stderr[-2000:]}"


def test_the_script_snippet_fails_when_the_stack_lacks_the_node(tmp_path, stack_plans):  # noqa: F811
    """The jq snippet stops a script, rather than handing it `null`, on a stack without sophia-mcp."""
    [block] = [b for b in RUN if b.page == "docs/outputs.md" and "jq" in b.code]
    install(tmp_path / "bin", stack_plans)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{BIN_PATH}:{os.environ.get('PATH', '')}"}
    script = block.code.replace("--stack production", "--stack dev")
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "null" not in proc.stdout


# ----------------------------------------------------------------------------- links and pages


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    out, seen = set(), {}
    in_fence = False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m and not in_fence:
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def link_problems(page: Path, root: Path = ROOT) -> list[str]:
    out = []
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            out.append(f"{page.relative_to(root)}: link to {target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            out.append(f"{page.relative_to(root)}: link to {target}: no such heading in {dest.relative_to(root)}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_links_between_the_pages_resolve(page):
    assert link_problems(page) == []


DOC_PAGES = [p for p in PAGES if p.parent.name == "docs"]


@pytest.mark.parametrize("page", DOC_PAGES, ids=[p.name for p in DOC_PAGES])
def test_a_doc_page_starts_with_who_it_is_for(page):
    lines = [line for line in page.read_text().splitlines() if line.strip()]
    assert lines[0].startswith("# ") and lines[1].startswith("*For "), (
        f"{page.name}: the line after the title says who the page is for (*For …*)")


def test_the_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 160


def test_every_doc_page_is_on_the_readme_map():
    readme = (ROOT / "README.md").read_text()
    assert [p.name for p in DOC_PAGES if f"(docs/{p.name})" not in readme] == []


# ----------------------------------------------------------------------------- the checks catch what they should


def _one(md: str) -> Block:
    [block] = blocks_of(md, "x.md")
    return block


def test_an_unmarked_or_unlabelled_block_is_refused():
    assert "without a marker" in label_problems([_one("text\n\n```sh\nmake test\n```\n")])[0]
    assert "without a language" in label_problems([_one("```\nmake test\n```\n")])[0]
    assert "unknown marker" in label_problems([_one("<!-- needs: luck -->\n```sh\nmake test\n```\n")])[0]
    assert label_problems([_one("<!-- needs: cluster -->\n```sh\nkubectl get nodes\n```\n")]) == []


def test_a_marker_is_read_across_a_blank_line_and_an_indented_fence():
    block = _one("1. step:\n\n   <!-- runs: offline -->\n\n   ```sh\n   make plan\n   ```\n")
    assert block.marker == ("runs", "offline") and block.code == "make plan\n"


def test_command_words_are_found_after_pipes_substitutions_and_assignments():
    script = "A=$(pulumi stack output x --json | jq -r .y)\nFOO=1 ./deploy.sh status && echo \"$A\" # jq\n"
    assert command_words(script) == ["pulumi", "jq", "./deploy.sh", "echo"]


def test_unknown_commands_and_names_are_refused(cli_commands):
    block = _one("<!-- needs: cluster -->\n```sh\nkubectl get nodes\nkubctl get pods\n./nope.sh\n```\n")
    problems = shell_problems(block, _bash_builtins())
    assert len(problems) == 2 and "`kubctl`" in problems[0] and "`./nope.sh`" in problems[1]
    assert shell_problems(_one("<!-- needs: cluster -->\n```sh\nif then\n```\n"), set())[0].startswith("x.md:2: bash -n")
    block = _one("<!-- needs: cluster -->\n```sh\npython -m sophia_infra plna --stack dev\nmake tests\n"
                 "./deploy.sh rollbak dev\npulumi upp\n```\n")
    problems = name_problems(block, cli_commands, make_targets(), deploy_commands())
    assert [p.split("`")[1] for p in problems] == [
        "python -m sophia_infra plna", "make tests", "./deploy.sh rollbak", "pulumi upp"]


def test_a_python_block_must_compile_and_import_what_exists():
    assert "does not compile" in python_problems(_one("```python\nprint(\n```\n"))[0]
    assert python_problems(_one("```python\nfrom sophia_infra.outputs import read_output\n```\n")) == [
        "x.md:1: sophia_infra.outputs has no read_output"]
    assert python_problems(_one("```python\nimport sophia_infra.output\n```\n")) == [
        "x.md:1: imports sophia_infra.output, which does not exist"]


def test_a_broken_link_is_refused(tmp_path):
    page = tmp_path / "docs" / "a.md"
    page.parent.mkdir()
    (tmp_path / "docs" / "b.md").write_text("# B\n\n## The `sophia:platform` keys\n")
    page.write_text("[ok](b.md#the-sophiaplatform-keys) [no file](c.md) [no heading](b.md#keys)\n")
    assert link_problems(page, root=tmp_path) == ["docs/a.md: link to c.md: no such file",
                                                  "docs/a.md: link to b.md#keys: no such heading in docs/b.md"]


def test_the_installer_checksum_command_names_the_pinned_k3s_version():
    """The first-deployment step fetches the checksum of the installer the stacks pin."""
    pins = {yaml_c.load((ROOT / f"Pulumi.{s}.yaml").read_text())["config"]["sophia:k3s"]["version"]
            for s in ("dev", "production")}
    urls = re.findall(r"k3s-io/k3s/([^/\s]+)/install\.sh\.sha256sum", (ROOT / "docs" / "operating.md").read_text())
    assert urls and {u.replace("%2B", "+") for u in urls} == pins


def test_the_documented_error_messages_are_the_programs():
    """configuration.md shows what a mistake looks like: the program's own words, exactly."""
    from sophia_infra.program.config import stack as config
    from tests.conftest import parse_with

    def two_values(raw):
        raw["nodes"][1]["gpu"]["type"] = "H100"
        raw["k3s"]["version"] = "latest"

    def across_keys(raw):
        [ai_memory] = [s for s in raw["services"] if s["name"] == "ai-memory"]
        ai_memory["image"]["platforms"] = ["linux/amd64"]

    page = (ROOT / "docs" / "configuration.md").read_text()
    shown = [b.code.strip() for b in blocks_of(page, "configuration.md") if b.lang == "text"]
    printed = []
    for change in (two_values, across_keys):
        with pytest.raises(config.ConfigError) as err:
            parse_with("production", change)
        printed.append(f"error: {err.value}")
    assert shown == printed

    with pytest.raises(config.ConfigError) as err:
        parse_with("production", lambda raw: raw.update(service=raw.pop("services")))
    assert f"`{err.value.problems[0]}`" in " ".join(page.split())  # as written, across a line break


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_commands_named_in_the_prose_exist(page, cli_commands):
    """Tables and sentences name commands too: `python -m sophia_infra X`, `make X`, `./deploy.sh X`."""
    text = re.sub(r"^\s*```.*?^\s*```", "", page.read_text(), flags=re.S | re.M)  # the blocks are checked above
    prose = Block(str(page.relative_to(ROOT)), 0, "sh", "\n".join(re.findall(r"`([^`\n]+)`", text)), None)
    assert name_problems(prose, cli_commands, make_targets(), deploy_commands()) == []
