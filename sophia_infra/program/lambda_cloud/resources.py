"""The provisioned hosts of a stack as resources: `sophia:lambda:SshKey`, one
`sophia:lambda:Instance` per provisioned node and `sophia:lambda:FirewallRules`.

Each component wraps one dynamic resource (`pulumi-python:dynamic/lambda:<Kind>`: the engine
sends only `pulumi-python:dynamic*` types to the dynamic provider, see provider.py). The API
key is a secret input of each and a secret output in the state; the SSH key registered is
the public half of the ESC private key, derived here, so the private key never leaves.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import pulumi
import pulumi.dynamic

from sophia_infra.program.config.cluster import Node
from sophia_infra.program.config.stack import StackConfig
from sophia_infra.program import ssh_keys
from sophia_infra.program.lambda_cloud import provider
from sophia_infra.program.config.provision import API_KEY_SECRET, provisioned, warnings

API_PORT, KUBELET_PORT, NODE_EXPORTER_PORT = 6443, 10250, 9100
ANYWHERE = "0.0.0.0/0"
_SECRET_OUTPUTS = pulumi.ResourceOptions(additional_secret_outputs=["api_key"])


class _InstanceResource(pulumi.dynamic.Resource, module="lambda", name="Instance"):
    ip: pulumi.Output[str]
    private_ip: pulumi.Output[Optional[str]]
    status: pulumi.Output[str]


class _InstanceReadyResource(pulumi.dynamic.Resource, module="lambda", name="InstanceReady"):
    ip: pulumi.Output[str]
    private_ip: pulumi.Output[Optional[str]]
    status: pulumi.Output[str]


class _SshKeyResource(pulumi.dynamic.Resource, module="lambda", name="SshKey"):
    name: pulumi.Output[str]


class _FirewallRulesResource(pulumi.dynamic.Resource, module="lambda", name="FirewallRules"):
    owned: pulumi.Output[list]


class SshKey(pulumi.ComponentResource):
    def __init__(self, name: str, api_key: pulumi.Input[str], public_key: pulumi.Input[str],
                 key_name: pulumi.Input[str], opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("sophia:lambda:SshKey", name, None, opts)
        self.key = _SshKeyResource(provider.SshKeyProvider(), name, {
            "api_key": api_key, "name": key_name, "public_key": public_key, "adopted": None,
        }, pulumi.ResourceOptions.merge(_SECRET_OUTPUTS, pulumi.ResourceOptions(parent=self)))
        self.key_name = self.key.name
        self.register_outputs({"name": self.key_name})


class Instance(pulumi.ComponentResource):
    """The node's host: its name is the node name; a new type, region, key or image is a new host.

    Two dynamic resources: `<node>-instance` launches (or adopts) and is in the stack as soon as
    Lambda accepts the launch; `<node>-ready` waits for the boot (provider.py says why). No
    `custom_timeouts`: the dynamic provider's servicer ignores them (pulumi/dynamic/__main__.py
    never reads a request's timeout); the provider's own `wait_seconds` bounds the waits."""

    def __init__(self, node: Node, api_key: pulumi.Input[str], ssh_key_name: pulumi.Input[str], stack_tag: str,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("sophia:lambda:Instance", node.name, None, opts)
        p = node.provision
        assert p is not None  # only provisioned nodes get one
        self.instance = _InstanceResource(provider.InstanceProvider(), f"{node.name}-instance", {
            "api_key": api_key, "name": node.name, "instance_type": p.instance_type, "region": p.region,
            "ssh_key_name": ssh_key_name, "file_system_names": [p.file_system] if p.file_system else [],
            "image_family": p.image_family, "stack_tag": stack_tag, "wait_seconds": provider.WAIT_SECONDS,
            "poll_seconds": provider.POLL_SECONDS, "ip": None, "private_ip": None, "status": None, "hostname": None,
        }, pulumi.ResourceOptions.merge(_SECRET_OUTPUTS, pulumi.ResourceOptions(parent=self, delete_before_replace=True)))
        self.ready = _InstanceReadyResource(provider.InstanceReadyProvider(), f"{node.name}-ready", {
            "api_key": api_key, "instance_id": self.instance.id, "wait_seconds": provider.WAIT_SECONDS,
            "poll_seconds": provider.POLL_SECONDS, "ip": None, "private_ip": None, "status": None, "hostname": None,
        }, pulumi.ResourceOptions.merge(_SECRET_OUTPUTS, pulumi.ResourceOptions(parent=self)))
        self.ip = self.ready.ip
        self.private_ip = self.ready.private_ip
        self.register_outputs({"ip": self.ip, "private_ip": self.private_ip})


def _rule(protocol: str, ports: tuple[int, int], source: str, what: str, tag: str) -> dict:
    return {"protocol": protocol, "port_range": list(ports), "source_network": source, "description": f"{tag}: {what}"}


def firewall_rules(cfg: StackConfig, addresses: Mapping[str, Sequence[Optional[str]]], tag: str) -> list[dict]:
    """The cluster's inbound needs as Lambda firewall rules: SSH and 80/443 from anywhere, the API
    from apiAllowFrom, API, kubelet, node-exporter and the overlay between the nodes, etcd
    between servers. `addresses`: node name -> every address its traffic may come from (a
    launched instance's public and private one: which its interface carries is not documented;
    DNS names cannot be rules)."""
    k3s = cfg.k3s
    overlay = 51820 if k3s.flannel_backend == "wireguard-native" else 8472
    rules = [_rule("tcp", (22, 22), ANYWHERE, "ssh", tag),
             _rule("tcp", (80, 80), ANYWHERE, "ingress", tag), _rule("tcp", (443, 443), ANYWHERE, "ingress", tag)]
    for src in ([ANYWHERE] if k3s.api_open_to_any else k3s.api_allow_from):
        rules.append(_rule("tcp", (API_PORT, API_PORT), str(ipaddress.ip_network(src, strict=False)), "api", tag))

    def cidr(addr: str) -> Optional[str]:
        try:
            return f"{ipaddress.ip_address(addr)}/32"
        except ValueError:
            return None

    for node in cfg.nodes:
        peers = dict.fromkeys(p for p in (cidr(a or "") for a in addresses.get(node.name) or ()) if p)
        for peer in peers:
            for port in (API_PORT, KUBELET_PORT, NODE_EXPORTER_PORT):
                rules.append(_rule("tcp", (port, port), peer, f"nodes {node.name}", tag))
            rules.append(_rule("udp", (overlay, overlay), peer, f"overlay {node.name}", tag))
            if node.role == "control-plane":
                rules.append(_rule("tcp", (2379, 2380), peer, f"etcd {node.name}", tag))
    return rules


class FirewallRules(pulumi.ComponentResource):
    def __init__(self, name: str, api_key: pulumi.Input[str], rules: pulumi.Input[list],
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("sophia:lambda:FirewallRules", name, None, opts)
        self.rules = _FirewallRulesResource(provider.FirewallRulesProvider(), name, {
            "api_key": api_key, "name": name, "rules": rules, "owned": None, "missing": None,
        }, pulumi.ResourceOptions.merge(_SECRET_OUTPUTS, pulumi.ResourceOptions(parent=self)))
        self.register_outputs({})


@dataclass(frozen=True)
class Launched:
    """A launched instance's addresses, known once the firewall admits the cluster's traffic."""

    ip: pulumi.Output[str]
    private_ip: pulumi.Output[Optional[str]]


def provision(cfg: StackConfig, private_key: pulumi.Output[str],
              opts: Optional[pulumi.ResourceOptions] = None) -> dict[str, Launched]:
    """Launch every provisioned node's host; node name -> its addresses, known once the
    firewall admits the cluster's traffic (so nothing connects before the ports are open)."""
    nodes = provisioned(cfg)
    if not nodes:
        return {}
    for warning in warnings(cfg):
        pulumi.log.warn(warning)
    from sophia_infra.program.secrets import secret

    api_key = secret(API_KEY_SECRET)
    tag = f"{pulumi.get_project()}-{pulumi.get_stack()}"
    public_key = pulumi.Output.unsecret(private_key.apply(ssh_keys.public_key_of))
    # The key's name follows its fingerprint, so a rotated key is registered beside the old one
    # before the old one goes (create-before-delete), and it is known from config alone: the
    # instances never take an unknown key name from a key being replaced.
    key_name = public_key.apply(lambda k: f"{tag}-{ssh_keys.fingerprint(k)}")
    key = SshKey(tag, api_key, public_key, key_name, opts=opts)
    instances = {}
    for n in nodes:
        # The control plane's host holds etcd: no change may replace it without an operator
        # first removing the protection (docs/operating.md).
        protect = n.name == cfg.control_plane.name
        instances[n.name] = Instance(n, api_key, key_name, tag, opts=pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(depends_on=[key], protect=protect or None)))
    fixed: dict[str, Sequence[Optional[str]]] = {n.name: [cfg.hosts[n.name].address]
                                                 for n in cfg.nodes if n.name in cfg.hosts}
    names = list(instances)
    rules = pulumi.Output.all(*[a for n in names for a in (instances[n].ip, instances[n].private_ip)]).apply(
        lambda v: firewall_rules(cfg, {**fixed, **{n: v[2 * i:2 * i + 2] for i, n in enumerate(names)}}, tag))
    firewall = FirewallRules(tag, api_key, rules, opts=opts)

    def after_firewall(value: pulumi.Output) -> pulumi.Output:
        return pulumi.Output.all(value, firewall.rules.id).apply(lambda v: v[0])

    return {name: Launched(after_firewall(inst.ip), after_firewall(inst.private_ip)) for name, inst in instances.items()}
