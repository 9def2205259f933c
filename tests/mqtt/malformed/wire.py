"""Bytes of MQTT packets built by hand, for the malformed-input table.

Independent of `thingshub.mqtt.codec` on purpose: the table must not trust the
code it tests to write its input or to read the server's answers. Each helper
writes exactly what the specification's figures show, and nothing checks
that the result is valid: most rows are not.
"""

from __future__ import annotations

# Packet types (first byte's high nibble).
CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 2, 3, 4, 5, 6, 7
SUBACK, UNSUBACK, PINGRESP, DISCONNECT, AUTH = 9, 11, 13, 14, 15


def vbi(n: int) -> bytes:
    """A variable byte integer, minimally encoded."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def s(text: str | bytes) -> bytes:
    """A length-prefixed string (or binary data); bytes are taken as they are."""
    raw = text.encode() if isinstance(text, str) else text
    return u16(len(raw)) + raw


def frame(first: int, *parts: bytes) -> bytes:
    """A packet: first byte, the right remaining length, the parts."""
    body = b"".join(parts)
    return bytes((first,)) + vbi(len(body)) + body


def props(*items: bytes) -> bytes:
    """A 5.0 property block: its length, then the properties."""
    body = b"".join(items)
    return vbi(len(body)) + body


def p5(version: int, *items: bytes) -> bytes:
    """Properties in 5.0, nothing in 3.1.1 (which has none)."""
    return props(*items) if version == 5 else b""


def connect(
    version: int,
    flags: int = 0x02,
    client_id: str | bytes = "row",
    properties: bytes | None = None,
    tail: bytes = b"",
    name: bytes = b"MQTT",
    level: int | None = None,
) -> bytes:
    """CONNECT: `flags` as given, `tail` after the client id (will, user, password)."""
    prop = (properties if properties is not None else b"\x00") if version == 5 else b""
    body = s(name) + bytes((level if level is not None else version, flags)) + u16(60)
    return frame(0x10, body, prop, s(client_id), tail)


def publish(
    version: int,
    topic: str | bytes,
    payload: bytes = b"x",
    qos: int = 0,
    packet_id: int = 1,
    properties: bytes = b"\x00",
    flags: int | None = None,
) -> bytes:
    """PUBLISH; `flags` overrides the low nibble (DUP, QoS, RETAIN) as given."""
    first = 0x30 | (flags if flags is not None else qos << 1)
    pid = u16(packet_id) if qos else b""
    return frame(first, s(topic), pid, properties if version == 5 else b"", payload)


def subscribe(
    version: int, *filters: tuple[str | bytes, int], packet_id: int = 1, properties: bytes = b"\x00"
) -> bytes:
    """SUBSCRIBE of (filter, options byte) pairs."""
    payload = b"".join(s(f) + bytes((o,)) for f, o in filters)
    return frame(0x82, u16(packet_id), properties if version == 5 else b"", payload)


def unsubscribe(version: int, *filters: str | bytes, packet_id: int = 1) -> bytes:
    return frame(0xA2, u16(packet_id), p5(version), b"".join(s(f) for f in filters))


def read_packets(data: bytes) -> list[tuple[int, bytes]]:
    """(first byte, body) of each whole packet in `data` (a cut one at the end is left)."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos + 2 <= len(data):
        first, length, shift, i = data[pos], 0, 0, pos + 1
        while i < len(data):
            length |= (data[i] & 0x7F) << shift
            shift += 7
            i += 1
            if not data[i - 1] & 0x80:
                break
        else:
            return out
        if i + length > len(data):
            return out
        out.append((first, data[i : i + length]))
        pos = i + length
    return out


def reason_code(first: int, body: bytes) -> int | None:
    """The reason code (5.0) or return code (3.1.1) an answer carries, if any."""
    kind = first >> 4
    if kind == CONNACK:
        return body[1] if len(body) > 1 else None
    if kind in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        return body[2] if len(body) > 2 else 0
    if kind in (SUBACK, UNSUBACK):
        return body[-1] if len(body) > 2 else None
    if kind in (DISCONNECT, AUTH):
        return body[0] if body else 0
    return None
