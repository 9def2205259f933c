"""MQTT 5.0 properties (spec section 2.2.2.2 and 3.x.2.x).

Rules:
- `Properties` is immutable; absent properties are None (or an empty tuple
  for the two that may repeat: user properties and subscription identifiers).
  `EMPTY` is shared, so a packet without properties allocates nothing.
- A property may appear only in the packets the spec lists for it: one in
  another packet is malformed, like an unknown one (5.0 section 2.2.2.2: "an
  Identifier which is not valid for its packet type ... is a Malformed
  Packet"). At most once unless it is a user property or (in PUBLISH) a
  subscription identifier: a second one, or a value outside its range (a 0/1
  flag that is 2, a receive maximum or maximum packet size of 0, a
  subscription identifier of 0) is a protocol error.
- Properties are written in ascending identifier order, user properties last,
  so equal `Properties` always serialize to equal bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Final

from thingshub.mqtt.codec.errors import MalformedPacket, ProtocolError
from thingshub.mqtt.codec.wire import (
    decode_utf8,
    encode_binary,
    encode_str,
    encode_u16,
    encode_u32,
    encode_varint,
    read_binary,
    read_str,
    read_u8,
    read_u16,
    read_u32,
    read_varint,
)

# Packet kinds as property contexts: the packet type numbers, plus WILL for the
# will properties inside CONNECT's payload.
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT, AUTH = 8, 9, 10, 11, 14, 15
WILL: Final = 100

_BYTE, _U16, _U32, _VARINT, _STR, _BIN, _PAIR = range(7)
_ACKS = frozenset({PUBACK, PUBREC, PUBREL, PUBCOMP})
_ALL = frozenset(
    {
        CONNECT,
        CONNACK,
        PUBLISH,
        PUBACK,
        PUBREC,
        PUBREL,
        PUBCOMP,
        SUBSCRIBE,
        SUBACK,
        UNSUBSCRIBE,
        UNSUBACK,
        DISCONNECT,
        AUTH,
        WILL,
    }
)

# identifier -> (field name, type, packets it may appear in, is a 0/1 flag)
_SPEC: dict[int, tuple[str, int, frozenset[int], bool]] = {
    0x01: ("payload_format_indicator", _BYTE, frozenset({PUBLISH, WILL}), True),
    0x02: ("message_expiry_interval", _U32, frozenset({PUBLISH, WILL}), False),
    0x03: ("content_type", _STR, frozenset({PUBLISH, WILL}), False),
    0x08: ("response_topic", _STR, frozenset({PUBLISH, WILL}), False),
    0x09: ("correlation_data", _BIN, frozenset({PUBLISH, WILL}), False),
    0x0B: ("subscription_identifiers", _VARINT, frozenset({PUBLISH, SUBSCRIBE}), False),
    0x11: ("session_expiry_interval", _U32, frozenset({CONNECT, CONNACK, DISCONNECT}), False),
    0x12: ("assigned_client_identifier", _STR, frozenset({CONNACK}), False),
    0x13: ("server_keep_alive", _U16, frozenset({CONNACK}), False),
    0x15: ("authentication_method", _STR, frozenset({CONNECT, CONNACK, AUTH}), False),
    0x16: ("authentication_data", _BIN, frozenset({CONNECT, CONNACK, AUTH}), False),
    0x17: ("request_problem_information", _BYTE, frozenset({CONNECT}), True),
    0x18: ("will_delay_interval", _U32, frozenset({WILL}), False),
    0x19: ("request_response_information", _BYTE, frozenset({CONNECT}), True),
    0x1A: ("response_information", _STR, frozenset({CONNACK}), False),
    0x1C: ("server_reference", _STR, frozenset({CONNACK, DISCONNECT}), False),
    0x1F: (
        "reason_string",
        _STR,
        frozenset({CONNACK, SUBACK, UNSUBACK, DISCONNECT, AUTH}) | _ACKS,
        False,
    ),
    0x21: ("receive_maximum", _U16, frozenset({CONNECT, CONNACK}), False),
    0x22: ("topic_alias_maximum", _U16, frozenset({CONNECT, CONNACK}), False),
    0x23: ("topic_alias", _U16, frozenset({PUBLISH}), False),
    0x24: ("maximum_qos", _BYTE, frozenset({CONNACK}), True),
    0x25: ("retain_available", _BYTE, frozenset({CONNACK}), True),
    0x26: ("user_properties", _PAIR, _ALL, False),
    0x27: ("maximum_packet_size", _U32, frozenset({CONNECT, CONNACK}), False),
    0x28: ("wildcard_subscription_available", _BYTE, frozenset({CONNACK}), True),
    0x29: ("subscription_identifier_available", _BYTE, frozenset({CONNACK}), True),
    0x2A: ("shared_subscription_available", _BYTE, frozenset({CONNACK}), True),
}
_NONZERO = frozenset({0x0B, 0x21, 0x27})
_BY_NAME = {name: (pid, typ) for pid, (name, typ, _, _) in _SPEC.items()}
_REPEATABLE = frozenset({"user_properties", "subscription_identifiers"})


@dataclass(frozen=True, slots=True)
class Properties:
    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    subscription_identifiers: tuple[int, ...] = ()
    session_expiry_interval: int | None = None
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None
    authentication_method: str | None = None
    authentication_data: bytes | None = None
    request_problem_information: int | None = None
    will_delay_interval: int | None = None
    request_response_information: int | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: int | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    maximum_packet_size: int | None = None
    wildcard_subscription_available: int | None = None
    subscription_identifier_available: int | None = None
    shared_subscription_available: int | None = None

    def __bool__(self) -> bool:
        return self != EMPTY


EMPTY: Final = Properties()
_FIELD_ORDER = [f.name for f in fields(Properties)]


def allowed_in(kind: int) -> list[str]:
    """Names of the properties a packet kind may carry (used by tests)."""
    return [name for name, _, kinds, _ in _SPEC.values() if kind in kinds]


def read_properties(data: bytes, pos: int, end: int, kind: int) -> tuple[Properties, int]:
    """Read a property length and the properties after it."""
    length, pos = read_varint(data, pos, end)
    stop = pos + length
    if stop > end:
        raise MalformedPacket("property length runs past the end of the packet")
    if length == 0:
        return EMPTY, pos
    values: dict[str, Any] = {}
    while pos < stop:
        ident, pos = read_varint(data, pos, stop)
        spec = _SPEC.get(ident)
        if spec is None:
            raise MalformedPacket(f"unknown property identifier 0x{ident:02x}")
        name, typ, kinds, is_flag = spec
        if kind not in kinds:
            raise MalformedPacket(f"property {name} is not allowed in this packet")
        value: Any
        if typ == _BYTE:
            value, pos = read_u8(data, pos, stop)
        elif typ == _U16:
            value, pos = read_u16(data, pos, stop)
        elif typ == _U32:
            value, pos = read_u32(data, pos, stop)
        elif typ == _VARINT:
            value, pos = read_varint(data, pos, stop)
        elif typ == _STR:
            value, pos = read_str(data, pos, stop)
        elif typ == _BIN:
            value, pos = read_binary(data, pos, stop)
        else:
            k, pos = read_binary(data, pos, stop)
            v, pos = read_binary(data, pos, stop)
            value = (decode_utf8(k), decode_utf8(v))
        if is_flag and value > 1:
            raise ProtocolError(f"property {name} must be 0 or 1")
        if ident in _NONZERO and value == 0:
            raise ProtocolError(f"property {name} must not be 0")
        if name in _REPEATABLE:
            if name == "subscription_identifiers" and kind != PUBLISH and name in values:
                raise ProtocolError("more than one subscription identifier")
            values[name] = (*values.get(name, ()), value)
        elif name in values:
            raise ProtocolError(f"property {name} appears twice")
        else:
            values[name] = value
    # Every read above is bounded by `stop`: the loop ends exactly there.
    return Properties(**values), pos


def encode_properties(props: Properties) -> bytes:
    """The property length followed by the properties; `b"\\x00"` for none."""
    if props is EMPTY:
        return b"\x00"
    out = bytearray()
    for name in _FIELD_ORDER:
        value = getattr(props, name)
        if value is None or value == ():
            continue
        ident, typ = _BY_NAME[name]
        if name == "user_properties":
            continue
        items = value if name == "subscription_identifiers" else (value,)
        for item in items:
            out += encode_varint(ident)
            if typ == _BYTE:
                out.append(item)
            elif typ == _U16:
                out += encode_u16(item)
            elif typ == _U32:
                out += encode_u32(item)
            elif typ == _VARINT:
                out += encode_varint(item)
            elif typ == _STR:
                out += encode_str(item)
            else:
                out += encode_binary(item)
    for key, val in props.user_properties:
        out.append(0x26)
        out += encode_str(key)
        out += encode_str(val)
    return encode_varint(len(out)) + bytes(out)
