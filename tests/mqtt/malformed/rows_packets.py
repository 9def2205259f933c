"""Rows of the malformed-input table: every packet a connected client sends.

Named as in rows_connect.py. What the specifications let a server answer to a
bad packet after CONNACK: 3.1.1 closes the connection (§4.8); 5.0 closes it
and "SHOULD send a DISCONNECT packet containing the reason code" first
([MQTT-4.13.1-1]): the table holds our server to the DISCONNECT.
"""

from __future__ import annotations

from tests.mqtt.malformed.harness import CLOSE, Answer, Row, any_of, disconnect, pubcomp, suback
from tests.mqtt.malformed.wire import (
    PUBREC,
    SUBACK,
    frame,
    p5,
    props,
    publish,
    s,
    subscribe,
    u16,
    u32,
    unsubscribe,
)

MALFORMED: dict[int, tuple[Answer, ...]] = {4: any_of(CLOSE), 5: any_of(disconnect(0x81))}
PROTOCOL_ERROR: dict[int, tuple[Answer, ...]] = {4: any_of(CLOSE), 5: any_of(disconnect(0x82))}
#: Rules whose text does not say which of the two a breach is.
BROKEN = {4: any_of(CLOSE), 5: any_of(disconnect(0x81), disconnect(0x82))}
#: A filter that is no topic filter: refused in the SUBACK, or the connection closed.
BAD_FILTER = {4: any_of(suback(0x80), CLOSE), 5: any_of(suback(0x8F), disconnect(0x81))}


def v5only(answers: dict[int, tuple[Answer, ...]]) -> dict[int, tuple[Answer, ...]]:
    return {5: answers[5]}


def pub5(*items: bytes, topic: str = "t", qos: int = 0) -> bytes:
    """A 5.0 PUBLISH with the given properties."""
    return publish(5, topic, qos=qos, properties=props(*items))


ROWS = [
    # ---------------------------------------------------------- fixed header
    Row(
        "MQTT-2.2.1 (3.1.1) / 2.1.2 (5.0)",
        "packet type 0 is reserved",
        lambda v: b"\x00\x00",
        MALFORMED,
    ),
    Row(
        "MQTT-2.2.1 (3.1.1)",
        "packet type 15 (AUTH in 5.0) is reserved in 3.1.1",
        lambda v: b"\xf0\x00",
        {4: any_of(CLOSE)},
    ),
    Row(
        "MQTT-2.1.3-1 (5.0) / MQTT-2.2.2-2 (3.1.1)",
        "PINGREQ with flags 0001",
        lambda v: b"\xc1\x00",
        MALFORMED,
    ),
    Row(
        "MQTT-2.1.3-1 (5.0) / MQTT-2.2.2-2 (3.1.1)",
        "PUBACK with flags 0010",
        lambda v: frame(0x42, u16(1)),
        MALFORMED,
    ),
    Row("MQTT-3.6.1-1", "PUBREL with flags 0000", lambda v: frame(0x60, u16(1)), MALFORMED),
    Row(
        "MQTT-3.8.1-1",
        "SUBSCRIBE with flags 0000",
        lambda v: b"\x80" + subscribe(v, ("t", 0))[1:],
        MALFORMED,
    ),
    Row(
        "MQTT-3.10.1-1",
        "UNSUBSCRIBE with flags 0000",
        lambda v: b"\xa0" + unsubscribe(v, "t")[1:],
        MALFORMED,
    ),
    Row("MQTT-3.14.1-1", "DISCONNECT with flags 0001", lambda v: b"\xe1\x00", MALFORMED),
    Row(
        "MQTT-1.5.5-1 (5.0) / 2.2.3 (3.1.1)",
        "remaining length of five bytes",
        lambda v: b"\x30\x80\x80\x80\x80\x01",
        MALFORMED,
    ),
    Row(
        "MQTT-1.5.5-1 (5.0)",
        "remaining length not in its fewest bytes",
        lambda v: b"\xc0\x80\x00",
        v5only(MALFORMED),
    ),
    Row(
        "MQTT-3.2.2-15 (5.0) / 1.5.3 (3.1.1)",
        "PUBLISH header announcing more than the maximum packet size, body never sent",
        lambda v: b"\x30\x80\x80\x80\x01",
        {4: any_of(CLOSE), 5: any_of(disconnect(0x95))},
    ),
    Row(
        "MQTT-3.2.2-15 (5.0) / 1.5.3 (3.1.1)",
        "SUBSCRIBE header announcing 256 MiB, body never sent",
        lambda v: b"\x82\xff\xff\xff\x7f",
        {4: any_of(CLOSE), 5: any_of(disconnect(0x95))},
    ),
    # ---------------------------------------------------------- lengths and truncations
    Row(
        "4.13 (5.0) / 4.8 (3.1.1)",
        "PUBLISH topic length beyond the packet",
        lambda v: frame(0x30, u16(9), b"ab"),
        MALFORMED,
    ),
    Row(
        "MQTT-2.3.1-1 (3.1.1) / MQTT-2.2.1-3 (5.0)",
        "QoS 1 PUBLISH cut before its packet id",
        lambda v: frame(0x32, s("t")),
        MALFORMED,
    ),
    Row(
        "4.13 (5.0) / 4.8 (3.1.1)",
        "PUBACK with one byte of packet id",
        lambda v: frame(0x40, b"\x01"),
        MALFORMED,
    ),
    Row(
        "3.12.1 (5.0) / 3.12 (3.1.1)",
        "PINGREQ with a body",
        lambda v: frame(0xC0, b"\x00"),
        MALFORMED,
    ),
    Row(
        "4.13 (5.0) / 4.8 (3.1.1)",
        "SUBSCRIBE filter length beyond the packet",
        lambda v: frame(0x82, u16(1), p5(v), u16(200), b"ab\x00"),
        MALFORMED,
    ),
    Row(
        "4.13 (5.0) / 4.8 (3.1.1)",
        "SUBSCRIBE filter without its options byte",
        lambda v: frame(0x82, u16(1), p5(v), s("t")),
        MALFORMED,
    ),
    # ---------------------------------------------------------- PUBLISH
    Row("MQTT-3.3.1-4", "PUBLISH with QoS 3", lambda v: publish(v, "t", flags=0x06), MALFORMED),
    Row(
        "MQTT-3.3.1-2",
        "PUBLISH with DUP at QoS 0",
        lambda v: publish(v, "t", flags=0x08),
        MALFORMED,
    ),
    Row(
        "MQTT-3.3.2-2",
        "PUBLISH topic name with a + wildcard",
        lambda v: publish(v, "a/+/b"),
        {4: any_of(CLOSE), 5: any_of(disconnect(0x90))},
    ),
    Row(
        "MQTT-3.3.2-2",
        "PUBLISH topic name with a # wildcard",
        lambda v: publish(v, "a/#", qos=1),
        {4: any_of(CLOSE), 5: any_of(disconnect(0x90))},
    ),
    Row(
        "MQTT-4.7.3-1 (3.1.1) / 3.3.2.3.4 (5.0)",
        "PUBLISH with an empty topic, no alias",
        lambda v: publish(v, ""),
        PROTOCOL_ERROR,
    ),
    Row(
        "MQTT-1.5.3-1 (3.1.1) / MQTT-1.5.4-1 (5.0)",
        "PUBLISH topic not well-formed UTF-8",
        lambda v: publish(v, b"t/\xff"),
        MALFORMED,
    ),
    Row(
        "MQTT-1.5.3-1 (3.1.1) / MQTT-1.5.4-1 (5.0)",
        "PUBLISH topic with a UTF-16 surrogate",
        lambda v: publish(v, b"t/\xed\xb0\x80"),
        MALFORMED,
    ),
    Row(
        "MQTT-1.5.3-2 (3.1.1) / MQTT-1.5.4-2 (5.0)",
        "PUBLISH topic containing U+0000",
        lambda v: publish(v, b"t/\x00"),
        MALFORMED,
    ),
    Row(
        "MQTT-2.3.1-1 (3.1.1) / MQTT-2.2.1-3 (5.0)",
        "QoS 1 PUBLISH with packet id 0",
        lambda v: publish(v, "t", qos=1, packet_id=0),
        BROKEN,
    ),
    Row(
        "MQTT-2.3.1-1 (3.1.1) / MQTT-2.2.1-3 (5.0)",
        "QoS 2 PUBLISH with packet id 0",
        lambda v: publish(v, "t", qos=2, packet_id=0),
        BROKEN,
    ),
    Row(
        "MQTT-3.3.2-8",
        "topic alias 0",
        lambda v: pub5(b"\x23" + u16(0)),
        {5: any_of(disconnect(0x94))},
    ),
    Row(
        "MQTT-3.3.2-9",
        "topic alias above the server's Topic Alias Maximum",
        lambda v: pub5(b"\x23" + u16(65535)),
        {5: any_of(disconnect(0x94))},
    ),
    Row(
        "5.0 3.3.2.3.4",
        "empty topic with an alias never set",
        lambda v: pub5(b"\x23" + u16(1), topic=""),
        v5only(PROTOCOL_ERROR),
    ),
    Row(
        "MQTT-3.3.4-6",
        "subscription identifier in a PUBLISH from a client",
        lambda v: pub5(b"\x0b\x01"),
        v5only(PROTOCOL_ERROR),
    ),
    Row(
        "5.0 3.3.2.3.2",
        "payload format indicator twice",
        lambda v: pub5(b"\x01\x00", b"\x01\x00"),
        v5only(PROTOCOL_ERROR),
    ),
    Row(
        "5.0 3.3.2.3.4",
        "topic alias twice",
        lambda v: pub5(b"\x23" + u16(1), b"\x23" + u16(2)),
        v5only(PROTOCOL_ERROR),
    ),
    Row(
        "5.0 2.2.2.2",
        "session expiry interval, a CONNECT property, in PUBLISH",
        lambda v: pub5(b"\x11" + u32(1)),
        v5only(MALFORMED),
    ),
    Row(
        "5.0 2.2.2.2",
        "unknown property identifier 0x7F in PUBLISH",
        lambda v: pub5(b"\x7f\x00"),
        v5only(MALFORMED),
    ),
    Row(
        "5.0 2.2.2.2",
        "PUBLISH property length beyond the packet",
        lambda v: publish(5, "t", payload=b"", properties=b"\x05\x01"),
        v5only(MALFORMED),
    ),
    Row(
        "MQTT-3.3.2-14",
        "response topic with a wildcard",
        lambda v: pub5(b"\x08" + s("r/#")),
        v5only(PROTOCOL_ERROR),
    ),
    Row(
        "MQTT-1.5.4-1",
        "content type not well-formed UTF-8",
        lambda v: pub5(b"\x03" + s(b"\xff")),
        v5only(MALFORMED),
    ),
    Row(
        "MQTT-3.3.4-7 (5.0)",
        "more QoS 2 PUBLISHes unreleased than the Receive Maximum",
        lambda v: b"".join(publish(5, "t", qos=2, packet_id=i) for i in range(1, 7)),
        {5: any_of(disconnect(0x93))},
        ignore=(PUBREC,),
    ),
    # ---------------------------------------------------------- acknowledgements
    Row(
        "MQTT-2.3.1-1 (3.1.1) / MQTT-2.2.1-3 (5.0)",
        "PUBACK with packet id 0",
        lambda v: frame(0x40, u16(0)),
        BROKEN,
    ),
    Row(
        "MQTT-2.3.1-1 (3.1.1) / MQTT-2.2.1-3 (5.0)",
        "PUBREL with packet id 0",
        lambda v: frame(0x62, u16(0)),
        BROKEN,
    ),
    Row(
        "5.0 3.7.2.1",
        "PUBREL of an unknown packet id",
        lambda v: frame(0x62, u16(77)),
        {4: any_of(pubcomp(0)), 5: any_of(pubcomp(0x92))},
    ),
    Row(
        "5.0 2.2.2.2",
        "PUBACK carrying a topic alias property",
        lambda v: frame(0x40, u16(9), b"\x00", props(b"\x23" + u16(1))),
        v5only(MALFORMED),
    ),
    # ---------------------------------------------------------- SUBSCRIBE
    Row(
        "MQTT-3.8.3-3 (3.1.1) / MQTT-3.8.3-2 (5.0)",
        "SUBSCRIBE without a topic filter",
        subscribe,
        PROTOCOL_ERROR,
    ),
    Row(
        "MQTT-2.3.1-1 (3.1.1) / MQTT-2.2.1-3 (5.0)",
        "SUBSCRIBE with packet id 0",
        lambda v: subscribe(v, ("t", 0), packet_id=0),
        BROKEN,
    ),
    Row(
        "MQTT-3-8.3-4 (3.1.1) / 3.8.3.1 (5.0)",
        "subscription with maximum QoS 3",
        lambda v: subscribe(v, ("t", 3)),
        PROTOCOL_ERROR | {4: any_of(CLOSE)},
    ),
    Row(
        "MQTT-3-8.3-4 (3.1.1)",
        "subscription options bit 2 set in 3.1.1",
        lambda v: subscribe(4, ("t", 0x04)),
        {4: any_of(CLOSE)},
    ),
    Row(
        "MQTT-3.8.3-5",
        "subscription options reserved bits 6-7 set",
        lambda v: subscribe(v, ("t", 0xC0)),
        MALFORMED,
    ),
    Row(
        "5.0 3.8.3.1",
        "retain handling 3",
        lambda v: subscribe(5, ("t", 0x30)),
        v5only(PROTOCOL_ERROR),
    ),
    Row(
        "MQTT-3.8.3-4 (5.0)",
        "no local on a shared subscription",
        lambda v: subscribe(5, ("$share/g/t", 0x04)),
        v5only(PROTOCOL_ERROR),
    ),
    Row(
        "5.0 3.8.2.1.2",
        "subscription identifier 0",
        lambda v: subscribe(5, ("t", 0), properties=props(b"\x0b\x00")),
        v5only(PROTOCOL_ERROR),
    ),
    Row(
        "5.0 3.8.2.1.2",
        "two subscription identifiers",
        lambda v: subscribe(5, ("t", 0), properties=props(b"\x0b\x01", b"\x0b\x02")),
        v5only(PROTOCOL_ERROR),
    ),
    Row(
        "5.0 2.2.2.2",
        "topic alias, a PUBLISH property, in SUBSCRIBE",
        lambda v: subscribe(5, ("t", 0), properties=props(b"\x23" + u16(1))),
        v5only(MALFORMED),
    ),
    Row(
        "MQTT-1.5.3-1 (3.1.1) / MQTT-1.5.4-1 (5.0)",
        "topic filter not well-formed UTF-8",
        lambda v: subscribe(v, (b"\xfe", 0)),
        MALFORMED,
    ),
    Row(
        "MQTT-1.5.3-2 (3.1.1) / MQTT-1.5.4-2 (5.0)",
        "topic filter containing U+0000",
        lambda v: subscribe(v, (b"a\x00", 0)),
        MALFORMED,
    ),
    Row(
        "MQTT-4.7.1-2",
        "# not the last level of a filter",
        lambda v: subscribe(v, ("a/#/b", 0)),
        BAD_FILTER,
    ),
    Row(
        "MQTT-4.7.1-3",
        "+ sharing a level with other characters",
        lambda v: subscribe(v, ("a/b+/c", 0)),
        BAD_FILTER,
    ),
    Row("MQTT-4.7.3-1", "empty topic filter", lambda v: subscribe(v, ("", 0)), BAD_FILTER),
    Row(
        "MQTT-4.8.2-1 (5.0)",
        "shared subscription without a filter",
        lambda v: subscribe(5, ("$share/g", 0)),
        v5only(BAD_FILTER),
    ),
    Row(
        "MQTT-4.8.2-2 (5.0)",
        "share name with a wildcard",
        lambda v: subscribe(5, ("$share/g+/t", 0)),
        v5only(BAD_FILTER),
    ),
    # ---------------------------------------------------------- UNSUBSCRIBE
    Row(
        "MQTT-3.10.3-2",
        "UNSUBSCRIBE without a topic filter",
        unsubscribe,
        PROTOCOL_ERROR,
    ),
    Row(
        "MQTT-2.3.1-1 (3.1.1) / MQTT-2.2.1-3 (5.0)",
        "UNSUBSCRIBE with packet id 0",
        lambda v: unsubscribe(v, "t", packet_id=0),
        BROKEN,
    ),
    Row(
        "MQTT-1.5.3-1 (3.1.1) / MQTT-1.5.4-1 (5.0)",
        "UNSUBSCRIBE filter not UTF-8",
        lambda v: unsubscribe(v, b"\xc0\xaf"),
        MALFORMED,
    ),
    # ---------------------------------------------------------- packets only a server sends
    Row(
        "MQTT-3.1.0-2 / 4.8",
        "CONNACK from a client",
        lambda v: frame(0x20, b"\x00\x00", p5(v)),
        BROKEN,
    ),
    Row("4.8", "SUBACK from a client", lambda v: frame(0x90, u16(1), p5(v), b"\x00"), BROKEN),
    Row("4.8", "PINGRESP from a client", lambda v: b"\xd0\x00", BROKEN),
    # ---------------------------------------------------------- DISCONNECT and AUTH
    Row(
        "5.0 3.14.2.2.2",
        "DISCONNECT setting a session expiry after CONNECT said 0",
        lambda v: frame(0xE0, b"\x00", props(b"\x11" + u32(60))),
        v5only(PROTOCOL_ERROR),
    ),
    Row(
        "5.0 2.2.2.2",
        "DISCONNECT carrying a topic alias property",
        lambda v: frame(0xE0, b"\x00", props(b"\x23" + u16(1))),
        v5only(MALFORMED),
    ),
    Row(
        "MQTT-3.14.1-1 (3.1.1)",
        "3.1.1 DISCONNECT with a body",
        lambda v: frame(0xE0, b"\x00"),
        {4: any_of(CLOSE)},
    ),
    Row(
        "5.0 4.12",
        "AUTH without an authentication method in CONNECT",
        lambda v: frame(0xF0, b"\x18", props(b"\x15" + s("X"))),
        v5only(PROTOCOL_ERROR),
    ),
    Row("MQTT-3.15.1-1", "AUTH with flags 0001", lambda v: b"\xf1\x00", v5only(MALFORMED)),
]

ACKS_BEFORE = SUBACK  # re-exported for the test module's docs
