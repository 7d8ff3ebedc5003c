"""Which nodes a pod template lands on (tools/plan/scheduling.py), and what it means for the
traffic model: a hostNetwork DaemonSet is one peer per node, at that node's address."""

from __future__ import annotations

import pytest

from sophia_infra.tools.plan.scheduling import Node, Taint, fit, nodes_for, stack_nodes
from tests.conftest import parse_with

CONTROL = Node("cp", {"kubernetes.io/arch": "amd64", "sophia.ai/role": "control-plane"},
               (Taint.parse("CriticalAddonsOnly=true:NoExecute"),), "192.0.2.10")
GPU = Node("gh200", {"kubernetes.io/arch": "arm64", "gpu-type": "GH200", "nvidia.com/gpu.present": "true"}, (), "192.0.2.11")
SOFT = Node("soft", {"kubernetes.io/arch": "amd64"}, (Taint.parse("maintenance:PreferNoSchedule"),), "192.0.2.12")
NODES = [CONTROL, GPU, SOFT]


def test_taint_text_round_trips():
    assert str(Taint.parse("CriticalAddonsOnly=true:NoExecute")) == "CriticalAddonsOnly=true:NoExecute"
    assert Taint.parse("dedicated:NoSchedule") == Taint("dedicated", "", "NoSchedule")


def test_a_pod_without_tolerations_stays_off_the_tainted_control_plane():
    assert [n.name for n in nodes_for({}, NODES)] == ["gh200", "soft"]  # PreferNoSchedule only scores
    assert fit({}, CONTROL).why == ["taint CriticalAddonsOnly=true:NoExecute not tolerated"]


@pytest.mark.parametrize("toleration, tolerated", [
    ({"operator": "Exists"}, True),                                            # empty key + Exists: everything
    ({"key": "CriticalAddonsOnly", "operator": "Exists"}, True),
    ({"key": "CriticalAddonsOnly", "operator": "Equal", "value": "true"}, True),
    ({"key": "CriticalAddonsOnly", "value": "true", "effect": "NoExecute"}, True),  # operator defaults to Equal
    ({"key": "CriticalAddonsOnly", "value": "false"}, False),
    ({"key": "CriticalAddonsOnly", "operator": "Exists", "effect": "NoSchedule"}, False),  # other effect
    ({"operator": "Exists", "effect": "NoSchedule"}, False),                   # node-exporter's chart default
    ({"key": "other", "operator": "Exists"}, False),
])
def test_tolerations_match_taints_as_the_api_does(toleration, tolerated):
    assert fit({"tolerations": [toleration]}, CONTROL).fits is tolerated


def test_node_selector_and_required_affinity():
    arm = {"nodeSelector": {"kubernetes.io/arch": "arm64"}}
    assert nodes_for(arm, NODES) == [GPU]
    affinity = {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["soft"]}]},
    ]}}}}
    assert nodes_for(affinity, NODES) == [GPU, SOFT]  # terms are ORed
    empty_term = {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{}]}}}}
    assert nodes_for(empty_term, NODES) == []
    not_in = {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "gpu-type", "operator": "NotIn", "values": ["GH200"]}]}]}}}}
    assert nodes_for(not_in, NODES) == [SOFT]  # an absent label satisfies NotIn


def test_stack_nodes_register_as_k3s_and_the_program_label_them():
    nodes = {n.name: n for n in stack_nodes(parse_with("production"))}
    cfg = parse_with("production")
    cp = nodes[cfg.control_plane.name]
    assert cp.taints[0] == Taint("CriticalAddonsOnly", "true", "NoExecute")
    assert cp.labels["node-role.kubernetes.io/control-plane"] == "true"
    gh200 = next(n for n in nodes.values() if n.labels.get("gpu-type") == "GH200")
    assert gh200.labels["kubernetes.io/arch"] == "arm64" and not gh200.taints
    for node in cfg.nodes:
        host = cfg.hosts[node.name]
        assert nodes[node.name].address == (host.private_address or host.address)


def test_a_hostnetwork_daemonset_is_a_peer_per_node_at_its_address():
    """node-exporter tolerates every taint: Prometheus must reach it on every node's address, and a
    policy that leaves one node's address out denies exactly that node."""
    from sophia_infra.tools.plan import flows, traffic
    from sophia_infra.tools.plan.cluster_model import ClusterModel, Workload

    cfg = parse_with("dev")
    exporter = Workload("DaemonSet", "nvidia-gpu", "node-exporter", {"labels": {"app": "node-exporter"}},
                        {"hostNetwork": True, "tolerations": [{"operator": "Exists"}],
                         "containers": [{"name": "e", "ports": [{"containerPort": 9100, "name": "metrics"}]}]}, "chart x")
    prometheus = Workload("StatefulSet", "monitoring", "prometheus", {"labels": {"app": "prometheus"}},
                          {"containers": [{"name": "p"}]}, "operator")
    addresses = [cfg.hosts[n.name].private_address or cfg.hosts[n.name].address for n in cfg.nodes]

    def verdict(cidrs: list[str]) -> flows.FlowResult:
        egress = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                  "metadata": {"name": "scrape", "namespace": "monitoring"},
                  "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                           "egress": [{"to": [{"ipBlock": {"cidr": c}} for c in cidrs], "ports": [{"port": 9100}]}]}}
        model = ClusterModel({"monitoring": {}, "nvidia-gpu": {}}, [exporter, prometheus], [egress])
        ev = flows.Evaluator(cfg, model)
        peers = ev.members(flows.pods("nvidia-gpu", {"app": "node-exporter"}))
        assert sorted(p.ip for p in peers if isinstance(p, traffic.Pod)) == sorted(addresses)
        return ev.evaluate(flows.Flow("scrape", flows.pods("monitoring", {"app": "prometheus"}),
                                      flows.pods("nvidia-gpu", {"app": "node-exporter"}), 9100))

    assert verdict([f"{a}/32" for a in addresses]).status == "allowed"
    partial = verdict([f"{addresses[0]}/32"])
    assert partial.status == "denied"
    assert f"on {cfg.nodes[1].name}" in partial.detail and f"on {cfg.nodes[0].name}:" not in partial.detail

