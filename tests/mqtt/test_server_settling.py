"""Messages the application decides together: `on_publish` returning a `Settling`
(the storage's batch: one commit for many messages of many clients).

What a client sees: no acknowledgement before its settlement is decided, then
its messages' acknowledgements in PUBLISH order, interleaved correctly with
those of futures and immediate codes; a member's failure is 0x80 to a 5.0
client and a close without acknowledgement for 3.1.1, as a failed future is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.conftest import RunningBroker
from tests.mqtt.clients import RawClient, wait_until
from thingshub.core.errors import Unavailable
from thingshub.core.settlement import Settlement
from thingshub.mqtt.codec import PacketType, PubAck, Publish, ReasonCode
from thingshub.mqtt.hooks import ClientInfo, Message, OpenHooks, PublishOutcome


class Batches(OpenHooks):
    """batch/... joins the open settlement (`cut()` opens a new one), slow/... gets a
    future, anything else is consumed and acknowledged at once (code 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.open = Settlement()
        self.settlements = [self.open]
        self.joined = 0
        self.futures: list[asyncio.Future[int]] = []

    def on_publish(self, client: ClientInfo, message: Message) -> PublishOutcome:
        if message.topic.startswith("batch/"):
            self.open.join()
            self.joined += 1
            return self.open
        if message.topic.startswith("slow/"):
            fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self.futures.append(fut)
            return fut
        return 0

    def cut(self) -> None:
        self.open = Settlement()
        self.settlements.append(self.open)


def settle(
    b: RunningBroker,
    s: Settlement,
    failures: dict[int, BaseException] | None = None,
    error: BaseException | None = None,
) -> None:
    """Decide `s` on the broker's loop and call its waiters, as the storage does."""

    def run() -> None:
        for waiter in s.settle(failures, error):
            waiter()

    b.call(run)


def puback(pid: int, code: int = 0) -> PubAck:
    return PubAck(PacketType.PUBACK, pid, code)


@pytest.mark.parametrize("version", [4, 5])
def test_acknowledged_once_settled_in_publish_order(
    broker_factory: Callable[..., RunningBroker], version: int
) -> None:
    hooks = Batches()
    b = broker_factory(hooks=hooks)
    one, two = RawClient(b.port, version), RawClient(b.port, version)
    one.connect("one")
    two.connect("two")
    one.send(Publish("batch/a", b"1", qos=1, packet_id=1))
    two.send(Publish("batch/b", b"2", qos=1, packet_id=7))
    one.send(
        Publish("slow/c", b"3", qos=1, packet_id=2), Publish("batch/d", b"4", qos=1, packet_id=3)
    )
    wait_until(lambda: hooks.joined == 3 and len(hooks.futures) == 1)
    first = hooks.open
    b.call(hooks.cut)
    one.send(Publish("batch/e", b"5", qos=1, packet_id=4), Publish("now", b"6", qos=1, packet_id=5))
    wait_until(lambda: hooks.joined == 4)
    assert one.ping() == [] and two.ping() == []

    settle(b, hooks.settlements[1])  # the later one first: its message waits its turn
    assert one.ping() == []
    settle(b, first)
    assert two.ping() == [puback(7)]
    assert one.ping() == [puback(1)]  # then the future's message holds the rest back
    b.call(lambda: hooks.futures[0].set_result(0))
    assert one.ping() == [puback(2), puback(3), puback(4), puback(5)]


@pytest.mark.allow_logged_errors
def test_a_failed_member_is_0x80_to_a_v5_client(
    broker_factory: Callable[..., RunningBroker],
) -> None:
    hooks = Batches()
    b = broker_factory(hooks=hooks)
    raw = RawClient(b.port, 5)
    raw.connect("device")
    raw.send(*(Publish("batch/x", b"", qos=1, packet_id=i) for i in (1, 2, 3)))
    wait_until(lambda: hooks.joined == 3)
    settle(b, hooks.open, {1: Unavailable("the database failed")})
    assert raw.ping() == [puback(1), puback(2, ReasonCode.UNSPECIFIED_ERROR), puback(3)]
    b.call(hooks.cut)
    raw.send(*(Publish("batch/y", b"", qos=1, packet_id=i) for i in (4, 5)))
    wait_until(lambda: hooks.joined == 5)
    settle(b, hooks.open, error=Unavailable("the database failed"))
    failed = ReasonCode.UNSPECIFIED_ERROR
    assert raw.ping() == [puback(4, failed), puback(5, failed)]
    assert b.call(lambda: b.broker.acks.waiting) == 0


@pytest.mark.allow_logged_errors
def test_a_failed_settlement_closes_a_v311_client_unacknowledged(
    broker_factory: Callable[..., RunningBroker],
) -> None:
    hooks = Batches()
    b = broker_factory(hooks=hooks)
    raw = RawClient(b.port, 4)
    raw.connect("device")
    raw.send(
        Publish("batch/x", b"", qos=1, packet_id=1), Publish("batch/x", b"", qos=1, packet_id=2)
    )
    wait_until(lambda: hooks.joined == 2)
    settle(b, hooks.open, error=Unavailable("the database failed"))
    assert raw.wait_closed() == []
    assert b.call(lambda: b.broker.acks.waiting) == 0  # the budget got its two back
