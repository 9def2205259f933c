"""Settlement (core/settlement.py): members numbered as they join, decided once,
its waiters handed back in the order they came."""

from __future__ import annotations

import pytest

from thingshub.core.errors import Unavailable, VersionConflict
from thingshub.core.settlement import Settlement


def test_members_are_numbered_as_they_join_and_last_is_the_newest() -> None:
    s = Settlement()
    assert (s.size, s.last) == (0, -1)
    assert [s.join(), s.last, s.join(), s.last, s.join()] == [0, 0, 1, 1, 2]
    assert (s.size, s.last, s.settled) == (3, 2, False)


def test_settled_without_failures_every_member_gets_0_and_the_waiters_come_back_in_order() -> None:
    s = Settlement()
    s.join()
    s.join()
    calls: list[str] = []
    first, second = (lambda: calls.append("a")), (lambda: calls.append("b"))
    s.wait(first)
    s.wait(second)
    assert s.settle({}) == [first, second]  # an empty dict is no failure
    assert calls == []  # the settler calls them, not the settlement
    assert s.settled and s.failures is None and s.error is None
    assert [s.outcome(0), s.outcome(1)] == [0, 0]


def test_a_failure_belongs_to_its_member_only() -> None:
    s = Settlement()
    for _ in range(3):
        s.join()
    stale = VersionConflict("stale")
    assert s.settle({1: stale}) == []
    assert [s.outcome(0), s.outcome(1), s.outcome(2)] == [0, stale, 0]


def test_an_error_fails_every_member() -> None:
    s = Settlement()
    s.join()
    s.join()
    down = Unavailable("the database failed")
    s.settle({0: VersionConflict("stale")}, error=down)
    assert s.outcome(0) is down and s.outcome(1) is down


def test_settled_once_and_no_waiter_after() -> None:
    s = Settlement()
    s.join()
    s.settle()
    with pytest.raises(RuntimeError, match="settled once"):
        s.settle()
    with pytest.raises(RuntimeError, match="already settled"):
        s.wait(lambda: None)


def test_a_missing_member_is_0_but_not_done() -> None:
    s = Settlement()
    for _ in range(3):
        s.join()
    s.settle({2: VersionConflict("stale")}, missing={1})
    assert [s.outcome(0), s.outcome(1)] == [0, 0]
    assert [s.done(0), s.done(1), s.done(2)] == [True, False, False]
    assert not s.clean
    clean = Settlement()
    clean.join()
    assert not clean.clean  # not before it is settled
    clean.settle(missing=set())  # an empty set is none missing
    assert clean.clean and clean.missing is None and clean.done(0)


def test_a_members_value_is_what_its_write_gave_besides_0() -> None:
    s = Settlement()
    for _ in range(3):
        s.join()
    assert s.value(0) is None  # nothing before it is settled
    s.settle(values={1: (None, 0)})
    assert [s.value(0), s.value(1), s.value(2)] == [None, (None, 0), None]
    assert [s.outcome(1), s.done(1)] == [0, True]  # a value is no failure
    plain = Settlement()
    plain.join()
    plain.settle(values={})  # an empty dict is no value
    assert plain.values is None and plain.value(0) is None
