"""The device tree's rules: addresses, cycles, depth, children, and the route of a
message through the top gateway."""

from __future__ import annotations

import pytest

from thingshub.core.errors import Conflict, InvalidRequest
from thingshub.core.topology import (
    MAX_CHILDREN,
    MAX_DEPTH,
    Link,
    address_problem,
    addresses_fine,
    check_address,
    check_binding,
    route,
)


@pytest.mark.parametrize("good", ["1", "a:b", "Z_9.-:", "x" * 36])
def test_addresses_of_thingspanel_characters(good: str) -> None:
    assert address_problem(good) is None
    assert check_address(good) == good


@pytest.mark.parametrize("bad", ["", "x" * 37, "a/b", "a b", "a+", "é", 7, None])
def test_other_addresses_are_refused(bad: object) -> None:
    assert address_problem(bad) is not None
    with pytest.raises(InvalidRequest, match="sub_address"):
        check_address(bad)


@pytest.mark.parametrize(
    "many",
    [["1", "a:b", "x" * 36], [], ["a", ""], ["a", "x" * 37], ["a", "a/b"], ["é"], ["a", 7]],
)
def test_addresses_judged_at_once_as_one_by_one(many: list[object]) -> None:
    assert addresses_fine(many) == all(address_problem(a) is None for a in many)


GW = ("p", "gw")
DEV = ("p", "d")


def test_a_binding_within_the_rules() -> None:
    check_binding(DEV, GW, [GW], 1, 0)
    check_binding(DEV, GW, [GW, ("p", "a"), ("p", "b")], 2, MAX_CHILDREN - 1)


def test_a_device_is_never_its_own_ancestor() -> None:
    with pytest.raises(InvalidRequest, match="cycle"):
        check_binding(DEV, DEV, [DEV], 1, 0)
    with pytest.raises(InvalidRequest, match="cycle"):
        check_binding(DEV, GW, [GW, ("p", "x"), DEV], 3, 0)


def test_the_tree_is_at_most_five_deep() -> None:
    ancestors = [("p", str(i)) for i in range(MAX_DEPTH - 1)]
    check_binding(DEV, ancestors[0], ancestors, 1, 0)  # the fifth level
    with pytest.raises(InvalidRequest, match="6 devices deep"):
        check_binding(DEV, ancestors[0], ancestors, 2, 0)
    with pytest.raises(InvalidRequest, match="deep"):
        check_binding(DEV, GW, [GW], MAX_DEPTH, 0)


def test_a_gateway_has_at_most_1500_children() -> None:
    with pytest.raises(InvalidRequest, match="1500 sub-devices"):
        check_binding(DEV, GW, [GW], 1, MAX_CHILDREN)


def test_the_route_runs_from_the_top_gateway_down() -> None:
    chain = [
        Link(("p", "leaf"), ("p", "mid"), "3"),
        Link(("p", "mid"), ("p", "top"), "2"),
        Link(("p", "top"), None, None),
    ]
    assert route(chain) == (("p", "top"), ("2", "3"))
    assert route([Link(("p", "top"), None, "ignored")]) == (("p", "top"), ())


def test_a_link_without_its_address_cannot_be_routed() -> None:
    chain = [Link(("p", "leaf"), ("p", "top"), None), Link(("p", "top"), None, None)]
    with pytest.raises(Conflict, match="no sub_address"):
        route(chain)


def test_a_protocol_naming_devices_by_their_ids_needs_no_address() -> None:
    chain = [Link(("p", "leaf"), ("p", "top"), None), Link(("p", "top"), None, None)]
    assert route(chain, addressed=False) == (("p", "top"), ())
