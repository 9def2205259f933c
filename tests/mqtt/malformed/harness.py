"""Playing the rows of the malformed-input table against a server over sockets.

A row (`Row`) names the normative statement it tests, the bytes a client sends
(per protocol version) and what the specification lets the server answer
(`Answer`s, any one of them). `play` opens a connection, sends CONNECT first
unless the row is about the start of a connection, sends the row's bytes,
and reads what comes back:

- an `Answer` that `closes`: that packet (or nothing, for `CLOSE`) and then
  the end of the connection; anything else is a failure. Packets of the
  row's `ignore` types (the acknowledgements of earlier, valid packets) may
  come before it.
- an `Answer` that keeps the connection: that packet, and the connection
  still answers a PINGREQ afterwards.

The harness only ever waits for something to arrive (with a timeout), never
sleeps. Rows announcing a packet larger than the server's limit send its
fixed header alone: the answer has to come while the body is unsent, which
proves the server refused the packet without waiting to buffer it.
`healthy` then checks that a new client can still connect, subscribe and
get a message.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tests.mqtt.malformed.wire import (
    CONNACK,
    DISCONNECT,
    PINGRESP,
    PUBLISH,
    SUBACK,
    connect,
    frame,
    publish,
    read_packets,
    reason_code,
    s,
    subscribe,
    u16,
)

TIMEOUT = 5.0


@dataclass(frozen=True)
class Answer:
    """What the server sends: a packet type and reason code (None: no packet;
    code None: any), and whether the connection ends after it."""

    kind: int | None
    code: int | None
    closes: bool

    def __str__(self) -> str:
        if self.kind is None:
            return "close"
        names = {CONNACK: "CONNACK", DISCONNECT: "DISCONNECT", SUBACK: "SUBACK", 7: "PUBCOMP"}
        code = "" if self.code is None else f" 0x{self.code:02X}"
        return f"{names.get(self.kind, self.kind)}{code}" + (" + close" if self.closes else "")


CLOSE = Answer(None, None, True)


def connack(code: int) -> Answer:
    return Answer(CONNACK, code, closes=code >= 0x80 or 0 < code < 6)


def accepted() -> Answer:
    return Answer(CONNACK, 0, closes=False)


def disconnect(code: int) -> Answer:
    return Answer(DISCONNECT, code, closes=True)


def suback(code: int) -> Answer:
    return Answer(SUBACK, code, closes=False)


def pubcomp(code: int) -> Answer:
    return Answer(7, code, closes=False)


@dataclass(frozen=True)
class Row:
    """One rule of a specification that a server must enforce on input."""

    rule: str
    what: str
    send: Callable[[int], bytes]
    #: Per protocol level (4: 3.1.1, 5: 5.0): the answers the specification allows.
    expect: Mapping[int, tuple[Answer, ...]]
    #: Whether the row's bytes follow an accepted CONNECT (False: they open the connection).
    connected: bool = True
    #: Packet types that may come back before the answer (acks of valid packets).
    ignore: tuple[int, ...] = field(default=())

    def id(self, version: int) -> str:
        slug = "-".join(self.what.lower().replace(",", "").split()[:7])
        return f"[{self.rule}] {slug} v{'5' if version == 5 else '311'}"


def any_of(*answers: Answer) -> tuple[Answer, ...]:
    return answers


class Peer:
    """A client socket reading whole packets as they come."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buf = b""
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next(self) -> tuple[int, bytes] | None:
        """The next packet, or None once the server has closed the connection."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            packets = read_packets(self.buf)
            if packets:
                first, body = packets[0]
                self.buf = self.buf[len(frame(first, body)) :]
                return first, body
            if self.closed:
                return None
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""  # an abort: closed just the same
            except TimeoutError:
                raise AssertionError("the server neither answered nor closed in time") from None
            if not chunk:
                self.closed = True
            self.buf += chunk

    def close(self) -> None:
        self.sock.close()


def _matches(answer: Answer, packet: tuple[int, bytes] | None) -> bool:
    if packet is None:
        return answer.kind is None
    first, body = packet
    if answer.kind != first >> 4:
        return False
    return answer.code is None or reason_code(first, body) == answer.code


def _describe(packet: tuple[int, bytes] | None) -> str:
    if packet is None:
        return "close"
    return f"packet type {packet[0] >> 4} (first byte 0x{packet[0]:02x}) body {packet[1].hex()}"


def play(port: int, row: Row, version: int) -> None:
    """Play `row` as a `version` client; AssertionError if the server's answer is not allowed."""
    allowed = row.expect[version]
    peer = Peer(port)
    try:
        if row.connected:
            peer.send(connect(version, client_id=f"row-{next(_ids)}"))
            got = peer.next()
            assert got is not None and _matches(accepted(), got), _describe(got)
        peer.send(row.send(version))
        got = peer.next()
        while got is not None and got[0] >> 4 in row.ignore:
            got = peer.next()
        answer = next((a for a in allowed if _matches(a, got)), None)
        assert answer is not None, (
            f"{row.id(version)}: got {_describe(got)}, the specification allows "
            + " or ".join(map(str, allowed))
        )
        if answer.closes:
            if got is not None:
                rest = peer.next()
                assert rest is None, f"{_describe(rest)} after {answer}, not a close"
        else:
            peer.send(b"\xc0\x00")
            rest = peer.next()
            while rest is not None and rest[0] >> 4 in row.ignore:
                rest = peer.next()
            assert rest is not None and rest[0] >> 4 == PINGRESP, (
                f"after {answer} the connection should stay open: got {_describe(rest)}"
            )
    finally:
        peer.close()


_ids = itertools.count()


def healthy(port: int) -> None:
    """A new client connects, subscribes and gets its own message back."""
    n = next(_ids)
    topic = f"health/{n}"
    peer = Peer(port)
    try:
        peer.send(connect(4, client_id=f"health-{n}"))
        got = peer.next()
        assert got is not None and _matches(accepted(), got), f"CONNACK: {_describe(got)}"
        peer.send(subscribe(4, (topic, 0), packet_id=7))
        got = peer.next()
        assert got is not None and got[0] >> 4 == SUBACK, f"SUBACK: {_describe(got)}"
        peer.send(publish(4, topic, b"alive"))
        got = peer.next()
        assert got is not None and got[0] >> 4 == PUBLISH, f"PUBLISH: {_describe(got)}"
        assert got[1] == s(topic) + b"alive"
        peer.send(b"\xe0\x00")
    finally:
        peer.close()


__all__ = ["CLOSE", "Answer", "Row", "any_of", "connack", "disconnect", "healthy", "play", "u16"]
