"""LoginThrottle and Lanes: the pure rules behind login throttling.

Time is an argument (milliseconds, made up); waiting is someone else's job
(gateway/admission.py), so here a lane's waiters are plain strings.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from thingshub.core.throttle import MAX_IDENTITY, Lanes, LoginThrottle

NAT = "203.0.113.7"


def kinds(throttle: LoginThrottle, address: str, identity: str, now_ms: int = 0) -> list[str]:
    return [lane.kind for lane in throttle.plan(address, identity, now_ms)]


def pair_penalty(throttle: LoginThrottle, address: str, identity: str, now_ms: int = 0) -> float:
    lane = throttle.plan(address, identity, now_ms)[0]
    return throttle.penalty(lane, address, identity, 0.0, now_ms)


def test_an_attempt_passes_its_pair_identity_and_address_in_that_order() -> None:
    throttle = LoginThrottle(per_identity=1, per_address=8)
    lanes = throttle.plan(NAT, "u/x", 0)
    assert [(lane.kind, lane.limit) for lane in lanes] == [
        ("pair", 1),
        ("identity", 1),
        ("check", 8),
    ]
    assert len({lane.key for lane in lanes}) == 3


def test_failures_at_one_identity_cost_another_from_the_same_address_nothing() -> None:
    """Devices behind one NAT: an attacker failing at x never slows y down."""
    throttle = LoginThrottle(free=2)
    for _ in range(50):
        throttle.failed(NAT, "u/x", 0)
    assert pair_penalty(throttle, NAT, "u/x") == throttle.max_delay
    assert pair_penalty(throttle, NAT, "u/y") == 0.0
    assert throttle.at_once(NAT, "u/y", 0)
    assert not throttle.at_once(NAT, "u/x", 0)


def test_the_identity_pays_what_exceeds_the_pairs_penalty() -> None:
    """Failures from many addresses add up for the identity; an attempt that
    already waited its pair's penalty waits only the rest in the identity's lane."""
    throttle = LoginThrottle(free=2, base_delay=1.0, max_delay=100.0)
    for i in range(5):
        throttle.failed(f"10.0.0.{i}", "u/x", 0)
    _, identity, check = throttle.plan("10.0.0.9", "u/x", 0)
    assert throttle.penalty(identity, "10.0.0.9", "u/x", 0.0, 0) == 8.0  # 2**(5 - 2)
    assert throttle.penalty(identity, "10.0.0.9", "u/x", 3.0, 0) == 5.0
    assert throttle.penalty(identity, "10.0.0.9", "u/x", 9.0, 0) == 0.0
    assert throttle.penalty(check, "10.0.0.9", "u/x", 0.0, 0) == 0.0


def test_a_trusted_pair_skips_the_identity_and_the_address() -> None:
    throttle = LoginThrottle(free=0, trust_ms=1_000)
    for i in range(20):
        throttle.failed(f"10.0.0.{i}", "u/x", 0)  # attacked from everywhere
    throttle.succeeded(NAT, "u/x", 100)
    assert kinds(throttle, NAT, "u/x", 100) == ["pair"]
    assert throttle.at_once(NAT, "u/x", 100)
    assert kinds(throttle, "10.0.0.99", "u/x", 100) == ["pair", "identity", "check"]
    assert kinds(throttle, NAT, "u/x", 1_100) == ["pair", "identity", "check"]  # expired


def test_a_trusted_pair_still_pays_for_its_own_failures() -> None:
    """An attacker behind the device's own NAT gains nothing from its logins."""
    throttle = LoginThrottle(free=1)
    throttle.succeeded(NAT, "u/x", 0)
    for _ in range(3):
        throttle.failed(NAT, "u/x", 0)
    throttle.succeeded(NAT, "u/x", 0)  # failures are not forgiven
    assert pair_penalty(throttle, NAT, "u/x") > 0.0


def test_a_busy_lane_means_waiting() -> None:
    throttle = LoginThrottle()
    pair = throttle.plan(NAT, "u/x", 0)[0]
    assert throttle.lanes.try_enter(pair.key, pair.limit)
    assert not throttle.at_once(NAT, "u/x", 0)
    assert throttle.lanes.leave(pair.key) is None
    assert throttle.at_once(NAT, "u/x", 0)


def test_trust_and_keys_are_bounded() -> None:
    throttle = LoginThrottle(max_keys=10)
    for i in range(1_000):
        throttle.succeeded(f"10.0.{i // 256}.{i % 256}", "u/x", i)
        assert len(throttle._trusted) <= 10
    huge = "u/" + "a" * 100_000
    throttle.failed(NAT, huge, 0)
    assert all(len(key) < MAX_IDENTITY + 50 for key in throttle.pairs._failures)
    assert all(len(lane.key) < MAX_IDENTITY + 50 for lane in throttle.plan(NAT, huge, 0))


def test_lanes_hand_places_over_in_arrival_order() -> None:
    lanes: Lanes[str] = Lanes()
    assert lanes.try_enter("k", 2) and lanes.try_enter("k", 2)
    assert not lanes.try_enter("k", 2)
    lanes.wait("k", "first")
    assert not lanes.try_enter("k", 2)
    lanes.wait("k", "second")
    lanes.wait("k", "third")
    lanes.withdraw("k", "second")  # gave up
    assert lanes.leave("k") == "first"
    assert lanes.leave("k") == "third"
    assert not lanes.free("k", 2)  # still two holders: first and third
    assert lanes.leave("k") is None
    assert lanes.free("k", 2)
    assert lanes.leave("k") is None
    assert len(lanes) == 0  # nobody holds or waits: the key is gone


def test_nobody_jumps_the_queue() -> None:
    """A free place with someone waiting for it is not free for a newcomer."""
    lanes: Lanes[str] = Lanes()
    assert lanes.try_enter("k", 1)
    lanes.wait("k", "waiter")
    assert lanes.leave("k") == "waiter"  # the place is handed over, not freed
    assert not lanes.try_enter("k", 1)


def test_withdrawing_a_waiter_that_is_not_waiting_changes_nothing() -> None:
    """Its turn came already (it holds the place), or the lane is gone."""
    lanes: Lanes[str] = Lanes()
    lanes.withdraw("nobody", "w")
    assert len(lanes) == 0
    assert lanes.try_enter("k", 1)
    lanes.wait("k", "w")
    assert lanes.leave("k") == "w"
    lanes.withdraw("k", "w")  # too late: it holds the place now
    assert not lanes.free("k", 1)
    assert lanes.leave("k") is None
    assert len(lanes) == 0


def test_expired_trust_is_dropped_in_passes() -> None:
    """Expired pairs leave the table within the logins of a pass, not a week later."""
    throttle = LoginThrottle(trust_ms=1_000)
    for i in range(100):
        throttle.succeeded(f"10.0.0.{i}", "u/x", 0)
    assert len(throttle._trusted) == 100
    for i in range(64):
        throttle.succeeded(f"10.0.1.{i}", "u/x", 5_000)
    assert len(throttle._trusted) == 64
    assert not throttle.trusted("10.0.0.1", "u/x", 5_000)
    assert throttle.trusted("10.0.1.1", "u/x", 5_000)


def test_trust_beyond_the_bound_drops_the_oldest() -> None:
    throttle = LoginThrottle(max_keys=16)
    for i in range(17):
        throttle.succeeded(f"10.0.0.{i}", "u/x", i)
    assert len(throttle._trusted) == 14  # down to 7/8 of the bound
    assert not throttle.trusted("10.0.0.2", "u/x", 20)
    assert throttle.trusted("10.0.0.3", "u/x", 20)


def test_a_trust_table_of_no_keys_trusts_nobody() -> None:
    """The bound holds at its extreme: the pair just trusted is dropped too."""
    throttle = LoginThrottle(max_keys=0)
    throttle.succeeded(NAT, "u/x", 0)
    assert not throttle.trusted(NAT, "u/x", 0)
    assert kinds(throttle, NAT, "u/x") == ["pair", "identity", "check"]


def _at_once_by_plan(throttle: LoginThrottle, address: str, identity: str, now_ms: int) -> bool:
    """The rule as `at_once` states it: every lane of the plan free, no penalty."""
    return all(
        throttle.lanes.free(lane.key, lane.limit)
        and not throttle.penalty(lane, address, identity, 0.0, now_ms)
        for lane in throttle.plan(address, identity, now_ms)
    )


_ADDRESSES = st.sampled_from([NAT, "198.51.100.1"])
_IDENTITIES = st.sampled_from(["u/x", "u/y", "u/z"])
_STEPS = st.lists(
    st.tuples(
        st.sampled_from(["failed", "succeeded", "enter", "check"]),
        _ADDRESSES,
        _IDENTITIES,
        st.integers(0, 120_000),
    ),
    max_size=40,
)


@settings(max_examples=300)
@given(_STEPS)
def test_at_once_is_the_plan_lane_by_lane(steps: list[tuple[str, str, str, int]]) -> None:
    """Whatever failures, trusted logins and held lanes came before, `at_once`
    (written out for speed) answers as its plan would."""
    throttle = LoginThrottle(free=2, per_identity=1, per_address=2, trust_ms=60_000)
    now = 0
    for step, address, identity, dt in steps:
        now += dt
        if step == "failed":
            throttle.failed(address, identity, now)
        elif step == "succeeded":
            throttle.succeeded(address, identity, now)
        elif step == "enter":
            for lane in throttle.plan(address, identity, now):
                throttle.lanes.try_enter(lane.key, lane.limit)
        expected = _at_once_by_plan(throttle, address, identity, now)
        assert throttle.at_once(address, identity, now) == expected
