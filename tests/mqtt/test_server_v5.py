"""MQTT 5.0 features through the real server.

Topic aliases both ways, Maximum Packet Size both ways, message expiry,
subscription identifiers, no-local, request/response and other publish
properties, Server Keep Alive, shared subscriptions, Receive Maximum, and what
CONNACK announces. Raw clients are used wherever paho hides the bytes (paho
neither sends nor understands topic aliases).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.conftest import RunningBroker
from tests.mqtt.clients import PahoClient, RawClient, brief, wait_until
from thingshub.mqtt.codec import (
    Auth,
    Connack,
    Disconnect,
    PacketType,
    PubAck,
    Publish,
    ReasonCode,
    Subscribe,
    SubscriptionRequest,
    encode,
)
from thingshub.mqtt.codec.properties import Properties
from thingshub.mqtt.server import BrokerConfig


def app_publish(
    b: RunningBroker, topic: str, payload: bytes, qos: int = 0, props: Properties | None = None
) -> None:
    b.call(lambda: b.broker.publish(topic, payload, qos, properties=props or Properties()))


# ------------------------------------------------------------ CONNACK


def test_connack_announces_the_limits(broker_factory: Callable[..., RunningBroker]) -> None:
    config = BrokerConfig(receive_maximum=7, topic_alias_maximum=3, max_packet_size=4096)
    b = broker_factory(config=config)
    raw = RawClient(b.port)
    connack = raw.connect("limits", keepalive=30)
    assert connack.reason_code == 0
    p = connack.properties
    assert (p.receive_maximum, p.topic_alias_maximum, p.maximum_packet_size) == (7, 3, 4096)
    assert p.server_keep_alive is None  # 30 s is within max_keepalive: nothing to announce
    assert p.assigned_client_identifier is None
    paho = PahoClient(b.port, "paho")
    assert paho.connack_properties is not None
    assert paho.connack_properties.ReceiveMaximum == 7
    assert paho.connack_properties.TopicAliasMaximum == 3
    assert paho.connack_properties.MaximumPacketSize == 4096


@pytest.mark.parametrize(
    ("asked", "announced"), [(0, 60), (61, 60), (3600, 60), (60, None), (1, None)]
)
def test_server_keep_alive(broker: RunningBroker, asked: int, announced: int | None) -> None:
    """A 5.0 client asking for more than `max_keepalive` (60), or for none, is
    told the keepalive it gets in CONNACK's Server Keep Alive."""
    raw = RawClient(broker.port)
    assert raw.connect("ka", keepalive=asked).properties.server_keep_alive == announced


def test_server_keep_alive_is_enforced(broker_factory: Callable[..., RunningBroker]) -> None:
    """A client that asked for no keepalive is held to the announced one."""
    b = broker_factory(config=BrokerConfig(max_keepalive=1, sweep_interval=0.05))
    raw = RawClient(b.port)
    t0 = time.monotonic()
    assert raw.connect("lazy", keepalive=0).properties.server_keep_alive == 1
    assert raw.wait_closed(timeout=4) == [Disconnect(ReasonCode.KEEP_ALIVE_TIMEOUT)]
    assert 1.5 <= time.monotonic() - t0 < 1.9


def test_enhanced_authentication_is_refused(broker: RunningBroker) -> None:
    """No AUTH methods are supported: CONNACK 0x8C ([MQTT-4.12.0-1])."""
    raw = RawClient(broker.port)
    connack = raw.connect("auth", properties=Properties(authentication_method="SCRAM-SHA-1"))
    assert connack == Connack(ReasonCode.BAD_AUTHENTICATION_METHOD)
    assert raw.wait_closed() == []


def test_auth_packet_without_method_is_a_protocol_error(broker: RunningBroker) -> None:
    raw = RawClient(broker.port)
    raw.connect("auth")
    raw.send(Auth(ReasonCode.RE_AUTHENTICATE))
    assert raw.wait_closed() == [Disconnect(ReasonCode.PROTOCOL_ERROR)]


# ------------------------------------------------------------ topic aliases


def test_inbound_topic_alias(broker: RunningBroker) -> None:
    """A client sets an alias with a topic, uses it with an empty topic, and may
    map it to another topic later; subscribers always see the full topic."""
    sub = PahoClient(broker.port, "sub")
    sub.subscribe("alias/#", qos=1)
    raw = RawClient(broker.port)
    raw.connect("aliaser")
    raw.send(
        Publish("alias/one", b"1", qos=1, packet_id=1, properties=Properties(topic_alias=1)),
        Publish("", b"2", qos=1, packet_id=2, properties=Properties(topic_alias=1)),
        Publish("alias/two", b"3", qos=1, packet_id=3, properties=Properties(topic_alias=1)),
        Publish("", b"4", qos=1, packet_id=4, properties=Properties(topic_alias=1)),
    )
    assert [raw.expect(PubAck).packet_id for _ in range(4)] == [1, 2, 3, 4]
    msgs = sub.wait_messages(4)
    assert [(m.topic, m.payload) for m in msgs] == [
        ("alias/one", b"1"),
        ("alias/one", b"2"),
        ("alias/two", b"3"),
        ("alias/two", b"4"),
    ]
    assert all(not hasattr(m.properties, "TopicAlias") for m in msgs)


@pytest.mark.parametrize(
    ("topic", "alias", "code"),
    [
        ("t", 0, ReasonCode.TOPIC_ALIAS_INVALID),
        ("t", 65, ReasonCode.TOPIC_ALIAS_INVALID),  # the server's maximum is 64
        ("", 3, ReasonCode.PROTOCOL_ERROR),  # never set on this connection
    ],
    ids=["alias-0", "above-maximum", "unknown"],
)
def test_bad_inbound_topic_alias(broker: RunningBroker, topic: str, alias: int, code: int) -> None:
    raw = RawClient(broker.port)
    raw.connect("aliaser")
    raw.send(Publish(topic, b"x", properties=Properties(topic_alias=alias)))
    assert raw.wait_closed() == [Disconnect(code)]


def test_inbound_topic_aliases_do_not_survive_the_connection(broker: RunningBroker) -> None:
    """Aliases belong to the network connection, not the session ([MQTT-3.3.2-7])."""
    props = Properties(session_expiry_interval=60)
    raw = RawClient(broker.port)
    raw.connect("aliaser", clean=False, properties=props)
    raw.send(Publish("a/t", b"1", properties=Properties(topic_alias=1)))
    assert raw.ping() == []
    raw.close()
    again = RawClient(broker.port)
    assert again.connect("aliaser", clean=False, properties=props).session_present
    again.send(Publish("", b"2", properties=Properties(topic_alias=1)))
    assert again.wait_closed() == [Disconnect(ReasonCode.PROTOCOL_ERROR)]


def test_outbound_topic_aliases(broker: RunningBroker) -> None:
    """A client that allows 2 aliases gets the topic once per alias and then
    an empty topic; topics beyond the alias maximum travel in full."""
    raw = RawClient(broker.port)
    raw.connect("aliased", properties=Properties(topic_alias_maximum=2))
    raw.subscribe("ta/#")
    for topic in ["ta/a", "ta/a", "ta/b", "ta/c", "ta/a", "ta/c", "ta/b"]:
        app_publish(broker, topic, topic.encode())
    got = [
        (p.topic, p.payload, p.properties.topic_alias) for p in raw.ping() if isinstance(p, Publish)
    ]
    assert got == [
        ("ta/a", b"ta/a", 1),
        ("", b"ta/a", 1),
        ("ta/b", b"ta/b", 2),
        ("ta/c", b"ta/c", None),
        ("", b"ta/a", 1),
        ("ta/c", b"ta/c", None),
        ("", b"ta/b", 2),
    ]


def test_no_outbound_aliases_without_client_maximum(broker: RunningBroker) -> None:
    raw = RawClient(broker.port)
    raw.connect("plain")
    raw.subscribe("ta/#")
    app_publish(broker, "ta/a", b"1")
    app_publish(broker, "ta/a", b"2")
    got = [(p.topic, p.properties.topic_alias) for p in raw.ping() if isinstance(p, Publish)]
    assert got == [("ta/a", None), ("ta/a", None)]


# ------------------------------------------------------------ maximum packet size


def sized_publish(size: int, version: int) -> Publish:
    """A QoS 1 PUBLISH whose encoding is exactly `size` bytes."""
    for n in range(size, -1, -1):
        packet = Publish("big", b"x" * n, qos=1, packet_id=1)
        if len(encode(packet, version)) == size:
            return packet
    raise ValueError(size)


@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_server_maximum_packet_size(
    broker_factory: Callable[..., RunningBroker], version: int
) -> None:
    """A packet of exactly `max_packet_size` bytes is accepted; one byte more
    closes the connection (5.0: DISCONNECT 0x95)."""
    b = broker_factory(config=BrokerConfig(max_packet_size=300))
    raw = RawClient(b.port, version)
    raw.connect("big")
    exact = sized_publish(300, version)
    raw.send(exact)
    assert raw.expect(PubAck).packet_id == 1
    raw.send(sized_publish(301, version))
    expected = [Disconnect(ReasonCode.PACKET_TOO_LARGE)] if version == 5 else []
    assert raw.wait_closed() == expected
    assert b.stats.protocol_errors == 1


def test_client_maximum_packet_size(broker: RunningBroker) -> None:
    """[MQTT-3.1.2-25]: a message that would exceed the client's Maximum Packet
    Size is not sent to it (dropped, counted, not left in flight); smaller ones are."""
    raw = RawClient(broker.port)
    raw.connect("small", properties=Properties(maximum_packet_size=64))
    raw.subscribe("mps/#", qos=1)
    app_publish(broker, "mps/t", b"x" * 100, qos=1)
    app_publish(broker, "mps/t", b"fits", qos=1)
    app_publish(broker, "mps/t", b"y" * 100, qos=0)
    [publish] = raw.ping()
    assert isinstance(publish, Publish) and publish.payload == b"fits"
    assert broker.stats.dropped_too_large == 2
    raw.ack(publish)
    assert raw.ping() == []
    assert broker.call(lambda: dict(broker.broker.sessions["small"].inflight)) == {}


# ------------------------------------------------------------ message expiry


def test_message_expiry(broker: RunningBroker) -> None:
    """A queued message past its expiry is not delivered; one still valid is
    delivered with the remaining interval; live delivery keeps the full interval.
    An expired retained message is not sent on subscribe either."""
    props = {"SessionExpiryInterval": 60}
    sub = PahoClient(broker.port, "later", properties=props)
    sub.subscribe("exp/+", qos=1)
    sub.disconnect()
    pub = PahoClient(broker.port, "pub")
    pub.publish("exp/short", b"short", qos=1, properties={"MessageExpiryInterval": 1})
    pub.publish("exp/long", b"long", qos=1, properties={"MessageExpiryInterval": 60})
    pub.publish("exp/retained", b"r", qos=1, retain=True, properties={"MessageExpiryInterval": 1})
    time.sleep(1.1)  # let the messages age past one second

    back = PahoClient(broker.port, "later", clean=False, properties=props)
    assert back.session_present
    back.wait_messages(1)
    back.fence()
    [msg] = back.messages
    assert msg.payload == b"long"
    assert 58 <= msg.properties.MessageExpiryInterval <= 59
    assert broker.stats.dropped_expired == 2  # exp/short and the retained one's queued copy

    fresh = PahoClient(broker.port, "fresh")
    fresh.subscribe("exp/#", qos=1)
    pub.publish("exp/live", b"live", qos=1, properties={"MessageExpiryInterval": 30})
    [live] = fresh.wait_messages(1)
    assert (live.payload, live.properties.MessageExpiryInterval) == (b"live", 30)
    fresh.fence()
    assert len(fresh.messages) == 1  # the expired retained message was not sent


# ------------------------------------------------------------ subscriptions


def test_subscription_identifiers(broker: RunningBroker) -> None:
    """The identifier of the matching subscription comes with each message,
    also retained ones; a subscription made again with another id uses the new one."""
    PahoClient(broker.port, "pub").publish("sid/r", b"retained", qos=1, retain=True)
    sub = PahoClient(broker.port, "sub")
    sub.subscribe("sid/+", qos=1, sub_id=7)
    sub.subscribe("other", qos=1)
    [retained] = sub.wait_messages(1)
    assert retained.properties.SubscriptionIdentifier == [7]
    pub = PahoClient(broker.port, "pub2")
    pub.publish("sid/x", b"1", qos=1)
    pub.publish("other", b"2", qos=1)
    msgs = sub.wait_messages(3)
    assert msgs[1].properties.SubscriptionIdentifier == [7]
    assert not hasattr(msgs[2].properties, "SubscriptionIdentifier")
    sub.subscribe("sid/+", qos=1, sub_id=8, retain_handling=2)
    pub.publish("sid/x", b"3", qos=1)
    assert sub.wait_messages(4)[3].properties.SubscriptionIdentifier == [8]


def test_no_local(broker: RunningBroker) -> None:
    me = PahoClient(broker.port, "me")
    me.subscribe("chat", qos=1, no_local=True)
    other = PahoClient(broker.port, "other")
    other.subscribe("chat", qos=1)
    me.publish("chat", b"from me", qos=1)
    PahoClient(broker.port, "third").publish("chat", b"from third", qos=1)
    assert [m.payload for m in other.wait_messages(2)] == [b"from me", b"from third"]
    me.wait_messages(1)
    me.fence()
    assert [m.payload for m in me.messages] == [b"from third"]


def test_no_local_on_shared_subscription_is_a_protocol_error(broker: RunningBroker) -> None:
    """[MQTT-3.8.3-4]."""
    raw = RawClient(broker.port)
    raw.connect("raw")
    raw.send(Subscribe(1, [SubscriptionRequest("$share/g/t", 1, no_local=True)]))
    assert raw.wait_closed() == [Disconnect(ReasonCode.PROTOCOL_ERROR)]


def test_invalid_filters_are_refused_per_filter(broker: RunningBroker) -> None:
    """One bad filter fails on its own (0x8F), the others in the SUBSCRIBE are granted."""
    raw = RawClient(broker.port)
    raw.connect("raw")
    codes = raw.subscribe("ok/+", "bad/#/x", "$share/g", "$share/+/t", "fine", qos=1)
    assert codes == [1, 0x8F, 0x8F, 0x8F, 1]


# ------------------------------------------------------------ publish properties


def test_publish_properties_are_forwarded(broker: RunningBroker) -> None:
    """Request/response (response topic, correlation data), user properties (in
    order, repeats kept), payload format and content type reach the subscriber
    unchanged; a 3.1.1 subscriber gets the same message without them."""
    sub5 = PahoClient(broker.port, "sub5")
    sub5.subscribe("req/t", qos=1)
    sub3 = PahoClient(broker.port, "sub3", version=4)
    sub3.subscribe("req/t", qos=1)
    props = {
        "ResponseTopic": "resp/abc",
        "CorrelationData": b"\x00\xffid",
        "UserProperty": [("a", "1"), ("b", "2"), ("a", "3")],
        "PayloadFormatIndicator": 1,
        "ContentType": "application/json",
    }
    PahoClient(broker.port, "pub").publish("req/t", b'{"q": 1}', qos=1, properties=props)
    [msg] = sub5.wait_messages(1)
    p = msg.properties
    assert p.ResponseTopic == "resp/abc"
    assert p.CorrelationData == b"\x00\xffid"
    assert p.UserProperty == [("a", "1"), ("b", "2"), ("a", "3")]
    assert p.PayloadFormatIndicator == 1
    assert p.ContentType == "application/json"
    assert brief(sub3.wait_messages(1)[0]) == ("req/t", b'{"q": 1}', 1, False)


def test_request_response_round_trip(broker: RunningBroker) -> None:
    """A responder answers on the request's response topic with its correlation data."""
    requester = PahoClient(broker.port, "requester")
    requester.subscribe("resp/requester", qos=1)
    responder = PahoClient(broker.port, "responder")
    responder.subscribe("svc/time", qos=1)
    requester.publish(
        "svc/time",
        b"what time?",
        qos=1,
        properties={"ResponseTopic": "resp/requester", "CorrelationData": b"42"},
    )
    [request] = responder.wait_messages(1)
    responder.publish(
        request.properties.ResponseTopic,
        b"noon",
        qos=1,
        properties={"CorrelationData": request.properties.CorrelationData},
    )
    [reply] = requester.wait_messages(1)
    assert (reply.payload, reply.properties.CorrelationData) == (b"noon", b"42")


# ------------------------------------------------------------ shared subscriptions


def test_shared_subscription_round_robin(broker: RunningBroker) -> None:
    """Each message to exactly one member of the group, taking turns; a plain
    subscriber on the same topic still gets every message."""
    m1 = PahoClient(broker.port, "m1")
    m2 = PahoClient(broker.port, "m2")
    plain = PahoClient(broker.port, "plain")
    m1.subscribe("$share/workers/jobs/+", qos=1)
    m2.subscribe("$share/workers/jobs/+", qos=1)
    plain.subscribe("jobs/+", qos=1)
    pub = PahoClient(broker.port, "pub")
    for i in range(20):
        pub.publish(f"jobs/{i % 3}", str(i).encode(), qos=1)
    plain.wait_messages(20)
    m1.fence()
    m2.fence()
    got1 = [int(m.payload) for m in m1.messages]
    got2 = [int(m.payload) for m in m2.messages]
    assert sorted(got1 + got2) == list(range(20))
    assert len(got1) == len(got2) == 10
    assert {got1[0] % 2, got2[0] % 2} == {0, 1}  # strictly alternating
    assert all(x % 2 == got1[0] % 2 for x in got1)


def test_shared_subscription_member_leaves(broker: RunningBroker) -> None:
    """After a member unsubscribes, the rest of the group gets everything; a
    message is never lost between members (QoS downgrades per member too)."""
    m1 = PahoClient(broker.port, "m1")
    m2 = PahoClient(broker.port, "m2")
    m1.subscribe("$share/g/s/t", qos=0)
    m2.subscribe("$share/g/s/t", qos=1)
    pub = PahoClient(broker.port, "pub")
    for i in range(4):
        pub.publish("s/t", str(i).encode(), qos=1)
    m1.fence()
    m2.fence()
    assert sorted([m.qos for m in m1.messages] + [m.qos for m in m2.messages]) == [0, 0, 1, 1]
    assert m2.unsubscribe("$share/g/s/t") == [0]
    for i in range(4, 8):
        pub.publish("s/t", str(i).encode(), qos=1)
    m1.wait_messages(6)
    m1.fence()
    m2.fence()
    assert len(m1.messages) + len(m2.messages) == 8
    assert [m.payload for m in m1.messages][-4:] == [b"4", b"5", b"6", b"7"]


def test_shared_subscription_prefers_online_members(broker: RunningBroker) -> None:
    props = {"SessionExpiryInterval": 60}
    away = PahoClient(broker.port, "away", properties=props)
    away.subscribe("$share/g/o/t", qos=1)
    away.disconnect()
    here = PahoClient(broker.port, "here")
    here.subscribe("$share/g/o/t", qos=1)
    pub = PahoClient(broker.port, "pub")
    for i in range(4):
        pub.publish("o/t", str(i).encode(), qos=1)
    assert [m.payload for m in here.wait_messages(4)] == [b"0", b"1", b"2", b"3"]
    back = PahoClient(broker.port, "away", clean=False, properties=props)
    assert back.session_present
    back.fence()
    assert back.messages == []


# ------------------------------------------------------------ flow control


def test_receive_maximum_exceeded(broker_factory: Callable[..., RunningBroker]) -> None:
    """More unacknowledged QoS 2 PUBLISHes than the announced Receive Maximum
    (2): DISCONNECT 0x93 ([MQTT-3.3.4-9])."""
    b = broker_factory(config=BrokerConfig(receive_maximum=2))
    sub = PahoClient(b.port, "sub")
    sub.subscribe("rm/t", qos=1)
    raw = RawClient(b.port)
    assert raw.connect("greedy").properties.receive_maximum == 2
    raw.send(Publish("rm/t", b"1", qos=2, packet_id=1), Publish("rm/t", b"2", qos=2, packet_id=2))
    assert [raw.expect(PubAck) for _ in range(2)] == [
        PubAck(PacketType.PUBREC, 1),
        PubAck(PacketType.PUBREC, 2),
    ]
    raw.send(Publish("rm/t", b"3", qos=2, packet_id=3))
    assert raw.wait_closed() == [Disconnect(ReasonCode.RECEIVE_MAXIMUM_EXCEEDED)]
    sub.fence()
    assert [m.payload for m in sub.messages] == [b"1", b"2"]


def test_receive_maximum_counts_only_unreleased(
    broker_factory: Callable[..., RunningBroker],
) -> None:
    """Once released (PUBREL/PUBCOMP), a QoS 2 exchange no longer counts against
    Receive Maximum: a client staying within it can go on indefinitely."""
    b = broker_factory(config=BrokerConfig(receive_maximum=2))
    raw = RawClient(b.port)
    raw.connect("steady")
    for pid in range(1, 11):
        raw.send(Publish("rm/t", b"x", qos=2, packet_id=pid))
        assert raw.expect(PubAck) == PubAck(
            PacketType.PUBREC, pid, ReasonCode.NO_MATCHING_SUBSCRIBERS
        )
        if pid % 2 == 0:
            for done in (pid - 1, pid):
                raw.send(PubAck(PacketType.PUBREL, done))
                assert raw.expect(PubAck) == PubAck(PacketType.PUBCOMP, done)
    assert raw.ping() == []


def test_v311_client_over_receive_maximum_is_throttled_not_stuck(
    broker_factory: Callable[..., RunningBroker],
) -> None:
    """3.1.1 has no Receive Maximum, so a client with more QoS 2 messages
    unreleased than the server's `receive_maximum` is throttled by pausing
    reading, not disconnected. The PUBRELs that release them must still be
    read, or the connection would hang until its keepalive expired."""
    b = broker_factory(config=BrokerConfig(receive_maximum=2))
    sub = PahoClient(b.port, "sub")
    sub.subscribe("rm/t", qos=1)
    raw = RawClient(b.port, 4)
    raw.connect("old-greedy")
    for pid in (1, 2, 3):
        raw.send(Publish("rm/t", str(pid).encode(), qos=2, packet_id=pid))
        assert raw.expect(PubAck) == PubAck(PacketType.PUBREC, pid)
    for pid in (1, 2, 3):
        raw.send(PubAck(PacketType.PUBREL, pid))
        assert raw.expect(PubAck, timeout=2) == PubAck(PacketType.PUBCOMP, pid)
    raw.send(Publish("rm/t", b"4", qos=1, packet_id=4))
    assert raw.expect(PubAck) == PubAck(PacketType.PUBACK, 4)
    assert [m.payload for m in sub.wait_messages(4)] == [b"1", b"2", b"3", b"4"]
    wait_until(lambda: b.call(lambda: b.broker.sessions["old-greedy"].qos2_count() == 0))
