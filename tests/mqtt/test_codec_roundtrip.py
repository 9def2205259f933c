"""Round trips through the MQTT codec: `parse(encode(p, v)) == p`, however the bytes arrive.

Also pins the encoding with hand-written bytes, so writer and reader cannot
agree on a wrong format without a test noticing.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.mqtt import strategies as ms
from thingshub.mqtt.codec import (
    EMPTY,
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    Auth,
    Connack,
    ConnackCodeV3,
    Connect,
    Disconnect,
    MalformedPacket,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    Publish,
    Reader,
    ReasonCode,
    Suback,
    Subscribe,
    SubscriptionRequest,
    Unsuback,
    Unsubscribe,
    Will,
    connack_code_v3,
    encode,
    encode_ack,
    encode_properties,
    encode_publish,
)
from thingshub.mqtt.codec.properties import WILL, allowed_in
from thingshub.mqtt.codec.wire import MAX_VARINT, encode_binary, encode_varint, read_varint

# Big payloads make some examples take tens of milliseconds; that is not flakiness.
roundtrip_settings = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def parse_all(data: bytes, version: int | None) -> list[Packet]:
    """Every packet in `data`, asserting nothing is left over."""
    reader = Reader(version)
    reader.feed(data)
    out = []
    while (packet := reader.next_packet()) is not None:
        out.append(packet)
    assert reader.buffered == 0
    return out


def roundtrip(packet: Packet, version: int) -> None:
    data = encode(packet, version)
    parsed = parse_all(data, version)
    assert parsed == [packet]
    # Equal packets must give equal bytes: re-encoding the parsed copy is identical.
    assert encode(parsed[0], version) == data


# --- every packet type, every version --------------------------------------------------

TYPE_CASES = [pytest.param(t, v, id=f"{t.name}-v{v}") for v in ms.VERSIONS for t in ms.types_in(v)]


@pytest.mark.parametrize(("ptype", "version"), TYPE_CASES)
@roundtrip_settings
@given(data=st.data())
def test_roundtrip_every_type(ptype: PacketType, version: int, data: st.DataObject) -> None:
    """Each packet type survives encode and parse unchanged in each protocol version."""
    packet = data.draw(ms.BY_TYPE[ptype](version))
    assert packet.type == ptype
    roundtrip(packet, version)


@pytest.mark.parametrize("version", ms.VERSIONS)
@roundtrip_settings
@given(data=st.data())
def test_connect_sets_reader_version(version: int, data: st.DataObject) -> None:
    """A reader of unknown version learns it from CONNECT and reads what follows with it."""
    connect = data.draw(ms.connects(version))
    rest = data.draw(st.lists(ms.packets(version, large=False), max_size=4))
    reader = Reader()
    reader.feed(b"".join(encode(p, version) for p in [connect, *rest]))
    assert reader.next_packet() == connect
    assert reader.version == version
    for p in rest:
        assert reader.next_packet() == p
    assert reader.next_packet() is None


@roundtrip_settings
@given(
    will=st.none() | ms.wills(MQTT_5),
    username=st.none() | ms.text(),
    password=st.none() | st.binary(max_size=8),
)
def test_connect_credential_combinations_v5(
    will: Will | None, username: str | None, password: bytes | None
) -> None:
    """5.0 allows a password without a user name; every combination round-trips."""
    roundtrip(Connect("c", MQTT_5, username=username, password=password, will=will), MQTT_5)


@pytest.mark.parametrize(("qos", "dup"), [(0, False), (1, False), (1, True), (2, False), (2, True)])
@pytest.mark.parametrize("retain", [False, True])
@pytest.mark.parametrize("version", [MQTT_3_1_1, MQTT_5])
def test_publish_flag_combinations(qos: int, retain: bool, dup: bool, version: int) -> None:
    """Every legal QoS/retain/DUP combination (DUP needs QoS > 0), and its first byte."""
    packet = Publish("a/b", b"x", qos, retain, dup, 7 if qos else None)
    data = encode(packet, version)
    assert data[0] == 0x30 | dup << 3 | qos << 1 | retain
    roundtrip(packet, version)


@pytest.mark.parametrize(
    ("body_size", "header"),
    [
        (0, "00"),
        (127, "7f"),
        (128, "8001"),
        (16_383, "ff7f"),
        (16_384, "808001"),
        (2_097_151, "ffff7f"),
        (2_097_152, "80808001"),
    ],
)
def test_remaining_length_boundaries(body_size: int, header: str) -> None:
    """The spec's table of remaining-length encodings (section 2.2.3), via PUBLISH."""
    if body_size == 0:
        packet: Packet = PingReq()
        data = encode(packet, MQTT_3_1_1)
    else:
        packet = Publish("t", b"p" * (body_size - 3))
        data = encode(packet, MQTT_3_1_1)
    assert data[1 : 1 + len(header) // 2].hex() == header
    assert len(data) == 1 + len(header) // 2 + body_size
    assert parse_all(data, MQTT_3_1_1) == [packet]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, MAX_VARINT))
def test_varint_roundtrip(value: int) -> None:
    """Variable byte integers round-trip and use the fewest bytes (1 per 7 bits)."""
    raw = encode_varint(value)
    assert read_varint(raw, 0, len(raw)) == (value, len(raw))
    assert len(raw) == max(1, (value.bit_length() + 6) // 7)


def test_varint_limits() -> None:
    """The largest variable byte integer is four bytes; one more does not encode."""
    assert encode_varint(MAX_VARINT) == bytes.fromhex("ffffff7f")
    with pytest.raises(ValueError):
        encode_varint(MAX_VARINT + 1)


@pytest.mark.parametrize("version", [MQTT_3_1, MQTT_3_1_1, MQTT_5])
@pytest.mark.parametrize(
    "ptype", [PacketType.PUBACK, PacketType.PUBREC, PacketType.PUBREL, PacketType.PUBCOMP]
)
@pytest.mark.parametrize("packet_id", [1, 0x1234, 65535])
def test_encode_ack_is_encode_of_a_successful_ack(
    ptype: PacketType, version: int, packet_id: int
) -> None:
    """The hot path's shortcut writes exactly what `encode` writes."""
    assert encode_ack(ptype, packet_id) == encode(PubAck(ptype, packet_id), version)


def test_a_varint_of_five_bytes_is_malformed() -> None:
    with pytest.raises(MalformedPacket, match="longer than four bytes"):
        read_varint(b"\xff\xff\xff\xff\x01", 0, 5)


def test_what_the_writer_cannot_encode() -> None:
    with pytest.raises(ValueError, match="65,535"):
        encode_binary(b"x" * 0x10000)
    with pytest.raises(TypeError, match="not a packet"):
        encode("PINGREQ", MQTT_5)  # type: ignore[arg-type]


def test_properties_are_false_when_empty() -> None:
    assert not Properties()
    assert not EMPTY
    assert Properties(content_type="text/plain")


@pytest.mark.parametrize(
    ("code", "v3"),
    [
        (ReasonCode.NOT_AUTHORIZED, ConnackCodeV3.NOT_AUTHORIZED),
        (ReasonCode.QUOTA_EXCEEDED, ConnackCodeV3.SERVER_UNAVAILABLE),  # no 3.1.1 equivalent
        (0x07, ConnackCodeV3.SERVER_UNAVAILABLE),  # no reason code at all
    ],
)
def test_connack_code_v3(code: int, v3: int) -> None:
    assert connack_code_v3(code) == v3


def test_v5_fields_are_dropped_below_v5() -> None:
    """The writer leaves 5.0-only fields out of 3.1.1 packets instead of corrupting them."""
    props = Properties(user_properties=(("k", "v"),), reason_string="r")
    cases: list[tuple[Packet, Packet]] = [
        (Publish("t", b"p", properties=Properties(topic_alias=3)), Publish("t", b"p")),
        (PubAck(PacketType.PUBREC, 9, 0x80, props), PubAck(PacketType.PUBREC, 9)),
        (Disconnect(0x8B, props), Disconnect()),
        (Unsuback(4, [0x11], props), Unsuback(4)),
        (
            Subscribe(2, [SubscriptionRequest("f", 1, True, True, 2)]),
            Subscribe(2, [SubscriptionRequest("f", 1)]),
        ),
    ]
    for original, as_v4 in cases:
        assert parse_all(encode(original, MQTT_3_1_1), MQTT_3_1_1) == [as_v4]


def test_spec_tables_cover_every_property() -> None:
    """The test-side spec tables name every `Properties` field once, so none goes untested."""
    names = {f.name for f in dataclasses.fields(Properties)}
    assert set(ms.PROPERTY_IDS) == names
    assert set(ms.PROPERTY_TYPES) == set(ms.PROPERTY_IDS.values())
    assert set(ms.PROPERTY_VALUES) | {"subscription_identifiers"} == names
    assert set().union(*ms.SPEC_ALLOWED.values()) == names


@pytest.mark.parametrize("kind", list(ms.SPEC_ALLOWED))
def test_allowed_properties_match_spec(kind: int) -> None:
    """The codec's table of where each property may appear agrees with the spec's."""
    assert set(allowed_in(kind)) == ms.SPEC_ALLOWED[kind]


@settings(max_examples=100, deadline=None)
@given(
    kind=st.sampled_from(
        [int(t) for t in PacketType if t not in (PacketType.PINGREQ, PacketType.PINGRESP)] + [WILL]
    ),
    data=st.data(),
)
def test_equal_properties_encode_equally(kind: int, data: st.DataObject) -> None:
    """Properties serialize canonically: equal values, equal bytes, in ascending id order."""
    props = data.draw(ms.properties(kind))
    clone = Properties(**{name: getattr(props, name) for name in allowed_in(kind)})
    assert clone == props
    raw = encode_properties(props)
    assert encode_properties(clone) == raw
    assert (raw == b"\x00") == (props == EMPTY)
    ids = property_ids(raw)
    assert ids == sorted(ids, key=lambda ident: (ident == 0x26, ident))  # user properties last


def property_ids(raw: bytes) -> list[int]:
    """The identifiers in an encoded property block, in order, walked with the spec's types."""
    length, pos = read_varint(raw, 0, len(raw))
    assert pos + length == len(raw)
    ids = []
    while pos < len(raw):
        ident, pos = read_varint(raw, pos, len(raw))
        ids.append(ident)
        kind = ms.PROPERTY_TYPES[ident]
        if kind in ("byte", "u16", "u32"):
            pos += {"byte": 1, "u16": 2, "u32": 4}[kind]
        elif kind == "varint":
            _, pos = read_varint(raw, pos, len(raw))
        else:
            for _ in range(2 if kind == "pair" else 1):
                pos += 2 + int.from_bytes(raw[pos : pos + 2], "big")
    assert pos == len(raw)
    return ids


def test_encode_publish_matches_encode() -> None:
    """The hot-path writer and the generic one produce the same bytes."""
    props = Properties(message_expiry_interval=5, subscription_identifiers=(1, 2))
    packet = Publish("x/y", b"data", 1, True, True, 300, props)
    fast = encode_publish(b"x/y", b"data", 1, True, True, 300, MQTT_5, encode_properties(props))
    assert fast == encode(packet, MQTT_5)
    assert encode_publish(b"x/y", b"data", 0, False, False, None, MQTT_3_1_1) == encode(
        Publish("x/y", b"data"), MQTT_3_1_1
    )


# --- incremental parsing ---------------------------------------------------------------


@pytest.mark.parametrize("version", ms.VERSIONS)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_stream_cut_anywhere(version: int, data: st.DataObject) -> None:
    """However the stream is cut, one reader yields the same packets, in order, as they complete."""
    packets = data.draw(st.lists(ms.packets(version), min_size=1, max_size=8))
    encoded = [encode(p, version) for p in packets]
    stream = b"".join(encoded)
    ends = []
    offset = 0
    for chunk in encoded:
        offset += len(chunk)
        ends.append(offset)
    cuts = data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=12, unique=True))
    bounds = [0, *sorted(cuts), len(stream)]

    reader = Reader(version)
    got: list[Packet] = []
    for start, stop in itertools.pairwise(bounds):
        reader.feed(stream[start:stop])
        while (packet := reader.next_packet()) is not None:
            got.append(packet)
        # Exactly the packets whose last byte has arrived, and None until the next one.
        assert len(got) == sum(1 for end in ends if end <= stop)
        assert reader.buffered == stop - (ends[len(got) - 1] if got else 0)
    assert got == packets
    # Equality would take a bytearray for bytes: a packet read in place and one
    # put together from pieces must both hand out immutable bytes.
    assert all(_bytes_fields_are_bytes(p) for p in got)


def _bytes_fields_are_bytes(value: object) -> bool:
    if isinstance(value, bytes | bytearray | memoryview):
        return type(value) is bytes
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return all(
            _bytes_fields_are_bytes(getattr(value, f.name)) for f in dataclasses.fields(value)
        )
    if isinstance(value, list | tuple):
        return all(_bytes_fields_are_bytes(v) for v in value)
    return True


@pytest.mark.parametrize("version", ms.VERSIONS)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_stream_one_byte_at_a_time(version: int, data: st.DataObject) -> None:
    """Feeding single bytes yields each packet exactly when its last byte arrives."""
    items = data.draw(st.lists(ms.packets(version, large=False), min_size=1, max_size=5))
    reader = Reader(version)
    for item in items:
        raw = encode(item, version)
        for byte in raw[:-1]:
            reader.feed(bytes((byte,)))
            assert reader.next_packet() is None
        reader.feed(raw[-1:])
        assert reader.next_packet() == item
        assert reader.next_packet() is None
        assert reader.buffered == 0


def test_feed_empty_and_many_packets_in_one_chunk() -> None:
    """Empty feeds are harmless, and one chunk may hold several packets."""
    reader = Reader(MQTT_3_1_1)
    reader.feed(b"")
    assert reader.next_packet() is None
    reader.feed(encode(PingReq(), 4) + encode(PingResp(), 4) + b"\xc0")
    reader.feed(b"")
    assert reader.next_packet() == PingReq()
    assert reader.next_packet() == PingResp()
    assert reader.next_packet() is None
    assert reader.buffered == 1
    reader.feed(b"\x00")
    assert reader.next_packet() == PingReq()


def test_header_of_largest_packet_waits_for_body() -> None:
    """The largest remaining length is legal: the reader just waits for the body."""
    reader = Reader(MQTT_5)
    reader.feed(bytes.fromhex("30ffffff7f0001"))
    assert reader.next_packet() is None
    assert reader.buffered == 7


# --- golden bytes ----------------------------------------------------------------------

GOLDEN = [
    pytest.param(
        # Spec 3.1.1 section 3.1.2.10 variable header (flags 0xCE, keepalive 10), plus payload.
        Connect(
            "c1",
            MQTT_3_1_1,
            clean_start=True,
            keepalive=10,
            username="u",
            password=b"p",
            will=Will("w/t", b"bye", qos=1),
        ),
        MQTT_3_1_1,
        "101e 00044d515454 04 ce 000a 00026331 0003772f74 0003627965 000175 000170",
        id="connect-v4-spec-example",
    ),
    pytest.param(
        Connect("c", MQTT_3_1, keepalive=60),
        MQTT_3_1,
        "100f 00064d5149736470 03 02 003c 000163",
        id="connect-v3-mqisdp",
    ),
    pytest.param(
        Connect("", MQTT_5, keepalive=60),
        MQTT_5,
        "100d 00044d515454 05 02 003c 00 0000",
        id="connect-v5-empty",
    ),
    pytest.param(
        Connect(
            "id",
            MQTT_5,
            clean_start=False,
            keepalive=0,
            password=b"\x00\xff",
            will=Will("t", b"", qos=2, retain=True, properties=Properties(will_delay_interval=9)),
            properties=Properties(session_expiry_interval=0xFFFFFFFF, receive_maximum=20),
        ),
        MQTT_5,
        "1026 00044d515454 05 74 0000 08 11ffffffff 210014 00026964"
        " 05 1800000009 000174 0000 000200ff",
        id="connect-v5-will-password-only",
    ),
    pytest.param(Connack(0, True), MQTT_3_1_1, "2002 01 00", id="connack-v4"),
    pytest.param(
        Connack(0x86, properties=Properties(maximum_qos=1, retain_available=0)),
        MQTT_5,
        "2007 00 86 04 2401 2500",
        id="connack-v5",
    ),
    pytest.param(
        Publish("a/b", b"hi", qos=1, retain=True, packet_id=10),
        MQTT_3_1_1,
        "3309 0003612f62 000a 6869",
        id="publish-v4-qos1-retain",
    ),
    pytest.param(
        Publish(
            "t",
            b"x",
            properties=Properties(
                payload_format_indicator=1,
                message_expiry_interval=60,
                user_properties=(("k", "v"),),
            ),
        ),
        MQTT_5,
        "3013 000174 0e 0101 020000003c 2600016b000176 78",
        id="publish-v5-properties",
    ),
    pytest.param(
        Publish("é", b"", qos=2, dup=True, packet_id=0xFFFF),
        MQTT_5,
        "3c07 0002c3a9 ffff 00",
        id="publish-v5-dup-qos2-utf8",
    ),
    pytest.param(PubAck(PacketType.PUBACK, 1), MQTT_5, "4002 0001", id="puback-v5-success"),
    pytest.param(
        PubAck(PacketType.PUBACK, 1, ReasonCode.NO_MATCHING_SUBSCRIBERS),
        MQTT_5,
        "4003 0001 10",
        id="puback-v5-reason",
    ),
    pytest.param(
        PubAck(PacketType.PUBREC, 2, 0x80, Properties(reason_string="x")),
        MQTT_5,
        "5008 0002 80 04 1f000178",
        id="pubrec-v5-reason-string",
    ),
    pytest.param(PubAck(PacketType.PUBREL, 5), MQTT_3_1_1, "6202 0005", id="pubrel-v4"),
    pytest.param(PubAck(PacketType.PUBCOMP, 5), MQTT_3_1_1, "7002 0005", id="pubcomp-v4"),
    pytest.param(
        Subscribe(
            2,
            [SubscriptionRequest("a/#", 1, True, True, 2)],
            Properties(subscription_identifiers=(300,)),
        ),
        MQTT_5,
        "820c 0002 03 0bac02 0003612f23 2d",
        id="subscribe-v5-options",
    ),
    pytest.param(
        Subscribe(10, [SubscriptionRequest("a", 0), SubscriptionRequest("b/+", 2)]),
        MQTT_3_1_1,
        "820c 000a 000161 00 0003622f2b 02",
        id="subscribe-v4",
    ),
    pytest.param(Suback(10, [0, 0x80]), MQTT_3_1_1, "9004 000a 0080", id="suback-v4"),
    pytest.param(Suback(10, [1]), MQTT_5, "9004 000a 00 01", id="suback-v5"),
    pytest.param(Unsubscribe(3, ["a", "b"]), MQTT_3_1_1, "a208 0003 000161 000162", id="unsub-v4"),
    pytest.param(Unsubscribe(3, ["a"]), MQTT_5, "a206 0003 00 000161", id="unsubscribe-v5"),
    pytest.param(Unsuback(3), MQTT_3_1_1, "b002 0003", id="unsuback-v4"),
    pytest.param(Unsuback(3, [0, 0x11]), MQTT_5, "b005 0003 00 0011", id="unsuback-v5"),
    pytest.param(PingReq(), MQTT_3_1_1, "c000", id="pingreq"),
    pytest.param(PingResp(), MQTT_5, "d000", id="pingresp"),
    pytest.param(Disconnect(), MQTT_3_1_1, "e000", id="disconnect-v4"),
    pytest.param(Disconnect(), MQTT_5, "e000", id="disconnect-v5-normal"),
    pytest.param(Disconnect(ReasonCode.DISCONNECT_WITH_WILL), MQTT_5, "e001 04", id="disc-will"),
    pytest.param(
        Disconnect(0, Properties(session_expiry_interval=1)),
        MQTT_5,
        "e007 00 05 1100000001",
        id="disconnect-v5-properties",
    ),
    pytest.param(Auth(), MQTT_5, "f000", id="auth-empty"),
    pytest.param(
        Auth(0x18, Properties(authentication_method="M", authentication_data=b"\x01")),
        MQTT_5,
        "f00a 18 08 1500014d 16000101",
        id="auth-continue",
    ),
]


@pytest.mark.parametrize(("packet", "version", "hex_bytes"), GOLDEN)
def test_golden_bytes(packet: Packet, version: int, hex_bytes: str) -> None:
    """Hand-written bytes from the spec: encoding is pinned, and parsing them gives the packet."""
    expected = bytes.fromhex(hex_bytes.replace(" ", ""))
    assert encode(packet, version) == expected
    assert parse_all(expected, version) == [packet]


def test_empty_properties_are_canonical() -> None:
    """An empty `Properties()` that is not the shared EMPTY still writes the short forms."""
    empty = Properties()
    assert empty == EMPTY
    assert empty is not EMPTY
    assert encode(PubAck(PacketType.PUBACK, 1, 0, empty), MQTT_5) == bytes.fromhex("40020001")
    assert encode(Disconnect(0, empty), MQTT_5) == bytes.fromhex("e000")
    assert encode(Auth(0, empty), MQTT_5) == bytes.fromhex("f000")
    assert encode(Disconnect(0x80, empty), MQTT_5) == bytes.fromhex("e00180")
