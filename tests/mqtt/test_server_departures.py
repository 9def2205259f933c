"""Wills and session expiry as the server arms them, on a fake clock.

`Departures` turns `protocol.lifetimes.depart`'s plan into timers on its loop;
here the loop is a fake clock whose timers fire only when the test moves it,
so delays of minutes are checked without waiting for them.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

from thingshub.mqtt.codec import Connect, Properties, Will
from thingshub.mqtt.hooks import ClientInfo, CloseReason, Message, OpenHooks
from thingshub.mqtt.server import Broker, BrokerConfig, BrokerStats
from thingshub.mqtt.server.connection import Connection
from thingshub.mqtt.server.delivery import Delivery
from thingshub.mqtt.server.departures import Departures
from thingshub.mqtt.server.session import Session
from thingshub.mqtt.server.takeover import Takeover


class FakeTimer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """The two things departures ask of an event loop: the time, and a timer at a time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._timers: list[tuple[float, int, FakeTimer, Callable[..., None], tuple[Any, ...]]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., None], *args: Any) -> FakeTimer:
        timer = FakeTimer()
        heapq.heappush(self._timers, (when, next(self._order), timer, callback, args))
        return timer

    def advance(self, seconds: float) -> None:
        self.now += seconds
        while self._timers and self._timers[0][0] <= self.now:
            _, _, timer, callback, args = heapq.heappop(self._timers)
            if not timer.cancelled:
                callback(*args)


class Server:
    """Departures with real sessions, delivery and takeover, on the fake loop;
    every message that enters the server (a will) is recorded."""

    def __init__(self) -> None:
        self.loop = FakeLoop()
        self.sessions: dict[str, Session] = {}
        self.published: list[tuple[float, Message]] = []
        stats = BrokerStats()
        delivery = Delivery(BrokerConfig(), stats, self.loop)  # type: ignore[arg-type]
        takeover = Takeover(self.sessions, self.end_session)
        self.departures = Departures(
            self.sessions,
            OpenHooks(),
            stats,
            delivery,
            takeover,
            self.incoming,
            self.loop,  # type: ignore[arg-type]
        )
        self.broker = Broker()  # not started: only what a Connection reads of it at birth

    def end_session(self, session: Session) -> None:
        self.departures.end(session)

    def incoming(self, client: ClientInfo, message: Message, session: Session | None) -> None:
        self.published.append((self.loop.now, message))

    def connected(self, client_id: str, expiry: int, will: Will | None) -> Connection:
        session = self.sessions.get(client_id) or Session(client_id, 5, 10, 10, 1000)
        self.sessions[client_id] = session
        session.expiry_interval = expiry
        session.cancel_timers()  # a session that resumes cancels what was pending
        session.pending_will = None
        conn = Connection(self.broker)
        conn.session = session
        conn.client = ClientInfo(client_id, None, 5, "test")
        conn.will = Connect(client_id, 5, will=will) if will is not None else None
        session.connection = conn
        return conn

    def lost(self, conn: Connection) -> None:
        self.departures.detach(conn, CloseReason.CONNECTION_LOST, send_will=True)


def will(delay: int | None = None) -> Will:
    return Will("will/dev", b"gone", 1, False, Properties(will_delay_interval=delay))


def test_the_will_goes_after_its_delay() -> None:
    s = Server()
    s.lost(s.connected("dev", expiry=3600, will=will(delay=120)))
    s.loop.advance(119)
    assert s.published == []
    s.loop.advance(1)
    [(at, message)] = s.published
    assert at == 1120.0
    assert (message.topic, message.payload) == ("will/dev", b"gone")
    assert message.properties.will_delay_interval is None  # a will-only property
    assert "dev" in s.sessions


def test_a_session_that_resumes_in_time_sends_no_will() -> None:
    s = Server()
    s.lost(s.connected("dev", expiry=3600, will=will(delay=120)))
    s.loop.advance(60)
    s.connected("dev", expiry=3600, will=will(delay=120))
    s.loop.advance(3600)
    assert s.published == []
    assert "dev" in s.sessions


def test_the_session_expires_and_takes_its_will_along() -> None:
    s = Server()
    s.lost(s.connected("dev", expiry=300, will=will(delay=900)))
    s.loop.advance(299)
    assert s.published == [] and "dev" in s.sessions
    s.loop.advance(1)
    assert [at for at, _ in s.published] == [1300.0]  # once, at the session's end
    assert "dev" not in s.sessions
    s.loop.advance(3600)
    assert len(s.published) == 1


def test_a_session_without_expiry_ends_at_once_with_its_will() -> None:
    s = Server()
    s.lost(s.connected("dev", expiry=0, will=will(delay=900)))
    assert [at for at, _ in s.published] == [1000.0]
    assert "dev" not in s.sessions


def test_a_session_expires_without_a_will() -> None:
    s = Server()
    s.lost(s.connected("dev", expiry=60, will=None))
    s.loop.advance(59.9)
    assert "dev" in s.sessions
    s.loop.advance(0.1)
    assert "dev" not in s.sessions
    assert s.published == []
