"""The transition preview's rules on small hand-made plans: the engine's (order, delete-before-
replace and its dependents, replaceOnChanges, ignoreChanges, protect, retainOnDelete, unknowns)
and each provider family's, the dynamic providers asked through the pinned SDK's servicer."""

from __future__ import annotations

import copy

import pytest

from sophia_infra.tools.plan import destructive, dynamic_diff, mocks, provider_rules, transition, transition_report

S = "urn:pulumi:t::p::"


def res(name, type_="command:remote:Command", inputs=None, deps=(), prop=None, options=None, parent=None,
        provider=None, custom=True, secrets=None):
    return {"urn": f"{S}{type_}::{name}", "type": type_, "name": name, "custom": custom,
            "parent": parent, "dependencies": sorted(deps), "provider": provider, "options": options or {},
            "inputs": inputs or {}, "propertyDependencies": prop or {}, "secretFingerprints": secrets or {}}


def doc(*resources):
    return {"stack": "t", "resources": list(resources), "outputs": {}}


def urn(name, type_="command:remote:Command"):
    return f"{S}{type_}::{name}"


def ops(t):
    return t.changes()


# ----------------------------------------------------------------------------- engine

def test_unchanged_plans_have_only_same_steps():
    d = doc(res("a", inputs={"create": "x"}), res("b", inputs={"create": "y"}, deps=[urn("a")]))
    t = transition.compute(d, copy.deepcopy(d))
    assert ops(t) == {} and [s.op for s in t.steps] == ["same", "same"]


def test_creates_run_in_dependency_order_and_deletes_last_dependents_first():
    old = doc(res("gone-base", inputs={"create": "1"}),
              res("gone-user", inputs={"create": "2"}, deps=[urn("gone-base")]),
              res("kept", inputs={"create": "k"}))
    new = doc(res("kept", inputs={"create": "k2"}),
              res("new-user", inputs={"create": "4"}, deps=[urn("new-base")]),
              res("new-base", inputs={"create": "3"}))
    t = transition.compute(old, new)
    assert [(op, n) for op, n in t.sequence] == [
        ("update", "kept"), ("create", "new-base"), ("create", "new-user"),
        ("delete", "gone-user"), ("delete", "gone-base")]
    assert [s.name for s in t.steps] == ["kept", "new-base", "new-user", "gone-user", "gone-base"]


def test_a_trigger_replaces_a_command_create_before_delete_unless_the_option_says_so():
    old = doc(res("cbd", inputs={"triggers": ["a"]}, options={"replaceOnChanges": ["triggers[*]"]}),
              res("dbr", inputs={"triggers": ["a"]}, options={"replaceOnChanges": ["triggers[*]"],
                                                              "deleteBeforeReplace": True}))
    new = copy.deepcopy(old)
    for r in new["resources"]:
        r["inputs"]["triggers"] = ["b"]
    t = transition.compute(old, new)
    assert ops(t) == {"cbd": "replace", "dbr": "replace"}
    assert not t.step("cbd").delete_before_replace and t.step("dbr").delete_before_replace
    # delete-first: the delete before the create; create-before-delete: the old one deleted last.
    assert t.sequence == [("create-replacement", "cbd"), ("delete-replaced", "dbr"),
                          ("create-replacement", "dbr"), ("delete-replaced", "cbd")]


def test_a_changed_command_script_or_connection_is_an_update():
    old = doc(res("c", inputs={"create": "a", "connection": {"host": "[secret]"}},
                  secrets={"/connection": "hmac-sha256:1"}))
    new = doc(res("c", inputs={"create": "a", "connection": {"host": "[secret]"}},
                  secrets={"/connection": "hmac-sha256:2"}))
    t = transition.compute(old, new)
    assert ops(t) == {"c": "update"} and t.step("c").keys == ["connection"]


def test_an_old_plan_without_fingerprints_cannot_see_a_secret_change_and_says_so():
    old = doc(res("c", inputs={"stdin": "[secret]"}))
    del old["resources"][0]["secretFingerprints"]
    new = doc(res("c", inputs={"stdin": "[secret]"}, secrets={"/stdin": "hmac-sha256:2"}))
    assert ops(transition.compute(old, new)) == {}
    assert any("secret" in n for n in transition_report.notes(old))
    assert transition_report.notes(new) == []


def test_the_dependents_of_a_delete_first_replacement_go_first_only_through_property_dependencies():
    """calculateDependentReplacements: the old state's dependents whose inputs come from the
    replaced resource are re-diffed with those inputs unknown; a depends_on edge replaces nothing."""
    base = res("install", inputs={"triggers": ["10.0.0.1"]}, options={"deleteBeforeReplace": True})
    member = res("membership", inputs={"triggers": ["install-id"]}, deps=[base["urn"]],
                 prop={"triggers": [base["urn"]]}, options={"deleteBeforeReplace": True})
    bystander = res("after", inputs={"create": "x"}, deps=[base["urn"]])  # depends_on only
    old = doc(base, member, bystander)
    new = copy.deepcopy(old)
    new["resources"][0]["inputs"]["triggers"] = ["10.0.0.2"]
    t = transition.compute(old, new)
    assert ops(t) == {"install": "replace", "membership": "replace"}
    assert [x for x in t.sequence if x[0] != "same"] == [("delete-replaced", "membership"), ("delete-replaced", "install"),
                              ("create-replacement", "install"), ("create-replacement", "membership")]
    assert t.step("membership").delete_before_replace


def test_an_input_from_a_replaced_resource_is_unknown_in_the_preview():
    pw = res("pw", "random:index/randomPassword:RandomPassword", {"length": 32})
    user = res("secret", "kubernetes:core/v1:Secret",
               {"metadata": {"name": "s"}, "stringData": {"k": "[secret]"}}, deps=[pw["urn"]],
               prop={"stringData": [pw["urn"]]}, secrets={"/stringData": "hmac-sha256:1"})
    old = doc(pw, user)
    new = copy.deepcopy(old)
    new["resources"][0]["inputs"]["length"] = 48
    t = transition.compute(old, new)
    # A new password; the Secret's data is unknown until it exists, and Secret data is immutable.
    assert ops(t) == {"pw": "replace", "secret": "replace"}
    assert t.step("secret").delete_before_replace and "unknown" in t.step("secret").why


def test_ignore_changes_hides_a_key_and_replace_on_changes_replaces_on_it():
    old = doc(res("a", "kubernetes:apps/v1:Deployment", {"metadata": {"name": "a"}, "spec": {"replicas": 1}},
                  options={"ignoreChanges": ["spec"]}),
              res("b", "kubernetes:apps/v1:Deployment", {"metadata": {"name": "b"}, "spec": {"replicas": 1}},
                  options={"replaceOnChanges": ["spec"]}))
    new = copy.deepcopy(old)
    for r in new["resources"]:
        r["inputs"]["spec"]["replicas"] = 2
    t = transition.compute(old, new)
    assert ops(t) == {"b": "replace"}
    assert "replaceOnChanges" in t.step("b").why


def test_protect_in_the_old_state_blocks_a_replacement_and_retain_on_delete_is_not_destructive():
    old = doc(res("ns", "kubernetes:core/v1:Namespace", {"metadata": {"name": "a"}}, options={"protect": True}),
              res("kept-ns", "kubernetes:core/v1:Namespace", {"metadata": {"name": "k"}}, options={"retainOnDelete": True}))
    new = doc(res("ns", "kubernetes:core/v1:Namespace", {"metadata": {"name": "b"}}))
    t = transition.compute(old, new)
    assert ops(t) == {"ns": "replace", "kept-ns": "delete"}
    assert [s.name for s in transition_report.blocked(t.steps, [])] == ["ns"]
    assert "PROTECTED" in t.step("ns").why
    assert not t.step("kept-ns").destructive
    retained = doc(res("db", destructive.CNPG_CLUSTER, {"metadata": {"name": "a"}}, options={"retainOnDelete": True}))
    renamed = doc(res("db", destructive.CNPG_CLUSTER, {"metadata": {"name": "b"}}))
    step = transition.compute(retained, renamed).step("db")
    assert step.op == "replace" and not step.destructive  # the old cluster stays behind


def test_a_destructive_step_is_blocked_unless_allowed_by_name():
    inst = res("w-instance", "pulumi-python:dynamic/lambda:Instance", {"name": "w"})
    t = transition.compute(doc(inst), doc())
    assert t.step("w-instance").op == "delete" and t.step("w-instance").destructive
    assert [s.name for s in transition_report.blocked(t.steps, [])] == ["w-instance"]
    assert transition_report.blocked(t.steps, ["w-instance"]) == []


def test_plans_of_two_stacks_are_not_compared():
    with pytest.raises(transition.TransitionError, match="one stack"):
        transition.compute(doc(), {**doc(), "stack": "other"})


# ----------------------------------------------------------------------------- providers

def test_kubernetes_force_new_paths_and_delete_first_for_a_named_object():
    d = provider_rules.diff_kubernetes("kubernetes:core/v1:Secret", {"metadata": {"name": "s"}, "stringData": "a"},
                                       {"metadata": {"name": "s"}, "stringData": "b"})
    assert d.replaces == [".stringData"] and d.delete_before_replace is True
    mutable = provider_rules.diff_kubernetes("kubernetes:core/v1:Secret", {"metadata": {"name": "s"}, "stringData": "a"},
                                             {"metadata": {"name": "s"}, "stringData": "b"}, {"enableSecretMutable": "true"})
    assert mutable.replaces == []
    renamed = provider_rules.diff_kubernetes("kubernetes:postgresql.cnpg.io/v1:Cluster", {"metadata": {"name": "a"}},
                                             {"metadata": {"name": "b"}})
    assert renamed.replaces == [".metadata.name"] and renamed.delete_before_replace is False
    autonamed = provider_rules.diff_kubernetes("kubernetes:apps/v1:Deployment", {"spec": {"selector": 1}},
                                               {"spec": {"selector": 2}})
    assert autonamed.replaces == [".spec.selector"] and autonamed.delete_before_replace is False
    pvc = provider_rules.diff_kubernetes("kubernetes:core/v1:PersistentVolumeClaim",
                                         {"metadata": {"name": "p"}, "spec": {"resources": 1}},
                                         {"metadata": {"name": "p"}, "spec": {"resources": 2}})
    assert pvc.replaces == [] and pvc.keys == ["spec"]  # a bigger volume is not a new one


def test_a_helm_release_is_upgraded_unless_its_name_or_namespace_changes():
    old = {"name": "valkey", "namespace": "d", "version": "0.11.0", "values": {"a": 1}}
    assert provider_rules.diff_helm_release(old, {**old, "version": "0.12.0", "values": {"a": 2}}).replaces == []
    assert provider_rules.diff_helm_release(old, {**old, "namespace": "e"}).replaces == ["namespace"]


def test_a_kubernetes_provider_with_a_cluster_identifier_survives_a_new_kubeconfig():
    old = {"kubeconfig": "[secret a]", "clusterIdentifier": "k3s"}
    assert provider_rules.diff_kubernetes_provider(old, {**old, "kubeconfig": "[secret b]"}).replaces == []
    assert provider_rules.diff_kubernetes_provider({"kubeconfig": "a"}, {"kubeconfig": "b"}).replaces == ["kubeconfig"]
    assert provider_rules.diff_kubernetes_provider(old, {**old, "clusterIdentifier": "x"}).replaces == ["clusterIdentifier"]


def test_a_replaced_provider_replaces_every_resource_on_it():
    prov = res("k8s", "pulumi:providers:kubernetes", {"kubeconfig": "a"})
    ns = res("ns", "kubernetes:core/v1:Namespace", {"metadata": {"name": "n"}}, provider=f"{prov['urn']}::id")
    old = doc(prov, ns)
    new = copy.deepcopy(old)
    new["resources"][0]["inputs"]["kubeconfig"] = "b"
    t = transition.compute(old, new)
    assert ops(t) == {"k8s": "replace", "ns": "replace"} and "provider" in t.step("ns").why


def test_every_random_password_argument_replaces_it():
    assert provider_rules.diff_random({"length": 32}, {"length": 48}).replaces == ["length"]
    assert provider_rules.diff_random({"length": 32}, {"length": 32}).keys == []


def test_the_lambda_instance_provider_is_asked_through_the_sdk_servicer():
    """The program's InstanceProvider.diff, reached through pulumi/dynamic/__main__.py: a new
    instance type replaces the host, deleting first; the API key alone is an update."""
    t = "pulumi-python:dynamic/lambda:Instance"
    old = {"name": "w", "instance_type": "gpu_1x_a10", "region": "us-east-1", "ssh_key_name": "k",
           "api_key": "[secret hmac-sha256:1]"}
    replaced = dynamic_diff.diff(t, "id", old, {**old, "instance_type": "gpu_1x_a100"})
    assert replaced == dynamic_diff.DynamicDiff(True, ("instance_type",), True)
    assert dynamic_diff.diff(t, "id", old, {**old, "api_key": "[secret hmac-sha256:2]"}).replaces == ()
    assert dynamic_diff.diff(t, "id", old, dict(old)).changes is False


def test_an_unknown_type_of_dynamic_resource_is_one_sentence():
    with pytest.raises(dynamic_diff.DynamicDiffError, match="no provider class"):
        dynamic_diff.diff("pulumi-python:dynamic/nope:Thing", "id", {}, {})


def test_fingerprints_compare_secrets_without_holding_them(monkeypatch):
    a, b = mocks.fingerprint("placeholder-one"), mocks.fingerprint("placeholder-two")
    assert a != b and a == mocks.fingerprint("placeholder-one") and "placeholder" not in a
    monkeypatch.setenv(mocks.FINGERPRINT_KEY_ENV, "another key")
    assert mocks.fingerprint("placeholder-one") != a


def test_immutable_fields_are_per_group_and_version_as_upstream_lists_them():
    """diff.go `forceNew` is keyed by group and version: a custom resource's spec is patched,
    a core ConfigMap's data replaces it, apps/v1 selectors replace."""
    paths = provider_rules.force_new_paths
    assert paths("kubernetes:example.com/v1:Service", {}, {}) == [".metadata.name", ".metadata.namespace"]
    assert paths("kubernetes:core/v1:Service", {}, {})[-1] == ".spec.clusterIP"
    assert paths("kubernetes:core/v1:ConfigMap", {}, {})[-2:] == [".binaryData", ".data"]
    assert ".data" not in paths("kubernetes:core/v1:ConfigMap", {}, {"enableConfigMapMutable": "true"})
    assert ".data" in paths("kubernetes:core/v1:Secret", {"immutable": True}, {"enableSecretMutable": "true"})
    assert paths("kubernetes:apps/v1:Deployment", {}, {})[-1] == ".spec.selector"


def test_a_dependent_that_leaves_the_program_is_deleted_once_before_its_dependency_is_replaced():
    base = res("install", inputs={"triggers": ["a"]}, options={"deleteBeforeReplace": True})
    member = res("membership", inputs={"triggers": ["install-id"]}, deps=[base["urn"]],
                 prop={"triggers": [base["urn"]]}, options={"deleteBeforeReplace": True})
    new = doc({**copy.deepcopy(base), "inputs": {"triggers": ["b"]}})
    t = transition.compute(doc(base, member), new)
    assert ops(t) == {"install": "replace", "membership": "delete"}
    assert t.sequence == [("delete", "membership"), ("delete-replaced", "install"), ("create-replacement", "install")]


def test_what_an_updated_dynamic_resource_outputs_is_unknown_to_its_dependents():
    """The pinned servicer's Configure answers only acceptSecrets (no preview support), so a
    preview hands back the new inputs as the outputs: a command whose trigger reads the
    instance's address sees it change."""
    inst = res("w-instance", "pulumi-python:dynamic/lambda:Instance",
               {"name": "w", "instance_type": "gpu_1x_a10", "api_key": "[secret k1]", "ip": None})
    inst["outputs"] = {"ip": "203.0.113.5", "status": "active"}
    install = res("w-install", inputs={"triggers": ["203.0.113.5"]}, deps=[inst["urn"]],
                  prop={"triggers": [inst["urn"]]}, options={"replaceOnChanges": ["triggers[*]"]})
    ready = res("w-ready", "pulumi-python:dynamic/lambda:Instance", {"name": "w", "instance_type": "w-instance-id"},
                deps=[inst["urn"]], prop={"instance_type": [inst["urn"]]})  # reads only the id
    new = copy.deepcopy(doc(inst, install, ready))
    new["resources"][0]["inputs"]["api_key"] = "[secret k2]"
    t = transition.compute(doc(inst, install, ready), new)
    assert ops(t) == {"w-instance": "update", "w-install": "replace"}  # the id stays known
    assert "unknown" in t.step("w-install").why
    source = dynamic_diff.SOURCE.read_text()
    assert 'fields = {"acceptSecrets": False}' in source and "supportsPreview" not in source


def test_a_provider_diff_that_raises_is_a_preview_that_would_stop():
    """The servicer turns the exception into an abort, as the engine would get it."""
    fw = res("fw", "pulumi-python:dynamic/lambda:FirewallRules", {"name": "fw", "rules": "not a list"})
    new = copy.deepcopy(doc(fw))
    new["resources"][0]["inputs"]["rules"] = "still not a list"
    with pytest.raises(transition.PreviewWouldFail, match="pulumi preview would stop at fw: its provider's diff fails"):
        transition.compute(doc(fw), new)
