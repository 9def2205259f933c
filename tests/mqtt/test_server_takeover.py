"""Takeover by identity: one connection and one session per `Accept.identity`.

The application (here a small Hooks class; the platform's is the device)
names an identity per login. A newer login of the identity closes the older
connection whatever client ids both use (5.0: DISCONNECT 0x8E), and ends the
session the older one held, persistent or not, will included. Which login is
the newer is decided by the order the CONNECTs arrived, not by the order the
application's answers come back; and a login the server gives up on
stops being waited for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from tests.conftest import RunningBroker
from tests.mqtt.clients import PahoClient, RawClient, brief, wait_until
from thingshub.mqtt.codec import Connect, Disconnect, Will
from thingshub.mqtt.codec.properties import Properties
from thingshub.mqtt.hooks import Accept, ClientInfo, CloseReason, ConnectRequest, OpenHooks, Refuse
from thingshub.mqtt.server import BrokerConfig

VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]
NEVER = 0xFFFFFFFF


@dataclass
class ByUser(OpenHooks):
    """The user name is the identity; client ids stay the session keys. A
    login whose client id is in `held` is answered only when the test
    releases it."""

    held: dict[str, asyncio.Event] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    closed: list[tuple[str, CloseReason]] = field(default_factory=list)

    def authenticate(self, request: ConnectRequest) -> Accept | Refuse | asyncio.Task[Accept]:
        decision = Accept(request.username, identity=request.username)
        gate = self.held.get(request.client_id)
        if gate is None:
            return decision

        async def later() -> Accept:
            self.waiting.append(request.client_id)
            try:
                await gate.wait()
            except asyncio.CancelledError:
                self.cancelled.append(request.client_id)
                raise
            return decision

        return asyncio.get_running_loop().create_task(later())

    def on_disconnect(self, client: ClientInfo, reason: CloseReason) -> None:
        self.closed.append((client.client_id, reason))


def persistent(
    b: RunningBroker, version: int, client_id: str, will: Will | None = None
) -> RawClient:
    """A login as "dev" asking for a session that never expires."""
    raw = RawClient(b.port, version)
    props = Properties(session_expiry_interval=NEVER) if version == 5 else Properties()
    connack = raw.connect(client_id, clean=False, username="dev", properties=props, will=will)
    assert connack.reason_code == 0
    return raw


@pytest.mark.parametrize("version", VERSIONS)
def test_a_newer_login_of_the_identity_takes_over_whatever_the_client_id(
    broker_factory: Callable[..., RunningBroker], version: int
) -> None:
    hooks = ByUser()
    b = broker_factory(hooks=hooks)
    watcher = PahoClient(b.port, "watcher", username="someone-else")
    watcher.subscribe("will/#", "t/#", qos=1)
    old = persistent(b, version, "phone", will=Will("will/phone", b"gone", qos=1))
    assert old.subscribe("t/phone", qos=1) == [1]

    new = persistent(b, version, "tablet")

    # The older connection is closed, told why if it speaks 5.0 ...
    assert old.wait_closed() == ([Disconnect(0x8E)] if version == 5 else [])
    assert ("phone", CloseReason.TAKEN_OVER) in hooks.closed
    # ... its session ended: its will went out, its subscription is gone ...
    assert [brief(m) for m in watcher.wait_messages(1)] == [("will/phone", b"gone", 1, False)]
    watcher.publish("t/phone", b"for the old session", qos=1)
    assert b.call(lambda: sorted(b.broker.sessions)) == ["tablet", "watcher"]
    # ... and the newer one is undisturbed.
    assert new.ping() == []
    # Logging in as the old client id again finds no session to resume.
    again = RawClient(b.port, version)
    props = Properties(session_expiry_interval=NEVER) if version == 5 else Properties()
    connack = again.connect("phone", clean=False, username="dev", properties=props)
    assert (connack.reason_code, connack.session_present) == (0, False)
    assert new.wait_closed() == ([Disconnect(0x8E)] if version == 5 else [])
    assert b.call(lambda: sorted(b.broker.sessions)) == ["phone", "watcher"]
    assert b.call(lambda: len(b.broker.takeover)) == 2  # "dev" and "someone-else"


def test_other_identities_and_the_open_broker_are_unaffected(
    broker_factory: Callable[..., RunningBroker],
) -> None:
    b = broker_factory(hooks=ByUser())
    alice = PahoClient(b.port, "a1", username="alice")
    bob = PahoClient(b.port, "b1", username="bob")
    alice.fence()
    bob.fence()
    assert alice.disconnect_code is None and bob.disconnect_code is None
    # Without identities (the open broker), two client ids are two clients.
    open_broker = broker_factory()
    one = PahoClient(open_broker.port, "one", username="dev")
    two = PahoClient(open_broker.port, "two", username="dev")
    one.fence()
    two.fence()
    assert one.disconnect_code is None and two.disconnect_code is None


@pytest.mark.parametrize("version", VERSIONS)
def test_the_newer_connect_wins_even_when_the_older_is_answered_last(
    broker_factory: Callable[..., RunningBroker], version: int
) -> None:
    """The older CONNECT's decision comes back after the newer one was accepted:
    the older loses (closed without CONNACK), the newer stays."""
    gate = asyncio.Event()
    hooks = ByUser(held={"slow": gate})
    b = broker_factory(hooks=hooks)
    slow = RawClient(b.port, version)
    slow.send(Connect("slow", version, True, 0, "dev"))
    wait_until(lambda: hooks.waiting == ["slow"], what="the slow login to wait")
    fast = RawClient(b.port, version)
    assert fast.connect("fast", username="dev").reason_code == 0
    b.call(gate.set)
    assert slow.wait_closed() == []
    assert fast.ping() == []
    assert b.call(lambda: sorted(b.broker.sessions)) == ["fast"]


def test_a_login_given_up_on_is_no_longer_waited_for(
    broker_factory: Callable[..., RunningBroker],
) -> None:
    """When the server closes a connection still being authenticated (here at
    `connect_timeout`), the application's pending decision is cancelled, so
    nothing it holds for that login (a place in a queue) outlives it."""
    hooks = ByUser(held={"patient": asyncio.Event()})
    b = broker_factory(hooks=hooks, config=BrokerConfig(connect_timeout=0.3, sweep_interval=0.05))
    patient = RawClient(b.port)
    patient.send(Connect("patient", 5, True, 0, "dev"))
    wait_until(lambda: hooks.waiting == ["patient"], what="the login to wait")
    assert patient.wait_closed() == []
    wait_until(lambda: hooks.cancelled == ["patient"], what="the decision to be cancelled")
    assert PahoClient(b.port, "next", username="dev").connack_code == 0
