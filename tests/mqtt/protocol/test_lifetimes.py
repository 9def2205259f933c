"""When a session and its will end, on a fake clock: session expiry and the will delay.

Each case is one connection ending at `clock.now`; the plan says what is
published or ended now and at which times the server must act later.
"""

from __future__ import annotations

import pytest

from tests.mqtt.protocol.clock import FakeClock
from thingshub.mqtt.codec import Connect, Properties
from thingshub.mqtt.protocol import NEVER, Departure, depart, session_expiry


@pytest.mark.parametrize(
    ("packet", "cap", "expected"),
    [
        (Connect("c", 5, properties=Properties(session_expiry_interval=300)), NEVER, (300, 300)),
        (Connect("c", 5, properties=Properties(session_expiry_interval=300)), 60, (300, 60)),
        (Connect("c", 5), NEVER, (0, 0)),
        (Connect("c", 4, clean_start=True), NEVER, (0, 0)),
        (Connect("c", 4, clean_start=False), NEVER, (NEVER, NEVER)),
        (Connect("c", 4, clean_start=False), 3600, (NEVER, 3600)),
    ],
)
def test_session_expiry_asked_and_granted(
    packet: Connect, cap: int, expected: tuple[int, int]
) -> None:
    assert session_expiry(packet, cap) == expected


def test_a_session_without_expiry_ends_with_its_connection_and_its_will_goes_now() -> None:
    clock = FakeClock()
    assert depart(clock.now, expiry=0, will_delay=30) == Departure(will_now=True, end_now=True)
    assert depart(clock.now, expiry=0, will_delay=None) == Departure(end_now=True)


def test_a_session_expires_its_interval_after_the_connection_ends() -> None:
    clock = FakeClock()
    plan = depart(clock.now, expiry=120, will_delay=None)
    assert plan == Departure(expires_at=clock.now + 120)
    assert plan.expires_at is not None
    clock.advance(119.5)
    assert clock.now < plan.expires_at
    clock.advance(0.5)
    assert clock.now >= plan.expires_at


def test_a_session_that_never_expires_gets_no_expiry_time() -> None:
    clock = FakeClock()
    assert depart(clock.now, expiry=NEVER, will_delay=None) == Departure()
    assert depart(clock.now, expiry=NEVER, will_delay=10) == Departure(will_at=clock.now + 10)


def test_the_will_waits_its_delay() -> None:
    clock = FakeClock()
    plan = depart(clock.now, expiry=600, will_delay=30)
    assert plan == Departure(will_at=clock.now + 30, expires_at=clock.now + 600)


def test_the_will_goes_when_the_session_ends_if_that_is_sooner() -> None:
    clock = FakeClock()
    plan = depart(clock.now, expiry=10, will_delay=30)
    assert plan.will_at == plan.expires_at == clock.now + 10


def test_a_will_without_delay_goes_now_and_the_session_lives_on() -> None:
    clock = FakeClock()
    plan = depart(clock.now, expiry=600, will_delay=0)
    assert plan == Departure(will_now=True, expires_at=clock.now + 600)


def test_a_connection_taken_over_leaves_its_session_to_the_new_one() -> None:
    """No end and no expiry: the new CONNECT's clean start decides."""
    clock = FakeClock()
    assert depart(clock.now, expiry=600, will_delay=None, taken_over=True) == Departure()
    assert depart(clock.now, expiry=600, will_delay=30, taken_over=True) == Departure(
        will_at=clock.now + 30
    )
    assert depart(clock.now, expiry=20, will_delay=30, taken_over=True) == Departure(
        will_at=clock.now + 20
    )
    # A session that ends with its connection cannot hold a will back.
    assert depart(clock.now, expiry=0, will_delay=30, taken_over=True) == Departure(will_now=True)
    assert depart(clock.now, expiry=600, will_delay=0, taken_over=True) == Departure(will_now=True)
