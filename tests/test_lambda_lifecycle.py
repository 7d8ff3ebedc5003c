"""The Lambda Cloud dynamic providers through the SDK's own servicer (tests/dynamic_servicer.py)
and against the local fake of the API (tests/lambda_fake.py): unknown inputs in previews and
replacements, orphaned and duplicate instances, firewall drift, the servicer's four workers."""

from __future__ import annotations

import pytest
from pulumi.runtime import rpc

from sophia_infra.program.lambda_cloud import api, provider
from tests.dynamic_servicer import Servicer, diff_kind
from tests.lambda_fake import API_KEY, FakeLambda

INSTANCE = {"api_key": API_KEY, "base_url": "http://127.0.0.1:9/api/v1", "name": "sophia-ai-core",
            "instance_type": "gpu_1x_gh200", "region": "us-east-3", "ssh_key_name": "sophia-production",
            "file_system_names": [], "image_family": None, "wait_seconds": 60, "poll_seconds": 5}
RULE = {"protocol": "tcp", "port_range": [22, 22], "source_network": "0.0.0.0/0", "description": "t: ssh"}
FIREWALL = {"api_key": API_KEY, "base_url": "http://127.0.0.1:9/api/v1", "name": "sophia-production",
            "rules": [RULE], "owned": [RULE]}
KEY = {"api_key": API_KEY, "base_url": "http://127.0.0.1:9/api/v1", "name": "sophia-production",
       "public_key": "ssh-ed25519 AAAA test", "adopted": False}


@pytest.fixture
def servicer():
    with Servicer() as s:
        yield s


# ----------------------------------------------------------------------------- unknown inputs

@pytest.mark.parametrize("prov,olds,unknown", [
    (provider.FirewallRulesProvider(), FIREWALL, "rules"),  # a new or replaced instance's address
    (provider.FirewallRulesProvider(), FIREWALL, "api_key"),
    (provider.InstanceProvider(), INSTANCE, "ssh_key_name"),  # the key replaced, delete-first
    (provider.InstanceProvider(), INSTANCE, "file_system_names"),
    (provider.SshKeyProvider(), KEY, "public_key"),
])
def test_an_unknown_input_is_a_change_never_an_error_nor_a_replacement(servicer, prov, olds, unknown):
    resp = servicer.diff(prov, olds, {**olds, unknown: rpc.UNKNOWN})
    assert diff_kind(resp) == "some"
    assert list(resp.replaces) == []


def test_an_unknown_rule_inside_the_list_is_a_change_too(servicer):
    resp = servicer.diff(provider.FirewallRulesProvider(), FIREWALL,
                         {**FIREWALL, "rules": [RULE, {**RULE, "source_network": rpc.UNKNOWN}]})
    assert diff_kind(resp) == "some" and list(resp.replaces) == []


def test_known_inputs_beside_an_unknown_one_still_decide_a_replacement(servicer):
    resp = servicer.diff(provider.InstanceProvider(), INSTANCE,
                         {**INSTANCE, "ssh_key_name": rpc.UNKNOWN, "region": "us-east-1"})
    assert list(resp.replaces) == ["region"] and resp.deleteBeforeReplace


def test_known_equal_inputs_are_no_change_through_the_servicer(servicer):
    for prov, props in ((provider.InstanceProvider(), INSTANCE), (provider.FirewallRulesProvider(), FIREWALL),
                        (provider.SshKeyProvider(), KEY)):
        assert diff_kind(servicer.diff(prov, props, dict(props))) == "none"


# ----------------------------------------------------------------------------- firewall drift

FOREIGN = {"protocol": "tcp", "port_range": [8888, 8888], "source_network": "0.0.0.0/0", "description": "jupyter"}
API_RULE = {"protocol": "tcp", "port_range": [6443, 6443], "source_network": "198.51.100.0/24", "description": "t: api"}


@pytest.fixture
def fake():
    with FakeLambda() as server:
        yield server


def _firewall(fake, vt_throttle) -> tuple[provider.FirewallRulesProvider, dict]:
    props = {"api_key": API_KEY, "base_url": fake.base_url, "name": "sophia-production", "rules": [RULE, API_RULE]}
    return provider.FirewallRulesProvider(throttle=vt_throttle), props


@pytest.fixture
def quick() -> api.Throttle:
    return api.Throttle(sleep=lambda _s: None, interval=0.0, launch_interval=0.0)


def test_rules_someone_else_removed_are_seen_on_refresh_and_put_back_by_the_next_up(fake, quick):
    fw, props = _firewall(fake, quick)
    created = fw.create(props)
    assert created.outs is not None
    fake.firewall = [FOREIGN]  # the console (or another stack) replaced the whole list
    refreshed = fw.read(created.id, created.outs)
    assert refreshed.outs is not None and refreshed.outs["missing"] == [RULE, API_RULE]
    assert fw.diff(created.id, refreshed.outs, props).changes
    updated = fw.update(created.id, refreshed.outs, props)
    assert fake.firewall == [FOREIGN, RULE, API_RULE]
    assert updated.outs is not None and updated.outs["missing"] == [] and updated.outs["owned"] == [RULE, API_RULE]


def test_an_up_without_refresh_sees_the_drift_too_and_no_drift_is_no_change(fake, quick):
    fw, props = _firewall(fake, quick)
    created = fw.create(props)
    assert created.outs is not None
    assert not fw.diff(created.id, created.outs, props).changes
    fake.firewall = [API_RULE]
    assert fw.diff(created.id, created.outs, props).changes


def test_every_put_is_read_back_and_a_writer_racing_it_is_undone(fake, quick):
    fw, props = _firewall(fake, quick)
    fake.firewall = [FOREIGN]
    raced = []

    def other_writer(f: FakeLambda) -> None:
        if not raced:  # once: another PUT lands right after ours, from a list read before it
            raced.append(True)
            f.firewall = [FOREIGN, {**FOREIGN, "port_range": [9999, 9999]}]

    fake.after_put = other_writer
    created = fw.create(props)
    assert fake.firewall == [FOREIGN, {**FOREIGN, "port_range": [9999, 9999]}, RULE, API_RULE]
    assert fake.requests.count(("PUT", "/api/v1/firewall-rules")) == 2
    assert created.outs is not None and created.outs["owned"] == [RULE, API_RULE]


def test_a_list_that_keeps_being_replaced_fails_in_one_sentence(fake, quick):
    fw, props = _firewall(fake, quick)
    fake.after_put = lambda f: setattr(f, "firewall", [FOREIGN])
    with pytest.raises(api.LambdaCloudError) as err:
        fw.create(props)
    assert "still lacks 2 of this stack's rules" in str(err.value) and "\n" not in str(err.value)
    assert fake.requests.count(("PUT", "/api/v1/firewall-rules")) == provider.FIREWALL_APPLY_ATTEMPTS
