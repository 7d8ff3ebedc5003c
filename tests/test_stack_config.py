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
