"""The Lambda Cloud dynamic providers through the SDK's own servicer (tests/dynamic_servicer.py)
and against the local fake of the API (tests/lambda_fake.py): unknown inputs in previews and
replacements, orphaned and duplicate instances, firewall drift, the servicer's four workers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pulumi.runtime import rpc

from sophia_infra.program.lambda_cloud import api, provider, resources
from tests.dynamic_servicer import SOURCE, Servicer, diff_kind, plain, workers
from tests.lambda_fake import API_KEY, FakeLambda

INSTANCE = {"api_key": API_KEY, "base_url": "http://127.0.0.1:9/api/v1", "name": "sophia-ai-core",
            "instance_type": "gpu_1x_gh200", "region": "us-east-3", "ssh_key_name": "sophia-production",
            "file_system_names": [], "image_family": None, "wait_seconds": 60, "poll_seconds": 5}
RULE = {"protocol": "tcp", "port_range": [22, 22], "source_network": "0.0.0.0/0", "description": "t: ssh"}
FIREWALL = {"api_key": API_KEY, "base_url": "http://127.0.0.1:9/api/v1", "name": "sophia-production",
            "rules": [RULE], "owned": [RULE]}
READY = {"api_key": API_KEY, "base_url": "http://127.0.0.1:9/api/v1", "instance_id": "i-0001",
         "wait_seconds": 60, "poll_seconds": 5}
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
                        (provider.SshKeyProvider(), KEY), (provider.InstanceReadyProvider(), READY)):
        assert diff_kind(servicer.diff(prov, props, dict(props))) == "none"


def test_a_new_instance_is_a_new_wait_without_deleting_anything_first(servicer):
    resp = servicer.diff(provider.InstanceReadyProvider(), READY, {**READY, "instance_id": "i-0002"})
    assert list(resp.replaces) == ["instance_id"] and not resp.deleteBeforeReplace


def test_check_passes_unknown_inputs_through_in_a_preview(servicer):
    """The engine's first call for every resource: an unknown (the firewall's rules before the
    instances have addresses) comes back unknown, not as an error."""
    from tests.dynamic_servicer import struct
    from pulumi.runtime import proto
    prov = provider.FirewallRulesProvider()
    news = {**FIREWALL, "rules": rpc.UNKNOWN}
    resp = servicer.call("Check", proto.CheckRequest(urn="urn:pulumi:s::p::t::n", olds=struct(prov, {}),
                                                     news=struct(prov, news)))
    assert list(resp.failures) == [] and resp.inputs["rules"] == rpc.UNKNOWN


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


# ----------------------------------------------------------------------------- orphans and duplicates

TAG = "sophia-infra-production"


def _instance_props(fake: FakeLambda, **over) -> dict:
    return {**INSTANCE, "base_url": fake.base_url, "stack_tag": TAG, **over}


def _with_key(fake: FakeLambda) -> None:
    fake.ssh_keys["key-0"] = {"id": "key-0", "name": "sophia-production", "public_key": "ssh-ed25519 AAAA test"}


def _launches(fake: FakeLambda) -> int:
    return fake.requests.count(("POST", "/api/v1/instance-operations/launch"))


def test_a_launch_whose_answer_is_lost_adopts_the_instance_it_made(fake, quick):
    _with_key(fake)
    fake.lose_launch_responses = 1  # Lambda launched it; the answer never arrived
    created = provider.InstanceProvider(throttle=quick).create(_instance_props(fake))
    (iid,) = fake.instances
    assert created.id == iid and _launches(fake) == 1
    assert fake.instances[iid]["tags"] == [{"key": provider.STACK_TAG, "value": TAG}]


def test_an_instance_a_previous_run_launched_but_never_recorded_is_adopted_not_launched_again(fake, quick):
    _with_key(fake)
    prov = provider.InstanceProvider(throttle=quick)
    first = prov.create(_instance_props(fake))  # the run that launched it was then interrupted
    again = prov.create(_instance_props(fake))  # the next up creates it again
    assert again.id == first.id and _launches(fake) == 1 and len(fake.running()) == 1


def test_an_instance_of_the_same_name_from_another_stack_or_untagged_is_not_adopted(fake, quick):
    _with_key(fake)
    prov = provider.InstanceProvider(throttle=quick)
    other = prov.create(_instance_props(fake, stack_tag="sophia-infra-dev"))
    untagged = prov.create(_instance_props(fake, stack_tag=None))
    ours = prov.create(_instance_props(fake))
    assert len({other.id, untagged.id, ours.id}) == 3 and _launches(fake) == 3


def test_an_adoptable_instance_of_another_type_is_refused_in_one_sentence(fake, quick):
    _with_key(fake)
    prov = provider.InstanceProvider(throttle=quick)
    prov.create(_instance_props(fake, instance_type="gpu_1x_a100", region="us-east-1"))
    with pytest.raises(api.LambdaCloudError) as err:
        prov.create(_instance_props(fake))
    assert "is a gpu_1x_a100 in us-east-1, not the gpu_1x_gh200 in us-east-3" in str(err.value)
    assert "\n" not in str(err.value) and _launches(fake) == 1


def test_a_refused_launch_adopts_nothing_and_says_why(fake, quick):
    _with_key(fake)
    with pytest.raises(api.CapacityError):
        provider.InstanceProvider(throttle=quick).create(_instance_props(fake, region="us-west-1"))
    assert fake.instances == {}


def test_any_exception_during_the_boot_wait_is_one_sentence_and_the_instance_stays_recorded(fake, quick, monkeypatch):
    _with_key(fake)
    created = provider.InstanceProvider(throttle=quick).create(_instance_props(fake))

    def broken(*_a, **_k):
        raise ValueError("Expecting value: line 1 column 1 (char 0)")  # e.g. a garbled answer

    monkeypatch.setattr(api, "wait_for", broken)
    with pytest.raises(api.LambdaCloudError) as err:
        provider.InstanceReadyProvider(throttle=quick).create(
            {"api_key": API_KEY, "base_url": fake.base_url, "instance_id": created.id})
    assert "Expecting value" in str(err.value) and "stays in the stack" in str(err.value)
    assert fake.instances[created.id]["status"] != "terminated"


# ----------------------------------------------------------------------------- the servicer's four workers

def test_a_fifth_node_launches_before_any_boot_wait_can_hold_it_up(fake):
    """Nothing boots until all five are launched: were the boot wait in the launch's create,
    four waits would hold the servicer's four workers and the fifth launch would never run."""
    _with_key(fake)
    fake.boot_after_launches, fake.boot_polls = 5, 0
    fast = api.Throttle(interval=0.0, launch_interval=0.0)
    launch, wait = provider.InstanceProvider(throttle=fast), provider.InstanceReadyProvider(throttle=fast)
    names = [f"sophia-gpu-{i}" for i in range(5)]
    assert workers() == 4
    with Servicer(max_workers=workers()) as s:
        # As the engine does: the five launches at once (all wait only for the SSH key), each
        # node's wait once its launch has returned.
        launched = {n: s.submit("Create", s.create_request(launch, _instance_props(fake, name=n))) for n in names}
        waits = {}
        for n, future in launched.items():
            iid = future.result(timeout=60).id
            waits[n] = s.submit("Create", s.create_request(wait, {
                "api_key": API_KEY, "base_url": fake.base_url, "instance_id": iid,
                "wait_seconds": 60, "poll_seconds": 0.01}))
        booted = {n: plain(f.result(timeout=90).properties) for n, f in waits.items()}
    assert fake.launches == 5 and len(fake.running()) == 5
    assert {n: b["status"] for n, b in booted.items()} == {n: "active" for n in names}
    assert len({b["ip"] for b in booted.values()}) == 5


def test_custom_timeouts_are_not_promised_on_dynamic_resources():
    """The servicer never reads a request's timeout, so a custom_timeouts option on a dynamic
    resource would do nothing; the provider's wait_seconds is the bound."""
    create = ast.get_source_segment(SOURCE.read_text(), next(
        n for n in ast.walk(ast.parse(SOURCE.read_text())) if isinstance(n, ast.FunctionDef) and n.name == "Create"))
    assert create is not None and "timeout" not in create
    tree = ast.parse(Path(resources.__file__).read_text())
    assert not [k for k in ast.walk(tree) if isinstance(k, ast.keyword) and k.arg == "custom_timeouts"]


class WaitingInCreate(provider.InstanceProvider):
    """The design before: the boot wait inside the launch's create (for contrast only)."""

    def create(self, props):
        created = super().create(props)
        inst = api.wait_for(self._client(props), created.id, float(props["wait_seconds"]),
                            float(props["poll_seconds"]))
        return type(created)(created.id, {**(created.outs or {}), "ip": inst["ip"]})


def test_with_the_wait_inside_the_launch_four_waits_starve_the_fifth_launch(fake):
    """The same five nodes, the boot wait inside create: the four workers all wait for boots
    that need the fifth launch, which waits for a free worker, so the first of them to end
    can only be one that ran out of time (the others may then see the boot)."""
    _with_key(fake)
    fake.boot_after_launches, fake.boot_polls = 5, 0
    old = WaitingInCreate(throttle=api.Throttle(interval=0.0, launch_interval=0.0))
    with Servicer(max_workers=workers()) as s:
        futures = [s.submit("Create", s.create_request(old, _instance_props(
            fake, name=f"sophia-gpu-{i}", wait_seconds=0.5, poll_seconds=0.05))) for i in range(5)]
        outcomes = [f.exception(timeout=60) for f in futures]
    assert any(e is not None and "was not active" in str(e) for e in outcomes)


def test_an_error_reaches_the_engine_as_one_last_line_sentence_without_the_key(fake):
    """How the servicer surfaces an exception: a gRPC abort with the traceback, whose last line
    is what the operator reads."""
    from tests.dynamic_servicer import Aborted
    wrong = "sk-wrong-key-that-must-not-leak"
    with Servicer() as s, pytest.raises(Aborted) as err:
        s.call("Create", s.create_request(provider.InstanceProvider(), _instance_props(fake, api_key=wrong)))
    last = err.value.details.strip().splitlines()[-1]
    assert last.startswith("sophia_infra.program.lambda_cloud.api.AuthError: the Lambda Cloud API refused the API key")
    assert wrong not in err.value.details
    assert "During handling of the above exception" not in err.value.details  # one exception, not a chain


def test_rotating_the_ssh_key_replaces_no_host_and_registers_the_new_key_first(servicer):
    """A new key has a new name (its fingerprint): the key is replaced create-first, so the
    stack's key is never missing, and the instances only record the new name (Lambda puts the
    key on a host at launch only; the hosts' authorized_keys carry the rotation)."""
    resp = servicer.diff(provider.InstanceProvider(), INSTANCE, {**INSTANCE, "ssh_key_name": "sophia-production-0123456789ab"})
    assert diff_kind(resp) == "some" and list(resp.replaces) == []
    new_key = {**KEY, "name": "sophia-production-0123456789ab", "public_key": "ssh-ed25519 BBBB next"}
    resp = servicer.diff(provider.SshKeyProvider(), KEY, new_key)
    assert sorted(resp.replaces) == ["name", "public_key"] and not resp.deleteBeforeReplace


def test_a_wait_whose_instance_is_being_replaced_is_replaced_too(servicer):
    """The exception to the rule above, and why: `<node>-ready` holds nothing, and its instance id
    is unknown only while that instance is replaced delete-first; replacing it lets the engine's
    dependent walk reach the node's commands, so the node is drained and uninstalled before its
    host is terminated (tests/test_transitions.py shows the order)."""
    resp = servicer.diff(provider.InstanceReadyProvider(), READY, {**READY, "instance_id": rpc.UNKNOWN})
    assert diff_kind(resp) == "some" and list(resp.replaces) == ["instance_id"] and not resp.deleteBeforeReplace
