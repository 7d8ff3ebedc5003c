"""The benchmark's chain measure (timings are printed by `make bench`, never asserted)."""

from sophia_infra.tools.bench import large_stack, longest_chain
from sophia_infra.tools.plan.mocks import Registration


def _r(urn, deps=(), parent="", custom=True, provider=""):
    return Registration(urn=urn, type="t", name=urn, custom=custom, parent=parent, dependencies=list(deps),
                        provider=provider, inputs={})


def test_longest_chain_follows_dependencies_providers_and_components():
    resources = [
        _r("a"), _r("b", ["a"]), _r("prov", ["b"]),
        _r("comp", custom=False), _r("c1", parent="comp", provider="prov::id"), _r("c2", ["c1"], parent="comp"),
        _r("d", ["comp"]),  # waits for everything inside the component
        _r("x", ["a"]),
    ]
    assert longest_chain(resources) == ["a", "b", "prov", "c1", "c2", "d"]


def test_large_stack_has_the_asked_size():
    import json
    config, _ = large_stack(workers=10, mcp_servers=7)
    assert len(json.loads(config["sophia:nodes"])) == 11
    assert sum(s["kind"] == "mcp" for s in json.loads(config["sophia:services"])) == 7


def test_a_components_children_wait_for_what_the_component_waits_for():
    from sophia_infra.tools.plan import ordering
    resources = [
        _r("base"), _r("prov"),
        _r("outer", ["base"], custom=False), _r("inner", parent="outer", custom=False),
        _r("leaf", ["sibling"], parent="inner", provider="prov::id"), _r("sibling", parent="inner"),
        _r("free"),
    ]
    waits = ordering.waits_for(resources)
    assert waits["leaf"] == {"sibling", "prov", "base"}  # its own, its provider, its grandparent's
    assert waits["sibling"] == {"base"} and waits["free"] == set()
    # the longest chain follows the inherited wait too
    assert longest_chain(resources) == ["base", "sibling", "leaf"]
