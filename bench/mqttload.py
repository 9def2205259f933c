"""A lean asyncio MQTT 3.1.1 load client on ThingsHub's codec, and the load shapes of the
broker benchmarks.

Why a client of our own: mosquitto_pub/sub spend more CPU per message than the broker
they load (libmosquitto makes several read() calls per packet), so they measure
themselves. This client keeps its own cost per message small and visible:
- every PUBLISH is encoded before the clock starts (`encode_publish`), and the control
  packets once (`encode`);
- writes are coalesced: a QoS 0 publisher sends its whole run in one write, a QoS 1
  publisher refills its window of in-flight messages with one write per chunk of PUBACKs
  read, and the subscriber sends the PUBACKs of one chunk read in one write;
- what comes back is parsed a whole chunk at a time: PUBACKs are compared with their
  expected pre-encoded stream, the subscriber frames PUBLISHes in place, and anything
  else (or anything unexpected) goes through the codec's `Reader` / `decode_packet`;
  `strict=True` puts everything through `Reader`;
- idle connections are plain sockets on one epoll (`IdleClients`), not asyncio
  transports, so that opening 10,000 costs the client less than the server;
- each run reports the load generator's own CPU, so a result shows which side was the
  bottleneck (the server's core at ~100% and the load's below it means the server was).

Load can run in this process (`procs=0`) or in spawned worker processes, which inherit
this process's CPU affinity; a worker talks to the run through a `Link`.

Every message carries its publisher index and sequence number (two big-endian u32 at the
start of the payload), so the subscriber checks each one: losses, duplicates, reordering,
wrong topic, wrong QoS. Every wait has a deadline: a broken server fails a run, it never
hangs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import multiprocessing
import multiprocessing.connection
import os
import resource
import select
import socket
import ssl
import struct
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar, cast

from thingshub.mqtt.codec import (
    MQTT_3_1_1,
    CodecError,
    Connack,
    Connect,
    Disconnect,
    MalformedPacket,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    Reader,
    Suback,
    Subscribe,
    SubscriptionRequest,
    decode_packet,
    encode,
    encode_publish,
)

VERSION = MQTT_3_1_1
HEADER = struct.Struct(">II")  # publisher index, sequence number
PINGREQ = encode(PingReq(), VERSION)
DISCONNECT = encode(Disconnect(), VERSION)
CONNECT_TIMEOUT = 10.0
FLAG_LOAD = 90.0  # load CPU % of its core above which a figure may be the client's limit
QUIET_PCT = 20.0  # server CPU (% of a core) below which it is taken to have nothing left to do
PING_TIMEOUT = 30.0
now = time.monotonic  # CLOCK_MONOTONIC: one clock for every process on the machine
#: The CA file to verify servers with, when the load connects over TLS (mqtt_broker.py
#: --tls). The environment carries it to the worker processes with nothing else to change.
TLS_CA_ENV = "MQTTLOAD_TLS_CA"
#: A connection whose TLS handshake is under way (IdleClients).
_HANDSHAKE = "handshake"
_tls_context: ssl.SSLContext | None = None
_CLK_TCK = os.sysconf("SC_CLK_TCK")

_PUBACKS: list[bytes] = []


def puback_table() -> list[bytes]:
    """PUBACK bytes for every packet id, encoded once, so acking costs a list lookup."""
    if not _PUBACKS:
        _PUBACKS.append(b"")
        _PUBACKS.extend(encode(PubAck(PacketType.PUBACK, i), VERSION) for i in range(1, 65536))
    return _PUBACKS


def packet_id(n: int) -> int:
    """The packet id of a publisher's n-th QoS 1 message: 1..65535, then around again."""
    return n % 65535 + 1


def cpu_now() -> float:
    """CPU seconds (user + system) of this process so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class LoadError(Exception):
    """The load could not be applied or checked: refused, timed out, connection lost."""


class CpuProbe(Protocol):
    """Anything whose CPU time we can read, e.g. the database processes of a server."""

    def cpu_seconds(self) -> float: ...


class ServerProbe(Protocol):
    """What a shape reads from the server under test (`servers.Server` has it)."""

    def cpu_seconds(self) -> float: ...

    def rss_kb(self) -> int: ...

    def alive(self) -> bool: ...


class NoProbe:
    """For a server we cannot see (remote, or not started by us): reads zeros."""

    def cpu_seconds(self) -> float:
        return 0.0

    def rss_kb(self) -> int:
        return 0

    def alive(self) -> bool:
        return True


# --------------------------------------------------------------------------- connections

P = TypeVar("P", bound=Packet)
T = TypeVar("T")
C = TypeVar("C", bound="Conn")


class Conn(asyncio.Protocol):
    """One MQTT 3.1.1 client connection.

    The control plane (CONNACK, SUBACK, PINGRESP) goes to futures from `expect`; such a
    future gets None if the connection is lost first. Subclasses put their hot path in
    `data_received` and hand other packets to `control`.
    """

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.reader = Reader(VERSION)
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = loop.create_future()
        self.why = ""
        self.unexpected: list[str] = []
        self._waiting: dict[type, deque[asyncio.Future[Any]]] = defaultdict(deque)

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.why:
            self.why = f"connection lost: {exc}" if exc else "connection closed"
        if not self.lost.done():
            self.lost.set_result(None)
        for queue in self._waiting.values():
            while queue:
                fut = queue.popleft()
                if not fut.done():
                    fut.set_result(None)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        try:
            while (packet := reader.next_packet()) is not None:
                self.control(packet)
        except CodecError as exc:
            self.fail(f"undecodable bytes from the server: {exc}")

    # helpers
    def control(self, packet: Packet) -> None:
        queue = self._waiting.get(type(packet))
        if queue:
            fut = queue.popleft()
            if not fut.done():
                fut.set_result(packet)
        elif len(self.unexpected) < 10:
            self.unexpected.append(type(packet).__name__)

    def expect(self, kind: type[P]) -> asyncio.Future[P | None]:
        fut: asyncio.Future[P | None] = asyncio.get_running_loop().create_future()
        if self.lost.done():
            fut.set_result(None)
        else:
            self._waiting[kind].append(fut)
        return fut

    def write(self, data: bytes | memoryview) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def fail(self, why: str) -> None:
        self.why = self.why or why
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """DISCONNECT and close: a clean goodbye, so the server sends no will."""
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(DISCONNECT)
            t.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def client_tls() -> ssl.SSLContext | None:
    """This process's client context when `TLS_CA_ENV` is set (made once), else None.

    Certificates are verified as a device does (the CA, the server's name or address):
    skipping it would spare the client work a real one does, not the server.
    """
    global _tls_context
    ca = os.environ.get(TLS_CA_ENV)
    if ca and _tls_context is None:
        _tls_context = ssl.create_default_context(cafile=ca)
    return _tls_context if ca else None


async def open_conn(
    factory: Callable[[], C],
    host: str,
    port: int,
    client_id: str,
    keepalive: int = 60,
    limit: float = CONNECT_TIMEOUT,
    username: str | None = None,
    password: str | None = None,
) -> C:
    """TCP connect, CONNECT, and wait for a successful CONNACK, all within `limit` s.

    `username` and `password` log in (a device's credentials); without them the CONNECT
    is anonymous, as an open broker takes it.
    """
    conn: C | None = None
    try:
        async with asyncio.timeout(limit):
            _, conn = await asyncio.get_running_loop().create_connection(
                factory, host, port, ssl=client_tls()
            )
            fut = conn.expect(Connack)
            conn.write(encode(connect_packet(client_id, keepalive, username, password), VERSION))
            ack = await fut
    except TimeoutError:
        if conn is not None:
            conn.abort()
        raise LoadError(f"{client_id}: no CONNACK within {limit:g} s") from None
    except OSError as exc:
        raise LoadError(f"{client_id}: cannot connect: {exc}") from None
    if ack is None:
        raise LoadError(f"{client_id}: {conn.why} before CONNACK")
    if ack.reason_code:
        conn.abort()
        raise LoadError(f"{client_id}: CONNACK refused with code {ack.reason_code:#x}")
    return conn


def connect_packet(
    client_id: str, keepalive: int, username: str | None = None, password: str | None = None
) -> Connect:
    """A clean-session 3.1.1 CONNECT, with a login when `username` is given."""
    return Connect(
        client_id,
        keepalive=keepalive,
        username=username,
        password=None if password is None else password.encode(),
    )


async def subscribe(conn: Conn, topic_filter: str, qos: int, limit: float = 10.0) -> int:
    """SUBSCRIBE to one filter and return the granted QoS; refusal is an error."""
    return (await subscribe_many(conn, [topic_filter], qos, limit))[0]


async def subscribe_many(
    conn: Conn, filters: Sequence[str], qos: int, limit: float = 10.0
) -> list[int]:
    """SUBSCRIBE to several filters in one packet (one round trip); any refusal is an error."""
    fut = conn.expect(Suback)
    requests = [SubscriptionRequest(f, qos) for f in filters]
    conn.write(encode(Subscribe(1, requests), VERSION))
    try:
        async with asyncio.timeout(limit):
            ack = await fut
    except TimeoutError:
        raise LoadError(f"no SUBACK for {list(filters)!r} within {limit:g} s") from None
    if ack is None:
        raise LoadError(f"{conn.why} before SUBACK")
    granted = list(ack.reason_codes)
    for f, code in zip(filters, granted, strict=False):
        if code > 2:
            raise LoadError(f"SUBSCRIBE {f!r} refused with code {code:#x}")
    if len(granted) != len(filters):
        raise LoadError(f"SUBACK has {len(granted)} codes for {len(filters)} filters")
    return granted


async def ping_all(conns: Sequence[Conn], limit: float = PING_TIMEOUT) -> int:
    """PINGREQ on every connection at once; returns how many answered with PINGRESP."""
    futs = [c.expect(PingResp) for c in conns]
    for c in conns:
        if not c.lost.done():
            c.write(PINGREQ)
    if not futs:
        return 0
    await asyncio.wait(futs, timeout=limit)
    return sum(1 for f in futs if f.done() and f.result() is not None)


def close_all(conns: Sequence[Conn]) -> None:
    for c in conns:
        c.close()


class Subscriber(Conn):
    """Counts and checks every PUBLISH; acks QoS 1 with one write per chunk read.

    `topics[i]` is publisher i's topic. With `per_pub` given, sequence numbers are bounded
    and `done` resolves when every message has arrived once; without it (sustained load)
    the caller sets `expected` when it knows how many were sent.

    Two parsers, same checks. `strict=True` runs every packet through the codec's
    `Reader`. The default frames the stream itself and reads a PUBLISH's fields in place
    (flags, topic, packet id, payload header), handing every other packet to the codec's
    `decode_packet`: building a `Publish` object per message costs about 2 µs, which made
    this client, not the server, the limit at QoS 1 (measured against mosquitto).
    """

    def __init__(
        self, topics: Sequence[str], per_pub: int | None, qos: int, strict: bool = False
    ) -> None:
        super().__init__()
        self.topics = list(topics)
        self.topic_bytes = [t.encode() for t in self.topics]
        self.per_pub = per_pub
        self.qos = qos
        self.strict = strict
        self.seen = [bytearray(per_pub or 0) for _ in self.topics]
        self.high = [-1] * len(self.topics)
        self.expected: int | None = None if per_pub is None else per_pub * len(self.topics)
        self.unique = self.dups = self.reordered = self.foreign = self.wrong_qos = 0
        self.t_first = self.t_last = 0.0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks = puback_table()
        self._buf = bytearray()

    def data_received(self, data: bytes) -> None:
        t = now()
        acks: list[bytes] = []
        before = self.unique + self.dups + self.foreign
        try:
            if self.strict:
                self._parse_strict(data, acks)
            else:
                self._parse_fast(data, acks)
        except CodecError as exc:
            self.fail(f"undecodable bytes from the server: {exc}")
        if acks and self.transport is not None:
            self.transport.write(b"".join(acks))
        if self.unique + self.dups + self.foreign != before:
            self.t_last = t
            if not self.t_first:
                self.t_first = t
            self.check_done()

    def _parse_strict(self, data: bytes, acks: list[bytes]) -> None:
        reader = self.reader
        reader.feed(data)
        table, unpack = self._acks, HEADER.unpack_from
        while (p := reader.next_packet()) is not None:
            if type(p) is not Publish:
                self.control(p)
                continue
            if p.qos:
                acks.append(table[cast(int, p.packet_id)])
            if p.qos != self.qos:
                self.wrong_qos += 1
            payload = p.payload
            if len(payload) < HEADER.size:
                self.foreign += 1
                continue
            pub, seq = unpack(payload)
            self._tally(pub, seq, pub < len(self.topics) and p.topic == self.topics[pub])

    def _parse_fast(self, data: bytes, acks: list[bytes]) -> None:
        buf = self._buf
        buf += data
        end = len(buf)
        pos = 0
        table, unpack, topics, qos = self._acks, HEADER.unpack_from, self.topic_bytes, self.qos
        npub = len(topics)
        tally = self._tally
        while end - pos >= 2:
            first = buf[pos]
            length = buf[pos + 1]
            head = pos + 2
            if length & 0x80:  # a remaining length of more than one byte
                length &= 0x7F
                shift = 7
                complete = False
                while head < end and shift <= 21:
                    byte = buf[head]
                    head += 1
                    length |= (byte & 0x7F) << shift
                    if not byte & 0x80:
                        complete = True
                        break
                    shift += 7
                if not complete:
                    if shift > 21:
                        raise MalformedPacket("remaining length longer than four bytes")
                    break
            stop = head + length
            if stop > end:
                break
            if first >> 4 != 3:
                self.control(decode_packet(first, bytes(buf[head:stop]), VERSION))
                pos = stop
                continue
            q = (first >> 1) & 3
            if q == 3 or (first & 8 and not q):
                raise MalformedPacket("PUBLISH with QoS 3, or DUP at QoS 0")
            if length < 2:
                raise MalformedPacket("PUBLISH too short for its topic")
            topic_end = head + 2 + ((buf[head] << 8) | buf[head + 1])
            p = topic_end + 2 if q else topic_end
            if p > stop:
                raise MalformedPacket("topic or packet id runs past the end of the packet")
            if q:
                pid = (buf[topic_end] << 8) | buf[topic_end + 1]
                if not pid:
                    raise MalformedPacket("packet identifier 0")
                acks.append(table[pid])
            if q != qos:
                self.wrong_qos += 1
            if stop - p < HEADER.size:
                self.foreign += 1
            else:
                pub, seq = unpack(buf, p)
                tally(pub, seq, pub < npub and buf[head + 2 : topic_end] == topics[pub])
            pos = stop
        del buf[:pos]

    def _tally(self, pub: int, seq: int, topic_ok: bool) -> None:
        if not topic_ok:
            self.foreign += 1
            return
        s = self.seen[pub]
        if seq >= len(s):
            if self.per_pub is not None or seq > 1 << 28:
                self.foreign += 1
                return
            s.extend(bytes(seq + 65536 - len(s)))
        if s[seq]:
            self.dups += 1
            return
        s[seq] = 1
        self.unique += 1
        if seq < self.high[pub]:
            self.reordered += 1
        else:
            self.high[pub] = seq

    def check_done(self) -> None:
        if self.expected is not None and self.unique >= self.expected and not self.done.done():
            self.done.set_result(None)

    def missing(self, sent: Sequence[int]) -> int:
        """How many of the first `sent[i]` messages of each publisher i never arrived."""
        return sum(n - self.seen[i][:n].count(1) for i, n in enumerate(sent))


class Publisher(Conn):
    """Sends a pre-encoded run of equal-sized PUBLISH packets.

    QoS 0: the whole run in one write; done when the kernel has taken every byte.
    QoS 1: `window` messages in flight; each chunk of PUBACKs read is answered by one
    write of as many new messages as were acked. PUBACKs must come in order (MQTT 4.6),
    so the PUBACK stream is known in advance: a chunk equal to the next bytes of it is
    taken whole (one comparison); anything else goes through the codec's `Reader`.
    """

    def __init__(
        self, packets: bytes, count: int, qos: int, window: int, strict: bool = False
    ) -> None:
        super().__init__()
        self.packets = memoryview(packets)
        self.size = len(packets) // count
        self.count = count
        self.qos = qos
        self.window = max(1, window)
        self.strict = strict
        self.sent = self.acked = self.bad_acks = 0
        self.next_pid = 1
        self.t_start = self.t_done = 0.0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._expected_acks = b""
        if qos and not strict:
            table = puback_table()
            self._expected_acks = b"".join(table[packet_id(i)] for i in range(count))
        self._ack_size = len(puback_table()[1])

    def start(self) -> None:
        self.t_start = now()
        assert self.transport is not None
        if self.qos == 0:
            # Limits of 0: pause_writing/resume_writing then tell exactly when the buffer
            # is empty again.
            self.transport.set_write_buffer_limits(high=0)
            self.sent = self.count
            self.transport.write(self.packets)
            if self.transport.get_write_buffer_size() == 0:
                self._finish()
        else:
            self._send(min(self.window, self.count))

    def resume_writing(self) -> None:
        if self.qos == 0 and self.sent == self.count:
            self._finish()

    def _send(self, n: int) -> None:
        a = self.sent
        self.sent = a + n
        self.write(self.packets[a * self.size : (a + n) * self.size])

    def _finish(self) -> None:
        if not self.done.done():
            self.t_done = now()
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.done.done():
            self.done.set_result(None)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        acked = 0
        at = self.acked * self._ack_size
        if (
            self._expected_acks
            and not reader.buffered
            and data == self._expected_acks[at : at + len(data)]
            and len(data) % self._ack_size == 0
        ):
            acked = len(data) // self._ack_size
            self.next_pid = packet_id(self.acked + acked)
        else:
            reader.feed(data)
            try:
                while (p := reader.next_packet()) is not None:
                    if type(p) is PubAck and p.type is PacketType.PUBACK:
                        if p.packet_id != self.next_pid:
                            self.bad_acks += 1
                        self.next_pid = p.packet_id % 65535 + 1
                        acked += 1
                    else:
                        self.control(p)
            except CodecError as exc:
                self.fail(f"undecodable bytes from the server: {exc}")
        if acked:
            self.acked += acked
            more = min(self.count - self.sent, self.window - (self.sent - self.acked))
            if more > 0:
                self._send(more)
            if self.acked >= self.count:
                self._finish()


def encode_run(pub: int, topic: str, count: int, qos: int, payload: int) -> bytes:
    """A publisher's whole run of PUBLISH packets, back to back, all the same size."""
    t = topic.encode()
    filler = b"x" * max(0, payload - HEADER.size)
    return b"".join(
        encode_publish(
            t,
            HEADER.pack(pub, s) + filler,
            qos,
            False,
            False,
            packet_id(s) if qos else None,
            VERSION,
        )
        for s in range(count)
    )


class PacedPublisher(Conn):
    """Publishes at a fixed rate for sustained load; QoS 1 keeps at most `window` in flight.

    When the window is full the publisher falls behind its schedule and catches up when
    acks return; `max_behind` records how far, so a server that cannot take the offered
    load shows up as such rather than as a lower rate.
    """

    def __init__(self, index: int, topic: str, qos: int, window: int, payload: int) -> None:
        super().__init__()
        self.index = index
        self.topic = topic.encode()
        self.qos = qos
        self.window = max(1, window)
        self.filler = b"x" * max(0, payload - HEADER.size)
        self.sent = self.acked = self.bad_acks = self.max_behind = 0
        self.next_pid = 1
        self._drained: asyncio.Future[None] | None = None

    def drained(self) -> asyncio.Future[None]:
        """Resolves once every message sent so far is acked, or the connection is lost."""
        self._drained = asyncio.get_running_loop().create_future()
        self._check_drained()
        return self._drained

    def _check_drained(self) -> None:
        d = self._drained
        if d is not None and not d.done() and (self.acked >= self.sent or self.lost.done()):
            d.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._check_drained()

    def send_due(self, due: int) -> None:
        n = due - self.sent
        if self.qos:
            n = min(n, self.window - (self.sent - self.acked))
        if n > 0 and not self.lost.done():
            a = self.sent
            self.sent = a + n
            t, qos, idx, filler = self.topic, self.qos, self.index, self.filler
            self.write(
                b"".join(
                    encode_publish(
                        t,
                        HEADER.pack(idx, s) + filler,
                        qos,
                        False,
                        False,
                        packet_id(s) if qos else None,
                        VERSION,
                    )
                    for s in range(a, a + n)
                )
            )
        self.max_behind = max(self.max_behind, due - self.sent)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        try:
            while (p := reader.next_packet()) is not None:
                if type(p) is PubAck and p.type is PacketType.PUBACK:
                    if p.packet_id != self.next_pid:
                        self.bad_acks += 1
                    self.next_pid = p.packet_id % 65535 + 1
                    self.acked += 1
                else:
                    self.control(p)
        except CodecError as exc:
            self.fail(f"undecodable bytes from the server: {exc}")
        self._check_drained()


# ------------------------------------------------------------------------------ workers


class Link(Protocol):
    """A worker's line to the run that started it: one message up, one reply down."""

    def send(self, msg: dict[str, Any]) -> None: ...

    async def recv(self) -> dict[str, Any]: ...


class LocalLink:
    """A Link for a worker running as a task in the run's own process."""

    def __init__(self) -> None:
        self.up: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.down: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def send(self, msg: dict[str, Any]) -> None:
        self.up.put_nowait(msg)

    async def recv(self) -> dict[str, Any]:
        return await self.down.get()


async def _readable(fd: int, limit: float | None = None) -> bool:
    """Wait until a file descriptor is readable (or `limit` s pass); True if it is."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await asyncio.wait([fut], timeout=None if limit is None else max(0.0, limit))
    finally:
        loop.remove_reader(fd)
    return fut.done()


async def _pipe_recv(conn: multiprocessing.connection.Connection) -> Any:
    """Receive from a pipe without blocking the event loop (EOFError if the peer is gone)."""
    if not conn.poll():
        await _readable(conn.fileno())
    return conn.recv()


class PipeLink:
    """A Link for a worker in its own process."""

    def __init__(self, conn: multiprocessing.connection.Connection) -> None:
        self.conn = conn

    def send(self, msg: dict[str, Any]) -> None:
        self.conn.send(msg)

    async def recv(self) -> dict[str, Any]:
        return cast(dict[str, Any], await _pipe_recv(self.conn))


Role = Callable[[Link, dict[str, Any]], Awaitable[None]]


async def _guarded(role: Role, link: Link, job: dict[str, Any]) -> None:
    try:
        await role(link, job)
    except Exception as exc:
        link.send({"error": f"{type(exc).__name__}: {exc}"})


def _child_main(
    conn: multiprocessing.connection.Connection, role: str, job: dict[str, Any]
) -> None:
    run_loop(_guarded(ROLES[role], PipeLink(conn), job))


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop (the fast loop the servers are compared with)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


class Crew:
    """The load workers of one run, in this process (`procs=0`) or in `procs` processes.

    Every exchange is a phase: `gather` waits for one message from each worker (with a
    deadline), `tell` sends one to each. Worker processes inherit this process's CPU
    affinity, so they stay on the load cores.
    """

    def __init__(self, role: str, jobs: list[dict[str, Any]], procs: int) -> None:
        self.role = role
        self.jobs = jobs
        self.procs = procs
        self.local: list[tuple[LocalLink, asyncio.Task[None]]] = []
        self.remote: list[tuple[multiprocessing.connection.Connection, Any]] = []

    def start(self) -> None:
        if self.procs == 0:
            for job in self.jobs:
                link = LocalLink()
                task = asyncio.create_task(_guarded(ROLES[self.role], link, job))
                self.local.append((link, task))
            return
        ctx = multiprocessing.get_context("spawn")
        for job in self.jobs:
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=_child_main, args=(theirs, self.role, job), daemon=True)
            proc.start()
            theirs.close()
            self.remote.append((ours, proc))

    @property
    def in_process(self) -> bool:
        return self.procs == 0

    async def gather(self, limit: float, what: str) -> list[dict[str, Any]]:
        """One message from every worker; a worker's error or silence fails the run."""

        async def one_local(link: LocalLink, task: asyncio.Task[None]) -> dict[str, Any]:
            get = asyncio.ensure_future(link.up.get())
            await asyncio.wait([get, task], return_when=asyncio.FIRST_COMPLETED)
            if get.done():
                return get.result()
            get.cancel()
            return {"error": "worker ended without a word"}

        async def one_remote(conn: multiprocessing.connection.Connection) -> dict[str, Any]:
            try:
                return cast(dict[str, Any], await _pipe_recv(conn))
            except (EOFError, OSError):
                return {"error": "worker process died"}

        coros = [one_local(*w) for w in self.local] + [one_remote(c) for c, _ in self.remote]
        try:
            async with asyncio.timeout(limit):
                msgs = await asyncio.gather(*coros)
        except TimeoutError:
            raise LoadError(f"load workers did not {what} within {limit:g} s") from None
        errors = [m["error"] for m in msgs if "error" in m]
        if errors:
            raise LoadError(f"load worker failed ({what}): {errors[0]}")
        return msgs

    def tell(self, msg: dict[str, Any]) -> None:
        for link, _ in self.local:
            link.down.put_nowait(msg)
        for conn, _ in self.remote:
            with contextlib.suppress(OSError):
                conn.send(msg)

    async def finish(self, limit: float = 15.0) -> None:
        """Tell every worker to stop, wait for it, and kill what is still running after that."""
        self.tell({"stop": True})
        if self.local:
            tasks = [t for _, t in self.local]
            _, pending = await asyncio.wait(tasks, timeout=limit)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        deadline = now() + limit
        for conn, proc in self.remote:
            await _readable(proc.sentinel, deadline - now())  # the sentinel: readable at exit
            if proc.is_alive():
                proc.kill()
            proc.join(5)
            conn.close()

    def cpu_seconds(self, msgs: list[dict[str, Any]]) -> float:
        """CPU the worker processes reported; in-process workers are in our own CPU."""
        return 0.0 if self.in_process else sum(m.get("cpu", 0.0) for m in msgs)


def split(n: int, parts: int) -> list[range]:
    """0..n split into `parts` contiguous ranges as equal as possible (no empty ones)."""
    parts = max(1, min(parts, n))
    bounds = [n * i // parts for i in range(parts + 1)]
    return [range(bounds[i], bounds[i + 1]) for i in range(parts)]


class _Stop(Exception):
    """The run told this worker to stop (finished, or gave up on it)."""


async def _until_stop(link: Link) -> dict[str, Any]:
    msg = await link.recv()
    if msg.get("stop"):
        raise _Stop
    return msg


async def connect_many(
    factories: Sequence[Callable[[], C]],
    host: str,
    port: int,
    ids: Sequence[str],
    keepalive: int,
    concurrency: int,
    logins: Sequence[tuple[str, str]] | None = None,
) -> tuple[list[C], list[str]]:
    """Open len(ids) connections, `concurrency` at a time; returns (opened, errors).

    `logins[i]` is connection i's (user name, password), if the server wants a login.
    The opened connections are in completion order, not in the order of `ids`.
    """
    conns: list[C] = []
    errors: list[str] = []
    todo: Iterator[int] = iter(range(len(ids)))

    async def worker() -> None:
        for i in todo:
            user, password = logins[i] if logins else (None, None)
            try:
                conn = await open_conn(
                    factories[i], host, port, ids[i], keepalive, username=user, password=password
                )
            except LoadError as exc:
                errors.append(str(exc))
            else:
                conns.append(conn)

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(ids))))))
    return conns, errors


async def publish_role(link: Link, job: dict[str, Any]) -> None:
    """Publishers of a throughput run: connect, wait for go, publish, report, wait for stop."""
    pubs: list[Publisher] = []
    try:
        first, topics = job["first"], job["topics"]
        count, qos, window, size = job["count"], job["qos"], job["window"], job["payload"]
        runs = [encode_run(first + i, t, count, qos, size) for i, t in enumerate(topics)]

        def factory(run: bytes) -> Callable[[], Publisher]:
            return lambda: Publisher(run, count, qos, window, job["strict"])

        ids = [f"{job['prefix']}-{first + i}" for i in range(len(topics))]
        pubs, errors = await connect_many(
            [factory(r) for r in runs], job["host"], job["port"], ids, 60, 50
        )
        if errors:
            raise LoadError(f"{len(errors)} publishers could not connect: {errors[0]}")
        del runs
        gc.collect()
        gc.freeze()
        link.send({"ready": len(pubs)})
        await _until_stop(link)
        cpu0 = cpu_now()
        t0 = now()
        for p in pubs:
            p.start()
        try:
            async with asyncio.timeout(job["limit"]):
                await asyncio.gather(*(p.done for p in pubs))
        except TimeoutError:
            pass
        lost = [p.why for p in pubs if p.lost.done()]
        link.send(
            {
                "t_start": t0,
                "t_done": max((p.t_done for p in pubs), default=t0),
                "finished": sum(1 for p in pubs if p.t_done),
                "acked": sum(p.acked for p in pubs),
                "bad_acks": sum(p.bad_acks for p in pubs),
                "lost": len(lost),
                "lost_why": lost[:1],
                "unexpected": [u for p in pubs for u in p.unexpected][:10],
                "cpu": cpu_now() - cpu0,
            }
        )
        await _until_stop(link)
    except _Stop:
        pass
    finally:
        gc.unfreeze()
        close_all(pubs)
        await asyncio.sleep(0)


async def paced_role(link: Link, job: dict[str, Any]) -> None:
    """Publishers of a sustained run: a fixed rate each, for a fixed time, then report."""
    pubs: list[PacedPublisher] = []
    try:
        first, topics = job["first"], job["topics"]
        qos, window, size = job["qos"], job["window"], job["payload"]

        def factory(i: int, topic: str) -> Callable[[], PacedPublisher]:
            return lambda: PacedPublisher(first + i, topic, qos, window, size)

        ids = [f"{job['prefix']}-{first + i}" for i in range(len(topics))]
        pubs, errors = await connect_many(
            [factory(i, t) for i, t in enumerate(topics)], job["host"], job["port"], ids, 60, 50
        )
        if errors:
            raise LoadError(f"{len(errors)} publishers could not connect: {errors[0]}")
        link.send({"ready": len(pubs)})
        await _until_stop(link)
        cpu0 = cpu_now()
        rate, seconds, tick = job["rate_each"], job["seconds"], job["tick"]
        t0 = now()
        next_tick = t0
        while True:
            elapsed = min(now() - t0, seconds)
            due = int(rate * elapsed)
            for p in pubs:
                p.send_due(due)
            if elapsed >= seconds:
                break
            next_tick += tick
            await asyncio.sleep(max(0.0, next_tick - now()))
        t_end = now()
        if qos:
            await asyncio.wait([p.drained() for p in pubs], timeout=job["drain"])
        link.send(
            {
                "t_start": t0,
                "t_end": t_end,
                "sent": {p.index: p.sent for p in pubs},
                "acked": sum(p.acked for p in pubs),
                "bad_acks": sum(p.bad_acks for p in pubs),
                "max_behind": max((p.max_behind for p in pubs), default=0),
                "lost": sum(1 for p in pubs if p.lost.done()),
                "cpu": cpu_now() - cpu0,
            }
        )
        await _until_stop(link)
    except _Stop:
        pass
    finally:
        close_all(pubs)
        await asyncio.sleep(0)


class IdleClients:
    """Many idle MQTT connections on plain non-blocking sockets and one epoll.

    Why not `Conn`: an asyncio connection costs this client ~100 µs of CPU to open
    (transport, protocol, futures), more than mosquitto spends accepting it, so the
    connect rate measured the client. Here a connection is a socket in a dict: a
    non-blocking connect, the pre-encoded CONNECT, and the CONNACK read back, all driven
    by one epoll loop with a fixed number of connects in progress. The loop blocks its
    thread, which is fine for a worker that has nothing else to do meanwhile, and it
    checks its own deadlines.
    """

    def __init__(
        self,
        host: str,
        port: int,
        sources: Sequence[str] = (),
        per_source: int = 0,
        first: int = 0,
    ) -> None:
        self.addr = (host, port)
        # Client i binds to sources[(first + i) // per_source]: one loopback source
        # address has only ~28k ephemeral ports, so 100,000 connections need several
        # (127.0.0.2, ...). `first` is the run-wide index of this process's first client,
        # so that the load processes of one run use different addresses.
        self.sources = list(sources)
        self.per_source = per_source
        self.first = first
        self.socks: list[socket.socket] = []
        self.errors: list[str] = []
        self.failed = 0

    def _fail(self, sock: socket.socket, why: str) -> None:
        self.failed += 1
        if len(self.errors) < 3:
            self.errors.append(why)
        sock.close()

    def connect(
        self,
        ids: Sequence[str],
        keepalive: int,
        concurrency: int,
        limit: float = CONNECT_TIMEOUT,
        logins: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        """Open one connection per client id, `concurrency` at a time; each within `limit` s.

        `logins[i]` is the (user name, password) of client i, if the server wants one.
        If the first `concurrency` attempts all fail, the rest are not tried.
        """
        anonymous: tuple[None, None] = (None, None)
        connects = [
            encode(connect_packet(cid, keepalive, *(logins[i] if logins else anonymous)), VERSION)
            for i, cid in enumerate(ids)
        ]
        ok = encode(Connack(), VERSION)
        tls = client_tls()
        ep = select.epoll()
        # fd -> (socket, index, started, bytes of the CONNACK so far, or None while
        # connecting, or _HANDSHAKE while TLS shakes hands)
        busy: dict[int, tuple[socket.socket, int, float, bytes | str | None]] = {}
        todo = iter(range(len(ids)))
        # One-shot: a socket's registration disarms itself once it fired, so a finished
        # connection costs no epoll_ctl to leave the set (closing the epoll drops them all).
        out = select.EPOLLOUT | select.EPOLLONESHOT
        inn = select.EPOLLIN | select.EPOLLONESHOT
        kind = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
        try:
            while True:
                # A server that refuses or ignores the first wave gets no more attempts.
                give_up = self.failed >= concurrency and not self.socks
                while len(busy) < concurrency and not give_up:
                    i = next(todo, None)
                    if i is None:
                        break
                    # No TCP_NODELAY: each packet is one write with nothing unacknowledged
                    # before it, which Nagle never delays.
                    sock = socket.socket(socket.AF_INET, kind)
                    if self.sources:
                        # Port chosen at connect, per (source, destination): not at bind.
                        sock.setsockopt(socket.SOL_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
                        k = (self.first + i) // self.per_source
                        sock.bind((self.sources[k % len(self.sources)], 0))
                    err = sock.connect_ex(self.addr)
                    if err not in (0, errno.EINPROGRESS):
                        self._fail(sock, f"{ids[i]}: connect: {os.strerror(err)}")
                        continue
                    fd = sock.fileno()
                    if tls is not None:  # TLS first: that waits for the connect anyway
                        busy[fd] = (sock, i, now(), None)
                        ep.register(fd, out)
                        continue
                    try:
                        # On loopback the handshake is usually done by the time
                        # connect returns: send at once, and wait for writability
                        # only when it is not.
                        sock.send(connects[i])
                    except BlockingIOError:
                        busy[fd] = (sock, i, now(), None)
                        ep.register(fd, out)
                    except OSError as exc:
                        self._fail(sock, f"{ids[i]}: connect: {exc}")
                    else:
                        busy[fd] = (sock, i, now(), b"")
                        ep.register(fd, inn)
                if not busy:
                    break
                t = now()
                for fd, event in ep.poll(0.5):
                    sock, i, started, got = busy[fd]
                    if got is None:  # connected (or failed): send CONNECT, wait for CONNACK
                        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err or event & (select.EPOLLERR | select.EPOLLHUP):
                            del busy[fd]
                            self._fail(sock, f"{ids[i]}: connect: {os.strerror(err)}")
                            continue
                        if tls is None:
                            sock.send(connects[i])
                            busy[fd] = (sock, i, started, b"")
                            ep.modify(fd, inn)
                            continue
                        # The same fd, now behind TLS (the plain socket object is detached).
                        sock = tls.wrap_socket(
                            sock, server_hostname=self.addr[0], do_handshake_on_connect=False
                        )
                        got = _HANDSHAKE
                    if got is _HANDSHAKE:
                        try:
                            sock.do_handshake()
                        except ssl.SSLWantReadError:
                            busy[fd] = (sock, i, started, _HANDSHAKE)
                            ep.modify(fd, inn)
                            continue
                        except ssl.SSLWantWriteError:
                            busy[fd] = (sock, i, started, _HANDSHAKE)
                            ep.modify(fd, out)
                            continue
                        except OSError as exc:
                            del busy[fd]
                            self._fail(sock, f"{ids[i]}: TLS handshake: {exc}")
                            continue
                        sock.send(connects[i])
                        busy[fd] = (sock, i, started, b"")
                        ep.modify(fd, inn)
                        continue
                    assert isinstance(got, bytes)
                    try:
                        data = got + sock.recv(64)
                    except ssl.SSLWantReadError:  # TLS records without data yet (tickets)
                        busy[fd] = (sock, i, started, got)
                        ep.modify(fd, inn)
                        continue
                    except OSError as exc:
                        data = b""
                        why = str(exc)
                    else:
                        why = "connection closed before CONNACK"
                    if data == ok or (data and len(data) >= len(ok)):
                        del busy[fd]
                        if data == ok:
                            self.socks.append(sock)
                        else:
                            self._fail(sock, f"{ids[i]}: {_describe(data)}")
                    elif data:
                        busy[fd] = (sock, i, started, data)  # CONNACK cut in two
                        ep.modify(fd, inn)
                    else:
                        del busy[fd]
                        self._fail(sock, f"{ids[i]}: {why}")
                for fd, (sock, i, started, _) in list(busy.items()):
                    if t - started > limit:
                        del busy[fd]
                        self._fail(sock, f"{ids[i]}: no CONNACK within {limit:g} s")
        finally:
            ep.close()
            for sock, *_ in busy.values():
                sock.close()

    def check(self, limit: float = PING_TIMEOUT) -> tuple[int, int]:
        """(dropped, alive): connections the server closed, and those that answer a PINGREQ.

        A connection is dropped if it is readable before we ask anything (EOF or an
        unrequested packet); every other one gets a PINGREQ and must answer PINGRESP
        within `limit` s.
        """
        pong = encode(PingResp(), VERSION)
        ep = select.epoll()
        by_fd = {s.fileno(): s for s in self.socks}
        try:
            for fd in by_fd:
                ep.register(fd, select.EPOLLIN)
            dropped = {fd for fd, _ in ep.poll(0) if not _only_tls_records(by_fd[fd])}
            waiting: dict[int, bytes] = {}
            for fd, sock in by_fd.items():
                if fd not in dropped:
                    try:
                        sock.send(PINGREQ)
                        waiting[fd] = b""
                    except OSError:
                        dropped.add(fd)
            alive = 0
            deadline = now() + limit
            while waiting and now() < deadline:
                for fd, _ in ep.poll(min(0.5, max(0.0, deadline - now()))):
                    if fd not in waiting:
                        continue
                    try:
                        data = waiting[fd] + by_fd[fd].recv(64)
                    except ssl.SSLWantReadError:
                        continue  # TLS records without data (a session ticket)
                    except OSError:
                        data = b""
                    if data == pong:
                        alive += 1
                        del waiting[fd]
                        ep.unregister(fd)
                    elif not data or len(data) >= len(pong):
                        del waiting[fd]  # closed, or not a PINGRESP: not alive
                        ep.unregister(fd)
                    else:
                        waiting[fd] = data
            return len(dropped), alive
        finally:
            ep.close()

    def close(self) -> None:
        """DISCONNECT (so no will is sent) and close every connection."""
        for sock in self.socks:
            with contextlib.suppress(OSError):
                sock.send(DISCONNECT)
            sock.close()
        self.socks = []


_IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h; not in the socket module


def _only_tls_records(sock: socket.socket) -> bool:
    """Readable, but only with TLS records that carry no data (a TLS 1.3 server's
    session tickets, read here): the connection is still there."""
    if not isinstance(sock, ssl.SSLSocket):
        return False
    try:
        sock.recv(64)
    except ssl.SSLWantReadError:
        return True
    except OSError:
        return False
    return False


def _describe(data: bytes) -> str:
    """What the server answered instead of a plain CONNACK, decoded by the codec."""
    reader = Reader(VERSION)
    reader.feed(data)
    try:
        packet = reader.next_packet()
    except CodecError as exc:
        return f"undecodable answer to CONNECT: {exc}"
    if isinstance(packet, Connack):
        return f"CONNACK refused with code {packet.reason_code:#x}"
    return f"answer to CONNECT: {packet!r}"


async def conns_role(link: Link, job: dict[str, Any]) -> None:
    """Idle clients: connect all (timed), hold, check and ping all on request, then close."""
    clients = IdleClients(
        job["host"],
        job["port"],
        job.get("sources", ()),
        job.get("per_source", 0),
        first=job["ids"][0] if job["ids"] else 0,
    )
    try:
        ids = job.get("client_ids") or [f"{job['prefix']}-{i}" for i in job["ids"]]
        logins = [tuple(x) for x in job["logins"]] if job.get("logins") else None
        link.send({"ready": len(ids)})
        await _until_stop(link)
        cpu0 = cpu_now()
        t0 = now()
        clients.connect(ids, job["keepalive"], job["concurrency"], logins=logins)
        t1 = now()
        link.send(
            {
                "t_start": t0,
                "t_end": t1,
                "connected": len(clients.socks),
                "failed": clients.failed,
                "errors": clients.errors,
                "cpu": cpu_now() - cpu0,
            }
        )
        await _until_stop(link)
        dropped, alive = clients.check()
        link.send({"alive": alive, "dropped": dropped})
        await _until_stop(link)
    except _Stop:
        pass
    finally:
        clients.close()


ROLES: dict[str, Role] = {
    "publish": publish_role,
    "paced": paced_role,
    "conns": conns_role,
}


# ------------------------------------------------------------------------------- shapes


def machine_busy() -> float:
    """CPU seconds all cores have spent not idle (steal included) since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


def wait_quiet(limit: float, max_other: float, say: Callable[[str], None]) -> float:
    """Wait up to `limit` s until other processes leave the CPUs alone; returns their %.

    The machine may be shared (other sessions' test suites): a run next to them measures
    them too. Call it when nothing of ours runs, so all busy CPU is someone else's.
    """
    deadline = now() + limit
    told = False
    while True:
        b0, t0 = machine_busy(), now()
        time.sleep(0.5)
        pct = 100 * (machine_busy() - b0) / (now() - t0)
        if pct <= max_other or now() > deadline:
            return pct
        if not told:
            say(f"    other processes use {pct:.0f}% of a core: waiting up to {limit:g} s")
            told = True


@dataclass
class Snapshot:
    """Clocks at one instant: wall, server CPU, our CPU, the whole machine's busy CPU, and
    the CPU of the server's helpers outside its process (its database), if any."""

    t: float
    server: float
    load: float
    machine: float
    helpers: float = 0.0

    @classmethod
    def take(cls, probe: ServerProbe, helpers: CpuProbe | None = None) -> Snapshot:
        extra = helpers.cpu_seconds() if helpers is not None else 0.0
        return cls(now(), probe.cpu_seconds(), cpu_now(), machine_busy(), extra)


@dataclass
class Cpu:
    """CPU over one measured interval, in % of one core.

    `other_pct` is what the machine spent on anything but the server, its helpers and
    the load (other processes, interrupts): high values mean a noisy run, since server and
    load were meant to have their cores to themselves. `helpers_pct` is the server's work
    done in other processes (its database), part of the system under test, not noise.
    """

    server_pct: float = 0.0
    load_pct: float = 0.0
    other_pct: float = 0.0
    server_s: float = 0.0
    helpers_pct: float = 0.0
    helpers_s: float = 0.0

    @classmethod
    def between(cls, a: Snapshot, b: Snapshot, workers_s: float = 0.0) -> Cpu:
        dt = b.t - a.t
        if dt <= 0:
            return cls()
        server = b.server - a.server
        load = b.load - a.load + workers_s
        helpers = b.helpers - a.helpers
        other = max(0.0, (b.machine - a.machine) - server - load - helpers)
        return cls(
            100 * server / dt,
            100 * load / dt,
            100 * other / dt,
            server,
            100 * helpers / dt,
            helpers,
        )


@dataclass
class ThroughputResult:
    """One throughput run. `rate` is received / (last receive - publisher start)."""

    publishers: int
    per_publisher: int
    qos: int
    payload: int
    window: int
    expected: int
    received: int = 0
    lost: int = 0
    duplicates: int = 0
    reordered: int = 0
    foreign: int = 0
    wrong_qos: int = 0
    bad_acks: int = 0
    seconds: float = 0.0
    rate: float = 0.0
    publish_seconds: float = 0.0
    server_cpu_pct: float = 0.0
    server_us_per_msg: float = 0.0
    load_cpu_pct: float = 0.0
    other_cpu_pct: float = 0.0
    complete: bool = False
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def throughput(
    host: str,
    port: int,
    *,
    publishers: int = 1,
    per_publisher: int = 100_000,
    qos: int = 0,
    payload: int = 100,
    window: int = 100,
    sub_filter: str | None = None,
    procs: int = 0,
    probe: ServerProbe | None = None,
    limit: float = 120.0,
    settle: float = 2.0,
    stall: float = 15.0,
    prefix: str = "bench",
    strict: bool = False,
) -> ThroughputResult:
    """N publishers, one topic each, -> one subscriber; both sides at `qos`.

    One publisher uses topic `bench/a` and the subscriber subscribes to it exactly;
    several use `bench/p/<i>` and the subscriber subscribes to `#`.
    Ends when every message arrived once; or once, for `settle` s, the publishers have
    finished, nothing more arrived and the server used (almost) no CPU: the rest is lost
    (a server still busy may yet deliver, so it is waited for). Fails after `stall` s with
    nothing arriving, or `limit` s in all. `strict` parses everything with the codec's
    `Reader`.
    """
    probe = probe or NoProbe()
    res = ThroughputResult(
        publishers, per_publisher, qos, payload, window, publishers * per_publisher
    )
    topics = ["bench/a"] if publishers == 1 else [f"bench/p/{i}" for i in range(publishers)]
    sub_filter = sub_filter or (topics[0] if publishers == 1 else "#")
    crew: Crew | None = None
    sub: Subscriber | None = None
    try:
        sub = await open_conn(
            lambda: Subscriber(topics, per_publisher, qos, strict), host, port, f"{prefix}-sub"
        )
        granted = await subscribe(sub, sub_filter, qos)
        if granted != qos:
            res.notes.append(f"subscription granted QoS {granted}, asked {qos}")
            sub.qos = granted
        jobs = [
            {
                "host": host,
                "port": port,
                "first": r.start,
                "topics": topics[r.start : r.stop],
                "count": per_publisher,
                "qos": qos,
                "window": window,
                "payload": payload,
                "prefix": f"{prefix}-pub",
                "limit": limit,
                "strict": strict,
            }
            for r in split(publishers, max(1, procs))
        ]
        crew = Crew("publish", jobs, procs)
        crew.start()
        await crew.gather(30 + publishers / 50, "connect")
        gc.collect()
        snap0 = Snapshot.take(probe)
        t_go = snap0.t
        crew.tell({"go": True})
        reports_task = asyncio.ensure_future(crew.gather(limit + 5, "publish"))
        reports: list[dict[str, Any]] | None = None
        t_pub_done = 0.0
        busy_check, t_server_busy = snap0, t_go
        while True:
            pending = [f for f in (sub.done, sub.lost, reports_task) if not f.done()]
            await asyncio.wait(pending, timeout=0.25, return_when=asyncio.FIRST_COMPLETED)
            t = now()
            if sub.done.done():
                break
            if sub.lost.done():
                res.error = f"subscriber: {sub.why}"
                break
            if t - busy_check.t >= 0.25:
                snap = Snapshot.take(probe)
                if Cpu.between(busy_check, snap).server_pct > QUIET_PCT:
                    t_server_busy = t
                busy_check = snap
            if reports_task.done():
                if reports is None:
                    reports = reports_task.result()  # raises on a worker's error
                    t_pub_done = max(r["t_done"] for r in reports)
                if t - max(sub.t_last, t_pub_done, t_server_busy) > settle:
                    break
            if t - max(sub.t_last, t_go) > stall:
                state = "busy" if t - t_server_busy < 1 else "idle"
                res.error = f"nothing received for {stall:g} s, the server {state}"
                break
            if t - t_go > limit:
                res.error = f"not done within {limit:g} s"
                break
            if not probe.alive():
                res.error = "server died"
                break
        snap1 = Snapshot.take(probe)
        if reports is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reports_task), settle + 5)
            if reports_task.done():
                reports = reports_task.result()
            else:
                reports_task.cancel()
        t_start = min((r["t_start"] for r in reports), default=t_go) if reports else t_go
        res.received = sub.unique
        res.lost = res.expected - sub.unique
        res.duplicates, res.reordered = sub.dups, sub.reordered
        res.foreign, res.wrong_qos = sub.foreign, sub.wrong_qos
        t_end = sub.t_last or now()
        res.seconds = max(1e-9, t_end - t_start)
        res.rate = res.received / res.seconds
        cpu = Cpu.between(snap0, snap1, crew.cpu_seconds(reports or []))
        if reports:
            res.publish_seconds = max(r["t_done"] for r in reports) - t_start
            res.bad_acks = sum(r["bad_acks"] for r in reports)
            if any(r["lost"] for r in reports):
                why = next(w for r in reports for w in r["lost_why"])
                res.notes.append(f"{sum(r['lost'] for r in reports)} publishers lost: {why}")
            if qos and sum(r["acked"] for r in reports) < res.expected:
                res.notes.append(
                    f"publishers got {sum(r['acked'] for r in reports)} PUBACKs of {res.expected}"
                )
            unexpected = [u for r in reports for u in r["unexpected"]]
            if unexpected:
                res.notes.append(f"unexpected packets to publishers: {unexpected[:3]}")
        elif res.error is None:
            res.error = "publishers did not report"
        res.server_cpu_pct, res.load_cpu_pct, res.other_cpu_pct = (
            cpu.server_pct,
            cpu.load_pct,
            cpu.other_pct,
        )
        # Per message published: a server that drops still had to read and route each one.
        res.server_us_per_msg = 1e6 * cpu.server_s / res.expected
        if sub.unexpected:
            res.notes.append(f"unexpected packets to subscriber: {sub.unexpected[:3]}")
    except LoadError as exc:
        res.error = str(exc)
    finally:
        if crew is not None:
            await crew.finish()
        if sub is not None:
            sub.close()
    res.complete = (
        res.error is None
        and res.lost == 0
        and res.duplicates == 0
        and res.foreign == 0
        and res.wrong_qos == 0
        and res.bad_acks == 0
    )
    return res


@dataclass
class ConnectionsResult:
    """Connect rate and memory per idle connection, from one run."""

    count: int
    concurrency: int
    connected: int = 0
    failed: int = 0
    connect_seconds: float = 0.0
    connects_per_s: float = 0.0
    rss_before_kb: int = 0
    rss_connected_kb: int = 0
    rss_held_kb: int = 0
    bytes_per_conn: float = 0.0
    hold_seconds: float = 0.0
    alive: int = 0
    dropped: int = 0
    server_cpu_pct: float = 0.0
    load_cpu_pct: float = 0.0
    other_cpu_pct: float = 0.0
    helpers_cpu_pct: float = 0.0
    complete: bool = False
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def connections(
    host: str,
    port: int,
    *,
    count: int = 10_000,
    concurrency: int = 100,
    hold: float = 5.0,
    keepalive: int = 60,
    procs: int = 0,
    probe: ServerProbe | None = None,
    limit: float = 120.0,
    prefix: str = "bench-idle",
    client_ids: Sequence[str] | None = None,
    logins: Sequence[tuple[str, str]] | None = None,
    helpers: CpuProbe | None = None,
    sources: Sequence[str] = (),
    per_source: int = 20_000,
) -> ConnectionsResult:
    """`count` clients connect, `concurrency` at a time; hold them idle; ping them all.

    connects/s = connected / (last CONNACK - first attempt), over the whole set.
    bytes per connection = (server RSS after the hold - RSS before connecting) / connected.
    `keepalive` must be longer than the hold plus the ping, so no client owes a PINGREQ.
    Clients are `{prefix}-{i}`, or `client_ids` when given (then `count` is its length);
    `logins[i]` is client i's (user name, password) for a server that wants a login.
    `helpers` reads the CPU of the server's other processes (its database), reported
    apart and kept out of `other`. `sources`: loopback source addresses, `per_source`
    clients on each (more connections than one address has ephemeral ports).
    """
    probe = probe or NoProbe()
    if client_ids is not None:
        count = len(client_ids)
    res = ConnectionsResult(count, concurrency, hold_seconds=hold)
    workers = max(1, procs)
    jobs = [
        {
            "host": host,
            "port": port,
            "ids": list(r),
            "client_ids": None if client_ids is None else list(client_ids[r.start : r.stop]),
            "logins": None if logins is None else [list(x) for x in logins[r.start : r.stop]],
            "prefix": prefix,
            "keepalive": keepalive,
            "concurrency": max(1, concurrency // workers),
            "sources": list(sources),
            "per_source": per_source,
        }
        for r in split(count, workers)
    ]
    crew = Crew("conns", jobs, procs)
    try:
        crew.start()
        await crew.gather(30, "start")
        await asyncio.sleep(0.5)
        gc.collect()
        res.rss_before_kb = probe.rss_kb()
        snap0 = Snapshot.take(probe, helpers)
        crew.tell({"go": True})
        reports = await crew.gather(limit, "connect")
        cpu = Cpu.between(snap0, Snapshot.take(probe, helpers), crew.cpu_seconds(reports))
        res.connected = sum(r["connected"] for r in reports)
        res.failed = sum(r["failed"] for r in reports)
        if not res.connected:
            raise LoadError(f"no client could connect: {reports[0]['errors'][:1]}")
        if res.failed:
            res.notes.append(f"{res.failed} connects failed, e.g. {reports[0]['errors'][:1]}")
        t0 = min(r["t_start"] for r in reports)
        res.connect_seconds = max(r["t_end"] for r in reports) - t0
        res.connects_per_s = res.connected / max(1e-9, res.connect_seconds)
        res.server_cpu_pct, res.load_cpu_pct = cpu.server_pct, cpu.load_pct
        res.other_cpu_pct, res.helpers_cpu_pct = cpu.other_pct, cpu.helpers_pct
        res.rss_connected_kb = probe.rss_kb()
        await asyncio.sleep(hold)
        res.rss_held_kb = probe.rss_kb()
        if not probe.alive():
            raise LoadError("server died while holding the connections")
        crew.tell({"ping": True})
        pings = await crew.gather(PING_TIMEOUT + 10, "ping")
        res.alive = sum(r["alive"] for r in pings)
        res.dropped = sum(r["dropped"] for r in pings)
        if res.connected:
            res.bytes_per_conn = (res.rss_held_kb - res.rss_before_kb) * 1024 / res.connected
    except LoadError as exc:
        res.error = str(exc)
    finally:
        await crew.finish(30)
    res.complete = res.error is None and res.connected == count and res.alive == count
    return res


@dataclass
class SustainedResult:
    """A fixed offered load for a fixed time, with the server's RSS every second."""

    seconds: float
    rate: int
    publishers: int
    qos: int
    payload: int
    sent: int = 0
    received: int = 0
    lost: int = 0
    duplicates: int = 0
    foreign: int = 0
    max_behind: int = 0
    rss_idle_kb: int = 0
    rss_first_kb: int = 0
    rss_last_kb: int = 0
    rss_min_kb: int = 0
    rss_max_kb: int = 0
    delivered_rate_min: float = 0.0
    delivered_rate_max: float = 0.0
    delivered_rate_mean: float = 0.0
    server_cpu_pct: float = 0.0
    load_cpu_pct: float = 0.0
    other_cpu_pct: float = 0.0
    samples: list[dict[str, float]] = field(default_factory=list)
    complete: bool = False
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def sustained(
    host: str,
    port: int,
    *,
    seconds: float = 60.0,
    rate: int = 10_000,
    publishers: int = 200,
    qos: int = 1,
    payload: int = 100,
    window: int = 100,
    procs: int = 0,
    probe: ServerProbe | None = None,
    sample_every: float = 1.0,
    drain: float = 15.0,
    tick: float = 0.01,
    prefix: str = "bench-sus",
) -> SustainedResult:
    """`publishers` clients publish `rate` msg/s in all (own topics) to one `#` subscriber.

    The server's RSS, its CPU and the delivered rate are sampled every `sample_every` s.
    A flat, bounded RSS under a steady load is the point; the messages are checked as in
    `throughput` (QoS 1: each exactly once).
    """
    probe = probe or NoProbe()
    res = SustainedResult(seconds, rate, publishers, qos, payload)
    topics = [f"bench/s/{i}" for i in range(publishers)]
    crew: Crew | None = None
    sub: Subscriber | None = None
    try:
        sub = await open_conn(lambda: Subscriber(topics, None, qos), host, port, f"{prefix}-sub")
        await subscribe(sub, "#", qos)
        jobs = [
            {
                "host": host,
                "port": port,
                "first": r.start,
                "topics": topics[r.start : r.stop],
                "qos": qos,
                "window": window,
                "payload": payload,
                "prefix": f"{prefix}-pub",
                "rate_each": rate / publishers,
                "seconds": seconds,
                "tick": tick,
                "drain": drain,
            }
            for r in split(publishers, max(1, procs))
        ]
        crew = Crew("paced", jobs, procs)
        crew.start()
        await crew.gather(30 + publishers / 50, "connect")
        gc.collect()
        res.rss_idle_kb = probe.rss_kb()
        snap0 = Snapshot.take(probe)
        t_go = snap0.t
        crew.tell({"go": True})
        reports_task = asyncio.ensure_future(crew.gather(seconds + drain + 30, "publish"))
        last, last_got = snap0, 0
        next_sample = t_go + sample_every
        while now() < t_go + seconds + 0.5 * sample_every and not reports_task.done():
            await asyncio.sleep(max(0.0, next_sample - now()))
            next_sample += sample_every
            snap, got = Snapshot.take(probe), sub.unique
            cpu = Cpu.between(last, snap)
            res.samples.append(
                {
                    "t": round(snap.t - t_go, 3),
                    "rss_kb": probe.rss_kb(),
                    "delivered_per_s": round((got - last_got) / (snap.t - last.t), 1),
                    "server_cpu_pct": round(cpu.server_pct, 1),
                    "load_cpu_pct": round(cpu.load_pct, 1),
                    "other_cpu_pct": round(cpu.other_pct, 1),
                }
            )
            last, last_got = snap, got
            if not probe.alive():
                raise LoadError("server died")
            if sub.lost.done():
                raise LoadError(f"subscriber: {sub.why}")
        reports = await reports_task
        cpu = Cpu.between(snap0, Snapshot.take(probe), crew.cpu_seconds(reports))
        sent_by_pub = [0] * publishers
        for r in reports:
            for i, n in r["sent"].items():
                sent_by_pub[int(i)] = n
        res.sent = sum(sent_by_pub)
        res.max_behind = max(r["max_behind"] for r in reports)
        sub.expected = res.sent
        sub.check_done()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(sub.done), drain)
        res.received, res.duplicates, res.foreign = sub.unique, sub.dups, sub.foreign
        res.lost = sub.missing(sent_by_pub)
        if any(r["lost"] for r in reports):
            res.notes.append(f"{sum(r['lost'] for r in reports)} publishers lost their connection")
        if qos and sum(r["acked"] for r in reports) < res.sent:
            res.notes.append(f"PUBACKs missing: {res.sent - sum(r['acked'] for r in reports)}")
        if res.max_behind > rate / publishers:
            res.notes.append(
                f"publishers fell up to {res.max_behind} messages behind the offered load"
            )
        res.server_cpu_pct, res.load_cpu_pct = cpu.server_pct, cpu.load_pct
        res.other_cpu_pct = cpu.other_pct
    except LoadError as exc:
        res.error = str(exc)
    finally:
        if crew is not None:
            await crew.finish()
        if sub is not None:
            sub.close()
    if res.samples:
        rss = [s["rss_kb"] for s in res.samples]
        res.rss_first_kb, res.rss_last_kb = int(rss[0]), int(rss[-1])
        res.rss_min_kb, res.rss_max_kb = int(min(rss)), int(max(rss))
        rates = [s["delivered_per_s"] for s in res.samples[:-1]] or [0.0]
        res.delivered_rate_min, res.delivered_rate_max = min(rates), max(rates)
        res.delivered_rate_mean = sum(rates) / len(rates)
    res.complete = (
        res.error is None
        and res.duplicates == 0
        and res.foreign == 0
        and (res.lost == 0 or qos == 0)
        and res.sent > 0
    )
    return res
