"""What an ended connection leaves in memory: nothing, and without waiting for
the cyclic collector.

A server holding many devices runs with the collector's threshold high
(collections are pauses), so a connection whose objects form a reference cycle
stays in memory until a collection of the oldest generation reaches it: with
reconnect churn, megabytes an hour (issue 19, the soak). These tests turn the
collector off and count the server's connections still alive once the clients
are gone.
"""

from __future__ import annotations

import gc

from tests.conftest import RunningBroker
from tests.mqtt.clients import RawClient, wait_until
from thingshub.mqtt.codec import Disconnect, ReasonCode
from thingshub.mqtt.hooks import ClientInfo
from thingshub.mqtt.server.connection import Connection


def _connections(broker: RunningBroker) -> list[Connection]:
    """This broker's connections still in memory (an earlier test's server, or a
    client it left reconnecting, may still hold its own while this test runs)."""
    return [o for o in gc.get_objects() if type(o) is Connection and o.broker is broker.broker]


def _holders(survivors: list[Connection]) -> str:
    """What keeps the first survivor alive, for the failure message."""
    if not survivors:
        return "none"
    return ", ".join(sorted({type(r).__name__ for r in gc.get_referrers(survivors[0])}))


def test_an_ended_connection_is_freed_by_reference_counting(broker: RunningBroker) -> None:
    gc.collect()
    gc.disable()
    try:
        for i in range(20):
            client = RawClient(broker.port, version=4 if i % 4 < 2 else 5)
            assert client.connect(f"c{i}").reason_code == ReasonCode.SUCCESS
            if i % 2:  # a goodbye, or just a dropped socket
                client.send(Disconnect())
            client.close()
        wait_until(lambda: broker.stats.connections == 0, what="every client gone")
        try:
            wait_until(lambda: not _connections(broker), what="no Connection left alive")
        except AssertionError as failure:
            raise AssertionError(f"{failure}; held by: {_holders(_connections(broker))}") from None
    finally:
        gc.enable()


class _Peer:
    def __init__(self) -> None:
        self.asked = 0
        self._address: str | None = None

    @property
    def address(self) -> str:
        self.asked += 1
        self._address = "10.0.0.7:5000"
        return self._address


def test_a_released_client_keeps_an_address_it_was_asked_for() -> None:
    """Releasing the peer breaks the cycle without a late lookup (the socket is
    closed): an address asked for while connected stays; one never asked reads ''."""
    peer = _Peer()
    asked = ClientInfo("c", None, 4, peer)
    assert asked.address == "10.0.0.7:5000"
    asked.release_peer()
    assert asked.address == "10.0.0.7:5000" and peer.asked == 1
    never = ClientInfo("c", None, 4, _Peer())
    never.release_peer()
    assert never.address == ""
    assert ClientInfo("c", None, 4, "1.2.3.4:5").address == "1.2.3.4:5"
