"""The Lambda Cloud client and the dynamic providers' create/read/update/delete, against a
local fake of the API (tests/lambda_fake.py). Time is virtual: no test sleeps for real."""

from __future__ import annotations

import pytest
from pulumi.dynamic.dynamic import serialize_provider

from sophia_infra.program.lambda_cloud import api, provider
from tests.lambda_fake import API_KEY, FakeLambda


class VirtualTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def fake():
    with FakeLambda() as server:
        yield server


@pytest.fixture
def vt() -> VirtualTime:
    return VirtualTime()


def throttle(vt: VirtualTime) -> api.Throttle:
    return api.Throttle(clock=vt.clock, sleep=vt.sleep)


def client(fake: FakeLambda, vt: VirtualTime, key: str = API_KEY) -> api.Client:
    return api.Client(key, base_url=fake.base_url, throttle=throttle(vt))


def instances(vt: VirtualTime) -> provider.InstanceProvider:
    return provider.InstanceProvider(sleep=vt.sleep, clock=vt.clock, throttle=throttle(vt))


def instance_props(fake: FakeLambda, **over) -> dict:
    props = {"api_key": API_KEY, "base_url": fake.base_url, "name": "sophia-ai-core",
             "instance_type": "gpu_1x_gh200", "region": "us-east-3", "ssh_key_name": "sophia-production",
             "file_system_names": [], "image_family": None, "wait_seconds": 60, "poll_seconds": 5}
    return {**props, **over}


def with_key(fake: FakeLambda) -> None:
    fake.ssh_keys["key-0"] = {"id": "key-0", "name": "sophia-production", "public_key": "ssh-ed25519 AAAA test"}


# ----------------------------------------------------------------------------- the client

def test_requests_carry_the_key_as_bearer_and_are_spaced_one_second_apart(fake, vt):
    c = client(fake, vt)
    c.instance_types()
    c.ssh_keys()
    c.firewall_rules()
    assert fake.auth_headers == [f"Bearer {API_KEY}"] * 3
    assert vt.slept == [1.0, 1.0]


def test_launches_are_twelve_seconds_apart(fake, vt):
    with_key(fake)
    c = client(fake, vt)
    c.launch(name="a", instance_type="gpu_1x_a100", region="us-east-1", ssh_key_name="sophia-production")
    start = vt.now
    c.launch(name="b", instance_type="gpu_1x_a100", region="us-east-1", ssh_key_name="sophia-production")
    assert vt.now - start >= api.LAUNCH_INTERVAL


def test_a_429_is_retried_with_backoff_and_then_succeeds(fake, vt):
    fake.rate_limit_next = 2
    types = client(fake, vt).instance_types()
    assert "gpu_1x_gh200" in types
    assert fake.requests.count(("GET", "/api/v1/instance-types")) == 3
    assert 0.0 in vt.slept  # the fake's Retry-After: 0 is honoured


def test_a_429_that_never_ends_is_one_sentence(fake, vt):
    fake.rate_limit_next = 100
    with pytest.raises(api.RateLimited) as err:
        client(fake, vt).ssh_keys()
    assert "429" in str(err.value) and "\n" not in str(err.value)


def test_a_401_says_the_key_is_wrong_or_missing_and_never_prints_it(fake, vt):
    wrong = "sk-wrong-key-that-must-not-leak"
    with pytest.raises(api.AuthError) as err:
        client(fake, vt, key=wrong).instance_types()
    text = str(err.value)
    assert "wrong, revoked or missing" in text and "sophia:lambdaLabsApiKey" in text
    assert wrong not in text and wrong not in repr(err.value) and wrong not in repr(client(fake, vt, key=wrong))


def test_insufficient_capacity_names_type_region_and_where_there_is_capacity(fake, vt):
    with_key(fake)
    with pytest.raises(api.CapacityError) as err:
        client(fake, vt).launch(name="x", instance_type="gpu_1x_a100", region="us-east-3",
                                ssh_key_name="sophia-production")
    assert str(err.value) == ("Lambda Cloud has no capacity for gpu_1x_a100 in us-east-3; it has capacity now in "
                              "us-east-1, us-west-2; set provision.region to one of them or try again later.")


def test_insufficient_capacity_everywhere_says_so(fake, vt):
    with_key(fake)
    fake.capacity["gpu_1x_a10"] = []
    with pytest.raises(api.CapacityError, match="no region has capacity for it right now"):
        client(fake, vt).launch(name="x", instance_type="gpu_1x_a10", region="us-east-1",
                                ssh_key_name="sophia-production")


def test_launch_sends_the_documented_body(fake, vt):
    with_key(fake)
    client(fake, vt).launch(name="sophia-data", instance_type="gpu_1x_a100", region="us-east-1",
                            ssh_key_name="sophia-production", file_system_names=["data"], image_family="lambda-stack-24-04")
    assert fake.bodies[-1] == {"region_name": "us-east-1", "instance_type_name": "gpu_1x_a100",
                               "ssh_key_names": ["sophia-production"], "quantity": 1, "name": "sophia-data",
                               "file_system_names": ["data"], "image": {"family": "lambda-stack-24-04"}}


# ----------------------------------------------------------------------------- instances

def ready(vt: VirtualTime) -> provider.InstanceReadyProvider:
    return provider.InstanceReadyProvider(sleep=vt.sleep, clock=vt.clock, throttle=throttle(vt))


def ready_props(fake: FakeLambda, instance_id: str, **over) -> dict:
    return {"api_key": API_KEY, "base_url": fake.base_url, "instance_id": instance_id, "wait_seconds": 60,
            "poll_seconds": 5, **over}


def test_create_launches_and_returns_at_once_and_ready_waits_for_the_address(fake, vt):
    with_key(fake)
    fake.boot_polls = 3
    result = instances(vt).create(instance_props(fake))
    inst = fake.instances[result.id]
    assert inst["name"] == "sophia-ai-core" and result.outs is not None and result.outs["status"] == "booting"
    assert fake.polls[result.id] == 0  # no boot wait in the create: it is recorded at once
    booted = ready(vt).create(ready_props(fake, result.id))
    assert booted.outs is not None and booted.outs["ip"] == inst["ip"] and booted.outs["status"] == "active"
    assert booted.outs["private_ip"] == inst["private_ip"]
    assert vt.slept.count(5.0) == 3  # polled every poll_seconds until active


def test_a_boot_that_never_ends_fails_and_leaves_the_instance_in_the_stack(fake, vt):
    with_key(fake)
    fake.boot_polls = None
    created = instances(vt).create(instance_props(fake))
    with pytest.raises(api.LambdaCloudError) as err:
        ready(vt).create(ready_props(fake, created.id))
    assert fake.instances[created.id]["status"] == "booting"  # recorded, so not an orphan: the next up waits again
    assert created.id in str(err.value) and "stays in the stack" in str(err.value) and "\n" not in str(err.value)


def test_an_instance_that_vanishes_while_booting_fails_clearly(fake, vt):
    with_key(fake)
    fake.boot_polls = 5
    created = instances(vt).create(instance_props(fake))
    real_get = fake._get

    def get_then_vanish(iid):
        fake.vanish.add(iid)
        return real_get(iid)

    fake._get = get_then_vanish  # type: ignore[method-assign]
    with pytest.raises(api.LambdaCloudError, match="disappeared while booting.*pulumi refresh"):
        ready(vt).create(ready_props(fake, created.id))


def test_create_without_capacity_launches_nothing(fake, vt):
    with_key(fake)
    with pytest.raises(api.CapacityError, match="gpu_1x_gh200 in us-west-1"):
        instances(vt).create(instance_props(fake, region="us-west-1"))
    assert fake.instances == {}


def test_read_reports_current_state_and_a_gone_instance_as_deleted(fake, vt):
    with_key(fake)
    prov = instances(vt)
    created = prov.create(instance_props(fake))
    assert created.outs is not None
    ready(vt).create(ready_props(fake, created.id))
    read = prov.read(created.id, created.outs)
    assert read.id == created.id and read.outs is not None and read.outs["status"] == "active"
    fake.vanish.add(created.id)
    assert prov.read(created.id, created.outs).id == ""
    fake.vanish.clear()
    fake.instances[created.id]["status"] = "terminated"
    assert prov.read(created.id, created.outs).id == ""


def test_diff_replaces_on_type_region_image_and_updates_the_keys_in_place(fake):
    prov = provider.InstanceProvider()
    olds = {**instance_props(fake), "ip": "198.51.100.7"}
    for key, value in (("instance_type", "gpu_1x_a100"), ("region", "us-east-1"),
                       ("image_family", "lambda-stack-22-04")):
        d = prov.diff("i-1", olds, instance_props(fake, **{key: value}))
        assert d.replaces == [key] and d.delete_before_replace and d.changes
    # The API key and the SSH key (a rotation: Lambda puts it on the host at launch only) never
    # replace a host.
    for key, value in (("api_key", "new-key"), ("ssh_key_name", "sophia-infra-production-0123456789ab")):
        rotated = prov.diff("i-1", olds, instance_props(fake, **{key: value}))
        assert rotated.changes and not rotated.replaces, key
    assert not prov.diff("i-1", olds, instance_props(fake)).changes
    updated = prov.update("i-1", olds, instance_props(fake, api_key="new-key"))
    assert updated.outs is not None and updated.outs["ip"] == "198.51.100.7" and updated.outs["api_key"] == "new-key"


def test_delete_terminates_and_waits_and_tolerates_an_already_gone_instance(fake, vt):
    with_key(fake)
    prov = instances(vt)
    created = prov.create(instance_props(fake))
    assert created.outs is not None
    prov.delete(created.id, created.outs)
    assert fake.instances[created.id]["status"] == "terminated"
    assert ("POST", "/api/v1/instance-operations/terminate") in fake.requests
    fake.vanish.add(created.id)
    prov.delete(created.id, created.outs)  # 404 on terminate and get: already gone, fine


def test_the_provider_serializes_without_any_key(fake):
    # Pulumi pickles the provider into the state: it must not carry the key (it is an input).
    text = serialize_provider(provider.InstanceProvider())
    assert API_KEY not in text and text


# ----------------------------------------------------------------------------- SSH key

def test_ssh_key_registers_the_public_key_and_deletes_it(fake, vt):
    keys = provider.SshKeyProvider(throttle=throttle(vt))
    props = {"api_key": API_KEY, "base_url": fake.base_url, "name": "sophia-production",
             "public_key": "ssh-ed25519 AAAAC3Nza test"}
    created = keys.create(props)
    assert fake.ssh_keys[created.id]["public_key"] == "ssh-ed25519 AAAAC3Nza test"
    assert keys.read(created.id, props).id == created.id
    keys.delete(created.id, {**props, "adopted": False})
    assert fake.ssh_keys == {}
    assert keys.read(created.id, props).id == ""


def test_ssh_key_adopts_the_same_key_and_refuses_another_under_its_name(fake, vt):
    keys = provider.SshKeyProvider(throttle=throttle(vt))
    with_key(fake)
    props = {"api_key": API_KEY, "base_url": fake.base_url, "name": "sophia-production",
             "public_key": "ssh-ed25519 AAAA other-comment"}
    adopted = keys.create(props)
    assert adopted.id == "key-0" and adopted.outs is not None and adopted.outs["adopted"] is True
    keys.delete(adopted.id, adopted.outs)
    assert "key-0" in fake.ssh_keys  # not ours to delete
    with pytest.raises(api.LambdaCloudError, match="already has an SSH key named sophia-production"):
        keys.create({**props, "public_key": "ssh-ed25519 BBBB"})


# ----------------------------------------------------------------------------- firewall

FOREIGN = {"protocol": "tcp", "port_range": [8888, 8888], "source_network": "0.0.0.0/0", "description": "jupyter (someone else)"}
SSH = {"protocol": "tcp", "port_range": [22, 22], "source_network": "0.0.0.0/0", "description": "sophia-infra production: ssh"}
API = {"protocol": "tcp", "port_range": [6443, 6443], "source_network": "198.51.100.0/24", "description": "sophia-infra production: api"}


def test_firewall_rules_add_ours_and_keep_foreign_rules_through_update_and_delete(fake, vt):
    fw = provider.FirewallRulesProvider(throttle=throttle(vt))
    fake.firewall = [FOREIGN]
    props = {"api_key": API_KEY, "base_url": fake.base_url, "name": "sophia-production", "rules": [SSH, API]}
    created = fw.create(props)
    assert fake.firewall == [FOREIGN, SSH, API]
    assert created.outs is not None

    fake.firewall.append({**FOREIGN, "port_range": [9999, 9999]})  # someone adds one meanwhile
    narrower = {**API, "source_network": "203.0.113.0/24"}
    updated = fw.update(created.id, created.outs, {**props, "rules": [SSH, narrower]})
    assert fake.firewall == [FOREIGN, SSH, {**FOREIGN, "port_range": [9999, 9999]}, narrower]
    assert updated.outs is not None

    fw.delete(created.id, updated.outs)
    assert fake.firewall == [FOREIGN, {**FOREIGN, "port_range": [9999, 9999]}]


def test_a_rule_that_was_already_there_is_not_ours_to_remove(fake, vt):
    fw = provider.FirewallRulesProvider(throttle=throttle(vt))
    fake.firewall = [FOREIGN, SSH]  # an identical rule existed before this stack
    props = {"api_key": API_KEY, "base_url": fake.base_url, "name": "sophia-production", "rules": [SSH]}
    created = fw.create(props)
    assert created.outs is not None and created.outs["owned"] == []
    fw.delete(created.id, created.outs)
    assert fake.firewall == [FOREIGN, SSH]
