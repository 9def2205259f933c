"""Sessions: what survives between a client's connections, and for how long.

3.1.1 clean session 0 keeps subscriptions and queues QoS 1/2 while offline;
clean session 1 discards. 5.0 session expiry: 0, N seconds, changed on
DISCONNECT. Unacknowledged messages are resent with DUP on reconnect, QoS 2
state survives in both directions, queues are bounded, the in-flight window
follows the client's Receive Maximum, a second connection with the same client
id takes the session over, and empty client ids follow each version's rules.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.conftest import RunningBroker
from tests.mqtt.clients import PahoClient, RawClient, brief, wait_until
from thingshub.mqtt.codec import Connack, Disconnect, PacketType, PubAck, Publish, ReasonCode
from thingshub.mqtt.codec.properties import Properties
from thingshub.mqtt.server import BrokerConfig

VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]


def has_session(b: RunningBroker, client_id: str) -> bool:
    return b.call(lambda: client_id in b.broker.sessions)


def is_connected(b: RunningBroker, client_id: str) -> bool:
    return b.call(lambda: b.broker.is_connected(client_id))


def inflight(b: RunningBroker, client_id: str) -> list[int]:
    return b.call(lambda: list(b.broker.sessions[client_id].inflight))


def persistent_raw(b: RunningBroker, client_id: str, version: int) -> tuple[RawClient, Connack]:
    """A raw client whose session outlives its connection (clean 0, and a long
    session expiry for 5.0)."""
    raw = RawClient(b.port, version)
    props = Properties(session_expiry_interval=600) if version == 5 else Properties()
    return raw, raw.connect(client_id, clean=False, properties=props)


def app_publish(b: RunningBroker, topic: str, payload: bytes, qos: int) -> None:
    b.call(lambda: b.broker.publish(topic, payload, qos))


# ------------------------------------------------------------ 3.1.1


def test_v311_persistent_session_keeps_subscriptions_and_queues(broker: RunningBroker) -> None:
    """Clean session 0: subscriptions survive, QoS 1/2 published while offline
    are delivered on reconnect (session present = 1), QoS 0 is dropped (counted)."""
    sub = PahoClient(broker.port, "keeper", version=4, clean=False)
    assert sub.session_present is False
    sub.subscribe("s/+", qos=2)
    sub.disconnect()

    pub = PahoClient(broker.port, "pub", version=4)
    pub.publish("s/0", b"zero", qos=0)
    pub.publish("s/1", b"one", qos=1)
    pub.publish("s/2", b"two", qos=2)
    assert broker.stats.dropped_offline_qos0 == 1

    again = PahoClient(broker.port, "keeper", version=4, clean=False)
    assert again.session_present is True
    msgs = again.wait_messages(2)
    assert sorted(brief(m) for m in msgs) == [("s/1", b"one", 1, False), ("s/2", b"two", 2, False)]
    pub.publish("s/3", b"live", qos=1)  # the subscription itself survived too
    assert brief(again.wait_messages(3)[2]) == ("s/3", b"live", 1, False)


def test_v311_clean_session_discards(broker: RunningBroker) -> None:
    first = PahoClient(broker.port, "forgetful", version=4, clean=False)
    first.subscribe("f/t", qos=1)
    first.disconnect()
    assert has_session(broker, "forgetful")

    clean = PahoClient(broker.port, "forgetful", version=4, clean=True)
    assert clean.session_present is False
    PahoClient(broker.port, "pub", version=4).publish("f/t", b"x", qos=1)
    clean.fence()
    assert clean.messages == []
    clean.disconnect()
    # A clean-session 1 session ends with its connection.
    wait_until(lambda: not has_session(broker, "forgetful"), what="the session to end")
    later = PahoClient(broker.port, "forgetful", version=4, clean=False)
    assert later.session_present is False


def test_empty_client_id_v311(broker: RunningBroker) -> None:
    """3.1.1: an empty client id needs clean session 1 ([MQTT-3.1.3-7/8]);
    with 0 the server answers 0x02 (identifier rejected) and closes."""
    refused = RawClient(broker.port, 4)
    assert refused.connect("", clean=False) == Connack(0x02)
    assert refused.wait_closed() == []

    accepted = RawClient(broker.port, 4)
    assert accepted.connect("", clean=True) == Connack(0)
    assert accepted.subscribe("anon", qos=1) == [1]


def test_empty_client_id_v5_is_assigned(broker: RunningBroker) -> None:
    c = PahoClient(broker.port, "", version=5)
    assigned = c.assigned_client_id
    assert assigned
    assert is_connected(broker, assigned)
    c.subscribe("anon/t", qos=1)
    c.publish("anon/t", b"hi", qos=1)
    assert [m.payload for m in c.wait_messages(1)] == [b"hi"]


# ------------------------------------------------------------ 5.0 expiry


def test_v5_session_expiry_0_ends_with_the_connection(broker: RunningBroker) -> None:
    c = PahoClient(broker.port, "short", version=5)
    c.subscribe("e/t", qos=1)
    c.disconnect()
    wait_until(lambda: not has_session(broker, "short"), what="the session to end")
    again = PahoClient(broker.port, "short", version=5, clean=False)
    assert again.session_present is False


def test_v5_session_expiry_seconds(broker: RunningBroker) -> None:
    """A session with expiry 1 s resumes when the client is back in time (with
    what was queued), and is gone about 1 s after the next disconnect."""
    props = {"SessionExpiryInterval": 1}
    c = PahoClient(broker.port, "brief", version=5, properties=props)
    c.subscribe("e/t", qos=1)
    c.disconnect()
    PahoClient(broker.port, "pub").publish("e/t", b"queued", qos=1)

    back = PahoClient(broker.port, "brief", version=5, clean=False, properties=props)
    assert back.session_present is True
    assert [m.payload for m in back.wait_messages(1)] == [b"queued"]

    back.disconnect()
    t0 = time.monotonic()
    wait_until(lambda: not is_connected(broker, "brief"))
    assert has_session(broker, "brief")
    wait_until(lambda: not has_session(broker, "brief"), timeout=3, what="the session to expire")
    assert 0.8 <= time.monotonic() - t0 < 2.0


def test_v5_session_expiry_changed_on_disconnect(broker: RunningBroker) -> None:
    """DISCONNECT may change the expiry: 60 s at CONNECT, 0 at DISCONNECT ends
    the session at once; 1 s at DISCONNECT ends it a second later."""
    c = PahoClient(broker.port, "now", version=5, properties={"SessionExpiryInterval": 60})
    c.subscribe("x", qos=1)
    c.disconnect(properties={"SessionExpiryInterval": 0})
    wait_until(lambda: not has_session(broker, "now"), timeout=1, what="the session to end")

    c = PahoClient(broker.port, "soon", version=5, properties={"SessionExpiryInterval": 60})
    c.disconnect(properties={"SessionExpiryInterval": 1})
    t0 = time.monotonic()
    wait_until(lambda: not is_connected(broker, "soon"))
    assert has_session(broker, "soon")
    wait_until(lambda: not has_session(broker, "soon"), timeout=3, what="the session to expire")
    assert 0.8 <= time.monotonic() - t0 < 2.0


def test_v5_disconnect_may_not_set_expiry_when_connect_had_0(broker: RunningBroker) -> None:
    """[MQTT-3.14.2-2]: expiry 0 at CONNECT and non-zero at DISCONNECT is a
    protocol error: DISCONNECT 0x82 from the server, and the session still ends."""
    raw = RawClient(broker.port)
    raw.connect("sneaky")
    raw.send(Disconnect(0, Properties(session_expiry_interval=300)))
    assert raw.wait_closed() == [Disconnect(ReasonCode.PROTOCOL_ERROR)]
    wait_until(lambda: not has_session(broker, "sneaky"), what="the session to end")


def test_session_expiry_is_capped(broker_factory: Callable[..., RunningBroker]) -> None:
    """A requested expiry beyond `max_session_expiry` is capped, and 5.0 is told so in CONNACK."""
    b = broker_factory(config=BrokerConfig(max_session_expiry=1))
    raw = RawClient(b.port)
    connack = raw.connect("capped", properties=Properties(session_expiry_interval=3600))
    assert connack.properties.session_expiry_interval == 1
    raw.send(Disconnect())
    raw.wait_closed()
    t0 = time.monotonic()
    wait_until(lambda: not has_session(b, "capped"), timeout=3, what="the session to expire")
    assert time.monotonic() - t0 < 2.0


# ------------------------------------------------------------ in flight across reconnects


@pytest.mark.parametrize("version", VERSIONS)
def test_unacknowledged_messages_are_resent_with_dup(broker: RunningBroker, version: int) -> None:
    """[MQTT-4.4.0-1]: on resume, unacknowledged PUBLISHes are resent, in order,
    with DUP set and their original packet ids; acknowledged ones are not."""
    raw, _ = persistent_raw(broker, "flaky", version)
    raw.subscribe("r/#", qos=2)
    for i, qos in enumerate([1, 2, 1]):
        app_publish(broker, f"r/{i}", f"m{i}".encode(), qos)
    first = [raw.expect(Publish) for _ in range(3)]
    assert [p.dup for p in first] == [False, False, False]
    raw.ack(first[0])  # this one is done; the other two are not
    assert raw.ping() == []
    raw.close()
    wait_until(lambda: not is_connected(broker, "flaky"))

    raw2, connack = persistent_raw(broker, "flaky", version)
    assert connack.session_present
    resent = [raw2.expect(Publish) for _ in range(2)]
    assert [(p.topic, p.payload, p.qos, p.packet_id, p.dup) for p in resent] == [
        (p.topic, p.payload, p.qos, p.packet_id, True) for p in first[1:]
    ]
    for p in resent:
        raw2.ack(p)
        if p.qos == 2:
            assert raw2.expect(PubAck) == PubAck(PacketType.PUBREL, p.packet_id or 0)
            raw2.send(PubAck(PacketType.PUBCOMP, p.packet_id or 0))
    assert raw2.ping() == []
    assert inflight(broker, "flaky") == []


@pytest.mark.parametrize("version", VERSIONS)
def test_released_qos2_resumes_with_pubrel(broker: RunningBroker, version: int) -> None:
    """A QoS 2 message the client already PUBREC'd resumes with the PUBREL
    ([MQTT-4.4.0-1]), not with the PUBLISH: resending it would deliver it twice."""
    raw, _ = persistent_raw(broker, "halfway", version)
    raw.subscribe("q2", qos=2)
    app_publish(broker, "q2", b"once", 2)
    publish = raw.expect(Publish)
    pid = publish.packet_id or 0
    raw.ack(publish)
    assert raw.expect(PubAck) == PubAck(PacketType.PUBREL, pid)
    raw.close()
    wait_until(lambda: not is_connected(broker, "halfway"))

    raw2, connack = persistent_raw(broker, "halfway", version)
    assert connack.session_present
    assert raw2.expect(PubAck) == PubAck(PacketType.PUBREL, pid)
    raw2.send(PubAck(PacketType.PUBCOMP, pid))
    assert raw2.ping() == []
    assert inflight(broker, "halfway") == []


@pytest.mark.parametrize("version", VERSIONS)
def test_inbound_qos2_state_survives_reconnect(broker: RunningBroker, version: int) -> None:
    """A QoS 2 PUBLISH whose PUBREL never came is resent after reconnect with
    DUP: it is acknowledged again but delivered only once."""
    sub = PahoClient(broker.port, "sub")
    sub.subscribe("in/q2", qos=1)
    raw, _ = persistent_raw(broker, "sender", version)
    raw.send(Publish("in/q2", b"one copy", qos=2, packet_id=5))
    assert raw.expect(PubAck) == PubAck(PacketType.PUBREC, 5)
    raw.close()
    wait_until(lambda: not is_connected(broker, "sender"))

    raw2, _ = persistent_raw(broker, "sender", version)
    raw2.send(Publish("in/q2", b"one copy", qos=2, packet_id=5, dup=True))
    assert raw2.expect(PubAck) == PubAck(PacketType.PUBREC, 5)
    raw2.send(PubAck(PacketType.PUBREL, 5))
    assert raw2.expect(PubAck) == PubAck(PacketType.PUBCOMP, 5)
    sub.fence()
    assert [m.payload for m in sub.messages] == [b"one copy"]


# ------------------------------------------------------------ bounds and flow control


def test_queue_bounded_by_count(broker_factory: Callable[..., RunningBroker]) -> None:
    b = broker_factory(config=BrokerConfig(max_queued=3))
    sub = PahoClient(b.port, "slow", version=4, clean=False)
    sub.subscribe("q/t", qos=1)
    sub.disconnect()
    pub = PahoClient(b.port, "pub", version=4)
    for i in range(5):
        pub.publish("q/t", str(i).encode(), qos=1)
    assert b.stats.dropped_queue_full == 2

    back = PahoClient(b.port, "slow", version=4, clean=False)
    back.wait_messages(3)
    back.fence()
    assert [m.payload for m in back.messages] == [b"0", b"1", b"2"]


def test_queue_bounded_by_bytes(broker_factory: Callable[..., RunningBroker]) -> None:
    b = broker_factory(config=BrokerConfig(max_queued_bytes=10))
    sub = PahoClient(b.port, "slow", version=4, clean=False)
    sub.subscribe("q/t", qos=1)
    sub.disconnect()
    pub = PahoClient(b.port, "pub", version=4)
    for payload in [b"aaaa", b"bbbb", b"cccc", b"dd"]:
        pub.publish("q/t", payload, qos=1)
    # 4 + 4 fit; 4 more would be 12 > 10; 2 more still fit.
    assert b.stats.dropped_queue_full == 1

    back = PahoClient(b.port, "slow", version=4, clean=False)
    back.wait_messages(3)
    back.fence()
    assert [m.payload for m in back.messages] == [b"aaaa", b"bbbb", b"dd"]


def test_inflight_window_honours_client_receive_maximum(broker: RunningBroker) -> None:
    """A 5.0 client's Receive Maximum of 2: never more than 2 unacknowledged
    QoS 1/2 PUBLISHes to it; each PUBACK lets the next one go, in order."""
    raw = RawClient(broker.port)
    raw.connect("narrow", properties=Properties(receive_maximum=2))
    raw.subscribe("w/t", qos=1)
    for i in range(5):
        app_publish(broker, "w/t", str(i).encode(), 1)

    got = [p for p in raw.ping() if isinstance(p, Publish)]
    assert [p.payload for p in got] == [b"0", b"1"]
    received = list(got)
    while len(received) < 5:
        raw.ack(got.pop(0))
        more = raw.ping()
        assert all(isinstance(p, Publish) for p in more)
        got.extend(p for p in more if isinstance(p, Publish))
        received.extend(p for p in more if isinstance(p, Publish))
        assert len(got) <= 2
    assert [p.payload for p in received] == [str(i).encode() for i in range(5)]


def test_inflight_window_honours_max_inflight(broker_factory: Callable[..., RunningBroker]) -> None:
    """`max_inflight` bounds the window for clients that state no Receive Maximum (3.1.1)."""
    b = broker_factory(config=BrokerConfig(max_inflight=3))
    raw = RawClient(b.port, 4)
    raw.connect("v3")
    raw.subscribe("w/t", qos=2)
    for i in range(4):
        app_publish(b, "w/t", str(i).encode(), 2)
    first = [p for p in raw.ping() if isinstance(p, Publish)]
    assert [p.payload for p in first] == [b"0", b"1", b"2"]
    raw.ack(first[0])  # PUBREC: still in flight until PUBCOMP
    assert raw.ping() == [PubAck(PacketType.PUBREL, first[0].packet_id or 0)]
    raw.send(PubAck(PacketType.PUBCOMP, first[0].packet_id or 0))
    assert [p.payload for p in raw.ping() if isinstance(p, Publish)] == [b"3"]


@pytest.mark.parametrize(
    "code", [0, ReasonCode.NO_MATCHING_SUBSCRIBERS, ReasonCode.UNSPECIFIED_ERROR]
)
def test_puback_with_a_reason_code_ends_the_delivery(
    broker_factory: Callable[..., RunningBroker], code: int
) -> None:
    """A 5.0 PUBACK with a reason code (or an empty property list) acknowledges
    as a plain one does: the message leaves the in-flight window and the next
    one goes out. (The server reads plain PUBACKs on a path of their own.)"""
    b = broker_factory(config=BrokerConfig(max_inflight=1))
    raw = RawClient(b.port, 5)
    raw.connect("v5")
    raw.subscribe("w/t", qos=1)
    for i in range(2):
        app_publish(b, "w/t", str(i).encode(), 1)
    first = [p for p in raw.ping() if isinstance(p, Publish)]
    assert [p.payload for p in first] == [b"0"]
    # Encoded with the code byte and a property length of 0, even for code 0.
    raw.send_bytes(
        bytes([0x40, 4]) + (first[0].packet_id or 0).to_bytes(2, "big") + bytes([code, 0])
    )
    assert [p.payload for p in raw.ping() if isinstance(p, Publish)] == [b"1"]


def test_packet_ids_wrap_and_skip_one_still_in_flight(
    broker_factory: Callable[..., RunningBroker],
) -> None:
    """Packet ids to a client run 1..65535 and wrap, skipping an id whose
    message is still in flight (here 1, never acknowledged)."""
    b = broker_factory(config=BrokerConfig(max_inflight=10))
    raw = RawClient(b.port, 4)
    raw.connect("wrap")
    raw.subscribe("w/t", qos=1)
    app_publish(b, "w/t", b"old", 1)
    assert [p.packet_id for p in raw.ping() if isinstance(p, Publish)] == [1]
    # As if 65,533 more had come and been acknowledged since.
    b.call(lambda: setattr(b.broker.sessions["wrap"], "last_packet_id", 65534))
    for payload in (b"a", b"b"):
        app_publish(b, "w/t", payload, 1)
    got = [(p.payload, p.packet_id) for p in raw.ping() if isinstance(p, Publish)]
    assert got == [(b"a", 65535), (b"b", 2)]


# ------------------------------------------------------------ takeover


def test_takeover_v5_old_connection_gets_0x8e(broker: RunningBroker) -> None:
    old = RawClient(broker.port)
    old.connect("twin")
    new = PahoClient(broker.port, "twin")
    assert old.wait_closed() == [Disconnect(ReasonCode.SESSION_TAKEN_OVER)]
    new.subscribe("twin/t", qos=1)
    new.publish("twin/t", b"still works", qos=1)
    assert [m.payload for m in new.wait_messages(1)] == [b"still works"]


def test_takeover_v311_old_connection_is_closed(broker: RunningBroker) -> None:
    old = RawClient(broker.port, 4)
    old.connect("twin")
    new = PahoClient(broker.port, "twin", version=4)
    assert old.wait_closed() == []
    new.subscribe("twin/t", qos=1)
    new.publish("twin/t", b"still works", qos=1)
    assert [m.payload for m in new.wait_messages(1)] == [b"still works"]


def test_takeover_resumes_the_session(broker: RunningBroker) -> None:
    """Clean start 0 on the new connection keeps the old one's subscriptions
    and its unacknowledged messages."""
    old, _ = persistent_raw(broker, "twin", 5)
    old.subscribe("twin/t", qos=1)
    app_publish(broker, "twin/t", b"unacked", 1)
    pending = old.expect(Publish)

    new, connack = persistent_raw(broker, "twin", 5)
    assert connack.session_present
    assert old.wait_closed() == [Disconnect(ReasonCode.SESSION_TAKEN_OVER)]
    resent = new.expect(Publish)
    assert (resent.payload, resent.packet_id, resent.dup) == (b"unacked", pending.packet_id, True)
    new.ack(resent)
    app_publish(broker, "twin/t", b"new", 1)
    assert new.expect(Publish).payload == b"new"
