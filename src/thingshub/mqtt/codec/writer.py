"""Serialization of MQTT packets.

Rules:
- `encode(packet, version)` writes the packet as that protocol version
  defines it; 5.0-only fields are left out for 3.1.1 and 3.1.
- Output is canonical: the shortest remaining length, acks without a reason
  code or properties when they are success and empty, properties in a fixed
  order. Parsing the output gives back an equal packet.
- `encode_publish` is the hot path of the server and takes the pieces of a
  PUBLISH directly, so forwarding needs no intermediate object; `encode_ack`
  writes the acknowledgement of success that follows most of them, the same
  bytes as `encode` gives for it, in one call. The server writes both out on
  its own hottest paths, with `pack_ack` and `publish_packer`'s packers.
- The writer trusts its input to be in range (it comes from our own code);
  values that cannot be encoded raise ValueError.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from thingshub.mqtt.codec.packets import (
    MQTT_5,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
)
from thingshub.mqtt.codec.properties import EMPTY, Properties, encode_properties
from thingshub.mqtt.codec.wire import encode_binary, encode_str, encode_varint

PINGRESP_BYTES = b"\xd0\x00"
PINGREQ_BYTES = b"\xc0\x00"


def _frame(first: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes((first, n)) + body
    return bytes((first,)) + encode_varint(n) + body


#: First byte, a one-byte remaining length and the topic's length: the head of
#: most PUBLISHes in one call (a third of the time of assembling it piece by piece).
_SHORT_HEAD = struct.Struct(">BBH")


def encode_publish(
    topic: bytes,
    payload: bytes,
    qos: int,
    retain: bool,
    dup: bool,
    packet_id: int | None,
    version: int,
    props: bytes = b"\x00",
) -> bytes:
    """A PUBLISH from its parts; `topic` is UTF-8 and `props` already encoded."""
    first = 0x30 | (qos << 1) | retain | (dup << 3)
    tlen = len(topic)
    n = 2 + tlen + len(payload)
    middle = b""
    if qos:
        assert packet_id is not None
        middle = packet_id.to_bytes(2, "big")
        n += 2
    if version == MQTT_5:
        middle += props
        n += len(props)
    if n < 0x80:
        head = _SHORT_HEAD.pack(first, n, tlen)
    else:
        head = bytes((first,)) + encode_varint(n) + tlen.to_bytes(2, "big")
    return head + topic + middle + payload


#: First byte, remaining length 2, packet id: an acknowledgement without reason code.
_ACK = struct.Struct(">BBH")


#: The packer of `encode_ack`, for the server's path that writes it out (a call
#: less per message): first byte, remaining length 2, packet id.
pack_ack = _ACK.pack


#: Packers of a QoS 1/2 PUBLISH up to its payload (first byte, remaining length
#: in one byte or in two, topic length, topic, packet id), by the topic's
#: length: one call and one bytes object where assembling the pieces makes
#: five. The caller looks its length up and asks `publish_packer` on a miss.
short_packers: dict[int, Callable[..., bytes]] = {}
wide_packers: dict[int, Callable[..., bytes]] = {}


def publish_packer(tlen: int, wide: bool) -> Callable[..., bytes]:
    """Make and keep the packer of `short_packers` (a one-byte remaining length,
    packets under 128 bytes) or `wide_packers` (two bytes, under 16 KiB) for a
    topic of `tlen` bytes. The server's own lengths bound both: under 16 KiB, a
    topic is too."""
    fmt = f">BBBH{tlen}sH" if wide else f">BBH{tlen}sH"
    pack = struct.Struct(fmt).pack
    (wide_packers if wide else short_packers)[tlen] = pack
    return pack


def encode_ack(packet_type: int, packet_id: int) -> bytes:
    """A PUBACK, PUBREC, PUBREL or PUBCOMP of success without properties, in any
    version: what `encode(PubAck(packet_type, packet_id), version)` gives."""
    return _ACK.pack((packet_type << 4) | (2 if packet_type == 6 else 0), 2, packet_id)


def _has_properties(props: Properties) -> bool:
    """False for EMPTY and any `Properties()` equal to it; identity is the fast path."""
    return props is not EMPTY and props != EMPTY


def _ack(first: int, packet_id: int, code: int, props: Properties, version: int) -> bytes:
    body = packet_id.to_bytes(2, "big")
    if version == MQTT_5:
        has_props = _has_properties(props)
        if code or has_props:
            body += bytes((code,))
            if has_props:
                body += encode_properties(props)
    return _frame(first, body)


def encode_connect(p: Connect) -> bytes:
    v = p.protocol_level
    name = b"\x00\x06MQIsdp" if v == 3 else b"\x00\x04MQTT"
    flags = 0
    if p.clean_start:
        flags |= 0x02
    tail = encode_str(p.client_id)
    if p.will is not None:
        w = p.will
        flags |= 0x04 | (w.qos << 3) | (0x20 if w.retain else 0)
        if v == MQTT_5:
            tail += encode_properties(w.properties)
        tail += encode_str(w.topic) + encode_binary(w.payload)
    if p.username is not None:
        flags |= 0x80
        tail += encode_str(p.username)
    if p.password is not None:
        flags |= 0x40
        tail += encode_binary(p.password)
    body = name + bytes((v, flags)) + p.keepalive.to_bytes(2, "big")
    if v == MQTT_5:
        body += encode_properties(p.properties)
    return _frame(0x10, body + tail)


def encode(packet: Packet, version: int) -> bytes:
    """The bytes of one packet in the given protocol version."""
    v5 = version == MQTT_5
    if isinstance(packet, Publish):
        return encode_publish(
            packet.topic.encode(),
            packet.payload,
            packet.qos,
            packet.retain,
            packet.dup,
            packet.packet_id,
            version,
            encode_properties(packet.properties) if v5 else b"",
        )
    if isinstance(packet, PubAck):
        first = (packet.type << 4) | (2 if packet.type == 6 else 0)
        return _ack(first, packet.packet_id, packet.reason_code, packet.properties, version)
    if isinstance(packet, Connect):
        return encode_connect(packet)
    if isinstance(packet, Connack):
        body = bytes((int(packet.session_present), packet.reason_code))
        if v5:
            body += encode_properties(packet.properties)
        return _frame(0x20, body)
    if isinstance(packet, Subscribe):
        body = packet.packet_id.to_bytes(2, "big")
        if v5:
            body += encode_properties(packet.properties)
        for s in packet.subscriptions:
            opts = s.qos
            if v5:
                opts |= (s.no_local << 2) | (s.retain_as_published << 3) | (s.retain_handling << 4)
            body += encode_str(s.topic_filter) + bytes((opts,))
        return _frame(0x82, body)
    if isinstance(packet, Suback):
        body = packet.packet_id.to_bytes(2, "big")
        if v5:
            body += encode_properties(packet.properties)
        return _frame(0x90, body + bytes(packet.reason_codes))
    if isinstance(packet, Unsubscribe):
        body = packet.packet_id.to_bytes(2, "big")
        if v5:
            body += encode_properties(packet.properties)
        for f in packet.topic_filters:
            body += encode_str(f)
        return _frame(0xA2, body)
    if isinstance(packet, Unsuback):
        body = packet.packet_id.to_bytes(2, "big")
        if v5:
            body += encode_properties(packet.properties) + bytes(packet.reason_codes)
        return _frame(0xB0, body)
    if isinstance(packet, PingReq):
        return PINGREQ_BYTES
    if isinstance(packet, PingResp):
        return PINGRESP_BYTES
    if isinstance(packet, Disconnect):
        if not v5:
            return b"\xe0\x00"
        return _frame(0xE0, _code_and_props(packet.reason_code, packet.properties))
    if isinstance(packet, Auth):
        return _frame(0xF0, _code_and_props(packet.reason_code, packet.properties))
    raise TypeError(f"not a packet: {packet!r}")


def _code_and_props(code: int, props: Properties) -> bytes:
    if _has_properties(props):
        return bytes((code,)) + encode_properties(props)
    if code:
        return bytes((code,))
    return b""
