"""Malformed and hostile input to the MQTT codec.

The reader faces untrusted clients: whatever the bytes, it may only return
packets, return None, or raise a `CodecError` whose class and reason code tell
the server how to answer. Explicit cases pin the error for each rule; the
property tests throw random, structured and mutated bytes at it.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.mqtt import strategies as ms
from thingshub.mqtt.codec import (
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    PROTOCOL_MAX_PACKET_SIZE,
    Auth,
    CodecError,
    Connack,
    Connect,
    Disconnect,
    MalformedPacket,
    Packet,
    PacketTooLarge,
    PacketType,
    PingReq,
    PingResp,
    Properties,
    ProtocolError,
    PubAck,
    Publish,
    Reader,
    Suback,
    Subscribe,
    SubscriptionRequest,
    Unsuback,
    Unsubscribe,
    UnsupportedProtocolVersion,
    encode,
)
from thingshub.mqtt.codec.properties import WILL
from thingshub.mqtt.codec.wire import encode_varint

# Pinned, not read from the classes: the server sends these numbers on the wire.
REASON = {
    MalformedPacket: 0x81,
    ProtocolError: 0x82,
    UnsupportedProtocolVersion: 0x84,
    PacketTooLarge: 0x95,
}
READER_VERSIONS = [None, MQTT_3_1, MQTT_3_1_1, MQTT_5]


def h(text: str) -> bytes:
    """Bytes from spaced hex, so the cases below read like packet dumps."""
    return bytes.fromhex(text.replace(" ", ""))


def frame(first: int, body: bytes) -> bytes:
    """A packet with a correct remaining length around `body`."""
    return bytes((first,)) + encode_varint(len(body)) + body


def expect_error(data: bytes, version: int | None, cls: type[CodecError]) -> CodecError:
    """Feed `data` and assert the first `next_packet` raises exactly `cls`; and the
    same when `data` arrives a byte at a time (the reader's other path, for packets
    cut by the stream: the hot packets are read in place only when whole)."""
    reader = Reader(version)
    reader.feed(data)
    with pytest.raises(CodecError) as info:
        reader.next_packet()
    assert type(info.value) is cls, f"{type(info.value).__name__}: {info.value}"
    assert info.value.reason_code == REASON[cls]
    pieces = Reader(version)
    with pytest.raises(CodecError) as cut:
        for byte in data:
            pieces.feed(bytes((byte,)))
            pieces.next_packet()
    assert type(cut.value) is cls, f"in pieces, {type(cut.value).__name__}: {cut.value}"
    return info.value


def connect_bytes(
    name: bytes = b"MQTT",
    level: int = 4,
    flags: int = 0x02,
    props: bytes = b"",
    payload: bytes = h("000163"),
) -> bytes:
    """A CONNECT frame from its parts; client id "c" unless `payload` says otherwise."""
    body = len(name).to_bytes(2, "big") + name + bytes((level, flags)) + h("003c")
    return frame(0x10, body + props + payload)


def publish_v5(props: bytes) -> bytes:
    """A 5.0 QoS 0 PUBLISH to topic "t" whose property block is exactly `props`."""
    return frame(0x30, h("000174") + encode_varint(len(props)) + props)


M, P = MalformedPacket, ProtocolError

CASES = [
    # Fixed header.
    pytest.param(h("30 ff ff ff ff 01"), None, M, id="remaining-length-5-bytes"),
    pytest.param(h("c0 80 80 80 80"), None, M, id="remaining-length-5th-byte-not-needed"),
    pytest.param(h("c0 80 00"), None, M, id="remaining-length-non-minimal-0"),
    pytest.param(h("30 ff 80 00"), None, M, id="remaining-length-non-minimal-3-bytes"),
    pytest.param(h("00 00"), None, M, id="packet-type-0"),
    pytest.param(h("00 00"), MQTT_5, M, id="packet-type-0-v5"),
    pytest.param(h("0f 00"), None, M, id="packet-type-0-with-flags"),
    # PUBLISH.
    pytest.param(h("36 05 00 01 74 00 01"), None, M, id="publish-qos-3"),
    pytest.param(h("3e 05 00 01 74 00 01"), None, M, id="publish-qos-3-dup"),
    pytest.param(h("38 03 00 01 74"), None, M, id="publish-dup-qos-0"),
    pytest.param(h("38 04 00 01 74 00"), MQTT_5, M, id="publish-dup-qos-0-v5"),
    pytest.param(h("30 01 00"), None, M, id="publish-too-short-for-topic"),
    pytest.param(h("30 03 00 05 61"), None, M, id="publish-topic-past-end"),
    pytest.param(h("32 03 00 01 74"), None, M, id="publish-qos1-without-packet-id"),
    pytest.param(h("32 05 00 01 74 00 00"), None, M, id="publish-packet-id-0"),
    pytest.param(h("34 06 00 01 74 00 00 00"), MQTT_5, M, id="publish-qos2-packet-id-0-v5"),
    pytest.param(h("30 03 00 01 ff"), None, M, id="publish-topic-invalid-utf8"),
    pytest.param(h("30 04 00 02 c0 af"), None, M, id="publish-topic-overlong-utf8"),
    pytest.param(h("30 05 00 03 ed a0 80"), None, M, id="publish-topic-surrogate-d800"),
    pytest.param(h("30 05 00 03 ed bf bf"), MQTT_5, M, id="publish-topic-surrogate-dfff-v5"),
    pytest.param(h("30 06 00 04 f4 90 80 80"), None, M, id="publish-topic-above-10ffff"),
    pytest.param(h("30 03 00 01 00"), None, M, id="publish-topic-nul"),
    pytest.param(h("30 04 00 02 61 00"), MQTT_5, M, id="publish-topic-nul-v5"),
    # 5.0 properties, in PUBLISH unless named otherwise.
    pytest.param(h("30 03 00 01 74"), MQTT_5, M, id="props-length-missing"),
    pytest.param(h("30 05 00 01 74 05 01"), MQTT_5, M, id="props-length-past-end"),
    pytest.param(h("30 05 00 01 74 80 00"), MQTT_5, M, id="props-length-non-minimal"),
    pytest.param(h("30 09 00 01 74 03 02 00 00 00 3c"), MQTT_5, M, id="prop-past-props-end"),
    pytest.param(publish_v5(h("04 00")), MQTT_5, M, id="prop-unknown-id-04"),
    pytest.param(publish_v5(h("00")), MQTT_5, M, id="prop-unknown-id-00"),
    pytest.param(publish_v5(h("80 01 00")), MQTT_5, M, id="prop-unknown-id-128"),
    pytest.param(publish_v5(h("81 00")), MQTT_5, M, id="prop-id-non-minimal"),
    pytest.param(publish_v5(h("11 00 00 00 01")), MQTT_5, M, id="prop-session-expiry-in-publish"),
    pytest.param(publish_v5(h("24 01")), MQTT_5, M, id="prop-maximum-qos-in-publish"),
    pytest.param(publish_v5(h("18 00 00 00 01")), MQTT_5, M, id="prop-will-delay-in-publish"),
    pytest.param(publish_v5(h("03 00 01 61 03 00 01 62")), MQTT_5, P, id="prop-content-type-twice"),
    pytest.param(publish_v5(h("23 00 01 23 00 01")), MQTT_5, P, id="prop-topic-alias-twice"),
    pytest.param(publish_v5(h("01 02")), MQTT_5, P, id="prop-payload-format-2"),
    pytest.param(publish_v5(h("01 ff")), MQTT_5, P, id="prop-payload-format-255"),
    pytest.param(publish_v5(h("0b 00")), MQTT_5, P, id="prop-subscription-id-0"),
    pytest.param(publish_v5(h("0b 80 00")), MQTT_5, M, id="prop-subscription-id-non-minimal"),
    pytest.param(publish_v5(h("03 00 01 ff")), MQTT_5, M, id="prop-content-type-invalid-utf8"),
    pytest.param(publish_v5(h("26 00 01 ff 00 00")), MQTT_5, M, id="user-prop-key-invalid-utf8"),
    pytest.param(
        publish_v5(h("26 00 00 00 03 ed a0 80")), MQTT_5, M, id="user-prop-value-surrogate"
    ),
    pytest.param(publish_v5(h("26 00 01 00 00 00")), MQTT_5, M, id="user-prop-key-nul"),
    pytest.param(publish_v5(h("26 00 01 61")), MQTT_5, M, id="user-prop-value-missing"),
    pytest.param(publish_v5(h("02 00 00")), MQTT_5, M, id="prop-u32-truncated"),
    # CONNECT.
    pytest.param(connect_bytes(name=b"MQTX"), None, M, id="connect-unknown-protocol-name"),
    pytest.param(connect_bytes(name=b"mqtt"), None, M, id="connect-lowercase-protocol-name"),
    pytest.param(connect_bytes(name=b"MQTT\x00"), None, M, id="connect-protocol-name-nul"),
    pytest.param(connect_bytes(flags=0x03), None, M, id="connect-reserved-flag"),
    pytest.param(connect_bytes(level=5, flags=0x01, props=h("00")), None, M, id="reserved-v5"),
    pytest.param(connect_bytes(flags=0x1E), None, M, id="connect-will-qos-3"),
    pytest.param(connect_bytes(flags=0x22), None, M, id="connect-will-retain-without-will"),
    pytest.param(connect_bytes(flags=0x0A), None, M, id="connect-will-qos-without-will"),
    pytest.param(
        connect_bytes(flags=0x42, payload=h("000163 000170")),
        None,
        M,
        id="connect-v4-password-without-username",
    ),
    pytest.param(
        connect_bytes(b"MQIsdp", 3, flags=0x42, payload=h("000163 000170")),
        None,
        M,
        id="connect-v3-password-without-username",
    ),
    pytest.param(connect_bytes(flags=0x82), None, M, id="connect-username-flag-no-username"),
    pytest.param(connect_bytes(flags=0x06), None, M, id="connect-will-flag-no-will"),
    pytest.param(connect_bytes(payload=h("0001ff")), None, M, id="connect-client-id-bad-utf8"),
    pytest.param(connect_bytes(payload=h("000100")), None, M, id="connect-client-id-nul"),
    pytest.param(connect_bytes(payload=h("0003eda080")), None, M, id="connect-client-id-surrogate"),
    pytest.param(
        connect_bytes(flags=0x82, payload=h("000163 0001ff")),
        None,
        M,
        id="connect-username-bad-utf8",
    ),
    pytest.param(connect_bytes(payload=b""), None, M, id="connect-client-id-missing"),
    pytest.param(connect_bytes(payload=h("000163 00")), None, M, id="connect-trailing-byte"),
    pytest.param(
        frame(0x10, h("00 04 4d 51 54 54 04 02 00")), None, M, id="connect-ends-in-keepalive"
    ),
    pytest.param(
        connect_bytes(level=5, props=h("05 18 00 00 00 01")), None, M, id="v5-will-delay-in-connect"
    ),
    pytest.param(connect_bytes(level=5, props=h("03 21 00 00")), None, P, id="v5-receive-max-0"),
    pytest.param(
        connect_bytes(level=5, props=h("05 27 00 00 00 00")), None, P, id="v5-max-packet-size-0"
    ),
    pytest.param(connect_bytes(level=5, props=h("02 17 02")), None, P, id="v5-request-problem-2"),
    pytest.param(
        connect_bytes(level=5, props=h("06 21 00 01 21 00 02")), None, P, id="v5-receive-max-twice"
    ),
    pytest.param(
        connect_bytes(level=5, flags=0x06, props=h("00"), payload=h("000163 05 1100000001")),
        None,
        M,
        id="v5-session-expiry-in-will",
    ),
    pytest.param(connect_bytes(level=5), None, M, id="v5-connect-props-missing"),
    pytest.param(
        connect_bytes(level=5, props=h("04 16 00 01 61")), None, P, id="v5-auth-data-no-method"
    ),
    # CONNACK.
    pytest.param(h("20 02 02 00"), MQTT_3_1_1, M, id="connack-reserved-ack-flags"),
    pytest.param(h("20 03 00 00 00"), MQTT_3_1_1, M, id="connack-v4-trailing-byte"),
    pytest.param(h("20 01 00"), MQTT_3_1_1, M, id="connack-too-short"),
    pytest.param(h("20 02 00 00"), MQTT_5, M, id="connack-v5-props-missing"),
    pytest.param(h("20 05 00 00 02 24 02"), MQTT_5, P, id="connack-maximum-qos-2"),
    pytest.param(h("20 05 00 00 02 28 02"), MQTT_5, P, id="connack-wildcard-available-2"),
    pytest.param(h("20 06 00 00 03 23 00 01"), MQTT_5, M, id="connack-topic-alias"),
    pytest.param(h("20 06 00 00 03 21 00 00"), MQTT_5, P, id="connack-receive-maximum-0"),
    pytest.param(h("20 07 00 00 03 21 00 01 ff"), MQTT_5, M, id="connack-v5-trailing"),
    # PUBACK, PUBREC, PUBREL, PUBCOMP.
    pytest.param(h("40 02 00 00"), MQTT_3_1_1, M, id="puback-packet-id-0"),
    pytest.param(h("50 02 00 00"), MQTT_5, M, id="pubrec-packet-id-0"),
    pytest.param(h("62 02 00 00"), MQTT_3_1_1, M, id="pubrel-packet-id-0"),
    pytest.param(h("70 03 00 00 00"), MQTT_5, M, id="pubcomp-packet-id-0"),
    pytest.param(h("40 01 00"), MQTT_3_1_1, M, id="puback-too-short"),
    pytest.param(h("40 03 00 01 00"), MQTT_3_1_1, M, id="puback-v4-trailing-byte"),
    pytest.param(h("40 05 00 01 00 00 ff"), MQTT_5, M, id="puback-v5-trailing-byte"),
    pytest.param(h("40 04 00 01 00 05"), MQTT_5, M, id="puback-v5-props-past-end"),
    pytest.param(h("40 07 00 01 00 03 23 00 01"), MQTT_5, M, id="puback-topic-alias"),
    pytest.param(h("62 09 00 01 92 05 11 00 00 00 01"), MQTT_5, M, id="pubrel-session-expiry"),
    # SUBSCRIBE.
    pytest.param(h("82 02 00 01"), MQTT_3_1_1, P, id="subscribe-v4-no-filters"),
    pytest.param(h("82 03 00 01 00"), MQTT_5, P, id="subscribe-v5-no-filters"),
    pytest.param(h("82 06 00 00 00 01 61 00"), MQTT_3_1_1, M, id="subscribe-packet-id-0"),
    pytest.param(h("82 05 00 01 00 01 61"), MQTT_3_1_1, M, id="subscribe-options-missing"),
    pytest.param(h("82 06 00 01 00 01 ff 00"), MQTT_3_1_1, M, id="subscribe-filter-bad-utf8"),
    pytest.param(h("82 08 00 01 00 03 ed a0 80 00"), MQTT_3_1_1, M, id="subscribe-filter-surr"),
    pytest.param(h("82 06 00 01 00 01 61 03"), MQTT_3_1_1, M, id="subscribe-v4-qos-3"),
    pytest.param(h("82 07 00 01 00 00 01 61 03"), MQTT_5, P, id="subscribe-v5-qos-3"),
    pytest.param(h("82 06 00 01 00 01 61 04"), MQTT_3_1_1, M, id="subscribe-v4-no-local-bit"),
    pytest.param(h("82 06 00 01 00 01 61 80"), MQTT_3_1_1, M, id="subscribe-v4-bit-7"),
    pytest.param(h("82 07 00 01 00 00 01 61 40"), MQTT_5, M, id="subscribe-v5-bit-6"),
    pytest.param(h("82 07 00 01 00 00 01 61 80"), MQTT_5, M, id="subscribe-v5-bit-7"),
    pytest.param(h("82 07 00 01 00 00 01 61 30"), MQTT_5, P, id="subscribe-retain-handling-3"),
    pytest.param(h("82 0b 00 01 04 0b 01 0b 02 00 01 61 00"), MQTT_5, P, id="subscribe-2-sub-ids"),
    pytest.param(h("82 09 00 01 02 0b 00 00 01 61 00"), MQTT_5, P, id="subscribe-sub-id-0"),
    pytest.param(
        h("82 0c 00 01 05 02 00 00 00 01 00 01 61 00"), MQTT_5, M, id="subscribe-message-expiry"
    ),
    # SUBACK, UNSUBSCRIBE, UNSUBACK.
    pytest.param(h("90 02 00 01"), MQTT_3_1_1, P, id="suback-v4-no-codes"),
    pytest.param(h("90 03 00 01 00"), MQTT_5, P, id="suback-v5-no-codes"),
    pytest.param(h("90 03 00 00 00"), MQTT_3_1_1, M, id="suback-packet-id-0"),
    pytest.param(h("a2 02 00 01"), MQTT_3_1_1, P, id="unsubscribe-v4-no-filters"),
    pytest.param(h("a2 03 00 01 00"), MQTT_5, P, id="unsubscribe-v5-no-filters"),
    pytest.param(h("a2 05 00 00 00 01 61"), MQTT_3_1_1, M, id="unsubscribe-packet-id-0"),
    pytest.param(h("a2 05 00 01 00 01 ff"), MQTT_3_1_1, M, id="unsubscribe-filter-bad-utf8"),
    pytest.param(h("a2 05 00 01 00 02 61"), MQTT_3_1_1, M, id="unsubscribe-filter-past-end"),
    pytest.param(h("b0 02 00 00"), MQTT_3_1_1, M, id="unsuback-packet-id-0"),
    pytest.param(h("b0 03 00 01 00"), MQTT_3_1_1, M, id="unsuback-v4-trailing-byte"),
    pytest.param(h("b0 02 00 01"), MQTT_5, M, id="unsuback-v5-props-missing"),
    # PINGREQ, PINGRESP, DISCONNECT, AUTH.
    pytest.param(h("c0 01 00"), MQTT_3_1_1, M, id="pingreq-with-body"),
    pytest.param(h("c0 01 00"), MQTT_5, M, id="pingreq-with-body-v5"),
    pytest.param(h("d0 02 00 00"), MQTT_3_1_1, M, id="pingresp-with-body"),
    pytest.param(h("e0 01 00"), MQTT_3_1_1, M, id="disconnect-v4-with-body"),
    pytest.param(h("e0 01 00"), None, M, id="disconnect-unknown-version-with-body"),
    pytest.param(h("e0 03 00 00 ff"), MQTT_5, M, id="disconnect-v5-trailing-byte"),
    pytest.param(h("e0 05 00 03 23 00 01"), MQTT_5, M, id="disconnect-topic-alias"),
    pytest.param(h("e0 05 00 03 21 00 01"), MQTT_5, M, id="disconnect-receive-maximum"),
    pytest.param(h("f0 00"), MQTT_3_1_1, M, id="auth-v4"),
    pytest.param(h("f0 00"), MQTT_3_1, M, id="auth-v3"),
    pytest.param(h("f0 00"), None, M, id="auth-before-connect"),
    pytest.param(h("f0 05 18 03 23 00 01"), MQTT_5, M, id="auth-topic-alias"),
    pytest.param(h("f0 06 18 04 15 00 01 ff"), MQTT_5, M, id="auth-method-bad-utf8"),
]


@pytest.mark.parametrize(("data", "version", "error"), CASES)
def test_malformed(data: bytes, version: int | None, error: type[CodecError]) -> None:
    """Each broken rule raises its own error class with the matching reason code."""
    expect_error(data, version, error)


@pytest.mark.parametrize(
    ("data", "level"),
    [
        pytest.param(connect_bytes(level=6), 6, id="mqtt-level-6"),
        pytest.param(connect_bytes(level=3), 3, id="mqtt-level-3"),
        pytest.param(connect_bytes(level=0), 0, id="mqtt-level-0"),
        pytest.param(connect_bytes(level=0xFF), 0xFF, id="mqtt-level-255"),
        pytest.param(connect_bytes(b"MQIsdp", 4), 4, id="mqisdp-level-4"),
        pytest.param(connect_bytes(b"MQIsdp", 5), 5, id="mqisdp-level-5"),
    ],
)
def test_unsupported_protocol_level(data: bytes, level: int) -> None:
    """An unknown level is its own error, carrying the level so the server can answer in kind."""
    for version in READER_VERSIONS:
        exc = expect_error(data, version, UnsupportedProtocolVersion)
        assert isinstance(exc, UnsupportedProtocolVersion)
        assert exc.level == level


# --- reserved flag bits ----------------------------------------------------------------

# One valid packet of each type other than PUBLISH, and the flags nibble it requires.
FLAG_SAMPLES: list[tuple[Packet, int]] = [
    (Connect("c", MQTT_5), 0),
    (Connack(), 0),
    (PubAck(PacketType.PUBACK, 1), 0),
    (PubAck(PacketType.PUBREC, 1), 0),
    (PubAck(PacketType.PUBREL, 1), 2),
    (PubAck(PacketType.PUBCOMP, 1), 0),
    (Subscribe(1, [SubscriptionRequest("a")]), 2),
    (Suback(1, [0]), 0),
    (Unsubscribe(1, ["a"]), 2),
    (Unsuback(1, [0]), 0),
    (PingReq(), 0),
    (PingResp(), 0),
    (Disconnect(), 0),
    (Auth(), 0),
]


@pytest.mark.parametrize(
    ("packet", "required"), [pytest.param(p, f, id=p.type.name) for p, f in FLAG_SAMPLES]
)
def test_reserved_flag_bits(packet: Packet, required: int) -> None:
    """Only the flags nibble the spec fixes for the type is accepted; the other 15 are malformed."""
    data = encode(packet, MQTT_5)
    assert data[0] & 0x0F == required
    reader = Reader(MQTT_5)
    reader.feed(data)
    assert reader.next_packet() == packet
    for flags in range(16):
        if flags != required:
            expect_error(bytes((data[0] & 0xF0 | flags,)) + data[1:], MQTT_5, MalformedPacket)


# --- packet size -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "header"),
    [
        pytest.param(100, "30 63", id="1-byte-length"),
        pytest.param(200, "30 c6 01", id="2-byte-length"),
        pytest.param(20_000, "30 9d 9c 01", id="3-byte-length"),
        pytest.param(1024, "30 ff ff ff 7f", id="largest-length"),
        pytest.param(1, "c0 00", id="pingreq-over-tiny-limit"),
    ],
)
def test_packet_too_large_from_header_alone(limit: int, header: str) -> None:
    """The size (header included) is refused as soon as the length is known, before any body."""
    reader = Reader(MQTT_5, max_packet_size=limit)
    reader.feed(h(header))
    with pytest.raises(PacketTooLarge) as info:
        reader.next_packet()
    assert type(info.value) is PacketTooLarge
    assert info.value.reason_code == 0x95


@pytest.mark.parametrize("limit", [2, 100, 131, 20_000])
def test_packet_at_size_limit_is_accepted(limit: int) -> None:
    """A packet of exactly `max_packet_size` bytes, fixed header included, is fine."""
    packet: Packet
    if limit == 2:
        packet = PingReq()
    else:
        length = next(n for n in range(limit) if 1 + len(encode_varint(n)) + n == limit)
        packet = Publish("t", b"x" * (length - 3))  # the topic "t" takes 3 bytes
    data = encode(packet, MQTT_3_1_1)
    assert len(data) == limit
    reader = Reader(MQTT_3_1_1, max_packet_size=limit)
    reader.feed(data[:-1])
    assert reader.next_packet() is None
    reader.feed(data[-1:])
    assert reader.next_packet() == packet
    smaller = Reader(MQTT_3_1_1, max_packet_size=limit - 1)
    smaller.feed(data[:5])
    with pytest.raises(PacketTooLarge):
        smaller.next_packet()


# --- edges that must stay valid --------------------------------------------------------

VALID_EDGES = [
    pytest.param(
        connect_bytes(level=5, flags=0x42, props=h("00"), payload=h("000163 000170")),
        None,
        Connect("c", MQTT_5, password=b"p"),
        id="v5-password-without-username",
    ),
    pytest.param(
        publish_v5(h("0b 01 0b 02 0b ff ff ff 7f")),
        MQTT_5,
        Publish("t", properties=Properties(subscription_identifiers=(1, 2, 268_435_455))),
        id="publish-repeated-subscription-ids",
    ),
    pytest.param(
        publish_v5(h("26 00 01 6b 00 00 26 00 01 6b 00 00")),
        MQTT_5,
        Publish("t", properties=Properties(user_properties=(("k", ""), ("k", "")))),
        id="repeated-identical-user-properties",
    ),
    pytest.param(
        h("30 06 00 03 ef bf bf 00"),
        MQTT_3_1_1,
        Publish("\uffff", b"\x00"),
        id="noncharacter-uffff-is-allowed",
    ),
    pytest.param(
        h("30 06 00 04 f0 9f 98 80"),
        None,
        Publish("\U0001f600"),
        id="four-byte-utf8",
    ),
    pytest.param(
        h("40 04 00 01 00 00"), MQTT_5, PubAck(PacketType.PUBACK, 1), id="puback-explicit-empty"
    ),
    pytest.param(h("e0 02 00 00"), MQTT_5, Disconnect(), id="disconnect-explicit-empty-properties"),
    pytest.param(h("b0 03 00 01 00"), MQTT_5, Unsuback(1), id="unsuback-v5-no-codes"),
    pytest.param(connect_bytes(b"MQIsdp", 3), None, Connect("c", MQTT_3_1), id="mqisdp-level-3"),
]


@pytest.mark.parametrize(("data", "version", "packet"), VALID_EDGES)
def test_valid_edges(data: bytes, version: int | None, packet: Packet) -> None:
    """Close to the malformed cases but legal: the checks must not be stricter than the spec."""
    reader = Reader(version)
    reader.feed(data)
    assert reader.next_packet() == packet
    assert reader.buffered == 0


# --- nothing but CodecError, whatever the bytes ----------------------------------------


def consume(
    data: bytes, version: int | None, max_packet_size: int = PROTOCOL_MAX_PACKET_SIZE
) -> list[Packet]:
    """Parse everything in `data`; stop at the first CodecError (the stream is then lost).

    Any packet the reader accepts must itself survive encode and parse, so the
    reader never builds a packet the rest of the server could not send back.
    """
    reader = Reader(version, max_packet_size)
    reader.feed(data)
    got: list[Packet] = []
    try:
        while (packet := reader.next_packet()) is not None:
            got.append(packet)
            out_version = reader.version or MQTT_3_1_1
            again = Reader(out_version)
            again.feed(encode(packet, out_version))
            assert again.next_packet() == packet
            assert again.buffered == 0
    except CodecError as exc:
        assert exc.reason_code in REASON.values()
    return got


# Plain random bytes are cheap, so they get many examples; structured fuzzing fewer.
fuzz_settings = settings(
    max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
structured_fuzz_settings = settings(
    max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@fuzz_settings
@given(data=st.binary(max_size=256), version=st.sampled_from(READER_VERSIONS))
def test_arbitrary_bytes(data: bytes, version: int | None) -> None:
    """Random bytes raise nothing but CodecError."""
    consume(data, version)


# First bytes worth trying: every valid one, plus anything at all.
_VALID_FIRST = [0x10, 0x20, *range(0x30, 0x3E), 0x40, 0x50, 0x62, 0x70, 0x82, 0x90, 0xA2,
                0xB0, 0xC0, 0xD0, 0xE0, 0xF0]  # fmt: skip
first_bytes = st.sampled_from(_VALID_FIRST) | st.integers(0, 255)


@structured_fuzz_settings
@given(
    frames=st.lists(st.tuples(first_bytes, st.binary(max_size=64)), min_size=1, max_size=3),
    version=st.sampled_from(READER_VERSIONS),
)
def test_random_bodies_in_valid_frames(
    frames: list[tuple[int, bytes]], version: int | None
) -> None:
    """A correct fixed header around random bytes gets past framing into every decoder."""
    consume(b"".join(frame(first, body) for first, body in frames), version)


# Mostly valid UTF-8 (so parsing goes on to the next property), sometimes any bytes.
_raw_str = (
    st.integers(0, 3)
    .flatmap(lambda k: st.binary(max_size=4) if k == 0 else ms.text(max_size=4).map(str.encode))
    .map(lambda b: len(b).to_bytes(2, "big") + b)
)
_VALUE_BYTES = {
    "byte": st.integers(0, 2).map(lambda n: bytes((n,))),
    "u16": st.sampled_from([0, 1, 0xFFFF]).map(lambda n: n.to_bytes(2, "big")),
    "u32": st.sampled_from([0, 1, 0xFFFFFFFF]).map(lambda n: n.to_bytes(4, "big")),
    "varint": st.integers(0, 300).map(encode_varint),
    "str": _raw_str,
    "bin": _raw_str,
    "pair": st.tuples(_raw_str, _raw_str).map(b"".join),
}


@st.composite
def property_blocks(draw: st.DrawFn, kind: int) -> bytes:
    """A property block for packet `kind`: mostly well-typed properties the packet may
    carry (values in and out of range, some repeated), some misplaced, some garbage."""
    allowed = sorted(ms.PROPERTY_IDS[name] for name in ms.SPEC_ALLOWED[kind])
    items = []
    for _ in range(draw(st.integers(0, 4))):
        pick = draw(st.integers(0, 9))
        if pick == 0:
            items.append(draw(st.binary(min_size=1, max_size=4)))
            continue
        if pick < 7 and allowed:
            ident = draw(st.sampled_from(allowed))
        else:
            ident = draw(st.sampled_from(sorted(ms.PROPERTY_TYPES)))
        items.append(bytes((ident,)) + draw(_VALUE_BYTES[ms.PROPERTY_TYPES[ident]]))
    block = b"".join(items)
    return encode_varint(len(block)) + block


# Packet kind -> (first byte, bytes before the property block, bytes after it).
_AROUND_PROPERTIES = {
    PacketType.CONNACK: (0x20, h("0000"), b""),
    PacketType.PUBLISH: (0x30, h("000174"), b"payload"),
    PacketType.PUBACK: (0x40, h("0001 10"), b""),
    PacketType.PUBREL: (0x62, h("0001 00"), b""),
    PacketType.SUBSCRIBE: (0x82, h("0001"), h("000161 00")),
    PacketType.SUBACK: (0x90, h("0001"), h("00")),
    PacketType.UNSUBSCRIBE: (0xA2, h("0001"), h("000161")),
    PacketType.UNSUBACK: (0xB0, h("0001"), h("00")),
    PacketType.DISCONNECT: (0xE0, h("00"), b""),
    PacketType.AUTH: (0xF0, h("18"), b""),
}
PROPERTY_KINDS = [PacketType.CONNECT, WILL, *_AROUND_PROPERTIES]


def _v5_with_properties(kind: int, props: bytes) -> bytes:
    """A 5.0 packet of the given kind around a property block."""
    if kind == PacketType.CONNECT:
        return connect_bytes(level=5, props=props)
    if kind == WILL:
        # Will flag set; the block sits between the client id and the will topic.
        will = h("000163") + props + h("000174 0000")
        return connect_bytes(level=5, flags=0x06, props=h("00"), payload=will)
    first, before, after = _AROUND_PROPERTIES[PacketType(kind)]
    return frame(first, before + props + after)


@structured_fuzz_settings
@given(data=st.data(), kind=st.sampled_from(PROPERTY_KINDS))
def test_property_soup(data: st.DataObject, kind: int) -> None:
    """Well-typed but arbitrary property mixes either parse faithfully or raise CodecError."""
    consume(_v5_with_properties(kind, data.draw(property_blocks(kind))), MQTT_5)


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` with a few bits flipped, bytes inserted, overwritten or deleted, or cut short."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "insert", "overwrite", "delete", "truncate"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if op == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == "overwrite" and out:
            out[at] = draw(st.integers(0, 255))
        elif op == "delete":
            del out[at : at + draw(st.integers(1, 4))]
        else:
            del out[at:]
    return bytes(out)


@pytest.mark.parametrize("version", ms.VERSIONS)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_valid_packets(version: int, data: st.DataObject) -> None:
    """Valid encodings, damaged: every reader version copes, with packets or a CodecError."""
    packets = data.draw(st.lists(ms.packets(version, large=False), min_size=1, max_size=3))
    damaged = data.draw(mutations(b"".join(encode(p, version) for p in packets)))
    for reader_version in READER_VERSIONS:
        consume(damaged, reader_version)
    consume(damaged, version, max_packet_size=64)


@pytest.mark.parametrize("version", ms.VERSIONS)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_truncated_packet_is_incomplete_not_an_error(version: int, data: st.DataObject) -> None:
    """Any proper prefix of a valid packet is just incomplete: None, and nothing consumed."""
    raw = encode(data.draw(ms.packets(version, large=False)), version)
    cut = data.draw(st.integers(0, len(raw) - 1))
    reader = Reader(version)
    reader.feed(raw[:cut])
    assert reader.next_packet() is None
    assert reader.buffered == cut
