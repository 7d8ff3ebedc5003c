"""The NetworkPolicy evaluator against the semantics of networking.k8s.io/v1.

Source of the semantics and of the example policies used below: the Kubernetes documentation page
"Network Policies", https://kubernetes.io/docs/concepts/services-networking/network-policies/
(kubernetes/website content/en/docs/concepts/services-networking/network-policies.md and its
examples content/en/examples/service/networking/network-policy-*.yaml and
networkpolicy-multiport-egress.yaml), plus the API server's defaulting of policyTypes
(SetDefaults_NetworkPolicy in pkg/apis/networking/v1/defaults.go: Ingress always, Egress when
`len(spec.egress) != 0`). The docs' default-* examples carry no namespace (they are applied with
`kubectl -n`); here they get one, since the evaluator requires it.

Each test asserts a verdict that a plausible mis-implementation would get wrong.
"""

from __future__ import annotations

import copy

import pytest

from sophia_infra.tools.plan.traffic import Cluster, External, Pod, PolicyError, Port, Verdict, explain, parse_policy
from tests import yaml_c


def policy(name: str, namespace: str, spec: dict) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def in_namespace(manifest: dict, namespace: str) -> dict:
    m = copy.deepcopy(manifest)
    m["metadata"]["namespace"] = namespace
    return m


def cluster(*policies: dict, namespaces: dict | None = None, pods=()) -> Cluster:
    return Cluster(namespaces or {}, pods, policies)


DENY_INGRESS = {"podSelector": {}, "policyTypes": ["Ingress"]}
DENY_EGRESS = {"podSelector": {}, "policyTypes": ["Egress"]}

a_pod = Pod("a", "Deployment/a", {"app": "a"}, (Port(80, name="http"),), ip="10.42.0.10")
b_pod = Pod("b", "Deployment/b", {"app": "b"}, (Port(80, name="http"),), ip="10.42.1.10")
internet = External("203.0.113.7", "internet")


# --- the docs' examples ---------------------------------------------------------------------------

# https://kubernetes.io/docs/concepts/services-networking/network-policies/#networkpolicy-resource
TEST_NETWORK_POLICY = yaml_c.load("""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: test-network-policy
  namespace: default
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes:
  - Ingress
  - Egress
  ingress:
  - from:
    - ipBlock:
        cidr: 172.17.0.0/16
        except:
        - 172.17.1.0/24
    - namespaceSelector:
        matchLabels:
          project: myproject
    - podSelector:
        matchLabels:
          role: frontend
    ports:
    - protocol: TCP
      port: 6379
  egress:
  - to:
    - ipBlock:
        cidr: 10.0.0.0/24
    ports:
    - protocol: TCP
      port: 5978
""")


class TestDocsNetworkPolicyExample:
    db = Pod("default", "db", {"role": "db"}, (Port(6379),))
    frontend = Pod("default", "frontend", {"role": "frontend"})
    other_default = Pod("default", "other", {"role": "other"})
    in_myproject = Pod("myproject", "anything", {"role": "whatever"})
    frontend_elsewhere = Pod("elsewhere", "frontend", {"role": "frontend"})

    @pytest.fixture
    def c(self):
        return Cluster({"default": {}, "myproject": {"project": "myproject"}, "elsewhere": {}}, [], [TEST_NETWORK_POLICY])

    def test_frontend_in_the_policy_namespace_reaches_db_on_6379_only(self, c):
        assert c.flow(self.frontend, self.db, 6379).allowed
        assert not c.flow(self.frontend, self.db, 6380).allowed
        assert not c.flow(self.frontend, self.db, 6379, "UDP").allowed

    def test_a_pod_selector_peer_is_limited_to_the_policy_namespace(self, c):
        assert not c.flow(self.frontend_elsewhere, self.db, 6379).allowed

    def test_any_pod_of_a_namespace_labelled_project_myproject(self, c):
        assert c.flow(self.in_myproject, self.db, 6379).allowed

    def test_other_pods_of_the_namespace_are_denied(self, c):
        v = c.flow(self.other_default, self.db, 6379)
        assert not v.allowed
        assert v.egress == "not isolated for egress"
        assert v.ingress == "denied: isolated by default/test-network-policy and no rule matches"

    @pytest.mark.parametrize("ip, allowed", [
        ("172.17.0.0", True), ("172.17.0.255", True), ("172.17.2.0", True), ("172.17.255.255", True),
        ("172.17.1.0", False), ("172.17.1.255", False), ("172.16.255.255", False), ("172.18.0.0", False),
    ])
    def test_ip_block_with_except(self, c, ip, allowed):
        assert c.flow(External(ip), self.db, 6379).allowed is allowed

    def test_egress_only_to_10_0_0_0_24_on_5978(self, c):
        assert c.flow(self.db, External("10.0.0.200"), 5978).allowed
        assert not c.flow(self.db, External("10.0.1.1"), 5978).allowed
        assert not c.flow(self.db, External("10.0.0.200"), 5979).allowed

    def test_db_egress_to_pods_is_denied_since_only_an_ip_block_is_allowed(self, c):
        v = c.flow(self.db, self.frontend, 80)
        assert not v.allowed
        assert v.egress.startswith("denied: isolated by default/test-network-policy")
        assert v.ingress == "not isolated for ingress"

    def test_unselected_pods_stay_open(self, c):
        assert c.flow(self.frontend_elsewhere, self.other_default, 1234).allowed
        assert c.flow(self.other_default, internet, 443).allowed


class TestDocsToAndFromSelectors:
    """Behavior of `to` and `from` selectors: one element with both selectors is AND, two are OR."""

    namespaces = {"alice-ns": {"user": "alice"}, "bob-ns": {"user": "bob"}, "app": {}}
    server = Pod("app", "server", {"app": "server"})
    alice_client = Pod("alice-ns", "client", {"role": "client"})
    alice_other = Pod("alice-ns", "other", {"role": "other"})
    bob_client = Pod("bob-ns", "client", {"role": "client"})
    local_client = Pod("app", "client", {"role": "client"})

    def make(self, from_):
        return Cluster(self.namespaces, [], [policy("p", "app", {"podSelector": {"matchLabels": {"app": "server"}},
                                                                   "ingress": [{"from": from_}]})])

    def test_single_element_with_both_selectors_is_and(self):
        c = self.make([{"namespaceSelector": {"matchLabels": {"user": "alice"}},
                        "podSelector": {"matchLabels": {"role": "client"}}}])
        assert c.flow(self.alice_client, self.server, 80).allowed
        assert not c.flow(self.alice_other, self.server, 80).allowed  # namespace matches, pod does not
        assert not c.flow(self.bob_client, self.server, 80).allowed  # pod matches, namespace does not
        assert not c.flow(self.local_client, self.server, 80).allowed  # not the policy's namespace here

    def test_two_elements_are_or(self):
        c = self.make([{"namespaceSelector": {"matchLabels": {"user": "alice"}}},
                       {"podSelector": {"matchLabels": {"role": "client"}}}])
        assert c.flow(self.alice_other, self.server, 80).allowed  # any pod of alice's namespaces
        assert c.flow(self.local_client, self.server, 80).allowed  # role=client in the local namespace
        assert not c.flow(self.bob_client, self.server, 80).allowed  # role=client, but not local


# The docs' "Default policies" examples (network-policy-*.yaml), without a namespace of their own.
DEFAULT_DENY_INGRESS = policy("default-deny-ingress", "", {"podSelector": {}, "policyTypes": ["Ingress"]})
ALLOW_ALL_INGRESS = policy("allow-all-ingress", "", {"podSelector": {}, "ingress": [{}], "policyTypes": ["Ingress"]})
DEFAULT_DENY_EGRESS = policy("default-deny-egress", "", {"podSelector": {}, "policyTypes": ["Egress"]})
ALLOW_ALL_EGRESS = policy("allow-all-egress", "", {"podSelector": {}, "egress": [{}], "policyTypes": ["Egress"]})
DEFAULT_DENY_ALL = policy("default-deny-all", "", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})


class TestDocsDefaultPolicies:
    def test_default_deny_all_ingress_leaves_egress_alone(self):
        c = cluster(in_namespace(DEFAULT_DENY_INGRESS, "a"))
        v = c.flow(b_pod, a_pod, 80)
        assert not v.allowed and v.ingress == "denied: isolated by a/default-deny-ingress and no rule matches"
        assert not c.flow(internet, a_pod, 80).allowed
        assert c.flow(a_pod, b_pod, 80).allowed and c.flow(a_pod, internet, 443).allowed

    def test_default_deny_ingress_isolates_pods_no_other_policy_selects(self):
        narrow = policy("only-web", "a", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]})
        c = cluster(in_namespace(DEFAULT_DENY_INGRESS, "a"), narrow)
        assert not c.flow(b_pod, a_pod, 80).allowed
        assert c.flow(b_pod, Pod("a", "web", {"app": "web"}), 80).allowed

    def test_allow_all_ingress_overrides_any_isolating_policy(self):
        c = cluster(in_namespace(DEFAULT_DENY_INGRESS, "a"), in_namespace(ALLOW_ALL_INGRESS, "a"))
        v = c.flow(internet, a_pod, 31337, "UDP")
        assert v.allowed and v.ingress == "allowed by a/allow-all-ingress ingress rule 0"
        assert c.flow(b_pod, a_pod, 80).allowed

    def test_default_deny_all_egress_leaves_ingress_alone(self):
        c = cluster(in_namespace(DEFAULT_DENY_EGRESS, "a"))
        assert not c.flow(a_pod, b_pod, 80).allowed
        assert not c.flow(a_pod, internet, 443).allowed
        assert c.flow(b_pod, a_pod, 80).allowed

    def test_allow_all_egress_overrides_deny_egress(self):
        c = cluster(in_namespace(DEFAULT_DENY_EGRESS, "a"), in_namespace(ALLOW_ALL_EGRESS, "a"))
        assert c.flow(a_pod, internet, 443).allowed
        assert c.flow(a_pod, b_pod, 53, "UDP").allowed

    def test_default_deny_all_blocks_both_directions(self):
        c = cluster(in_namespace(DEFAULT_DENY_ALL, "a"))
        assert not c.flow(a_pod, b_pod, 80).allowed
        assert not c.flow(b_pod, a_pod, 80).allowed
        same_ns = Pod("a", "other", {"app": "other"})
        v = c.flow(same_ns, a_pod, 80)
        assert not v.allowed and v.egress.startswith("denied") and v.ingress.startswith("denied")

    def test_end_port_example_32000_to_32768(self):
        multi_port_egress = policy("multi-port-egress", "default", {
            "podSelector": {"matchLabels": {"role": "db"}}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
                        "ports": [{"protocol": "TCP", "port": 32000, "endPort": 32768}]}]})
        c = cluster(multi_port_egress)
        db = Pod("default", "db", {"role": "db"})
        for port, allowed in [(31999, False), (32000, True), (32500, True), (32768, True), (32769, False)]:
            assert c.flow(db, External("10.0.0.9"), port).allowed is allowed, port
        assert not c.flow(db, External("10.0.1.9"), 32000).allowed


# --- isolation and policyTypes ------------------------------------------------------------------


class TestIsolation:
    def test_only_selected_pods_are_isolated(self):
        c = cluster(policy("db-only", "a", {"podSelector": {"matchLabels": {"app": "db"}}}))
        assert not c.flow(b_pod, Pod("a", "db", {"app": "db"}), 5432).allowed
        v = c.flow(b_pod, a_pod, 80)
        assert v.allowed and v.ingress == "not isolated for ingress"

    def test_empty_pod_selector_selects_every_pod_of_the_namespace(self):
        c = cluster(policy("all", "a", {"podSelector": {}}))
        assert not c.flow(b_pod, Pod("a", "unlabelled", {}), 80).allowed
        assert not c.flow(b_pod, a_pod, 80).allowed

    def test_policy_types_absent_without_egress_isolates_ingress_only(self):
        c = cluster(policy("p", "a", {"podSelector": {}}))
        assert not c.flow(b_pod, a_pod, 80).allowed
        assert c.flow(a_pod, internet, 443).allowed

    def test_policy_types_absent_with_egress_rules_isolates_egress_too(self):
        c = cluster(policy("p", "a", {"podSelector": {}, "ingress": [{}],
                                      "egress": [{"to": [{"ipBlock": {"cidr": "198.51.100.0/24"}}]}]}))
        assert c.flow(a_pod, External("198.51.100.1"), 443).allowed
        v = c.flow(a_pod, internet, 443)
        assert not v.allowed and v.egress == "denied: isolated by a/p and no rule matches"
        assert c.flow(b_pod, a_pod, 80).allowed  # ingress rule [{}] allows all

    def test_policy_types_absent_with_empty_egress_list_does_not_isolate_egress(self):
        # SetDefaults_NetworkPolicy adds Egress only when len(spec.egress) != 0.
        c = cluster(policy("p", "a", {"podSelector": {}, "egress": []}))
        assert c.flow(a_pod, internet, 443).allowed
        assert not c.flow(b_pod, a_pod, 80).allowed  # Ingress is always defaulted

    def test_empty_policy_types_list_is_defaulted_like_an_absent_one(self):
        c = cluster(policy("p", "a", {"podSelector": {}, "policyTypes": []}))
        assert not c.flow(b_pod, a_pod, 80).allowed
        assert c.flow(a_pod, internet, 443).allowed

    def test_explicit_egress_only_policy_ignores_its_ingress_rules_and_does_not_isolate_ingress(self):
        c = cluster(policy("p", "a", {"podSelector": {}, "policyTypes": ["Egress"],
                                      "ingress": [{"from": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}]}))
        assert c.flow(b_pod, a_pod, 80).allowed  # ingress not isolated although ingress rules exist
        assert not c.flow(a_pod, b_pod, 80).allowed

    def test_explicit_ingress_only_policy_with_an_egress_section_does_not_isolate_egress(self):
        c = cluster(policy("p", "a", {"podSelector": {}, "policyTypes": ["Ingress"], "egress": [{"ports": [{"port": 1}]}]}))
        assert c.flow(a_pod, internet, 443).allowed

    def test_policies_never_select_pods_of_another_namespace(self):
        # The selector matches b_pod's labels, but the policy lives in namespace a.
        c = cluster(policy("deny", "a", {"podSelector": {"matchLabels": {"app": "b"}},
                                         "policyTypes": ["Ingress", "Egress"]}))
        v = c.flow(a_pod, b_pod, 80)
        assert v.allowed and v.ingress == "not isolated for ingress" and v.egress == "not isolated for egress"
        assert c.isolating_policies(b_pod, "Ingress") == []

    def test_policies_are_additive(self):
        c = cluster(policy("deny", "a", DENY_INGRESS),
                    policy("from-b", "a", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}))
        v = c.flow(b_pod, a_pod, 80)
        assert v.allowed and v.ingress == "allowed by a/from-b ingress rule 0"
        assert not c.flow(internet, a_pod, 80).allowed
        assert c.isolating_policies(a_pod, "Ingress") == ["a/deny", "a/from-b"]

    def test_a_flow_needs_egress_at_the_source_and_ingress_at_the_destination(self):
        allow_b_ingress = policy("in", "b", {"podSelector": {}, "ingress": [{}]})
        c = cluster(policy("deny-out", "a", DENY_EGRESS), allow_b_ingress)
        v = c.flow(a_pod, b_pod, 80)
        assert not v.allowed and v.egress.startswith("denied") and v.ingress.startswith("allowed")
        c = cluster(policy("deny-in", "b", DENY_INGRESS), policy("out", "a", {"podSelector": {}, "egress": [{}]}))
        v = c.flow(a_pod, b_pod, 80)
        assert not v.allowed and v.egress == "allowed by a/out egress rule 0" and v.ingress.startswith("denied")

    def test_external_peers_have_no_policies_of_their_own(self):
        c = cluster(policy("deny-all", "a", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))
        v = c.flow(internet, b_pod, 80)
        assert v.allowed and v.egress == "not a pod"
        v = c.flow(b_pod, internet, 80)
        assert v.allowed and v.ingress == "not a pod"
        assert not c.flow(internet, a_pod, 80).allowed

    def test_a_pod_talking_to_itself_gets_no_special_allowance(self):
        c = cluster(policy("deny", "a", DENY_INGRESS))
        assert not c.flow(a_pod, a_pod, 80).allowed

    def test_the_same_namespace_gets_no_special_allowance(self):
        c = cluster(policy("deny", "a", DENY_EGRESS))
        assert not c.flow(a_pod, Pod("a", "sibling", {"app": "a"}), 80).allowed


# --- rules and peers ------------------------------------------------------------------------------


def ingress_to_a(*rules) -> Cluster:
    return cluster(policy("p", "a", {"podSelector": {"matchLabels": {"app": "a"}}, "ingress": list(rules)}),
                   namespaces={"a": {}, "b": {"team": "b"}, "c": {"team": "c"}})


class TestRules:
    def test_ingress_empty_list_denies_everything_once_isolated(self):
        c = ingress_to_a()
        assert not c.flow(Pod("a", "sibling", {"app": "x"}), a_pod, 80).allowed
        assert not c.flow(internet, a_pod, 80).allowed

    @pytest.mark.parametrize("rule", [{"ports": [{"port": 80}]}, {"from": [], "ports": [{"port": 80}]}])
    def test_rule_without_peers_matches_every_peer(self, rule):
        c = ingress_to_a(rule)
        assert c.flow(b_pod, a_pod, 80).allowed
        assert c.flow(internet, a_pod, 80).allowed
        assert c.flow(Pod("b", "host", {}, host_network=True, ip="192.0.2.10"), a_pod, 80).allowed
        assert not c.flow(b_pod, a_pod, 81).allowed

    @pytest.mark.parametrize("rule", [{"from": [{"namespaceSelector": {}}]},
                                      {"from": [{"namespaceSelector": {}}], "ports": []}])
    def test_rule_without_ports_matches_every_port_and_protocol(self, rule):
        c = ingress_to_a(rule)
        for port, protocol in [(1, "TCP"), (65535, "UDP"), (9, "SCTP")]:
            assert c.flow(b_pod, a_pod, port, protocol).allowed

    def test_rules_are_ored_within_a_policy(self):
        c = ingress_to_a({"from": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": 443}]},
                         {"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}], "ports": [{"port": 80}]})
        assert c.flow(internet, a_pod, 443).allowed
        assert not c.flow(internet, a_pod, 80).allowed  # peer of rule 0 with the port of rule 1
        v = c.flow(b_pod, a_pod, 80)
        assert v.allowed and v.ingress == "allowed by a/p ingress rule 1"

    def test_pod_selector_alone_is_the_policy_namespace(self):
        c = ingress_to_a({"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]})
        assert c.flow(Pod("a", "b-like", {"app": "b"}), a_pod, 80).allowed
        assert not c.flow(b_pod, a_pod, 80).allowed  # same labels, other namespace

    def test_empty_pod_selector_alone_is_every_pod_of_the_policy_namespace_only(self):
        c = ingress_to_a({"from": [{"podSelector": {}}]})
        assert c.flow(Pod("a", "any", {}), a_pod, 80).allowed
        assert not c.flow(b_pod, a_pod, 80).allowed
        assert not c.flow(internet, a_pod, 80).allowed

    def test_namespace_selector_alone_is_every_pod_of_matching_namespaces(self):
        c = ingress_to_a({"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]})
        assert c.flow(Pod("b", "any", {"whatever": "x"}), a_pod, 80).allowed
        assert not c.flow(Pod("c", "any", {}), a_pod, 80).allowed
        assert not c.flow(Pod("a", "local", {}), a_pod, 80).allowed  # the own namespace has no team label

    def test_empty_namespace_selector_is_every_namespace_but_not_the_outside(self):
        c = ingress_to_a({"from": [{"namespaceSelector": {}}]})
        assert c.flow(Pod("c", "x", {}), a_pod, 80).allowed
        assert c.flow(Pod("undeclared", "x", {}), a_pod, 80).allowed
        assert not c.flow(internet, a_pod, 80).allowed

    def test_namespace_selector_on_the_automatic_name_label(self):
        c = ingress_to_a({"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "c"}}}]})
        assert c.flow(Pod("c", "x", {}), a_pod, 80).allowed
        assert not c.flow(b_pod, a_pod, 80).allowed

    def test_the_name_label_cannot_be_overridden(self):
        c = Cluster({"b": {"kubernetes.io/metadata.name": "c"}}, [], [])
        assert c.namespace_labels("b")["kubernetes.io/metadata.name"] == "b"

    def test_egress_peers_use_the_same_semantics(self):
        c = cluster(policy("out", "a", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [
            {"to": [{"namespaceSelector": {"matchLabels": {"team": "b"}}, "podSelector": {"matchLabels": {"app": "b"}}}]}]}),
            namespaces={"b": {"team": "b"}, "c": {"team": "c"}})
        assert c.flow(a_pod, b_pod, 80).allowed
        assert not c.flow(a_pod, Pod("b", "other", {"app": "other"}), 80).allowed
        assert not c.flow(a_pod, Pod("c", "b", {"app": "b"}), 80).allowed
        assert not c.flow(a_pod, Pod("a", "b", {"app": "b"}), 80).allowed


class TestIPBlock:
    def test_ipv6_cidr_with_except(self):
        c = ingress_to_a({"from": [{"ipBlock": {"cidr": "2001:db8::/48", "except": ["2001:db8:0:bad::/64"]}}]})
        assert c.flow(External("2001:db8::1"), a_pod, 80).allowed
        assert c.flow(External("2001:db8:0:bae::1"), a_pod, 80).allowed
        assert not c.flow(External("2001:db8:0:bad::1"), a_pod, 80).allowed
        assert not c.flow(External("2001:db8:1::1"), a_pod, 80).allowed

    def test_ipv4_everything_does_not_cover_ipv6(self):
        c = ingress_to_a({"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})
        assert c.flow(internet, a_pod, 80).allowed
        assert not c.flow(External("2001:db8::1"), a_pod, 80).allowed

    def test_pod_peers_match_an_ip_block_by_their_ip_only(self):
        c = ingress_to_a({"from": [{"ipBlock": {"cidr": "10.42.1.0/24"}}]})
        assert c.flow(b_pod, a_pod, 80).allowed  # 10.42.1.10
        assert not c.flow(Pod("b", "no-ip", {"app": "b"}), a_pod, 80).allowed
        assert not c.flow(Pod("b", "other-ip", {"app": "b"}, ip="10.42.2.1"), a_pod, 80).allowed

    def test_selectors_never_match_an_external_peer(self):
        c = cluster(policy("out", "a", {"podSelector": {}, "policyTypes": ["Egress"],
                                        "egress": [{"to": [{"namespaceSelector": {}}, {"podSelector": {}}]}]}))
        assert not c.flow(a_pod, internet, 443).allowed
        assert c.flow(a_pod, b_pod, 80).allowed

    def test_egress_ip_block_to_a_pod_destination(self):
        c = cluster(policy("out", "a", {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.42.1.0/24"}}]}]}))
        assert c.flow(a_pod, b_pod, 80).allowed
        assert not c.flow(a_pod, Pod("b", "no-ip", {}), 80).allowed


# --- ports ----------------------------------------------------------------------------------------


class TestPorts:
    def test_protocol_defaults_to_tcp(self):
        c = ingress_to_a({"ports": [{"port": 53}]})
        assert c.flow(b_pod, a_pod, 53).allowed
        assert not c.flow(b_pod, a_pod, 53, "UDP").allowed

    def test_udp_and_sctp_rules_match_their_protocol_only(self):
        c = ingress_to_a({"ports": [{"port": 53, "protocol": "UDP"}, {"port": 9000, "protocol": "SCTP"}]})
        assert c.flow(b_pod, a_pod, 53, "UDP").allowed
        assert not c.flow(b_pod, a_pod, 53, "TCP").allowed
        assert c.flow(b_pod, a_pod, 9000, "SCTP").allowed
        assert not c.flow(b_pod, a_pod, 9000, "TCP").allowed

    def test_a_rule_port_without_a_port_matches_every_port_of_its_protocol(self):
        c = ingress_to_a({"ports": [{"protocol": "UDP"}]})
        assert c.flow(b_pod, a_pod, 53, "UDP").allowed and c.flow(b_pod, a_pod, 65535, "UDP").allowed
        assert not c.flow(b_pod, a_pod, 53, "TCP").allowed

    def test_a_rule_port_that_is_empty_means_every_tcp_port(self):
        c = ingress_to_a({"ports": [{}]})
        assert c.flow(b_pod, a_pod, 8443).allowed
        assert not c.flow(b_pod, a_pod, 8443, "UDP").allowed

    def test_named_port_in_an_ingress_rule_resolves_against_the_destination(self):
        web = Pod("a", "web", {"app": "a"}, (Port(8080, name="http"), Port(9090, name="metrics")))
        c = ingress_to_a({"ports": [{"port": "http"}]})
        assert c.flow(b_pod, web, 8080).allowed
        assert c.flow(b_pod, web, "http").allowed
        assert not c.flow(b_pod, web, 9090).allowed
        assert not c.flow(b_pod, web, 80).allowed  # the source's "http" (80) does not count
        assert c.flow(b_pod, a_pod, 80).allowed  # a_pod's own "http" is 80

    def test_named_port_in_an_egress_rule_resolves_against_the_destination_pod(self):
        c = cluster(policy("out", "a", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "http"}]}]}))
        api = Pod("b", "api", {}, (Port(8000, name="http"),))
        assert c.flow(a_pod, api, 8000).allowed
        assert not c.flow(a_pod, api, 80).allowed  # 80 is the *source's* http port
        assert not c.flow(a_pod, Pod("b", "unnamed", {}, (Port(8000),)), 8000).allowed
        assert not c.flow(a_pod, internet, 80).allowed  # nothing to resolve a name against

    def test_named_port_must_have_the_rule_protocol(self):
        dns = Pod("a", "dns", {"app": "a"}, (Port(53, "UDP", "dns"), Port(53, "TCP", "dns-tcp")))
        c = ingress_to_a({"ports": [{"port": "dns", "protocol": "UDP"}]})
        assert c.flow(b_pod, dns, 53, "UDP").allowed
        assert not c.flow(b_pod, dns, 53, "TCP").allowed
        c = ingress_to_a({"ports": [{"port": "dns"}]})  # TCP by default: "dns" is a UDP port
        assert not c.flow(b_pod, dns, 53, "UDP").allowed and not c.flow(b_pod, dns, 53, "TCP").allowed

    def test_hostnetwork_destination_does_not_resolve_named_ports_in_egress(self):
        c = cluster(policy("out", "a", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "metrics"}]}]}))
        exporter = Pod("b", "node-exporter", {}, (Port(9100, name="metrics"),), ip="192.0.2.5", host_network=True)
        assert not c.flow(a_pod, exporter, 9100).allowed

    def test_flow_resolves_a_named_port_of_the_destination(self):
        c = cluster()
        with pytest.raises(PolicyError, match="has no such container port"):
            c.flow(b_pod, a_pod, "grpc")
        with pytest.raises(PolicyError, match="not a pod"):
            c.flow(a_pod, internet, "https")
        with pytest.raises(PolicyError, match="outside 1-65535"):
            c.flow(a_pod, internet, 0)

    def test_end_port_range_with_udp(self):
        c = ingress_to_a({"ports": [{"port": 30000, "endPort": 30010, "protocol": "UDP"}]})
        assert c.flow(b_pod, a_pod, 30010, "UDP").allowed
        assert not c.flow(b_pod, a_pod, 30005, "TCP").allowed
        assert not c.flow(b_pod, a_pod, 30011, "UDP").allowed


# --- selectors ------------------------------------------------------------------------------------


class TestLabelSelectors:
    pods = [Pod("n", "prod-web", {"env": "prod", "tier": "web"}), Pod("n", "dev-web", {"env": "dev", "tier": "web"}),
            Pod("n", "no-env", {"tier": "db"}), Pod("m", "prod-db", {"env": "prod", "tier": "db"})]

    def names(self, namespace, selector):
        return [p.name for p in Cluster({}, self.pods, []).pods_matching(namespace, selector)]

    @pytest.mark.parametrize("selector, expected", [
        ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "qa"]}]}, ["prod-web"]),
        # NotIn and DoesNotExist match a pod without the key
        ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}, ["dev-web", "no-env"]),
        ({"matchExpressions": [{"key": "env", "operator": "Exists"}]}, ["prod-web", "dev-web"]),
        ({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}, ["no-env"]),
        ({"matchLabels": {"tier": "web"}, "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]},
         ["prod-web"]),
        ({"matchLabels": {"tier": "web", "env": "qa"}}, []),
        ({}, ["prod-web", "dev-web", "no-env"]),
        (None, ["prod-web", "dev-web", "no-env"]),
    ])
    def test_selector(self, selector, expected):
        assert self.names("n", selector) == expected

    def test_every_namespace(self):
        assert self.names(None, {"matchLabels": {"env": "prod"}}) == ["prod-web", "prod-db"]

    def test_match_expressions_select_pods_for_isolation(self):
        c = cluster(policy("p", "a", {"podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn",
                                                                              "values": ["a"]}]}}))
        assert c.flow(b_pod, a_pod, 80).allowed
        assert not c.flow(b_pod, Pod("a", "unlabelled", {}), 80).allowed

    @pytest.mark.parametrize("expr, message", [
        ({"key": "env", "operator": "Equals", "values": ["x"]}, "operator 'Equals'"),
        ({"key": "env", "operator": "In"}, "needs values"),
        ({"key": "env", "operator": "Exists", "values": ["x"]}, "must not have values"),
    ])
    def test_invalid_expressions_are_refused(self, expr, message):
        with pytest.raises(PolicyError, match=message):
            cluster(policy("p", "a", {"podSelector": {"matchExpressions": [expr]}}))


# --- hostNetwork ----------------------------------------------------------------------------------


class TestHostNetwork:
    node_agent = Pod("a", "DaemonSet/agent", {"app": "a"}, (Port(9100, name="metrics"),), ip="192.0.2.5",
                     host_network=True)

    def test_hostnetwork_pods_are_not_selected_by_policies(self):
        c = cluster(policy("deny", "a", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))
        v = c.flow(b_pod, self.node_agent, 9100)
        assert v.allowed and v.ingress.startswith("hostNetwork pod")
        assert c.flow(self.node_agent, internet, 443).allowed
        assert c.isolating_policies(self.node_agent, "Ingress") == []
        assert not c.flow(b_pod, a_pod, 80).allowed

    def test_a_hostnetwork_source_is_its_node_ip_not_a_pod(self):
        by_labels = ingress_to_a({"from": [{"podSelector": {"matchLabels": {"app": "a"}}}, {"namespaceSelector": {}}]})
        assert not by_labels.flow(self.node_agent, a_pod, 80).allowed
        by_ip = ingress_to_a({"from": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]})
        assert by_ip.flow(self.node_agent, a_pod, 80).allowed


# --- validation -----------------------------------------------------------------------------------


class TestValidation:
    @pytest.mark.parametrize("spec, message", [
        ({"podSelector": {}, "policyTypes": ["ingress"]}, "policyTypes entry 'ingress'"),
        ({"podSelector": {}, "ingress": [{"from": [{}]}]}, "must set podSelector, namespaceSelector or ipBlock"),
        ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]},
         "ipBlock cannot be combined"),
        ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}]}]},
         "not a strict subset"),
        ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}]}]},
         "not a strict subset"),
        ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.300/8"}}]}]}, "is not a CIDR"),
        ({"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 90}]}]}, "endPort needs a numeric port"),
        ({"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}, "endPort 80 is below port 90"),
        ({"podSelector": {}, "ingress": [{"ports": [{"port": 5432.0}]}]}, "port 5432.0 is not an integer"),
        ({"podSelector": {}, "ingress": [{"ports": [{"port": "8080"}]}]}, "neither a number nor a valid port name"),
        ({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "protocol": "tcp"}]}]}, "protocol 'tcp'"),
    ])
    def test_manifests_the_api_server_rejects(self, spec, message):
        with pytest.raises(PolicyError, match=message):
            parse_policy(policy("bad", "a", spec))

    def test_namespace_is_required(self):
        with pytest.raises(PolicyError, match="metadata.namespace is missing"):
            cluster(DEFAULT_DENY_INGRESS)

    def test_only_networking_v1_network_policies(self):
        cilium = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "x", "namespace": "a"}}
        with pytest.raises(PolicyError, match="not a networking.k8s.io/v1 NetworkPolicy"):
            cluster(cilium)

    def test_duplicate_policies_are_refused(self):
        with pytest.raises(PolicyError, match="given twice"):
            cluster(policy("p", "a", DENY_INGRESS), policy("p", "a", DENY_EGRESS))

    def test_bad_addresses_are_refused(self):
        with pytest.raises(ValueError, match="not an IP address"):
            External("example.com")
        with pytest.raises(ValueError, match="not an IP address"):
            Pod("a", "x", {}, ip="10.0.0")


# --- the API itself -------------------------------------------------------------------------------


class TestAPI:
    def test_pods_are_hashable_and_compare_by_value(self):
        p1 = Pod("a", "x", {"k": "v", "j": "w"}, [Port(80)])
        p2 = Pod("a", "x", {"j": "w", "k": "v"}, (Port(80),))
        assert p1 == p2 and len({p1, p2}) == 1
        assert p1.ports == (Port(80),) and dict(p1.labels) == {"j": "w", "k": "v"}

    def test_reasons_are_stable_and_name_the_first_matching_policy(self):
        allow_z = policy("z-allow", "a", {"podSelector": {}, "ingress": [{}]})
        allow_b = policy("b-allow", "a", {"podSelector": {}, "ingress": [{}]})
        assert cluster(allow_z, allow_b).flow(b_pod, a_pod, 80).ingress == "allowed by a/b-allow ingress rule 0"
        assert cluster(allow_b, allow_z).flow(b_pod, a_pod, 80).ingress == "allowed by a/b-allow ingress rule 0"

    def test_denied_reason_lists_every_isolating_policy(self):
        c = cluster(policy("p2", "a", DENY_INGRESS), policy("p1", "a", {"podSelector": {}, "ingress": [{"ports": [{"port": 1}]}]}))
        assert c.flow(b_pod, a_pod, 80).ingress == "denied: isolated by a/p1, a/p2 and no rule matches"

    def test_explain_is_one_line(self):
        assert explain(Verdict(False, "not isolated for egress", "denied: isolated by a/p and no rule matches")) == (
            "denied (egress: not isolated for egress; ingress: denied: isolated by a/p and no rule matches)")
        assert explain(cluster().flow(a_pod, b_pod, 80)) == (
            "allowed (egress: not isolated for egress; ingress: not isolated for ingress)")

    def test_pods_matching_includes_hostnetwork_pods_in_the_order_given(self):
        node = Pod("a", "agent", {"app": "a"}, host_network=True)
        c = Cluster({}, [node, a_pod, b_pod], [])
        assert c.pods_matching("a", {"matchLabels": {"app": "a"}}) == [node, a_pod]
