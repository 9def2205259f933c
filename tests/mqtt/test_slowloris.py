"""Slowloris and clients that never read: each is dropped at a documented time,
or held to a documented limit, and memory stays bounded.

- A CONNECT trickled byte by byte is closed `connect_timeout` after the
  socket opened, however steadily its bytes come.
- A connected client trickling a packet is silent until the packet is whole
  (keepalive counts Control Packets, [MQTT-3.1.2-24]): it is dropped 1.5x its
  keepalive after its last whole packet (5.0: DISCONNECT 0x8D). Before, every
  byte counted as life, so one byte a second held a connection, and its
  buffered part of a packet, for ever.
- Subscribers that never read their socket: each holds at most
  `max_outgoing_buffer` bytes in its socket's buffer and `max_queued`
  messages in its session; the rest is dropped and counted, and a healthy
  subscriber gets everything.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Callable

from tests.conftest import RunningBroker
from tests.mqtt.clients import PahoClient, RawClient, wait_until
from thingshub.mqtt.codec import Connect, Disconnect, ReasonCode, encode
from thingshub.mqtt.server import BrokerConfig


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server closed, or is closing (its DISCONNECT is there to read):
    it sends a trickling client nothing else."""
    timeout = sock.gettimeout()
    sock.setblocking(False)  # a socket with a timeout would wait for the answer
    try:
        sock.recv(1, socket.MSG_PEEK)
        return True
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.settimeout(timeout)


def trickle(sock: socket.socket, data: bytes, every: float, limit: float) -> float | None:
    """Send `data` a byte every `every` seconds; the seconds until the server
    closed the connection (None: still open after `limit`, or all sent)."""
    started = time.monotonic()
    for i in range(len(data)):
        if time.monotonic() - started > limit:
            return None
        try:
            sock.send(data[i : i + 1])
        except OSError as exc:
            assert exc.errno in (errno.EPIPE, errno.ECONNRESET), exc
            return time.monotonic() - started
        time.sleep(every)
        if closed_by_peer(sock):
            return time.monotonic() - started
    return None


def test_a_connect_trickled_byte_by_byte_is_closed_at_the_connect_timeout(
    broker_factory: Callable[..., RunningBroker],
) -> None:
    b = broker_factory(config=BrokerConfig(connect_timeout=0.6, sweep_interval=0.05))
    connect = encode(Connect("slow", 5, True, 0, "user", b"x" * 200), 5)
    with socket.create_connection(("127.0.0.1", b.port)) as sock:
        took = trickle(sock, connect, 0.02, 10)  # the whole CONNECT would take 4 s
    assert took is not None, "a trickled CONNECT held its connection"
    assert 0.6 <= took < 1.2, took
    assert RawClient(b.port).connect("real").reason_code == 0


def test_a_packet_trickled_by_a_connected_client_is_dropped_at_its_keepalive(
    broker_factory: Callable[..., RunningBroker],
) -> None:
    b = broker_factory(config=BrokerConfig(sweep_interval=0.05))
    c = RawClient(b.port, 5)
    assert c.connect("slow", keepalive=1).reason_code == 0
    # A PUBLISH announcing 100 KB, then its body a byte every 0.1 s.
    c.send_bytes(b"\x30" + bytes([0x80 | (100_000 & 0x7F), 0x80 | (100_000 >> 7 & 0x7F), 6]))
    started = time.monotonic()
    sent = 0
    while True:
        try:
            c.send_bytes(b"x")
        except OSError:
            break
        sent += 1
        time.sleep(0.1)
        if closed_by_peer(c.sock):
            break
        assert time.monotonic() - started < 5, "a trickled packet kept its client alive"
    took = time.monotonic() - started
    assert 1.5 <= took < 2.5, took
    assert sent >= 10  # it was sending all along
    packets = c.wait_closed()
    assert [type(p) for p in packets] == [Disconnect]
    assert packets[0].reason_code == ReasonCode.KEEP_ALIVE_TIMEOUT  # type: ignore[attr-defined]
    wait_until(lambda: b.stats.connections == 0, what="the connection to be counted closed")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_subscribers_that_never_read_hold_bounded_memory(
    broker_factory: Callable[..., RunningBroker],
) -> None:
    """20 subscribers that never read, 2,000 messages of 4 KB fanned out to each
    (160 MB if anything kept them all): each holds at most its queue and its
    socket buffer; the healthy subscriber gets every message."""
    out_limit, queued = 64 * 1024, 100
    b = broker_factory(
        config=BrokerConfig(max_outgoing_buffer=out_limit, max_queued=queued, max_inflight=10)
    )
    stuck = []
    for i in range(20):
        c = RawClient(b.port, 5, rcvbuf=4096)
        assert c.connect(f"stuck{i}").reason_code == 0
        c.subscribe("fan/#", qos=1)
        stuck.append(c)
    healthy = PahoClient(b.port, "healthy")
    healthy.subscribe("fan/#", qos=1)
    pub = PahoClient(b.port, "pub", version=4)
    before = _rss()
    n = 2000
    for i in range(n):
        payload = i.to_bytes(4, "big") * 1024
        assert pub.publish(f"fan/{i % 7}", payload, qos=1) == 0
    assert len(healthy.wait_messages(n, timeout=30)) == n
    grown = _rss() - before

    def worst() -> tuple[int, int]:
        sessions = [b.broker.sessions[f"stuck{i}"] for i in range(20)]
        conns = [s.connection for s in sessions]
        return (
            max(len(s.queue) for s in sessions),
            max(c.buffered_out() for c in conns if c is not None),
        )

    longest_queue, fullest_buffer = b.call(worst)
    assert longest_queue <= queued
    assert fullest_buffer <= out_limit + 8 * 1024
    assert b.stats.dropped_queue_full > 0
    assert grown < 40 * 1024 * 1024, f"never-reading subscribers took {grown} bytes"
    wait_until(lambda: healthy.disconnect_code is None, what="the healthy subscriber")
