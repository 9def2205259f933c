"""Publish/subscribe through the real server, with paho and with raw sockets.

What a conforming client must see: QoS 0/1/2 in both directions with the
delivered QoS being the lower of the message's and the subscription's,
wildcards (including `a/#` matching `a`), the `$`-topic rule, one delivery per
session for overlapping subscriptions, and unsubscribe.
"""

from __future__ import annotations

import pytest

from tests.conftest import RunningBroker
from tests.mqtt.clients import PahoClient, RawClient, brief
from thingshub.mqtt.codec import (
    Disconnect,
    PacketType,
    PubAck,
    Publish,
    ReasonCode,
    Unsuback,
    Unsubscribe,
)

VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("pub_qos", [0, 1, 2])
@pytest.mark.parametrize("sub_qos", [0, 1, 2])
def test_delivered_qos_is_the_lower_of_message_and_subscription(
    broker: RunningBroker, version: int, pub_qos: int, sub_qos: int
) -> None:
    """Each QoS flow completes in both directions (paho only reports a QoS 1/2
    publish done after PUBACK / PUBCOMP) and the subscriber gets the message at
    min(pub, sub) QoS."""
    sub = PahoClient(broker.port, "sub", version=version)
    pub = PahoClient(broker.port, "pub", version=version)
    assert sub.subscribe("t/qos", qos=sub_qos) == [sub_qos]

    code = pub.publish("t/qos", b"payload", qos=pub_qos)

    assert code == 0
    [msg] = sub.wait_messages(1)
    assert brief(msg) == ("t/qos", b"payload", min(pub_qos, sub_qos), False)
    assert not msg.dup


@pytest.mark.parametrize("version", VERSIONS)
def test_messages_from_one_publisher_arrive_in_order(broker: RunningBroker, version: int) -> None:
    """Ordered topics ([MQTT-4.6.0-6]): one publisher's messages on one topic
    are sent to a subscriber in the order they were published, whatever their
    QoS. Checked on the wire: paho itself hands a QoS 2 message over only at
    PUBREL, so a later QoS 0 one may overtake it inside paho."""
    sub = RawClient(broker.port, version)
    sub.connect("sub")
    sub.subscribe("t/order", qos=2)
    pub = PahoClient(broker.port, "pub", version=version)
    for i in range(30):
        pub.publish("t/order", str(i).encode(), qos=i % 3)
    payloads: list[bytes] = []
    while len(payloads) < 30:
        packet = sub.recv()
        if isinstance(packet, Publish):
            payloads.append(packet.payload)
            if packet.qos:
                sub.ack(packet)
        else:
            assert isinstance(packet, PubAck) and packet.type == PacketType.PUBREL
            sub.send(PubAck(PacketType.PUBCOMP, packet.packet_id))
    assert payloads == [str(i).encode() for i in range(30)]


@pytest.mark.parametrize(
    ("topic_filter", "topics", "expected"),
    [
        ("a/+/c", ["a/b/c", "a/c", "a/b/c/d", "a//c", "x/b/c"], ["a/b/c", "a//c"]),
        ("a/#", ["a", "a/b", "a/b/c", "ab", "b/a"], ["a", "a/b", "a/b/c"]),
        ("#", ["a", "/a", "a/b/c"], ["a", "/a", "a/b/c"]),
        ("+/+", ["a/b", "/b", "a/", "a", "a/b/c"], ["a/b", "/b", "a/"]),
        ("+", ["a", "/a", ""], ["a"]),
        ("/+", ["/a", "a/b", "/"], ["/a", "/"]),
        ("a/+/#", ["a/b", "a/b/c", "a"], ["a/b", "a/b/c"]),
    ],
)
def test_wildcards(
    broker: RunningBroker, topic_filter: str, topics: list[str], expected: list[str]
) -> None:
    sub = PahoClient(broker.port, "sub")
    pub = PahoClient(broker.port, "pub")
    sub.subscribe(topic_filter)
    for topic in topics:
        if topic:
            pub.publish(topic, topic.encode(), qos=1)
    sub.fence()
    assert [m.topic for m in sub.messages] == expected


def test_dollar_topics_are_not_matched_by_leading_wildcards(broker: RunningBroker) -> None:
    """[MQTT-4.7.2-1]: `#` and `+/...` must not see `$sys/...`; a filter that
    names the `$` level explicitly does."""
    wild = PahoClient(broker.port, "wild")
    explicit = PahoClient(broker.port, "explicit")
    pub = PahoClient(broker.port, "pub")
    wild.subscribe("#", "+/uptime", "+/+")
    explicit.subscribe("$sys/#", "$sys/+")

    pub.publish("$sys/uptime", b"1", qos=1)
    pub.publish("sys/uptime", b"2", qos=1)

    wild.fence()
    explicit.fence()
    assert [(m.topic, m.payload) for m in wild.messages] == [("sys/uptime", b"2")]
    assert [(m.topic, m.payload) for m in explicit.messages] == [("$sys/uptime", b"1")]


@pytest.mark.parametrize("version", VERSIONS)
def test_overlapping_subscriptions_deliver_once_at_the_highest_qos(
    broker: RunningBroker, version: int
) -> None:
    """[MQTT-3.3.4-2]/[MQTT-3.3.4-3..5]: one copy per session, at the highest QoS
    granted among the matching subscriptions; 5.0 carries every matching
    subscription's identifier."""
    sub = PahoClient(broker.port, "sub", version=version)
    pub = PahoClient(broker.port, "pub", version=version)
    if version == 5:
        sub.subscribe("a/+", qos=0, sub_id=11)
        sub.subscribe("a/#", qos=2, sub_id=22)
        sub.subscribe("a/b", qos=1)  # no identifier: contributes none
    else:
        sub.subscribe("a/+", qos=0)
        sub.subscribe("a/#", qos=2)
        sub.subscribe("a/b", qos=1)

    pub.publish("a/b", b"x", qos=2)

    # A second copy would be sent before this next message. (Compared without
    # order: paho hands a QoS 2 message over only at PUBREL.)
    pub.publish("a/b", b"next", qos=1)
    sub.wait_messages(2)
    sub.fence()
    assert sorted(m.payload for m in sub.messages) == [b"next", b"x"]
    [msg] = [m for m in sub.messages if m.payload == b"x"]
    assert brief(msg) == ("a/b", b"x", 2, False)
    if version == 5:
        assert sorted(msg.properties.SubscriptionIdentifier) == [11, 22]


@pytest.mark.parametrize("version", VERSIONS)
def test_unsubscribe_stops_delivery(broker: RunningBroker, version: int) -> None:
    sub = PahoClient(broker.port, "sub", version=version)
    pub = PahoClient(broker.port, "pub", version=version)
    sub.subscribe("t/1", "t/2", qos=1)

    codes = sub.unsubscribe("t/1", "t/never")

    assert codes == (
        [ReasonCode.SUCCESS, ReasonCode.NO_SUBSCRIPTION_EXISTED] if version == 5 else []
    )
    pub.publish("t/1", b"gone", qos=1)
    pub.publish("t/2", b"kept", qos=1)
    sub.fence()
    assert [m.payload for m in sub.messages] == [b"kept"]


def test_unsuback_codes_v5_raw(broker: RunningBroker) -> None:
    """Byte-level check of the UNSUBACK: one code per filter, in order."""
    raw = RawClient(broker.port)
    raw.connect("raw")
    raw.subscribe("x/1", "x/+")
    raw.send(Unsubscribe(9, ["x/+", "nope", "x/1", "x/+"]))
    ack = raw.expect(Unsuback)
    assert ack.packet_id == 9
    assert ack.reason_codes == [0x00, 0x11, 0x00, 0x11]


def test_publisher_receives_its_own_message_without_no_local(broker: RunningBroker) -> None:
    c = PahoClient(broker.port, "self")
    c.subscribe("echo", qos=1)
    c.publish("echo", b"me", qos=1)
    assert [m.payload for m in c.wait_messages(1)] == [b"me"]


@pytest.mark.parametrize("version", VERSIONS)
def test_qos2_outbound_flow_raw(broker: RunningBroker, version: int) -> None:
    """Server to client QoS 2: PUBLISH, our PUBREC, its PUBREL, our PUBCOMP; the
    message leaves the session's in-flight window only at PUBCOMP."""
    raw = RawClient(broker.port, version)
    raw.connect("raw2")
    raw.subscribe("q2", qos=2)
    broker.call(lambda: broker.broker.publish("q2", b"exactly once", qos=2))

    publish = raw.expect(Publish)
    assert (publish.topic, publish.payload, publish.qos, publish.dup) == (
        "q2",
        b"exactly once",
        2,
        False,
    )
    pid = publish.packet_id
    assert pid is not None
    raw.send(PubAck(PacketType.PUBREC, pid))
    assert raw.expect(PubAck) == PubAck(PacketType.PUBREL, pid)
    assert broker.call(lambda: list(broker.broker.sessions["raw2"].inflight)) == [pid]
    raw.send(PubAck(PacketType.PUBCOMP, pid))
    assert raw.ping() == []
    assert broker.call(lambda: dict(broker.broker.sessions["raw2"].inflight)) == {}


@pytest.mark.parametrize("version", VERSIONS)
def test_inbound_qos2_duplicate_is_not_delivered_twice(broker: RunningBroker, version: int) -> None:
    """A QoS 2 PUBLISH resent with DUP before PUBREL is acknowledged again but not
    routed again ([MQTT-4.3.3-10]); after PUBREL the same packet id is a new message."""
    sub = PahoClient(broker.port, "sub", version=version)
    sub.subscribe("q2/in", qos=2)
    raw = RawClient(broker.port, version)
    raw.connect("raw-pub")

    raw.send(Publish("q2/in", b"first", qos=2, packet_id=7))
    assert raw.expect(PubAck) == PubAck(PacketType.PUBREC, 7)
    raw.send(Publish("q2/in", b"first", qos=2, packet_id=7, dup=True))
    assert raw.expect(PubAck) == PubAck(PacketType.PUBREC, 7)
    raw.send(PubAck(PacketType.PUBREL, 7))
    assert raw.expect(PubAck) == PubAck(PacketType.PUBCOMP, 7)

    raw.send(Publish("q2/in", b"second", qos=2, packet_id=7))
    assert raw.expect(PubAck) == PubAck(PacketType.PUBREC, 7)
    raw.send(PubAck(PacketType.PUBREL, 7))
    assert raw.expect(PubAck) == PubAck(PacketType.PUBCOMP, 7)

    msgs = sub.wait_messages(2)
    sub.fence()
    assert [m.payload for m in sub.messages] == [b"first", b"second"]
    assert len(msgs) == 2


def test_pubrel_for_unknown_packet_id(broker: RunningBroker) -> None:
    """5.0: PUBREL for an id we never received is answered PUBCOMP 0x92 (the
    flow ends either way; the client must not hang)."""
    raw = RawClient(broker.port)
    raw.connect("raw")
    raw.send(PubAck(PacketType.PUBREL, 99))
    assert raw.expect(PubAck) == PubAck(
        PacketType.PUBCOMP, 99, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND
    )


def test_puback_without_subscribers_v5(broker: RunningBroker) -> None:
    """5.0 tells the publisher nobody received it (0x10), which is not a failure."""
    pub = PahoClient(broker.port, "pub")
    assert pub.publish("nobody/listens", b"x", qos=1) == ReasonCode.NO_MATCHING_SUBSCRIBERS


def test_server_packet_from_a_client_is_a_protocol_error(broker: RunningBroker) -> None:
    """A client sending a SUBACK-only packet type (here PINGRESP) is disconnected 0x82."""
    raw = RawClient(broker.port)
    raw.connect("raw")
    raw.send_bytes(b"\xd0\x00")
    assert raw.wait_closed() == [Disconnect(ReasonCode.PROTOCOL_ERROR)]


def test_mqtt_3_1_client(broker: RunningBroker) -> None:
    """MQTT 3.1 (protocol name MQIsdp, level 3) still connects and exchanges messages."""
    raw = RawClient(broker.port, version=3)
    connack = raw.connect("old-client")
    assert (connack.reason_code, connack.session_present) == (0, False)
    assert raw.subscribe("legacy", qos=1) == [1]
    raw.send(Publish("legacy", b"hi", qos=1, packet_id=1))
    packets = [raw.recv(), raw.recv()]
    assert PubAck(PacketType.PUBACK, 1) in packets
    [publish] = [p for p in packets if isinstance(p, Publish)]
    assert (publish.topic, publish.payload, publish.qos) == ("legacy", b"hi", 1)


@pytest.mark.parametrize("sub_qos", [0, 1, 2])
@pytest.mark.parametrize("size", [0, 117, 118, 300, 16373, 16374, 70_000])
def test_a_3_1_1_subscriber_gets_a_publish_of_any_size_whole(
    broker: RunningBroker, sub_qos: int, size: int
) -> None:
    """The server encodes a 3.1.1 PUBLISH in place (outbound.py): with one packer
    per topic length for a one-byte and a two-byte remaining length, with
    encode_publish beyond. Sizes either side of each boundary (topic "t/size",
    6 bytes: a QoS 1/2 packet under 128 bytes up to a payload of 117, under
    16 KiB up to 16,373) arrive whole, parsed by our reader."""
    sub = RawClient(broker.port, 4)
    sub.connect("sub")
    sub.subscribe("t/size", qos=sub_qos)
    pub = RawClient(broker.port, 4)
    pub.connect("pub")
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    pub.send(Publish("t/size", payload, 1, packet_id=7))
    assert pub.expect(PubAck).packet_id == 7
    got = sub.expect(Publish, timeout=5)
    assert (got.topic, got.payload, got.qos, got.retain, got.dup) == (
        "t/size",
        payload,
        min(sub_qos, 1),
        False,
        False,
    )
    assert (got.packet_id is None) == (sub_qos == 0)
