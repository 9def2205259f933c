"""A session's own containers (`server/session.py`), without sockets.

Idle sessions share one empty mapping for their subscriptions and in-flight
messages; the first entry gives a session a dict of its own, and the shared
one must stay empty whatever happens.
"""

from __future__ import annotations

import pytest

from thingshub.mqtt.server.session import NONE_YET, OutMessage, Session, Subscription


def test_sessions_share_nothing_once_they_hold_something() -> None:
    a, b = Session("a", 5, 10, 10, 1000), Session("b", 4, 10, 10, 1000)
    assert a.subscriptions is NONE_YET and a.inflight is NONE_YET
    a.subscribe(Subscription(a, "x/#", 1))
    a.send(7, OutMessage("x/1", b"p", 1, False))
    a.subscribe(Subscription(a, "x/#", 0))  # the same filter again replaces it
    assert {f: s.qos for f, s in a.subscriptions.items()} == {"x/#": 0}
    assert list(a.inflight) == [7]
    assert b.subscriptions == {} and b.inflight == {} and len(NONE_YET) == 0


def test_writing_to_the_shared_empty_mapping_is_refused() -> None:
    with pytest.raises(TypeError, match="read-only"):
        NONE_YET["x"] = 1
    assert len(NONE_YET) == 0
