"""The offline reading of stack files and ESC definitions, as the CLI would merge them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sophia_infra.plan import stack_config


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
        "sophia:environment", "sophia:k3s", "sophia:nodes", "sophia:delivery", "sophia:charts", "sophia:services"}}
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
    from sophia_infra.config import ConfigError
    root = _real_project(tmp_path, "dev", lambda t: t.replace("  sophia:services:", "  sophia:service:"))
    with pytest.raises(ConfigError) as err:
        stack_config.load_validated("dev", root)
    assert err.value.problems == ["sophia:service: is not a key this program reads; did you mean sophia:services?"]


def test_offline_secrets_are_not_unknown_keys(tmp_path):
    # Every ESC secret (openaiApiKey, lambdaLabsApiKey, the unused etcd S3 pair of dev) is a known key.
    cfg = stack_config.load_validated("dev", _real_project(tmp_path, "dev", lambda t: t))
    assert cfg.environment == "dev"
