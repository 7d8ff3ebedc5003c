"""The offline reading of stack files and ESC definitions, as the CLI would merge them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sophia_infra.tools.plan import stack_config
from tests import yaml_c


def _project(tmp_path: Path, stack_yaml: str, env_yaml: str) -> Path:
    (tmp_path / "esc").mkdir()
    (tmp_path / "Pulumi.t.yaml").write_text(stack_yaml)
    (tmp_path / "esc" / "sophia-ai-t.yaml").write_text(env_yaml)
    return tmp_path


ENV = """
values:
  sophia:
    hosts: {a: {address: 192.0.2.1}}
    key: {fn::secret: s3cret}
    user: ubuntu
  pulumiConfig:
    sophia:hosts: ${sophia.hosts}
    sophia:sshPrivateKey: ${sophia.key}
    sophia:greeting: "hello ${sophia.user}"
    sophia:wrapped: "key=${sophia.key}"
    sophia:sshUser: ${sophia.user}
"""


def test_esc_values_secrets_and_stack_precedence(tmp_path):
    root = _project(tmp_path, "environment: [sophia-ai/t]\nconfig:\n  sophia:sshUser: admin\n", ENV)
    config, secret_keys = stack_config.load("t", root)
    assert json.loads(config["sophia:hosts"]) == {"a": {"address": "192.0.2.1"}}
    assert config["sophia:sshPrivateKey"] == "s3cret"
    assert config["sophia:greeting"] == "hello ubuntu"
    assert config["sophia:sshUser"] == "admin"  # the stack file wins over ESC
    assert sorted(secret_keys) == ["sophia:sshPrivateKey", "sophia:wrapped"]  # secrecy survives interpolation


def test_dangling_reference_is_named(tmp_path):
    root = _project(tmp_path, "environment: [sophia-ai/t]\n", "values:\n  pulumiConfig:\n    sophia:x: ${sophia.nope}\n")
    with pytest.raises(stack_config.StackFileError, match=r"\$\{sophia.nope\}"):
        stack_config.load("t", root)


def test_encrypted_stack_values_are_refused(tmp_path):
    root = _project(tmp_path, "config:\n  sophia:sshPrivateKey: {secure: AAAB}\n", "values: {}\n")
    with pytest.raises(stack_config.StackFileError, match="keep secrets in ESC"):
        stack_config.load("t", root)


def test_missing_stack_file(tmp_path):
    with pytest.raises(stack_config.StackFileError, match="Pulumi.nope.yaml does not exist"):
        stack_config.load("nope", tmp_path)


def test_real_esc_files_mark_every_credential_secret(stack):
    config, secret_keys = stack_config.load(stack)
    plain = {k for k in config if k not in secret_keys}
    assert plain == {"sophia:hosts", "sophia:sshUser"} | {k for k in config if not k.startswith("sophia:") or k in {
        "sophia:environment", "sophia:k3s", "sophia:nodes", "sophia:delivery", "sophia:charts", "sophia:services",
        "sophia:platform"}}
    for key in secret_keys:
        assert config[key].startswith("placeholder-"), key


def test_esc_addresses_are_documentation_ranges(stack):
    import ipaddress
    config, _ = stack_config.load(stack)
    doc = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
    for host in json.loads(config["sophia:hosts"]).values():
        assert any(ipaddress.ip_address(host["address"]) in n for n in doc), host


# ----------------------------------------------------------------------------- syntax errors: one line, where and what

STACK = "environment: [sophia-ai/t]\nconfig:\n  sophia:sshUser: admin\n"


@pytest.mark.parametrize("text,where,what", [
    ("config:\n  sophia:k3s:\n\tversion: v1\n", "3:1", "found character '\\t' that cannot start any token; indent with spaces, not tabs"),
    ("config:\n  sophia:k3s: {version: v1, firewall: true\n  sophia:nodes: []\n", "3:15",
     "expected ',' or '}', but got ':' (while parsing a flow mapping that starts at line 2, column 15)"),
    ("config:\n  sophia:k3s: {}\n  sophia:nodes: []\n  sophia:k3s: {firewall: true}\n", "4:3",
     "'sophia:k3s' is given twice (first on line 2); keep one"),
    ("config:\n  sophia:k3s: {version: a, version: b}\n", "2:28", "'version' is given twice (first on line 2); keep one"),
    ("- config\n", "1:1", "the file is not a YAML mapping; write `key: value` at the top level"),
])
def test_stack_file_syntax_error_is_one_located_line(tmp_path, text, where, what):
    root = _project(tmp_path, text, "values: {}\n")
    with pytest.raises(stack_config.StackFileSyntaxError) as err:
        stack_config.load("t", root)
    assert str(err.value) == f"{root / 'Pulumi.t.yaml'}:{where}: {what}"


def test_esc_file_syntax_error_is_located(tmp_path):
    root = _project(tmp_path, STACK, "values:\n  pulumiConfig:\n    sophia:hosts: {a: 192.0.2.1\n")
    with pytest.raises(stack_config.StackFileSyntaxError) as err:
        stack_config.load("t", root)
    assert str(err.value).startswith(f"{root / 'esc' / 'sophia-ai-t.yaml'}:4:1: expected ',' or '}}'")
    assert "\n" not in str(err.value)


def test_non_utf8_bytes_are_located(tmp_path):
    root = _project(tmp_path, STACK, "values: {}\n")
    (root / "Pulumi.t.yaml").write_bytes(b"config:\n  sophia:sshUser: adm\xe9n\n")
    with pytest.raises(stack_config.StackFileSyntaxError, match=r"Pulumi.t.yaml:2:22: byte 0xe9 is not UTF-8; save the file as UTF-8$"):
        stack_config.load("t", root)


def test_merge_keys_still_override(tmp_path):
    root = _project(tmp_path, "x: &base {a: 1, b: 2}\nconfig:\n  sophia:k3s:\n    <<: *base\n    b: 3\n", "values: {}\n")
    config, _ = stack_config.load("t", root)
    assert json.loads(config["sophia:k3s"]) == {"a": 1, "b": 3}


# ----------------------------------------------------------------------------- unknown keys, offline

def _real_project(tmp_path: Path, stack: str, edit) -> Path:
    import shutil
    from tests.conftest import ROOT
    shutil.copytree(ROOT / "esc", tmp_path / "esc")
    text = (ROOT / f"Pulumi.{stack}.yaml").read_text()
    (tmp_path / f"Pulumi.{stack}.yaml").write_text(edit(text))
    return tmp_path


def test_offline_typo_of_a_top_level_key(tmp_path):
    from sophia_infra.program.config.stack import ConfigError
    root = _real_project(tmp_path, "dev", lambda t: t.replace("  sophia:services:", "  sophia:service:"))
    with pytest.raises(ConfigError) as err:
        stack_config.load_validated("dev", root)
    assert err.value.problems == ["sophia:service: is not a key this program reads; did you mean sophia:services?"]


@pytest.mark.parametrize("written,message", [
    ("  sophai:delivery: helm", "sophai:delivery: the namespace 'sophai' is not one this program reads; did you mean sophia:delivery?"),
    ("  delivery: helm", "delivery: has no namespace, so Pulumi files it under the project's (sophia-infra:delivery), "
                         "which this program does not read; write it as sophia:delivery."),
])
def test_offline_misspelt_namespace(tmp_path, written, message):
    from sophia_infra.program.config.stack import ConfigError
    root = _real_project(tmp_path, "dev", lambda t: t.replace("  sophia:delivery: helm", written))
    with pytest.raises(ConfigError) as err:
        stack_config.load_validated("dev", root)
    assert err.value.problems == [message]


def test_offline_other_namespaces_are_kept(tmp_path):
    root = _real_project(tmp_path, "dev", lambda t: t.replace(
        "  sophia:delivery: helm", "  sophia:delivery: helm\n  pulumi:tags: {team: platform}\n  kubernetes:context: ops"))
    assert stack_config.load_validated("dev", root).delivery == "helm"


def test_the_project_namespace_is_pulumi_yamls_name():
    from sophia_infra.program.config.stack import PROJECT
    from tests.conftest import ROOT
    assert yaml_c.load((ROOT / "Pulumi.yaml").read_text())["name"] == PROJECT


def test_offline_secrets_are_not_unknown_keys(tmp_path):
    # Every ESC secret (openaiApiKey, lambdaLabsApiKey, the unused etcd S3 pair of dev) is a known key.
    cfg = stack_config.load_validated("dev", _real_project(tmp_path, "dev", lambda t: t))
    assert cfg.environment == "dev"


# ----------------------------------------------------------------------------- hostile YAML: bounded, one line, at once

def _laughs_anchors(levels: int = 9, width: int = 9) -> str:
    """The "billion laughs": each level a list of `width` aliases of the level below (9^9 values)."""
    lines = ["lol: &l0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


# Used in a config value, which the reader turns into JSON: without the bounds, that never ends.
LAUGHS = _laughs_anchors() + "environment: [sophia-ai/t]\nconfig:\n  sophia:laughs: *l9\n"


_MAX = stack_config.MAX_ALIASES
HOSTILE = {
    # 9 aliases of 10 values on line 2, of 91 on line 3, of 820 on line 4: the 5th line passes 10 000.
    "billion laughs": (LAUGHS, "5:10", f"the alias *l3 brings the values that aliases stand for above "
                       f"{stack_config.MAX_ALIASED_VALUES} (an alias bomb); write the values out or alias less"),
    "recursive mapping": ("config:\n  sophia:k3s: &k3s {version: v1, self: *k3s}\n", "2:40",
                          "the alias *k3s is inside the value it names (a structure that contains itself); write the value out"),
    "recursive list": ("config:\n  sophia:nodes: &n [{name: a}, [*n]]\n", "2:33",
                       "the alias *n is inside the value it names (a structure that contains itself); write the value out"),
    "too many aliases": ("x: &x v\ny: [" + ", ".join(["*x"] * (_MAX + 1)) + "]\n" + STACK, f"2:{5 + 4 * _MAX}",
                         f"more than {_MAX} aliases in one file (*x); write the values out"),
    "deep nesting": ("config:\n  sophia:k3s: " + "[" * 5000 + "]" * 5000 + "\n", "2:77",
                     f"nested more than {stack_config.MAX_DEPTH} levels deep; flatten the value"),
    "anchor defined twice": ("x: &a 1\ny: &a 2\n" + STACK, "2:4", "the anchor &a is defined twice (first on line 1); rename one"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_yaml_fails_at_once_with_one_located_line(tmp_path, name):
    import tracemalloc
    text, where, what = HOSTILE[name]
    root = _project(tmp_path, text, "values: {}\n")
    with pytest.raises(stack_config.StackFileSyntaxError) as err:
        stack_config.load("t", root)
    # "At once": the location is where the bound was crossed, not the end of the input (no
    # wall-clock bound here: it would measure the machine's load, not the reader).
    assert str(err.value) == f"{root / 'Pulumi.t.yaml'}:{where}: {what}"
    if "alias" in what or "nested" in what:  # the memory an alias or a deep nest could cost: measure it
        tracemalloc.start()
        with pytest.raises(stack_config.StackFileSyntaxError):
            stack_config.load("t", root)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 5 * 1024 * 1024, peak


def test_an_alias_bomb_in_the_esc_file_is_located_there(tmp_path):
    root = _project(tmp_path, STACK, "values:\n" + "".join("  " + line + "\n" for line in _laughs_anchors().splitlines())
                    + "  pulumiConfig:\n    sophia:laughs: ${l9}\n")
    with pytest.raises(stack_config.StackFileSyntaxError) as err:
        stack_config.load("t", root)
    assert str(err.value).startswith(f"{root / 'esc' / 'sophia-ai-t.yaml'}:6:12: the alias *l3 brings")


def test_aliases_up_to_the_bound_still_work(tmp_path):
    # What an operator writes: one block of defaults merged into each of many services.
    services = "".join(f"    - {{<<: *svc, name: s{i}}}\n" for i in range(_MAX))
    text = "defaults: &svc {kind: mcp, replicas: 1}\nconfig:\n  sophia:services:\n" + services
    config, _ = stack_config.load("t", _project(tmp_path, text, "values: {}\n"))
    loaded = json.loads(config["sophia:services"])
    assert len(loaded) == _MAX and loaded[-1] == {"kind": "mcp", "replicas": 1, "name": f"s{_MAX - 1}"}


def test_an_oversized_file_is_refused_before_it_is_read(tmp_path):
    root = _project(tmp_path, STACK, "values: {}\n")
    with (root / "Pulumi.t.yaml").open("a") as f:
        f.write("#" * stack_config.MAX_FILE_BYTES + "\n")
    with pytest.raises(stack_config.StackFileSyntaxError, match=r"Pulumi.t.yaml:1:1: the file has \d+ bytes, more than"):
        stack_config.load("t", root)


CLI_EDITS = {
    "billion laughs": (lambda t: _laughs_anchors() + t.replace("config:\n", "config:\n  sophia:laughs: *l9\n", 1),
                       HOSTILE["billion laughs"][2]),
    "recursive mapping": (lambda t: t.replace("config:\n", "config:\n  sophia:loop: &loop {self: *loop}\n", 1),
                          "the alias *loop is inside the value it names (a structure that contains itself); write the value out"),
}


@pytest.mark.parametrize("name", CLI_EDITS)
def test_plan_command_stops_a_hostile_stack_file_with_exit_2(tmp_path, name):
    import resource
    from tests.test_cli import _one_line, _project as _cli_project, _run
    edit, what = CLI_EDITS[name]
    proj = _cli_project(tmp_path, edit)

    def children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    start = children_cpu()
    proc = _run(["plan", "--stack", "production", "--out", str(tmp_path / "out")], cwd=proj)
    elapsed = children_cpu() - start  # the command's CPU time: a busy machine does not count against it
    assert proc.returncode == 2, proc.stderr
    line = _one_line(proc)
    assert line.startswith("Pulumi.production.yaml:") and line.endswith(what), line
    assert elapsed < 10, elapsed  # Python's start-up and imports included; the loader itself stops in milliseconds


# ----------------------------------------------------------------------------- the libyaml fast path

def _project_yaml_files() -> list[Path]:
    root = stack_config.ROOT
    return sorted([*root.glob("Pulumi*.yaml"), *(root / "esc").glob("*.yaml"), *(root / "releases").glob("*/*.yaml")])


@pytest.mark.parametrize("path", _project_yaml_files(), ids=lambda p: str(p.relative_to(stack_config.ROOT)))
def test_every_project_file_loads_the_same_through_libyaml_as_through_the_strict_reader(path):
    import yaml
    from sophia_infra.program import yaml_files
    text = path.read_text()
    if yaml_files._LIBYAML is None:
        pytest.skip("PyYAML was built without libyaml")
    assert yaml_files._plain_and_shallow(text)  # real files take the fast path
    assert yaml.load(text, Loader=yaml_files._FastLoader) == yaml.load(text, Loader=yaml_files._StrictLoader)


def test_the_fast_path_refuses_a_key_given_twice_in_the_strict_readers_words(tmp_path):
    root = _project(tmp_path, STACK + "  sophia:sshUser: a\n  sophia:sshUser: b\n", "values: {}\n")
    with pytest.raises(stack_config.StackFileSyntaxError, match=r"'sophia:sshUser' is given twice \(first on line \d+\); keep one"):
        stack_config.load("t", root)


def _nested(block: int, flow: int) -> str:
    """A document `block` mappings deep, then `flow` lists inside the innermost one (the deepest
    empty: a value inside would be one level more)."""
    lines = [" " * (2 * i) + f"k{i}:" for i in range(block)]
    return "\n".join(lines) + " " + "[" * flow + "]" * flow + "\n"


@pytest.mark.parametrize("block", [1, 2, 7, 30])
def test_the_scanner_refuses_deep_nesting_where_the_composer_would_having_read_only_that_far(block):
    """The bound on `[`/`{` in the scanner counts what compose_node counts (open block
    collections and flow levels): exactly MAX_DEPTH loads, one more fails at the same position
    the composer names; and the reader stops there, not after reading ahead through the rest."""
    import yaml
    from sophia_infra.program import yaml_files

    class ComposerOnly(yaml_files._StrictLoader):
        fetch_flow_collection_start = yaml.SafeLoader.fetch_flow_collection_start

    limit = stack_config.MAX_DEPTH
    flow = limit - block
    assert yaml.load(_nested(block, flow), Loader=yaml_files._StrictLoader) is not None
    too_deep = _nested(block, flow + 1) + "# " + "[" * 50_000 + "\n"
    places = []
    for loader in (yaml_files._StrictLoader(too_deep), ComposerOnly(too_deep)):
        with pytest.raises(yaml.YAMLError) as err:
            loader.get_single_data()
        assert err.value.problem == f"nested more than {limit} levels deep; flatten the value"
        places.append((err.value.problem_mark.line, err.value.problem_mark.column))
    assert places[0] == places[1]
    deep = "x: " + "[" * 50_000 + "]" * 50_000 + "\n"
    loader = yaml_files._StrictLoader(deep)
    with pytest.raises(yaml.YAMLError):
        loader.get_single_data()
    assert loader.pointer < 4 * limit  # it stopped at the bound, not 1,024 characters of look-ahead later


def test_nesting_deep_enough_to_overflow_libyamls_composer_is_refused_not_a_crash(tmp_path):
    # libyaml composes recursively in C: ~50 000 open brackets overflow the stack (SIGSEGV).
    # The event scan sees the depth first; run in a child so that a crash fails the test.
    import subprocess
    import sys
    text = "config:\n  sophia:k3s: " + "[" * 400_000 + "]" * 400_000 + "\n"
    root = _project(tmp_path, text, "values: {}\n")
    code = ("import sys; from sophia_infra.tools.plan import stack_config as s\n"
            "try: s.load('t', __import__('pathlib').Path(sys.argv[1]))\n"
            "except s.StackFileSyntaxError as e: print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True,
                          cwd=stack_config.ROOT, timeout=60)
    assert proc.returncode == 0, proc.returncode
    assert proc.stdout.strip().endswith(f"nested more than {stack_config.MAX_DEPTH} levels deep; flatten the value")
