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
