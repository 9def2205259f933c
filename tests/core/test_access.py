"""Roles and product scope (core/access.py): every rule, every branch."""

from __future__ import annotations

from thingshub.core import access
from thingshub.core.access import ADMIN, OPERATOR, READER, Need, Principal


def test_each_role_may_do_what_the_weaker_ones_may() -> None:
    for index, role in enumerate(access.ROLES):
        caller = Principal(role)
        for needed_index, needed in enumerate(access.ROLES):
            assert caller.may(Need(needed)) is (index >= needed_index), (role, needed)


def test_everywhere_needs_a_key_that_sees_every_product() -> None:
    everywhere = Need(ADMIN, everywhere=True)
    assert Principal(ADMIN).may(everywhere)
    assert not Principal(ADMIN, frozenset({"p1"})).may(everywhere)
    assert not Principal(OPERATOR).may(everywhere)  # the role comes first
    assert Principal(ADMIN, frozenset({"p1"})).may(Need(ADMIN))


def test_a_limited_key_sees_only_its_products() -> None:
    limited = Principal(READER, frozenset({"p1", "p3"}), "k1")
    assert limited.sees("p1") and not limited.sees("p2")
    assert limited.visible(["p3", "p2", "p1"]) == ["p3", "p1"]
    assert Principal(READER).sees("anything")
    assert Principal(ADMIN) == access.SERVE and access.SERVE.products is None


def test_roles_are_the_three_names() -> None:
    assert access.ROLES == ("reader", "operator", "admin")
    assert access.is_role("operator")
    assert not access.is_role("root")
    assert not access.is_role(None)
