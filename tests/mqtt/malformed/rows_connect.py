"""Rows of the malformed-input table: the start of a connection and CONNECT.

Each row is named after the normative statement it tests ([MQTT-x.y.z-n] of
MQTT 3.1.1 or 5.0, "(3.1.1)"/"(5.0)" where the two numbers differ), or after
the section whose text states the rule where the rule has no number.

What the specifications let a server answer to a bad CONNECT:
- 3.1.1 has no return code for a malformed CONNECT: close (§4.8, [MQTT-3.1.4-1]).
- 5.0 "MAY send a CONNACK with a Reason Code of 0x80 or greater" before it
  closes ([MQTT-4.13.1-1], §3.1.4): close, or CONNACK with that code then close.
"""

from __future__ import annotations

from tests.mqtt.malformed.harness import CLOSE, Answer, Row, accepted, any_of, connack, disconnect
from tests.mqtt.malformed.wire import connect, frame, props, publish, s, u16, u32


def refused(code: int) -> dict[int, tuple[Answer, ...]]:
    """A bad CONNECT: 3.1.1 closes, 5.0 closes after an optional CONNACK with `code`."""
    return {4: any_of(CLOSE), 5: any_of(CLOSE, connack(code))}


MALFORMED_CONNECT = refused(0x81)
PROTOCOL_ERROR_CONNECT = refused(0x82)
WILL = 0x04  # will flag; will QoS is bits 3-4, will retain bit 5
USER, PASSWORD = 0x80, 0x40


def will_tail(version: int, topic: str = "will/t", properties: bytes = b"\x00") -> bytes:
    return (properties if version == 5 else b"") + s(topic) + s(b"bye")


ROWS = [
    # ---------------------------------------------------------- the first packet
    Row(
        "MQTT-3.1.0-1",
        "first packet is PINGREQ, not CONNECT",
        lambda v: b"\xc0\x00",
        {4: any_of(CLOSE), 5: any_of(CLOSE)},
        connected=False,
    ),
    Row(
        "MQTT-3.1.0-1",
        "first packet is PUBLISH, not CONNECT",
        lambda v: publish(4, "t"),
        {4: any_of(CLOSE), 5: any_of(CLOSE)},
        connected=False,
    ),
    Row(
        "MQTT-3.1.0-1",
        "first packet is AUTH, not CONNECT",
        lambda v: b"\xf0\x00",
        {4: any_of(CLOSE), 5: any_of(CLOSE)},
        connected=False,
    ),
    Row(
        "MQTT-3.1.0-2",
        "second CONNECT on a connection",
        connect,
        {4: any_of(CLOSE), 5: any_of(disconnect(0x82))},
    ),
    # ---------------------------------------------------------- fixed header
    Row(
        "MQTT-2.1.3-1 (5.0) / MQTT-2.2.2-2 (3.1.1)",
        "CONNECT fixed header flags not 0",
        lambda v: b"\x11" + connect(v)[1:],
        MALFORMED_CONNECT,
        connected=False,
    ),
    Row(
        "MQTT-1.5.5-1 (5.0) / 2.2.3 (3.1.1)",
        "CONNECT remaining length of five bytes",
        lambda v: b"\x10\xff\xff\xff\xff\x01",
        MALFORMED_CONNECT,
        connected=False,
    ),
    Row(
        "MQTT-3.1.4-1",
        "CONNECT remaining length beyond its fields",
        lambda v: frame(0x10, connect(v)[2:], b"\x00\x00\x00"),
        MALFORMED_CONNECT,
        connected=False,
    ),
    Row(
        "MQTT-3.1.4-1",
        "CONNECT cut after the protocol level",
        lambda v: frame(0x10, s("MQTT"), bytes((v,))),
        MALFORMED_CONNECT,
        connected=False,
    ),
    Row(
        "MQTT-3.2.2-15 (5.0) / 1.5.3 (3.1.1)",
        "CONNECT header announcing more than the maximum packet size, body never sent",
        lambda v: b"\x10\xff\xff\xff\x7f",
        refused(0x95),
        connected=False,
    ),
    # ---------------------------------------------------------- protocol name and level
    Row(
        "MQTT-3.1.2-1",
        "protocol name MQTX",
        lambda v: connect(v, name=b"MQTX"),
        {4: any_of(CLOSE), 5: any_of(CLOSE, connack(0x84))},
        connected=False,
    ),
    Row(
        "MQTT-3.1.2-1",
        "protocol name with invalid UTF-8",
        lambda v: connect(v, name=b"MQ\xff"),
        {4: any_of(CLOSE), 5: any_of(CLOSE, connack(0x81), connack(0x84))},
        connected=False,
    ),
    Row(
        "MQTT-3.1.2-2",
        "protocol level 6 (3.1.1 return code 0x01)",
        lambda v: connect(4, level=6),
        {4: any_of(connack(0x01))},
        connected=False,
    ),
    Row(
        "MQTT-3.1.2-2",
        "protocol level 3 under the name MQTT",
        lambda v: connect(4, level=3),
        {4: any_of(connack(0x01), CLOSE)},
        connected=False,
    ),
    # ---------------------------------------------------------- connect flags
    Row(
        "MQTT-3.1.2-3",
        "CONNECT reserved flag set",
        lambda v: connect(v, flags=0x03),
        MALFORMED_CONNECT,
        connected=False,
    ),
    Row(
        "MQTT-3.1.2-14 (3.1.1) / MQTT-3.1.2-12 (5.0)",
        "will QoS 3",
        lambda v: connect(v, flags=0x02 | WILL | 0x18, tail=will_tail(v)),
        MALFORMED_CONNECT,
        connected=False,
    ),
    Row(
        "MQTT-3.1.2-13 (3.1.1) / MQTT-3.1.2-11 (5.0)",
        "will QoS 1 without the will flag",
        lambda v: connect(v, flags=0x02 | 0x08),
        MALFORMED_CONNECT,
        connected=False,
    ),
    Row(
        "MQTT-3.1.2-15 (3.1.1) / MQTT-3.1.2-13 (5.0)",
        "will retain without the will flag",
        lambda v: connect(v, flags=0x02 | 0x20),
        MALFORMED_CONNECT,
        connected=False,
    ),
    Row(
        "MQTT-3.1.2-9",
        "will flag set but no will topic or message",
        lambda v: connect(v, flags=0x02 | WILL),
        MALFORMED_CONNECT,
        connected=False,
    ),
    Row(
        "MQTT-4.7.1-1",
        "will topic with a wildcard",
        lambda v: connect(v, flags=0x02 | WILL, tail=will_tail(v, "will/#")),
        PROTOCOL_ERROR_CONNECT,
        connected=False,
    ),
    Row(
        "MQTT-1.5.3-2 (3.1.1) / MQTT-1.5.4-2 (5.0)",
        "will topic containing U+0000",
        lambda v: connect(v, flags=0x02 | WILL, tail=will_tail(v, "will\x00t")),
        MALFORMED_CONNECT,
        connected=False,
    ),
    Row(
        "MQTT-3.1.2-22 (3.1.1)",
        "password flag without user name flag (allowed in 5.0)",
        lambda v: connect(v, flags=0x02 | PASSWORD, tail=s(b"secret")),
        {4: any_of(CLOSE), 5: any_of(accepted())},
        connected=False,
    ),
    Row(
        "MQTT-3.1.2-19 (3.1.1) / MQTT-3.1.2-17 (5.0)",
        "user name flag set, no user name",
        lambda v: connect(v, flags=0x02 | USER),
        MALFORMED_CONNECT,
        connected=False,
    ),
    Row(
        "MQTT-3.1.2-21 (3.1.1) / MQTT-3.1.2-19 (5.0)",
        "password flag set, no password",
        lambda v: connect(v, flags=0x02 | USER | PASSWORD, tail=s("user")),
        MALFORMED_CONNECT,
        connected=False,
    ),
    # ---------------------------------------------------------- client id, user name
    Row(
        "MQTT-3.1.3-8 (3.1.1)",
        "empty client id with clean session 0",
        lambda v: connect(v, flags=0x00, client_id=""),
        {4: any_of(connack(0x02)), 5: any_of(accepted())},
        connected=False,
    ),
    Row(
        "MQTT-1.5.3-1 (3.1.1) / MQTT-1.5.4-1 (5.0)",
        "client id not well-formed UTF-8",
        lambda v: connect(v, client_id=b"\xc3\x28"),
        MALFORMED_CONNECT,
        connected=False,
    ),
    Row(
        "MQTT-1.5.3-1 (3.1.1) / MQTT-1.5.4-1 (5.0)",
        "client id with a UTF-16 surrogate",
        lambda v: connect(v, client_id=b"a\xed\xa0\x80"),
        MALFORMED_CONNECT,
        connected=False,
    ),
    Row(
        "MQTT-1.5.3-2 (3.1.1) / MQTT-1.5.4-2 (5.0)",
        "user name containing U+0000",
        lambda v: connect(v, flags=0x02 | USER, tail=s(b"us\x00er")),
        MALFORMED_CONNECT,
        connected=False,
    ),
    # ---------------------------------------------------------- 5.0 properties of CONNECT
    Row(
        "5.0 3.1.2.11.3",
        "receive maximum 0",
        lambda v: connect(v, properties=props(b"\x21" + u16(0))),
        {5: PROTOCOL_ERROR_CONNECT[5]},
        connected=False,
    ),
    Row(
        "5.0 3.1.2.11.4",
        "maximum packet size 0",
        lambda v: connect(v, properties=props(b"\x27" + u32(0))),
        {5: PROTOCOL_ERROR_CONNECT[5]},
        connected=False,
    ),
    Row(
        "5.0 3.1.2.11.2",
        "session expiry interval twice",
        lambda v: connect(v, properties=props(b"\x11" + u32(1), b"\x11" + u32(2))),
        {5: PROTOCOL_ERROR_CONNECT[5]},
        connected=False,
    ),
    Row(
        "5.0 3.1.2.11.6",
        "request problem information 2",
        lambda v: connect(v, properties=props(b"\x17\x02")),
        {5: PROTOCOL_ERROR_CONNECT[5]},
        connected=False,
    ),
    Row(
        "5.0 2.2.2.2",
        "topic alias, a PUBLISH property, in CONNECT",
        lambda v: connect(v, properties=props(b"\x23" + u16(1))),
        {5: MALFORMED_CONNECT[5]},
        connected=False,
    ),
    Row(
        "5.0 2.2.2.2",
        "unknown property identifier 0x7F in CONNECT",
        lambda v: connect(v, properties=props(b"\x7f\x00")),
        {5: MALFORMED_CONNECT[5]},
        connected=False,
    ),
    Row(
        "5.0 2.2.2.2",
        "property length beyond the packet",
        lambda v: connect(v, properties=b"\x40\x11" + u32(1)),
        {5: MALFORMED_CONNECT[5]},
        connected=False,
    ),
    Row(
        "5.0 2.2.2.2",
        "session expiry, not a will property, among the will properties",
        lambda v: connect(
            v, flags=0x02 | WILL, tail=will_tail(v, properties=props(b"\x11" + u32(5)))
        ),
        {5: MALFORMED_CONNECT[5]},
        connected=False,
    ),
    Row(
        "5.0 MQTT-3.3.2-14",
        "will response topic with a wildcard",
        lambda v: connect(
            v, flags=0x02 | WILL, tail=will_tail(v, properties=props(b"\x08" + s("r/+")))
        ),
        {5: PROTOCOL_ERROR_CONNECT[5]},
        connected=False,
    ),
    Row(
        "5.0 3.1.2.11.10",
        "authentication data without authentication method",
        lambda v: connect(v, properties=props(b"\x16" + s(b"data"))),
        {5: PROTOCOL_ERROR_CONNECT[5]},
        connected=False,
    ),
    Row(
        "5.0 MQTT-4.12.0-1",
        "authentication method the server does not offer",
        lambda v: connect(v, properties=props(b"\x15" + s("SCRAM-SHA-1"))),
        {5: any_of(connack(0x8C), connack(0x87))},
        connected=False,
    ),
    Row(
        "5.0 MQTT-1.5.7-1",
        "user property key not well-formed UTF-8",
        lambda v: connect(v, properties=props(b"\x26" + s(b"\xff") + s("v"))),
        {5: MALFORMED_CONNECT[5]},
        connected=False,
    ),
]
