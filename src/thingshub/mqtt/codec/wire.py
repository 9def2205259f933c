"""The data representations of MQTT (spec section 1.5), read and written.

Rules:
- Readers take `(data, pos, end)` and return `(value, new_pos)`; they raise
  `MalformedPacket` when the value would run past `end`, never IndexError.
- Strings are UTF-8 without U+0000 and without surrogates ([MQTT-1.5.4-1/2]);
  anything else is malformed.
- Variable byte integers use at most four bytes and the minimum number of bytes
  ([MQTT-1.5.5-1]), so every value has exactly one encoding.
"""

from __future__ import annotations

from thingshub.mqtt.codec.errors import MalformedPacket

MAX_VARINT = 268_435_455


def read_u8(data: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos >= end:
        raise MalformedPacket("packet ends inside a byte field")
    return data[pos], pos + 1


def read_u16(data: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos + 2 > end:
        raise MalformedPacket("packet ends inside a two-byte integer")
    return (data[pos] << 8) | data[pos + 1], pos + 2


def read_u32(data: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos + 4 > end:
        raise MalformedPacket("packet ends inside a four-byte integer")
    return int.from_bytes(data[pos : pos + 4], "big"), pos + 4


def read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = 0
    shift = 0
    for i in range(4):
        if pos >= end:
            raise MalformedPacket("packet ends inside a variable byte integer")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise MalformedPacket("variable byte integer is not minimally encoded")
            return value, pos
        shift += 7
    raise MalformedPacket("variable byte integer longer than four bytes")


def read_binary(data: bytes, pos: int, end: int) -> tuple[bytes, int]:
    if pos + 2 > end:
        raise MalformedPacket("packet ends inside a length prefix")
    n = (data[pos] << 8) | data[pos + 1]
    pos += 2
    if pos + n > end:
        raise MalformedPacket("length prefix runs past the end of the packet")
    return data[pos : pos + n], pos + n


def decode_utf8(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPacket("string is not well-formed UTF-8") from exc
    if "\x00" in text:
        raise MalformedPacket("string contains U+0000")
    return text


def read_str(data: bytes, pos: int, end: int) -> tuple[str, int]:
    raw, pos = read_binary(data, pos, end)
    return decode_utf8(raw), pos


def encode_varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    if not 0 <= value <= MAX_VARINT:
        raise ValueError(f"{value} does not fit a variable byte integer")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def encode_u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def encode_binary(value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError("binary data longer than 65,535 bytes")
    return len(value).to_bytes(2, "big") + value


def encode_str(value: str) -> bytes:
    return encode_binary(value.encode("utf-8"))
