"""The application's side of the server: `Hooks` and the `Broker` API.

Each test plugs in a small Hooks class and checks what clients see on the
wire: CONNACK codes for refusals (5.0 codes, mapped for 3.1.1), PUBACK and
SUBACK codes for denials, acknowledgements held back until the application's
future completes (and still in PUBLISH order), and which CloseReason the
application is told for each way a connection ends.

Hooks run on the broker's thread; they only append to lists, which the test
thread reads (under the GIL) after waiting for them to fill.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import RunningBroker
from tests.mqtt.clients import PahoClient, RawClient, wait_until
from thingshub.mqtt.codec import (
    Connack,
    Connect,
    Disconnect,
    PacketType,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    ReasonCode,
    Suback,
    Subscribe,
    SubscriptionRequest,
    Will,
)
from thingshub.mqtt.codec.properties import Properties
from thingshub.mqtt.hooks import (
    Accept,
    ClientInfo,
    CloseReason,
    ConnectRequest,
    Message,
    OpenHooks,
    PublishOutcome,
    Refuse,
)
from thingshub.mqtt.server import Broker, BrokerConfig

VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]


@dataclass
class Recording(OpenHooks):
    """Lets everything through and records the notifications."""

    events: list[tuple[str, str, Any]] = field(default_factory=list)
    clients: list[ClientInfo] = field(default_factory=list)

    def on_connect(self, client: ClientInfo) -> None:
        self.clients.append(client)
        self.events.append(("connect", client.client_id, None))

    def on_subscribe(self, client: ClientInfo, granted: list[tuple[str, int]]) -> None:
        self.events.append(("subscribe", client.client_id, granted))

    def on_disconnect(self, client: ClientInfo, reason: CloseReason) -> None:
        self.events.append(("disconnect", client.client_id, reason))

    def disconnects(self, client_id: str) -> list[CloseReason]:
        return [e[2] for e in self.events if e[0] == "disconnect" and e[1] == client_id]


# ------------------------------------------------------------ authenticate


@dataclass
class Gatekeeper(OpenHooks):
    """Accepts user "alice" with password "secret"; refuses others with `code`."""

    code: int = ReasonCode.BAD_USER_NAME_OR_PASSWORD
    requests: list[ConnectRequest] = field(default_factory=list)

    async def authenticate(self, request: ConnectRequest) -> Accept | Refuse:
        self.requests.append(request)
        await asyncio.sleep(0)  # a real lookup would await something
        if request.username == "alice" and request.password == b"secret":
            return Accept(principal={"user": "alice"})
        return Refuse(self.code, "no such user")


@pytest.mark.parametrize(
    ("code", "v3_code"),
    [
        (ReasonCode.BAD_USER_NAME_OR_PASSWORD, 0x04),
        (ReasonCode.NOT_AUTHORIZED, 0x05),
        (ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, 0x02),
        (ReasonCode.BANNED, 0x05),
        (ReasonCode.BAD_AUTHENTICATION_METHOD, 0x04),
        (ReasonCode.SERVER_UNAVAILABLE, 0x03),
        (ReasonCode.SERVER_BUSY, 0x03),
        (ReasonCode.QUOTA_EXCEEDED, 0x03),
    ],
)
@pytest.mark.parametrize("version", VERSIONS)
def test_authenticate_refusal(
    broker_factory: Callable[..., RunningBroker], version: int, code: int, v3_code: int
) -> None:
    """The refusal's 5.0 code goes to 5.0 clients as is, and to 3.1.1 clients
    as the nearest 3.1.1 return code; the connection is closed after it."""
    b = broker_factory(hooks=Gatekeeper(code=code))
    raw = RawClient(b.port, version)
    connack = raw.connect("intruder", username="mallory", password=b"guess")
    assert connack == Connack(code if version == 5 else v3_code)
    assert raw.wait_closed() == []
    assert b.stats.connects_refused == 1


def test_authenticate_sees_the_connect_and_principal_comes_back(
    broker_factory: Callable[..., RunningBroker],
) -> None:
    class Hooks(Gatekeeper):
        principals: list[Any]

        def authorize_publish(self, client: ClientInfo, topic: str) -> bool:
            self.principals.append(client.principal)
            return True

    hooks = Hooks()
    hooks.principals = []
    b = broker_factory(hooks=hooks)
    c = PahoClient(
        b.port,
        "alice-phone",
        username="alice",
        password="secret",
        keepalive=30,
        properties={"UserProperty": [("app", "1.2")]},
    )
    assert c.connack_code == 0
    [req] = hooks.requests
    assert (req.client_id, req.username, req.password) == ("alice-phone", "alice", b"secret")
    assert (req.protocol_level, req.clean_start, req.keepalive) == (5, True, 30)
    assert req.address.startswith("127.0.0.1:")
    assert req.properties.user_properties == (("app", "1.2"),)
    c.publish("t", b"x", qos=1)
    assert hooks.principals == [{"user": "alice"}]


def test_slow_authenticate_is_bounded_by_connect_timeout(
    broker_factory: Callable[..., RunningBroker],
) -> None:
    """An authenticate that never answers does not hold the connection open
    past `connect_timeout`."""

    class Hanging(OpenHooks):
        async def authenticate(self, request: ConnectRequest) -> Accept | Refuse:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    b = broker_factory(
        hooks=Hanging(), config=BrokerConfig(connect_timeout=0.3, sweep_interval=0.05)
    )
    raw = RawClient(b.port)
    t0 = time.monotonic()
    raw.send(Connect("patient", 5))
    assert raw.wait_closed() == []
    assert 0.3 <= time.monotonic() - t0 < 0.6


@pytest.mark.allow_logged_errors
@pytest.mark.parametrize("version", VERSIONS)
def test_authenticate_exception(
    broker_factory: Callable[..., RunningBroker],
    version: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failing authenticate refuses the client (server unavailable), is
    counted and logged, and leaves other clients alone."""

    class Broken(OpenHooks):
        async def authenticate(self, request: ConnectRequest) -> Accept | Refuse:
            if request.client_id == "unlucky":
                raise RuntimeError("user database is down")
            return Accept()

    b = broker_factory(hooks=Broken())
    raw = RawClient(b.port, version)
    assert raw.connect("unlucky") == Connack(0x88 if version == 5 else 0x03)
    assert raw.wait_closed() == []
    stats = b.stats
    assert (stats.hook_errors, stats.connects_refused) == (1, 1)
    assert any(
        r.levelno == logging.ERROR and "authenticate hook failed" in r.getMessage()
        for r in caplog.records
    )
    assert PahoClient(b.port, "lucky", version=version).connack_code == 0


# ------------------------------------------------------------ authorize


class Censor(OpenHooks):
    """No publishing under secret/, no subscribing to forbidden/#, and quota/#
    refused with a code of its own."""

    def authorize_publish(self, client: ClientInfo, topic: str) -> bool:
        return not topic.startswith("secret/")

    def authorize_subscribe(self, client: ClientInfo, topic_filter: str) -> bool | int:
        if topic_filter.startswith("forbidden/"):
            return False
        if topic_filter.startswith("quota/"):
            return ReasonCode.QUOTA_EXCEEDED
        return True


@pytest.mark.parametrize("version", VERSIONS)
def test_authorize_publish_denied(
    broker_factory: Callable[..., RunningBroker], version: int
) -> None:
    """5.0: PUBACK 0x87. 3.1.1 cannot say no: PUBACK 0, and the message is dropped."""
    b = broker_factory(hooks=Censor())
    sub = PahoClient(b.port, "sub")
    sub.subscribe("#", qos=1)
    pub = PahoClient(b.port, "pub", version=version)
    assert pub.publish("secret/plans", b"x", qos=1) == (0x87 if version == 5 else 0)
    pub.publish("public/news", b"y", qos=1)
    sub.wait_messages(1)
    sub.fence()
    assert [m.topic for m in sub.messages] == ["public/news"]
    assert b.stats.denied_publish == 1


def test_authorize_publish_denied_qos2_v5(broker_factory: Callable[..., RunningBroker]) -> None:
    """A refused QoS 2 PUBLISH gets PUBREC 0x87, which ends the exchange: the
    same packet id is free again at once."""
    b = broker_factory(hooks=Censor())
    raw = RawClient(b.port)
    raw.connect("pub")
    raw.send(Publish("secret/x", b"x", qos=2, packet_id=3))
    assert raw.expect(PubAck) == PubAck(PacketType.PUBREC, 3, ReasonCode.NOT_AUTHORIZED)
    raw.send(Publish("public/x", b"x", qos=2, packet_id=3))
    assert raw.expect(PubAck) == PubAck(PacketType.PUBREC, 3, ReasonCode.NO_MATCHING_SUBSCRIBERS)


def test_will_is_authorized_like_any_publish(broker_factory: Callable[..., RunningBroker]) -> None:
    b = broker_factory(hooks=Censor())
    sub = PahoClient(b.port, "sub")
    sub.subscribe("#", qos=1)
    for client_id, topic in [("a", "secret/will"), ("b", "public/will")]:
        raw = RawClient(b.port)
        raw.connect(client_id, will=Will(topic, b"gone", qos=1))
        raw.close()
    sub.wait_messages(1)
    wait_until(lambda: b.stats.denied_publish == 1)
    sub.fence()
    assert [m.topic for m in sub.messages] == ["public/will"]


@pytest.mark.parametrize("version", VERSIONS)
def test_authorize_subscribe(broker_factory: Callable[..., RunningBroker], version: int) -> None:
    """False: 0x87 (5.0) / 0x80 (3.1.1); an int code is used as given for 5.0;
    the other filters of the same SUBSCRIBE are granted; refused ones get nothing."""
    b = broker_factory(hooks=Censor())
    sub = PahoClient(b.port, "sub", version=version)
    codes = sub.subscribe("ok/+", "forbidden/x", "quota/x", qos=1)
    assert codes == ([1, 0x87, 0x97] if version == 5 else [1, 0x80, 0x80])
    pub = PahoClient(b.port, "pub")
    for topic in ["forbidden/x", "quota/x", "ok/y"]:
        pub.publish(topic, b"m", qos=1)
    sub.wait_messages(1)
    sub.fence()
    assert [m.topic for m in sub.messages] == ["ok/y"]
    assert b.stats.denied_subscribe == 2


@pytest.mark.parametrize("version", VERSIONS)
def test_open_hooks_deny_subscribe(
    broker_factory: Callable[..., RunningBroker], version: int
) -> None:
    b = broker_factory(hooks=OpenHooks(deny_subscribe={"#"}))
    c = PahoClient(b.port, "c", version=version)
    assert c.subscribe("#", "a/#", qos=0) == [0x80, 0]


# ------------------------------------------------------------ on_publish


class Consumer(OpenHooks):
    """consume/... is the application's: acknowledged with the code in the last
    level and not routed. slow/... also, but acknowledged only when the test
    completes the future (its result is the reason code)."""

    def __init__(self) -> None:
        super().__init__()
        self.futures: list[asyncio.Future[int]] = []
        self.consumed: list[Message] = []

    def on_publish(self, client: ClientInfo, message: Message) -> PublishOutcome:
        if message.topic.startswith("consume/"):
            self.consumed.append(message)
            return int(message.topic.rsplit("/", 1)[1], 16)
        if message.topic.startswith("slow/"):
            fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self.futures.append(fut)
            return fut
        return None


def complete(b: RunningBroker, fut: asyncio.Future[int], code: int = 0) -> None:
    b.call(lambda: fut.set_result(code))


def fail(b: RunningBroker, fut: asyncio.Future[int]) -> None:
    b.call(lambda: fut.set_exception(RuntimeError("the database said no")))


@pytest.mark.parametrize("version", VERSIONS)
def test_on_publish_int_consumes(
    broker_factory: Callable[..., RunningBroker], version: int
) -> None:
    hooks = Consumer()
    b = broker_factory(hooks=hooks)
    sub = PahoClient(b.port, "sub")
    sub.subscribe("#", qos=1)
    pub = PahoClient(b.port, "pub", version=version)
    assert pub.publish("consume/00", b"mine", qos=1) == 0
    assert pub.publish("consume/97", b"too much", qos=1) == (0x97 if version == 5 else 0)
    pub.publish("consume/00", b"qos0", qos=0)
    pub.publish("routed", b"yours", qos=1)
    sub.wait_messages(1)
    sub.fence()
    assert [m.topic for m in sub.messages] == ["routed"]
    assert [m.payload for m in hooks.consumed] == [b"mine", b"too much", b"qos0"]


@pytest.mark.parametrize("version", VERSIONS)
def test_on_publish_gets_the_publish_as_parsed(
    broker_factory: Callable[..., RunningBroker], version: int
) -> None:
    """The application's Message is the client's PUBLISH itself (a `Publish` is a
    `Message`): no copy is made per message. It reads as any Message, with the
    packet's id and DUP flag besides."""
    hooks = Consumer()
    b = broker_factory(hooks=hooks)
    raw = RawClient(b.port, version)
    raw.connect("pub")
    raw.send(Publish("consume/00", b"mine", 1, True, False, 9))
    assert raw.expect(PubAck).packet_id == 9
    [message] = hooks.consumed
    assert type(message) is Publish and isinstance(message, Message)
    assert (message.topic, message.payload, message.qos, message.retain) == (
        "consume/00",
        b"mine",
        1,
        True,
    )
    assert (message.packet_id, message.dup, message.expires_at) == (9, False, None)


@pytest.mark.parametrize("version", VERSIONS)
def test_on_publish_future_delays_ack_and_keeps_order(
    broker_factory: Callable[..., RunningBroker], version: int
) -> None:
    """The PUBACK for a message the application is still working on waits for
    its future; acknowledgements leave in PUBLISH order even when later
    futures complete first, and an immediate ack queues behind a pending one."""
    hooks = Consumer()
    b = broker_factory(hooks=hooks)
    raw = RawClient(b.port, version)
    raw.connect("device")
    raw.send(
        Publish("slow/a", b"1", qos=1, packet_id=1),
        Publish("slow/b", b"2", qos=2, packet_id=2),
        Publish("fast", b"3", qos=1, packet_id=3),
        Publish("slow/c", b"4", qos=1, packet_id=4),
    )
    wait_until(lambda: len(hooks.futures) == 3)
    f1, f2, f4 = hooks.futures
    assert raw.ping() == []

    complete(b, f4)
    assert raw.ping() == []
    complete(b, f1)
    assert raw.ping() == [PubAck(PacketType.PUBACK, 1)]
    complete(b, f2, ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR if version == 5 else 0)
    rec2 = PubAck(
        PacketType.PUBREC, 2, ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR if version == 5 else 0
    )
    fast_code = ReasonCode.NO_MATCHING_SUBSCRIBERS if version == 5 else 0
    assert raw.ping() == [
        rec2,
        PubAck(PacketType.PUBACK, 3, fast_code),
        PubAck(PacketType.PUBACK, 4),
    ]


@pytest.mark.allow_logged_errors
def test_failing_future_v5_answers_0x80(broker_factory: Callable[..., RunningBroker]) -> None:
    hooks = Consumer()
    b = broker_factory(hooks=hooks)
    raw = RawClient(b.port)
    raw.connect("device")
    raw.send(
        Publish("slow/a", b"1", qos=1, packet_id=1), Publish("slow/b", b"2", qos=1, packet_id=2)
    )
    wait_until(lambda: len(hooks.futures) == 2)
    fail(b, hooks.futures[0])
    b.call(hooks.futures[1].cancel)
    assert raw.ping() == [
        PubAck(PacketType.PUBACK, 1, ReasonCode.UNSPECIFIED_ERROR),
        PubAck(PacketType.PUBACK, 2, ReasonCode.UNSPECIFIED_ERROR),
    ]


@pytest.mark.allow_logged_errors
def test_failing_future_v311_closes_without_ack(
    broker_factory: Callable[..., RunningBroker],
) -> None:
    """3.1.1 has no way to say "failed": no PUBACK, connection closed, so the
    client resends the message later."""
    hooks = Consumer()
    b = broker_factory(hooks=hooks)
    raw = RawClient(b.port, 4)
    raw.connect("device")
    raw.send(Publish("slow/a", b"1", qos=1, packet_id=1))
    wait_until(lambda: len(hooks.futures) == 1)
    fail(b, hooks.futures[0])
    assert raw.wait_closed() == []


def test_v311_throttled_by_pending_acks_resumes(
    broker_factory: Callable[..., RunningBroker],
) -> None:
    """With `receive_maximum` acknowledgements waiting for the application, the
    server stops reading from a 3.1.1 client; it reads again once they are done,
    also with the smallest setting (1)."""
    hooks = Consumer()
    b = broker_factory(hooks=hooks, config=BrokerConfig(receive_maximum=1))
    raw = RawClient(b.port, 4)
    raw.connect("device")
    raw.send(Publish("slow/1", b"", qos=1, packet_id=1))
    wait_until(lambda: len(hooks.futures) == 1)
    raw.send(Publish("slow/2", b"", qos=1, packet_id=2))
    wait_until(lambda: len(hooks.futures) == 2)
    raw.send(Publish("slow/3", b"", qos=1, packet_id=3))  # not read while paused
    complete(b, hooks.futures[0])
    assert raw.expect(PubAck) == PubAck(PacketType.PUBACK, 1)
    complete(b, hooks.futures[1])
    assert raw.expect(PubAck) == PubAck(PacketType.PUBACK, 2)
    wait_until(lambda: len(hooks.futures) == 3, what="the third PUBLISH to be read")
    complete(b, hooks.futures[2])
    assert raw.expect(PubAck) == PubAck(PacketType.PUBACK, 3)


def test_keepalive_does_not_expire_while_the_server_throttles(
    broker_factory: Callable[..., RunningBroker],
) -> None:
    """While reading from a 3.1.1 client is paused because the application is
    slow, the client's PINGREQs wait unread in the socket: that silence is the
    server's, and must not end the connection as a keepalive timeout (which
    would also publish the client's will)."""
    hooks = Consumer()
    b = broker_factory(hooks=hooks, config=BrokerConfig(receive_maximum=1, sweep_interval=0.05))
    watcher = PahoClient(b.port, "watcher")
    watcher.subscribe("will/#", qos=1)
    raw = RawClient(b.port, 4)
    raw.connect("device", keepalive=1, will=Will("will/device", b"offline"))
    raw.send(Publish("slow/1", b"", qos=1, packet_id=1), Publish("slow/2", b"", qos=1, packet_id=2))
    wait_until(lambda: len(hooks.futures) == 2)
    for _ in range(5):  # 2.5 s of a client doing everything right
        time.sleep(0.5)
        raw.send(PingReq())
    for fut in hooks.futures:
        complete(b, fut)
    assert [raw.recv() for _ in range(7)] == [
        PubAck(PacketType.PUBACK, 1),
        PubAck(PacketType.PUBACK, 2),
        *[PingResp()] * 5,
    ]
    assert raw.ping() == []
    watcher.fence()
    assert watcher.messages == []


# ------------------------------------------------------------ on_subscribe


class Greeter(Recording):
    """Sends the current state to each new subscription, from on_subscribe."""

    broker: Any = None

    def on_subscribe(self, client: ClientInfo, granted: list[tuple[str, int]]) -> None:
        super().on_subscribe(client, granted)
        for topic_filter, _ in granted:
            if topic_filter.startswith("state/"):
                self.broker.publish(topic_filter, b"current", qos=1)


def test_on_subscribe_after_suback_with_granted(
    broker_factory: Callable[..., RunningBroker],
) -> None:
    """on_subscribe runs once the SUBACK is on its way and the subscription is
    in place, so a message published from it arrives after the SUBACK; it gets
    only the granted filters, and is not called when nothing was granted."""
    hooks = Greeter(deny_subscribe={"nope"})
    b = broker_factory(hooks=hooks)
    hooks.broker = b.broker
    raw = RawClient(b.port)
    raw.connect("dev")
    raw.send(Subscribe(1, [SubscriptionRequest("state/dev", 1), SubscriptionRequest("nope", 0)]))
    assert raw.recv() == Suback(1, [1, 0x80])
    publish = raw.expect(Publish)
    assert (publish.topic, publish.payload) == ("state/dev", b"current")
    assert hooks.events[-1] == ("subscribe", "dev", [("state/dev", 1)])
    raw.send(Subscribe(2, [SubscriptionRequest("nope", 0)]))
    assert raw.expect(Suback) == Suback(2, [0x80])
    assert [e for e in hooks.events if e[0] == "subscribe"] == [
        ("subscribe", "dev", [("state/dev", 1)])
    ]


# ------------------------------------------------------------ on_connect / on_disconnect


@pytest.fixture
def recorded(broker_factory: Callable[..., RunningBroker]) -> tuple[RunningBroker, Recording]:
    hooks = Recording()
    return broker_factory(hooks=hooks, config=BrokerConfig(sweep_interval=0.05)), hooks


def test_on_connect_client_info(recorded: tuple[RunningBroker, Recording]) -> None:
    b, hooks = recorded
    PahoClient(b.port, "p5", username="u5")
    PahoClient(b.port, "p3", version=4)
    wait_until(lambda: len(hooks.clients) == 2)
    info = {c.client_id: (c.username, c.protocol_level) for c in hooks.clients}
    assert info == {"p5": ("u5", 5), "p3": (None, 4)}
    assert all(c.connected_at > 0 and c.address.startswith("127.0.0.1:") for c in hooks.clients)
    assert sorted(c.client_id for c in b.call(lambda: list(b.broker.connections()))) == ["p3", "p5"]


@pytest.mark.parametrize("version", VERSIONS)
def test_close_reasons(recorded: tuple[RunningBroker, Recording], version: int) -> None:
    b, hooks = recorded
    PahoClient(b.port, "polite", version=version).disconnect()
    RawClient(b.port, version).connect("vanishing")
    close_me = RawClient(b.port, version)
    close_me.connect("lost")
    close_me.close()
    old = RawClient(b.port, version)
    old.connect("twin")
    RawClient(b.port, version).connect("twin")
    old.wait_closed()
    bad = RawClient(b.port, version)
    bad.connect("bad")
    bad.send_bytes(b"\x00\x00")
    bad.wait_closed()

    expected = {
        "polite": CloseReason.CLIENT_DISCONNECT,
        "lost": CloseReason.CONNECTION_LOST,
        "twin": CloseReason.TAKEN_OVER,
        "bad": CloseReason.PROTOCOL_ERROR,
    }
    wait_until(lambda: all(hooks.disconnects(cid) for cid in expected))
    assert {cid: hooks.disconnects(cid) for cid in expected} == {
        cid: [reason] for cid, reason in expected.items()
    }
    assert hooks.disconnects("vanishing") == []  # still connected


def test_close_reason_keepalive(recorded: tuple[RunningBroker, Recording]) -> None:
    b, hooks = recorded
    RawClient(b.port).connect("sleepy", keepalive=1)
    wait_until(lambda: hooks.disconnects("sleepy"), timeout=3)
    assert hooks.disconnects("sleepy") == [CloseReason.KEEPALIVE_TIMEOUT]


@pytest.mark.parametrize("version", VERSIONS)
def test_kick(recorded: tuple[RunningBroker, Recording], version: int) -> None:
    """`Broker.disconnect(client_id)`: 5.0 clients get DISCONNECT 0x98, the will
    is sent, the application hears KICKED; False for a client not connected."""
    b, hooks = recorded
    watcher = PahoClient(b.port, "watcher")
    watcher.subscribe("will/#", qos=1)
    raw = RawClient(b.port, version)
    raw.connect("troublemaker", will=Will("will/troublemaker", b"kicked", qos=1))
    assert b.call(lambda: b.broker.disconnect("troublemaker")) is True
    expected = [Disconnect(ReasonCode.ADMINISTRATIVE_ACTION)] if version == 5 else []
    assert raw.wait_closed() == expected
    assert [m.payload for m in watcher.wait_messages(1)] == [b"kicked"]
    wait_until(lambda: hooks.disconnects("troublemaker"))
    assert hooks.disconnects("troublemaker") == [CloseReason.KICKED]
    assert b.call(lambda: b.broker.disconnect("troublemaker")) is False
    assert b.call(lambda: b.broker.disconnect("never-was")) is False


def test_kicked_paho_client_sees_administrative_action(
    recorded: tuple[RunningBroker, Recording],
) -> None:
    b, _ = recorded
    c = PahoClient(b.port, "kicked")
    assert b.call(lambda: b.broker.disconnect("kicked"))
    assert c.wait_disconnected() == ReasonCode.ADMINISTRATIVE_ACTION
    assert c.disconnect_from_server


def test_disconnect_where(recorded: tuple[RunningBroker, Recording]) -> None:
    b, hooks = recorded
    clients = {cid: RawClient(b.port) for cid in ["tenant1/a", "tenant1/b", "tenant2/a"]}
    for cid, raw in clients.items():
        raw.connect(cid)
    n = b.call(lambda: b.broker.disconnect_where(lambda c: c.client_id.startswith("tenant1/")))
    assert n == 2
    assert clients["tenant1/a"].wait_closed() == [Disconnect(ReasonCode.ADMINISTRATIVE_ACTION)]
    assert clients["tenant1/b"].wait_closed() == [Disconnect(ReasonCode.ADMINISTRATIVE_ACTION)]
    assert clients["tenant2/a"].ping() == []
    wait_until(lambda: hooks.disconnects("tenant1/b"))
    assert hooks.disconnects("tenant1/a") == hooks.disconnects("tenant1/b") == [CloseReason.KICKED]
    assert hooks.disconnects("tenant2/a") == []


def test_shutdown(recorded: tuple[RunningBroker, Recording]) -> None:
    """`Broker.stop()`: 5.0 clients get DISCONNECT 0x8B, 3.1.1 clients a close;
    no will is sent; the application hears SHUTDOWN."""
    b, hooks = recorded
    v5 = RawClient(b.port, 5)
    v5.connect("v5", will=Will("will/v5", b"gone"))
    v3 = RawClient(b.port, 4)
    v3.connect("v3")
    b.run(b.broker.stop())
    assert v5.wait_closed() == [Disconnect(ReasonCode.SERVER_SHUTTING_DOWN)]
    assert v3.wait_closed() == []
    assert hooks.disconnects("v5") == hooks.disconnects("v3") == [CloseReason.SHUTDOWN]


# ------------------------------------------------------------ the application publishes


@pytest.mark.parametrize("version", VERSIONS)
def test_broker_publish_reaches_subscribers(broker: RunningBroker, version: int) -> None:
    a = PahoClient(broker.port, "a", version=version)
    a.subscribe("app/+", qos=2)
    b = PahoClient(broker.port, "b", version=version)
    b.subscribe("app/#", qos=0)
    n = broker.call(
        lambda: broker.broker.publish(
            "app/x", b"from the app", qos=1, properties=Properties(content_type="text/plain")
        )
    )
    assert n == 2
    [ma] = a.wait_messages(1)
    [mb] = b.wait_messages(1)
    assert (ma.payload, ma.qos, mb.qos) == (b"from the app", 1, 0)
    if version == 5:
        assert ma.properties.ContentType == "text/plain"
    assert broker.call(lambda: broker.broker.publish("elsewhere/x", b"")) == 0
    with pytest.raises(ValueError):
        broker.call(lambda: broker.broker.publish("app/+", b"x"))


def test_the_server_tells_whether_any_subscription_is_held(broker: RunningBroker) -> None:
    assert not Broker().subscribed  # not started yet
    assert not broker.call(lambda: broker.broker.subscribed)
    a = PahoClient(broker.port, "a")
    assert not broker.call(lambda: broker.broker.subscribed)
    a.subscribe("app/x", qos=0)
    assert broker.call(lambda: broker.broker.subscribed)
    a.unsubscribe("app/x")
    assert not broker.call(lambda: broker.broker.subscribed)


# ------------------------------------------------------------ hook failures


class Faulty(OpenHooks):
    """Every notification and decision hook raises."""

    def authorize_publish(self, client: ClientInfo, topic: str) -> bool:
        raise RuntimeError("authorize_publish")

    def authorize_subscribe(self, client: ClientInfo, topic_filter: str) -> bool | int:
        raise RuntimeError("authorize_subscribe")

    def on_connect(self, client: ClientInfo) -> None:
        raise RuntimeError("on_connect")

    def on_disconnect(self, client: ClientInfo, reason: CloseReason) -> None:
        raise RuntimeError("on_disconnect")


@pytest.mark.allow_logged_errors
def test_failing_hooks_deny_and_are_counted(broker_factory: Callable[..., RunningBroker]) -> None:
    """A hook that raises counts as a refusal where it decides something, and is
    ignored where it is only told something; the client stays connected."""
    b = broker_factory(hooks=Faulty())
    c = PahoClient(b.port, "c")
    assert c.connack_code == 0
    assert c.subscribe("t", qos=1) == [ReasonCode.NOT_AUTHORIZED]
    assert c.publish("t", b"x", qos=1) == ReasonCode.NOT_AUTHORIZED
    c.disconnect()
    wait_until(lambda: b.stats.hook_errors == 4)


@pytest.mark.allow_logged_errors
def test_on_publish_exception(broker_factory: Callable[..., RunningBroker]) -> None:
    class Raises(OpenHooks):
        def on_publish(self, client: ClientInfo, message: Message) -> PublishOutcome:
            raise RuntimeError("bug in the application")

    b = broker_factory(hooks=Raises())
    sub = PahoClient(b.port, "sub")
    sub.subscribe("t", qos=1)
    pub5 = PahoClient(b.port, "pub5")
    assert pub5.publish("t", b"x", qos=1) == ReasonCode.UNSPECIFIED_ERROR
    pub3 = PahoClient(b.port, "pub3", version=4)
    assert pub3.publish("t", b"x", qos=1) == 0
    sub.fence()
    assert sub.messages == []
    assert b.stats.hook_errors == 2


def test_reading_pauses_while_the_application_is_behind(
    broker_factory: Callable[..., RunningBroker],
) -> None:
    """Beyond `max_waiting_acks` unacknowledged messages across all clients, the
    server stops reading from whoever adds more, and starts again once the
    application has caught up: a full write queue slows the fleet down, it never
    grows without bound."""
    futures: list[asyncio.Future[int]] = []

    class Slow(OpenHooks):
        def on_publish(self, client: ClientInfo, message: Message) -> PublishOutcome:
            fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            futures.append(fut)
            return fut

    b = broker_factory(hooks=Slow(), config=BrokerConfig(max_waiting_acks=4, receive_maximum=1000))
    raw = RawClient(b.port, 4)
    raw.connect("a")
    raw.send(*[Publish("t", b"x", 1, packet_id=i) for i in range(1, 21)])
    wait_until(lambda: b.call(lambda: len(futures)) >= 5)
    time.sleep(0.2)
    assert b.call(lambda: len(futures)) == 5  # read no further than just past the limit
    assert b.call(lambda: b.broker.waiting_acks) == 5

    def finish_all() -> None:
        for f in futures:
            if not f.done():
                f.set_result(0)

    for _ in range(10):
        b.call(finish_all)
        if b.call(lambda: len(futures)) == 20:
            break
        time.sleep(0.05)
    b.call(finish_all)
    acks = [raw.expect(PubAck).packet_id for _ in range(20)]
    assert acks == list(range(1, 21))
    assert b.call(lambda: b.broker.waiting_acks) == 0
