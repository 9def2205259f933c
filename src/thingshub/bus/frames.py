"""What a node sends the others in one NATS message: its events and broadcasts
of one flush, in the order they were made (bus/nats.py).

Rules:
- A message is a run of frames: a type byte (`EVENT`: the payload is an
  event of bus/wire.py; `BROADCAST`: a broadcast's payload), the length of
  a name (the event's kind, the broadcast's topic: at most 255 bytes of
  UTF-8), the payload's length (4 bytes, big-endian), the name, the payload.
- One message a flush instead of one an event or broadcast: in a connect
  storm on `serve --workers N`, each login and its presence went out as two
  messages, each a write to NATS here and a message handled on every other
  node (bench/README.md).
- `pack` cuts the run into messages of at most `limit` bytes (NATS refuses
  larger ones), a frame never split: a frame larger than `limit` travels
  alone (and NATS refuses it, as it refused it alone before).
- `unpack` yields the frames of a message in order and raises `ValueError`
  at the first that is cut short or of an unknown type, after the whole
  ones before it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

EVENT = 0x65  # "e"
BROADCAST = 0x62  # "b"

_HEAD = struct.Struct(">BBI")

#: A frame: (type, name, payload).
Frame = tuple[int, str, bytes]


def pack(frames: Iterable[Frame], limit: int) -> list[bytes]:
    """The frames, in order, in as few messages of at most `limit` bytes as fit."""
    out: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for kind, name, payload in frames:
        raw = name.encode()
        if len(raw) > 255:
            raise ValueError(f"a frame's name is at most 255 bytes: {name[:50]!r}...")
        head = _HEAD.pack(kind, len(raw), len(payload))
        length = len(head) + len(raw) + len(payload)
        if parts and size + length > limit:
            out.append(b"".join(parts))
            parts, size = [], 0
        parts += (head, raw, payload)
        size += length
    if parts:
        out.append(b"".join(parts))
    return out


def unpack(data: bytes) -> Iterator[Frame]:
    pos, end, head = 0, len(data), _HEAD.size
    while pos < end:
        if pos + head > end:
            raise ValueError("a frame cut short")
        kind, name_len, payload_len = _HEAD.unpack_from(data, pos)
        pos += head
        if kind not in (EVENT, BROADCAST):
            raise ValueError(f"a frame of unknown type {kind:#x}")
        stop = pos + name_len + payload_len
        if stop > end:
            raise ValueError("a frame cut short")
        try:
            name = data[pos : pos + name_len].decode()
        except UnicodeDecodeError as exc:
            raise ValueError("a frame's name is not UTF-8") from exc
        yield kind, name, data[pos + name_len : stop]
        pos = stop
