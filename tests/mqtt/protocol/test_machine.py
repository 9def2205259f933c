"""The connection's protocol machine, without sockets and on a fake clock.

States and the first packet, keepalive (1.5x) and connect deadlines, topic
aliases both ways, Receive Maximum, the order of acknowledgements, and the
bytes of what the machine answers (checked by parsing them back).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.mqtt.protocol.clock import FakeClock
from thingshub.mqtt.codec import (
    EMPTY,
    Connack,
    Connect,
    Disconnect,
    PacketType,
    PingReq,
    Properties,
    PubAck,
    Publish,
    Reader,
    ReasonCode,
)
from thingshub.mqtt.protocol import (
    AUTHENTICATING,
    AWAITING_CONNECT,
    CLOSED,
    CONNECTED,
    Machine,
    State,
    Violation,
)


@dataclass
class Limits:
    connect_timeout: float = 10.0
    receive_maximum: int = 4
    topic_alias_maximum: int = 8
    max_keepalive: int = 60


def parse(data: bytes, version: int) -> object:
    reader = Reader(version)
    reader.feed(data)
    packet = reader.next_packet()
    assert packet is not None and not reader.buffered
    return packet


def connected(
    version: int = 5,
    clock: FakeClock | None = None,
    limits: Limits | None = None,
    **connect: object,
) -> Machine:
    m = Machine(limits or Limits(), (clock or FakeClock()).now)
    packet = m.receive_first(Connect("c", version, **connect))  # type: ignore[arg-type]
    m.accept(packet)
    m.activate()
    return m


# ------------------------------------------------------------ states


def test_states_from_connect_to_closed() -> None:
    m = Machine(Limits(), 0.0)
    assert m.state is AWAITING_CONNECT is State.AWAITING_CONNECT
    packet = Connect("c", 5)
    assert m.receive_first(packet) is packet
    assert (m.state, m.version) == (AUTHENTICATING, 5)
    m.accept(packet)
    m.activate()
    assert m.state is CONNECTED
    assert m.close() is True
    assert m.state is CLOSED
    assert m.close() is False


def test_closing_before_connack_was_never_connected() -> None:
    m = Machine(Limits(), 0.0)
    m.receive_first(Connect("c"))
    assert m.close() is False


@pytest.mark.parametrize(
    ("packet", "detail"),
    [
        (Publish("t"), "PUBLISH before CONNECT"),
        (PingReq(), "first packet is not CONNECT"),
    ],
)
def test_the_first_packet_must_be_connect(packet: object, detail: str) -> None:
    m = Machine(Limits(), 0.0)
    with pytest.raises(Violation, match=detail) as caught:
        m.receive_first(packet)
    assert caught.value.reason_code == ReasonCode.PROTOCOL_ERROR
    assert m.state is AWAITING_CONNECT


# ------------------------------------------------------------ keepalive


@pytest.mark.parametrize(
    ("asked", "most", "granted", "announced"),
    [
        (30, 60, 30, None),
        (0, 60, 60, 60),  # 5.0: one is given to a client that asked for none
        (120, 60, 60, 60),
        (120, 0, 120, None),  # no server maximum
        (0, 0, 0, None),
    ],
)
def test_keepalive_granted_to_a_v5_client(
    asked: int, most: int, granted: int, announced: int | None
) -> None:
    m = Machine(Limits(max_keepalive=most), 0.0)
    packet = m.receive_first(Connect("c", 5, keepalive=asked))
    assert m.accept(packet) == announced
    assert m.keepalive == granted


def test_a_v311_client_keeps_its_keepalive() -> None:
    m = Machine(Limits(max_keepalive=60), 0.0)
    packet = m.receive_first(Connect("c", 4, keepalive=0))
    assert m.accept(packet) is None
    m.activate()
    assert m.keepalive == 0
    assert m.deadline() is None


def test_keepalive_expires_after_one_and_a_half_times_the_interval() -> None:
    clock = FakeClock()
    m = connected(4, clock, keepalive=10)
    assert m.deadline() == clock.now + 15
    clock.advance(15)
    assert m.expired(clock.now) is None  # not before 1.5x
    clock.advance(0.01)
    assert m.expired(clock.now) == ReasonCode.KEEP_ALIVE_TIMEOUT


def test_anything_from_the_client_restarts_its_keepalive() -> None:
    clock = FakeClock()
    m = connected(5, clock, keepalive=10)
    clock.advance(14)
    m.last_rx = clock.now  # a PINGREQ, say
    clock.advance(14)
    assert m.expired(clock.now) is None
    assert m.deadline() == m.last_rx + 15
    clock.advance(1.5)
    assert m.expired(clock.now) == ReasonCode.KEEP_ALIVE_TIMEOUT


def test_silence_while_we_do_not_read_is_ours() -> None:
    clock = FakeClock()
    m = connected(5, clock, keepalive=10)
    clock.advance(60)
    assert m.expired(clock.now, reading=False) is None
    assert m.expired(clock.now) == ReasonCode.KEEP_ALIVE_TIMEOUT


def test_no_keepalive_never_expires() -> None:
    clock = FakeClock()
    m = connected(4, clock, keepalive=0)
    clock.advance(10**6)
    assert m.expired(clock.now) is None
    assert m.deadline() is None


def test_connect_must_arrive_and_be_accepted_in_time() -> None:
    clock = FakeClock()
    m = Machine(Limits(connect_timeout=10), clock.now)
    assert m.deadline() == clock.now + 10
    clock.advance(10)
    assert m.expired(clock.now) is None
    m.receive_first(Connect("c"))  # the application takes its time to decide
    assert m.deadline() == m.created + 10
    clock.advance(1)
    assert m.expired(clock.now) == ReasonCode.MAXIMUM_CONNECT_TIME


def test_a_closed_connection_has_no_deadline() -> None:
    clock = FakeClock()
    m = Machine(Limits(), clock.now)
    m.close()
    clock.advance(3600)
    assert m.expired(clock.now) is None
    assert m.deadline() is None


# ------------------------------------------------------------ PUBLISH in


def test_a_topic_alias_is_set_and_then_used() -> None:
    m = connected(5)
    first = Publish("a/b", b"1", properties=Properties(topic_alias=3))
    m.check_publish(first)
    assert (first.topic, first.properties) == ("a/b", Properties())
    again = Publish("", b"2", properties=Properties(topic_alias=3, content_type="x"))
    m.check_publish(again)
    assert (again.topic, again.properties) == ("a/b", Properties(content_type="x"))
    moved = Publish("c", b"3", properties=Properties(topic_alias=3))
    m.check_publish(moved)  # the alias now stands for another topic
    last = Publish("", b"4", properties=Properties(topic_alias=3))
    m.check_publish(last)
    assert last.topic == "c"


@pytest.mark.parametrize(
    ("publishes", "code", "detail"),
    [
        ([Publish("a", properties=Properties(topic_alias=0))], 0x94, "topic alias 0"),
        ([Publish("a", properties=Properties(topic_alias=9))], 0x94, "topic alias 9"),
        ([Publish("", properties=Properties(topic_alias=1))], 0x82, "unknown topic alias 1"),
        (
            [
                Publish("a", properties=Properties(topic_alias=1)),
                Publish("", properties=Properties(topic_alias=2)),
            ],
            0x82,
            "unknown topic alias 2",
        ),
        (
            [Publish("a", properties=Properties(subscription_identifiers=(1,)))],
            0x82,
            "subscription identifier in PUBLISH",
        ),
        ([Publish("")], 0x82, "empty topic without an alias"),
        (
            [Publish("a", properties=Properties(response_topic="r/#"))],
            0x82,
            "invalid response topic",
        ),
        ([Publish("a", properties=Properties(response_topic=""))], 0x82, "invalid response topic"),
        ([Publish("a/+")], 0x90, "invalid topic 'a/\\+'"),
    ],
)
def test_publish_rule_broken(publishes: list[Publish], code: int, detail: str) -> None:
    m = connected(5)
    *fine, bad = publishes
    for packet in fine:
        m.check_publish(packet)
    with pytest.raises(Violation, match=detail) as caught:
        m.check_publish(bad)
    assert caught.value.reason_code == code


def test_a_v311_publish_has_its_topic_checked_only() -> None:
    m = connected(4)
    plain = Publish("a/b")
    m.check_publish(plain)
    assert plain.topic == "a/b" and plain.properties is EMPTY
    with pytest.raises(Violation) as caught:
        m.check_publish(Publish("a/#"))
    assert caught.value.reason_code == ReasonCode.TOPIC_NAME_INVALID


def test_receive_maximum_of_a_v5_client_counts_qos2_until_pubrel() -> None:
    m = connected(5, limits=Limits(receive_maximum=3))
    assert m.admit(qos2_waiting=0) is False
    m.ack_later(1, PacketType.PUBACK)
    assert m.admit(qos2_waiting=1) is False
    with pytest.raises(Violation) as caught:
        m.admit(qos2_waiting=2)
    assert caught.value.reason_code == ReasonCode.RECEIVE_MAXIMUM_EXCEEDED


def test_a_v311_client_beyond_receive_maximum_is_paused_not_closed() -> None:
    m = connected(4, limits=Limits(receive_maximum=2))
    assert m.admit(qos2_waiting=10) is False  # waiting for PUBREL: the client's turn
    m.ack_later(1, PacketType.PUBACK)
    assert m.admit(qos2_waiting=0) is False
    m.ack_later(2, PacketType.PUBACK)
    assert m.admit(qos2_waiting=0) is True


# ------------------------------------------------------------ acknowledgements


def test_acknowledgements_leave_in_arrival_order() -> None:
    m = connected(5)
    assert m.pending_acks() == 0
    assert m.ready() is None
    assert m.ack_now(1, PacketType.PUBACK, 0) is True  # nothing waits: at once
    first = m.ack_later(2, PacketType.PUBACK)
    second = m.ack_later(3, PacketType.PUBREC)
    assert m.ack_now(4, PacketType.PUBACK, 0x10) is False  # queued behind them
    assert m.pending_acks() == 3
    m.settle(second, 0)
    assert m.ready() is None  # the first still waits for the application
    m.settle(first, 0x80)
    assert m.ready() == [2, PacketType.PUBACK, 0x80]
    assert m.ready() == [3, PacketType.PUBREC, 0]
    assert m.ready() == [4, PacketType.PUBACK, 0x10]
    assert m.ready() is None
    assert m.pending_acks() == 0
    assert m.ack_now(5, PacketType.PUBACK, 0) is True


@pytest.mark.parametrize("version", [4, 5])
def test_drain_acks_gives_what_may_leave_in_one_piece(version: int) -> None:
    m = connected(version)
    assert m.drain_acks() == (b"", None)
    first = m.ack_later(1, PacketType.PUBACK)
    batch = [m.ack_later(2, PacketType.PUBREC), m.ack_later(3, PacketType.PUBACK)]
    refused = m.ack_later(4, PacketType.PUBREC)
    m.ack_now(5, PacketType.PUBACK, 0x10)
    last = m.ack_later(6, PacketType.PUBREC)
    m.settle_all(batch, 0)
    assert m.drain_acks() == (b"", None)  # the first still waits for the application
    m.settle(first, 0x80)
    m.settle(refused, 0x87)
    data, ended = m.drain_acks()
    expected = [
        m.ack(1, PacketType.PUBACK, 0x80),
        m.ack(2, PacketType.PUBREC, 0),
        m.ack(3, PacketType.PUBACK, 0),
        m.ack(4, PacketType.PUBREC, 0x87),
        m.ack(5, PacketType.PUBACK, 0x10),
    ]
    assert data == b"".join(expected)
    assert ended == ([4] if version == 5 else None)  # a 5.0 PUBREC refusal ends its flow
    assert m.pending_acks() == 1
    m.settle(last, 0x87)
    assert m.drain_acks() == (m.ack(6, PacketType.PUBREC, 0x87), [6] if version == 5 else None)
    assert m.pending_acks() == 0
    assert m.ack_now(7, PacketType.PUBACK, 0) is True


def test_drain_acks_lists_every_refused_qos2_flow() -> None:
    m = connected(5)
    for pid in (1, 2):
        m.settle(m.ack_later(pid, PacketType.PUBREC), 0x80)
    assert m.drain_acks()[1] == [1, 2]


@pytest.mark.parametrize("version", [4, 5])
@pytest.mark.parametrize("ack_type", [PacketType.PUBACK, PacketType.PUBREC])
@pytest.mark.parametrize("code", [0, 0x10, 0x87])
def test_the_bytes_of_an_acknowledgement(version: int, ack_type: PacketType, code: int) -> None:
    m = connected(version)
    said = code if version == 5 else 0  # 3.1.1 has no reason codes
    assert parse(m.ack(7, ack_type, code), version) == PubAck(ack_type, 7, said)
    ends_qos2 = version == 5 and ack_type == PacketType.PUBREC and code >= 0x80
    assert m.refuses_qos2(ack_type, code) is ends_qos2


@pytest.mark.parametrize(
    ("version", "known", "code"), [(4, True, 0), (4, False, 0), (5, True, 0), (5, False, 0x92)]
)
def test_pubcomp(version: int, known: bool, code: int) -> None:
    m = connected(version)
    assert parse(m.pubcomp(9, known), version) == PubAck(PacketType.PUBCOMP, 9, code)


def test_pubrel() -> None:
    assert parse(connected(4).pubrel(9) or b"", 4) == PubAck(PacketType.PUBREL, 9)
    assert connected(4).pubrel(9, known=False) is None
    unknown = connected(5).pubrel(9, known=False)
    assert parse(unknown or b"", 5) == PubAck(PacketType.PUBREL, 9, 0x92)


# ------------------------------------------------------------ PUBLISH out


def test_outgoing_properties_carry_subscription_ids_and_the_remaining_expiry() -> None:
    clock = FakeClock()
    m = connected(5, clock)
    props = Properties(content_type="t", message_expiry_interval=60)
    assert m.outgoing_properties(props, None, (4,), clock.now) == Properties(
        content_type="t", message_expiry_interval=60, subscription_identifiers=(4,)
    )
    expires_at = clock.now + 60
    clock.advance(20.4)
    out = m.outgoing_properties(props, expires_at, (), clock.now)
    assert out is not None and out.message_expiry_interval == 40
    clock.advance(39.5)
    out = m.outgoing_properties(props, expires_at, (), clock.now)
    assert out is not None and out.message_expiry_interval == 1  # never 0: 0 is "none"
    clock.advance(0.1)
    assert m.outgoing_properties(props, expires_at, (), clock.now) is None


def test_topic_aliases_to_the_client_are_given_in_order_up_to_its_maximum() -> None:
    m = connected(5, properties=Properties(topic_alias_maximum=2))
    assert m.alias_max_out == 2
    assert m.alias_out("a") == (1, True)
    assert m.alias_out("a") == (1, True)  # not sent yet: still new
    m.remember_alias("a", 1)
    assert m.alias_out("a") == (1, False)
    assert m.alias_out("b") == (2, True)
    m.remember_alias("b", 2)
    assert m.alias_out("c") == (0, False)  # none left
    assert m.alias_out("b") == (2, False)


def test_the_clients_maximum_packet_size_is_kept() -> None:
    assert connected(5, properties=Properties(maximum_packet_size=1000)).max_packet_out == 1000
    assert connected(4).max_packet_out == 0


# ------------------------------------------------------------ answers


@pytest.mark.parametrize(
    ("version", "code", "said"),
    [
        (5, ReasonCode.NOT_AUTHORIZED, ReasonCode.NOT_AUTHORIZED),
        (4, ReasonCode.NOT_AUTHORIZED, 5),
        (3, ReasonCode.BAD_USER_NAME_OR_PASSWORD, 4),
        (4, ReasonCode.UNSUPPORTED_PROTOCOL_VERSION, 1),
    ],
)
def test_refusal(version: int, code: int, said: int) -> None:
    m = Machine(Limits(), 0.0)
    m.receive_first(Connect("c", version))
    assert parse(m.refusal(code), version) == Connack(said)


def test_disconnect_only_tells_a_connected_v5_client() -> None:
    m = Machine(Limits(), 0.0)
    m.receive_first(Connect("c", 5))
    assert m.disconnect(0x8E) is None  # it never had its CONNACK
    m.activate()
    assert parse(m.disconnect(0x8E) or b"", 5) == Disconnect(0x8E)
    assert connected(4).disconnect(0x8E) is None
