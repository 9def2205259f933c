"""Hypothesis strategies for valid MQTT 3.1, 3.1.1 and 5.0 packets.

Every strategy yields packets the spec allows in the given protocol version:
5.0-only fields keep their defaults below 5, properties are limited to those
the spec lists for the packet and kept inside their value ranges, and strings
avoid U+0000 and surrogates. So `parse(encode(p, v)) == p` must hold for all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import strategies as st

from thingshub.mqtt.codec import (
    EMPTY,
    MQTT_3_1,
    MQTT_5,
    Auth,
    Connack,
    ConnackCodeV3,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    Publish,
    ReasonCode,
    Suback,
    Subscribe,
    SubscriptionRequest,
    Unsuback,
    Unsubscribe,
    Will,
)
from thingshub.mqtt.codec.properties import PUBLISH, SUBSCRIBE, WILL, allowed_in
from thingshub.mqtt.codec.wire import MAX_VARINT

VERSIONS = (MQTT_3_1, 4, MQTT_5)

# Remaining-length boundaries: the largest value that fits 1, 2 and 3 bytes.
ONE_BYTE_MAX = 127
TWO_BYTES_MAX = 16_383
THREE_BYTES_MAX = 2_097_151

# Any code point except U+0000 and the surrogates, which MQTT strings may not hold.
_chars = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")


def text(min_size: int = 0, max_size: int = 12) -> st.SearchStrategy[str]:
    """An MQTT UTF-8 string: arbitrary unicode minus U+0000 and surrogates."""
    return st.text(_chars, min_size=min_size, max_size=max_size)


u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
flag = st.integers(0, 1)
packet_ids = st.integers(1, 0xFFFF)
qos_levels = st.integers(0, 2)
subscription_ids = st.integers(1, MAX_VARINT)


def _stretch(pattern: bytes, size: int) -> bytes:
    """`size` bytes repeating `pattern`: a big payload without drawing every byte."""
    return (pattern * (size // len(pattern) + 1))[:size]


def _sized_payload(low: int, high: int) -> st.SearchStrategy[bytes]:
    return st.builds(_stretch, st.binary(min_size=1, max_size=8), st.integers(low, high))


def payloads(large: bool = True) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes; with `large`, sometimes big enough for 2-4 length bytes.

    One draw in ten is over 127 bytes and one in forty over 2 MiB (a four-byte
    remaining length), so the big branches are exercised without making every
    example slow.
    """
    small = st.binary(max_size=48)
    if not large:
        return st.one_of(small, _sized_payload(ONE_BYTE_MAX - 8, 300))

    def pick(k: int) -> st.SearchStrategy[bytes]:
        if k < 36:
            return small
        if k < 38:
            return _sized_payload(ONE_BYTE_MAX - 8, TWO_BYTES_MAX + 8)
        if k < 39:
            return _sized_payload(TWO_BYTES_MAX, 40_000)
        return _sized_payload(THREE_BYTES_MAX - 8, THREE_BYTES_MAX + 64)

    return st.integers(0, 39).flatmap(pick)


# Property identifiers (spec 2.2.2.2), by `Properties` field name.
PROPERTY_IDS = {
    "payload_format_indicator": 0x01, "message_expiry_interval": 0x02, "content_type": 0x03,
    "response_topic": 0x08, "correlation_data": 0x09, "subscription_identifiers": 0x0B,
    "session_expiry_interval": 0x11, "assigned_client_identifier": 0x12,
    "server_keep_alive": 0x13, "authentication_method": 0x15, "authentication_data": 0x16,
    "request_problem_information": 0x17, "will_delay_interval": 0x18,
    "request_response_information": 0x19, "response_information": 0x1A,
    "server_reference": 0x1C, "reason_string": 0x1F, "receive_maximum": 0x21,
    "topic_alias_maximum": 0x22, "topic_alias": 0x23, "maximum_qos": 0x24,
    "retain_available": 0x25, "user_properties": 0x26, "maximum_packet_size": 0x27,
    "wildcard_subscription_available": 0x28, "subscription_identifier_available": 0x29,
    "shared_subscription_available": 0x2A,
}  # fmt: skip

# The wire type of each property's value, by identifier (spec 2.2.2.2).
PROPERTY_TYPES = {
    0x01: "byte", 0x02: "u32", 0x03: "str", 0x08: "str", 0x09: "bin", 0x0B: "varint",
    0x11: "u32", 0x12: "str", 0x13: "u16", 0x15: "str", 0x16: "bin", 0x17: "byte",
    0x18: "u32", 0x19: "byte", 0x1A: "str", 0x1C: "str", 0x1F: "str", 0x21: "u16",
    0x22: "u16", 0x23: "u16", 0x24: "byte", 0x25: "byte", 0x26: "pair", 0x27: "u32",
    0x28: "byte", 0x29: "byte", 0x2A: "byte",
}  # fmt: skip

# Which packet may carry which property, transcribed from the spec's table (2.2.2.2)
# rather than from the codec, so a wrong entry in the codec's table shows up.
_WILL_AND_PUBLISH = {"payload_format_indicator", "message_expiry_interval", "content_type",
                     "response_topic", "correlation_data", "user_properties"}  # fmt: skip
_ACK = {"reason_string", "user_properties"}
SPEC_ALLOWED: dict[int, set[str]] = {
    PacketType.CONNECT: {"session_expiry_interval", "authentication_method",
                         "authentication_data", "request_problem_information",
                         "request_response_information", "receive_maximum",
                         "topic_alias_maximum", "user_properties", "maximum_packet_size"},
    PacketType.CONNACK: {"session_expiry_interval", "assigned_client_identifier",
                         "server_keep_alive", "authentication_method", "authentication_data",
                         "response_information", "server_reference", "reason_string",
                         "receive_maximum", "topic_alias_maximum", "maximum_qos",
                         "retain_available", "user_properties", "maximum_packet_size",
                         "wildcard_subscription_available", "subscription_identifier_available",
                         "shared_subscription_available"},
    PacketType.PUBLISH: _WILL_AND_PUBLISH | {"subscription_identifiers", "topic_alias"},
    WILL: _WILL_AND_PUBLISH | {"will_delay_interval"},
    PacketType.PUBACK: _ACK,
    PacketType.PUBREC: _ACK,
    PacketType.PUBREL: _ACK,
    PacketType.PUBCOMP: _ACK,
    PacketType.SUBSCRIBE: {"subscription_identifiers", "user_properties"},
    PacketType.SUBACK: _ACK,
    PacketType.UNSUBSCRIBE: {"user_properties"},
    PacketType.UNSUBACK: _ACK,
    PacketType.PINGREQ: set(),
    PacketType.PINGRESP: set(),
    PacketType.DISCONNECT: {"session_expiry_interval", "server_reference", "reason_string",
                            "user_properties"},
    PacketType.AUTH: {"authentication_method", "authentication_data", "reason_string",
                      "user_properties"},
}  # fmt: skip

# One value strategy per property, by field name, with the spec's ranges.
PROPERTY_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "payload_format_indicator": flag,
    "message_expiry_interval": u32,
    "content_type": text(),
    "response_topic": text(min_size=1),
    "correlation_data": st.binary(max_size=16),
    "session_expiry_interval": u32,
    "assigned_client_identifier": text(),
    "server_keep_alive": u16,
    "authentication_method": text(),
    "authentication_data": st.binary(max_size=16),
    "request_problem_information": flag,
    "will_delay_interval": u32,
    "request_response_information": flag,
    "response_information": text(),
    "server_reference": text(),
    "reason_string": text(),
    "receive_maximum": st.integers(1, 0xFFFF),
    "topic_alias_maximum": u16,
    "topic_alias": st.integers(1, 0xFFFF),
    "maximum_qos": flag,
    "retain_available": flag,
    "user_properties": st.lists(st.tuples(text(), text()), max_size=3).map(tuple),
    "maximum_packet_size": st.integers(1, 0xFFFF_FFFF),
    "wildcard_subscription_available": flag,
    "subscription_identifier_available": flag,
    "shared_subscription_available": flag,
}


def _subscription_identifiers(kind: int) -> st.SearchStrategy[tuple[int, ...]]:
    # Repeatable only in PUBLISH (one per matching subscription); at most one elsewhere.
    most = 3 if kind == PUBLISH else 1
    return st.lists(subscription_ids, min_size=1, max_size=most).map(tuple)


def properties(kind: int) -> st.SearchStrategy[Properties]:
    """Properties valid in packet `kind` (a packet type number, or WILL).

    Sometimes the shared `EMPTY`, sometimes an equal but distinct empty
    `Properties()`, so the writer must not rely on identity alone.
    """
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for name in allowed_in(kind):
        if name == "subscription_identifiers":
            optional[name] = _subscription_identifiers(kind)
        else:
            optional[name] = PROPERTY_VALUES[name]
    built = st.fixed_dictionaries({}, optional=optional).map(lambda d: Properties(**d))
    return st.one_of(st.just(EMPTY), built)


def _props(kind: int, version: int) -> st.SearchStrategy[Properties]:
    return properties(kind) if version == MQTT_5 else st.just(EMPTY)


def _reason_codes(version: int, v5_codes: Sequence[int]) -> st.SearchStrategy[int]:
    return st.sampled_from(v5_codes) if version == MQTT_5 else st.just(0)


_R = ReasonCode
PUBACK_CODES = [
    _R.SUCCESS,
    _R.NO_MATCHING_SUBSCRIBERS,
    _R.UNSPECIFIED_ERROR,
    _R.IMPLEMENTATION_SPECIFIC_ERROR,
    _R.NOT_AUTHORIZED,
    _R.TOPIC_NAME_INVALID,
    _R.PACKET_IDENTIFIER_IN_USE,
    _R.QUOTA_EXCEEDED,
    _R.PAYLOAD_FORMAT_INVALID,
]
PUBREL_CODES = [_R.SUCCESS, _R.PACKET_IDENTIFIER_NOT_FOUND]
SUBACK_CODES_V5 = [
    _R.GRANTED_QOS_1,
    _R.SUCCESS,
    _R.GRANTED_QOS_2,
    _R.UNSPECIFIED_ERROR,
    _R.IMPLEMENTATION_SPECIFIC_ERROR,
    _R.NOT_AUTHORIZED,
    _R.TOPIC_FILTER_INVALID,
    _R.PACKET_IDENTIFIER_IN_USE,
    _R.QUOTA_EXCEEDED,
    _R.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
    _R.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
    _R.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
]
SUBACK_CODES_V3 = [0x00, 0x01, 0x02, 0x80]
UNSUBACK_CODES = [
    _R.SUCCESS,
    _R.NO_SUBSCRIPTION_EXISTED,
    _R.UNSPECIFIED_ERROR,
    _R.IMPLEMENTATION_SPECIFIC_ERROR,
    _R.NOT_AUTHORIZED,
    _R.TOPIC_FILTER_INVALID,
    _R.PACKET_IDENTIFIER_IN_USE,
]
AUTH_CODES = [_R.SUCCESS, _R.CONTINUE_AUTHENTICATION, _R.RE_AUTHENTICATE]


@st.composite
def wills(draw: st.DrawFn, version: int) -> Will:
    return Will(
        topic=draw(text(min_size=1)),
        payload=draw(payloads(large=False)),
        qos=draw(qos_levels),
        retain=draw(st.booleans()),
        properties=draw(_props(WILL, version)),
    )


@st.composite
def connects(draw: st.DrawFn, version: int) -> Connect:
    """CONNECT at `version`, with every combination of will, user name and password."""
    username = draw(st.none() | text())
    password = draw(st.none() | st.binary(max_size=16))
    if version != MQTT_5 and username is None:
        password = None  # a password needs a user name before 5.0
    props = draw(_props(PacketType.CONNECT, version))
    if props.authentication_method is None and props.authentication_data is not None:
        props = dataclasses.replace(props, authentication_data=None)  # data needs a method
    return Connect(
        client_id=draw(text(max_size=23)),
        protocol_level=version,
        clean_start=draw(st.booleans()),
        keepalive=draw(u16),
        username=username,
        password=password,
        will=draw(st.none() | wills(version)),
        properties=props,
    )


@st.composite
def connacks(draw: st.DrawFn, version: int) -> Connack:
    if version == MQTT_5:
        code = draw(st.sampled_from([int(c) for c in ReasonCode if c == 0 or c >= 0x80]))
    else:
        code = draw(st.sampled_from(list(ConnackCodeV3)))
    return Connack(
        reason_code=int(code),
        session_present=draw(st.booleans()) if code == 0 else False,
        properties=draw(_props(PacketType.CONNACK, version)),
    )


@st.composite
def publishes(draw: st.DrawFn, version: int, large: bool = True) -> Publish:
    """PUBLISH at QoS 0/1/2; DUP only with QoS > 0, as the spec demands."""
    qos = draw(qos_levels)
    return Publish(
        topic=draw(text(min_size=0 if version == MQTT_5 else 1, max_size=20)),
        payload=draw(payloads(large)),
        qos=qos,
        retain=draw(st.booleans()),
        dup=draw(st.booleans()) if qos else False,
        packet_id=draw(packet_ids) if qos else None,
        properties=draw(_props(PUBLISH, version)),
    )


@st.composite
def pubacks(draw: st.DrawFn, version: int, ptype: PacketType | None = None) -> PubAck:
    """PUBACK, PUBREC, PUBREL or PUBCOMP (all four when `ptype` is None)."""
    if ptype is None:
        ptype = draw(
            st.sampled_from(
                [PacketType.PUBACK, PacketType.PUBREC, PacketType.PUBREL, PacketType.PUBCOMP]
            )
        )
    codes = PUBACK_CODES if ptype in (PacketType.PUBACK, PacketType.PUBREC) else PUBREL_CODES
    return PubAck(
        type=ptype,
        packet_id=draw(packet_ids),
        reason_code=int(draw(_reason_codes(version, codes))),
        properties=draw(_props(ptype, version)),
    )


@st.composite
def subscription_requests(draw: st.DrawFn, version: int) -> SubscriptionRequest:
    if version != MQTT_5:
        return SubscriptionRequest(draw(text(min_size=1)), draw(qos_levels))
    return SubscriptionRequest(
        topic_filter=draw(text(min_size=1)),
        qos=draw(qos_levels),
        no_local=draw(st.booleans()),
        retain_as_published=draw(st.booleans()),
        retain_handling=draw(st.integers(0, 2)),
    )


@st.composite
def subscribes(draw: st.DrawFn, version: int) -> Subscribe:
    return Subscribe(
        packet_id=draw(packet_ids),
        subscriptions=draw(st.lists(subscription_requests(version), min_size=1, max_size=4)),
        properties=draw(_props(SUBSCRIBE, version)),
    )


@st.composite
def subacks(draw: st.DrawFn, version: int) -> Suback:
    codes = SUBACK_CODES_V5 if version == MQTT_5 else SUBACK_CODES_V3
    return Suback(
        packet_id=draw(packet_ids),
        reason_codes=[int(c) for c in draw(st.lists(st.sampled_from(codes), min_size=1))],
        properties=draw(_props(PacketType.SUBACK, version)),
    )


@st.composite
def unsubscribes(draw: st.DrawFn, version: int) -> Unsubscribe:
    return Unsubscribe(
        packet_id=draw(packet_ids),
        topic_filters=draw(st.lists(text(min_size=1), min_size=1, max_size=4)),
        properties=draw(_props(PacketType.UNSUBSCRIBE, version)),
    )


@st.composite
def unsubacks(draw: st.DrawFn, version: int) -> Unsuback:
    if version != MQTT_5:
        return Unsuback(draw(packet_ids))  # 3.1.1 UNSUBACK has no payload
    return Unsuback(
        packet_id=draw(packet_ids),
        reason_codes=[int(c) for c in draw(st.lists(st.sampled_from(UNSUBACK_CODES), min_size=1))],
        properties=draw(_props(PacketType.UNSUBACK, version)),
    )


@st.composite
def disconnects(draw: st.DrawFn, version: int) -> Disconnect:
    if version != MQTT_5:
        return Disconnect()
    code = draw(st.sampled_from([int(c) for c in ReasonCode if c in (0, 4) or c >= 0x80]))
    return Disconnect(code, draw(properties(PacketType.DISCONNECT)))


@st.composite
def auths(draw: st.DrawFn, version: int) -> Auth:
    assert version == MQTT_5, "AUTH exists only in MQTT 5"
    return Auth(int(draw(st.sampled_from(AUTH_CODES))), draw(properties(PacketType.AUTH)))


def pingreqs(version: int) -> st.SearchStrategy[PingReq]:
    return st.just(PingReq())


def pingresps(version: int) -> st.SearchStrategy[PingResp]:
    return st.just(PingResp())


# Per packet type: version -> strategy. PUBACK and friends share one class.
BY_TYPE: dict[PacketType, Callable[[int], st.SearchStrategy[Packet]]] = {
    PacketType.CONNECT: connects,
    PacketType.CONNACK: connacks,
    PacketType.PUBLISH: publishes,
    PacketType.PUBACK: lambda v: pubacks(v, PacketType.PUBACK),
    PacketType.PUBREC: lambda v: pubacks(v, PacketType.PUBREC),
    PacketType.PUBREL: lambda v: pubacks(v, PacketType.PUBREL),
    PacketType.PUBCOMP: lambda v: pubacks(v, PacketType.PUBCOMP),
    PacketType.SUBSCRIBE: subscribes,
    PacketType.SUBACK: subacks,
    PacketType.UNSUBSCRIBE: unsubscribes,
    PacketType.UNSUBACK: unsubacks,
    PacketType.PINGREQ: pingreqs,
    PacketType.PINGRESP: pingresps,
    PacketType.DISCONNECT: disconnects,
    PacketType.AUTH: auths,
}


def types_in(version: int) -> list[PacketType]:
    """The packet types a version has: AUTH is 5.0 only."""
    return [t for t in PacketType if t != PacketType.AUTH or version == MQTT_5]


def packets(version: int, large: bool = True) -> st.SearchStrategy[Packet]:
    """Any packet valid in `version`; `large=False` keeps payloads small."""
    strategies = [BY_TYPE[t](version) for t in types_in(version) if t != PacketType.PUBLISH]
    return st.one_of(publishes(version, large), *strategies)
