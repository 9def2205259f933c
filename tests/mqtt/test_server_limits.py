"""Limits and bad input: whatever one client does, it only ever hurts itself.

Every test that breaks a connection on purpose keeps a well-behaved pair of
clients on the same broker and checks afterwards that they still exchange
messages, so "closed only the offending client" is observed, not assumed.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest

from tests.conftest import RunningBroker
from tests.mqtt.clients import PahoClient, RawClient, wait_until
from thingshub.mqtt.codec import (
    Connack,
    Connect,
    Disconnect,
    Publish,
    ReasonCode,
    Subscribe,
    SubscriptionRequest,
    Will,
    encode,
)
from thingshub.mqtt.server import BrokerConfig

VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]


class Bystanders:
    """A subscriber and a publisher minding their own business on the same broker."""

    def __init__(self, b: RunningBroker) -> None:
        self.sub = PahoClient(b.port, "bystander-sub")
        self.sub.subscribe("bystander/t", qos=1)
        self.pub = PahoClient(b.port, "bystander-pub", version=4)
        self.sent = 0
        self.check()

    def check(self) -> None:
        """They are still connected and a message still gets through."""
        self.sent += 1
        assert self.pub.publish("bystander/t", str(self.sent).encode(), qos=1) == 0
        assert self.sub.wait_messages(self.sent)[-1].payload == str(self.sent).encode()
        assert self.sub.disconnect_code is None and self.pub.disconnect_code is None


# ------------------------------------------------------------ before and around CONNECT


def test_no_connect_within_connect_timeout(broker_factory: Callable[..., RunningBroker]) -> None:
    b = broker_factory(config=BrokerConfig(connect_timeout=0.3, sweep_interval=0.05))
    others = Bystanders(b)
    t0 = time.monotonic()
    silent = RawClient(b.port)
    partial = RawClient(b.port)
    partial.send_bytes(encode(Connect("half"), 4)[:5])  # a CONNECT that never completes
    assert silent.wait_closed() == []
    assert partial.wait_closed() == []
    assert 0.3 <= time.monotonic() - t0 < 0.6
    others.check()


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(b"\xc0\x00", id="PINGREQ"),
        pytest.param(encode(Publish("t", b"x"), 4), id="PUBLISH"),
        pytest.param(encode(Subscribe(1, [SubscriptionRequest("t")]), 4), id="SUBSCRIBE"),
        pytest.param(b"\xe0\x00", id="DISCONNECT"),
    ],
)
def test_first_packet_must_be_connect(broker: RunningBroker, first: bytes) -> None:
    """[MQTT-3.1.0-1]: anything before CONNECT closes the connection, unanswered."""
    others = Bystanders(broker)
    raw = RawClient(broker.port)
    raw.send_bytes(first)
    assert raw.wait_closed() == []
    others.check()


@pytest.mark.parametrize("version", VERSIONS)
def test_second_connect_is_a_protocol_error(broker: RunningBroker, version: int) -> None:
    """[MQTT-3.1.0-2]."""
    others = Bystanders(broker)
    raw = RawClient(broker.port, version)
    raw.connect("twice")
    raw.send(Connect("twice", version))
    expected = [Disconnect(ReasonCode.PROTOCOL_ERROR)] if version == 5 else []
    assert raw.wait_closed() == expected
    others.check()


def _connect_bytes(name: bytes, level: int) -> bytes:
    """A CONNECT with any protocol name and level (the codec only writes valid ones)."""
    body = len(name).to_bytes(2, "big") + name + bytes([level, 0x02]) + b"\x00\x3c"
    if level == 5:
        body += b"\x00"
    body += b"\x00\x01x"
    return bytes([0x10, len(body)]) + body


@pytest.mark.parametrize(
    ("name", "level", "reply_version", "code"),
    [
        pytest.param(b"MQTT", 6, 4, 0x01, id="MQTT-level-6"),
        pytest.param(b"MQTT", 3, 4, 0x01, id="MQTT-level-3"),
        pytest.param(b"MQIsdp", 4, 4, 0x01, id="MQIsdp-level-4"),
        pytest.param(b"MQIsdp", 5, 5, ReasonCode.UNSUPPORTED_PROTOCOL_VERSION, id="level-5"),
    ],
)
def test_unsupported_protocol_level(
    broker: RunningBroker, name: bytes, level: int, reply_version: int, code: int
) -> None:
    """[MQTT-3.1.2-2]: CONNACK 0x01 and close for a 3.x-style client; a level-5
    CONNECT the server cannot accept gets the 5.0 CONNACK 0x84."""
    raw = RawClient(broker.port, reply_version)
    raw.send_bytes(_connect_bytes(name, level))
    assert raw.wait_closed() == [Connack(code)]


def test_unknown_protocol_name_is_closed(broker: RunningBroker) -> None:
    raw = RawClient(broker.port, 4)
    raw.send_bytes(_connect_bytes(b"HTTP", 4))
    assert raw.wait_closed() == []


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("topic", ["devices/#", "a/+/b", ""])
def test_a_will_topic_that_is_no_topic_name_is_a_protocol_error(
    broker: RunningBroker, version: int, topic: str
) -> None:
    """Wildcards, or nothing, are no topic name [MQTT-4.7.1-1, MQTT-4.7.3-1].
    3.1.1 has no CONNACK code for a CONNECT that breaks the protocol: close
    without one [MQTT-3.1.4-1] (not CONNACK 3, "server unavailable"). 5.0 may
    say why first: 0x82, data that does not conform (not 0x90, which is for a
    well-formed will topic the server does not accept)."""
    raw = RawClient(broker.port, version)
    raw.send(Connect("willful", version, True, 0, will=Will(topic, b"x")))
    assert raw.wait_closed() == ([Connack(0x82)] if version == 5 else [])
    assert PahoClient(broker.port, "next", version=version).connack_code == 0


# ------------------------------------------------------------ malformed packets


def _publish_raw(topic: bytes, version: int) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + (b"\x00" if version == 5 else b"") + b"payload"
    return bytes([0x30, len(body)]) + body


MALFORMED = [
    ("remaining-length-5-bytes", lambda v: b"\x30\xff\xff\xff\xff\x01", 0x81),
    ("remaining-length-not-minimal", lambda v: b"\xc0\x80\x00", 0x81),
    ("subscribe-reserved-flags", lambda v: b"\x80\x06\x00\x01\x00\x01a\x00", 0x81),
    ("pubrel-reserved-flags", lambda v: b"\x60\x02\x00\x01", 0x81),
    ("publish-qos-3", lambda v: b"\x36" + _publish_raw(b"a", v)[1:], 0x81),
    ("invalid-utf8-topic", lambda v: _publish_raw(b"a/\xff\xfe", v), 0x81),
    ("nul-in-topic", lambda v: _publish_raw(b"a\x00b", v), 0x81),
    ("wildcard-in-topic", lambda v: encode(Publish("a/+/c", b"x"), v), 0x90),
    ("hash-in-topic", lambda v: encode(Publish("a/#", b"x"), v), 0x90),
    # 5.0 calls an empty topic without an alias a protocol error (3.3.2.1).
    ("empty-topic-no-alias", lambda v: encode(Publish("", b"x"), v), 0x82),
    ("packet-type-0", lambda v: b"\x00\x00", 0x81),
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("make", "code"), [pytest.param(m, c, id=name) for name, m, c in MALFORMED]
)
def test_malformed_packet_closes_only_the_offender(
    broker: RunningBroker, version: int, make: Callable[[int], bytes], code: int
) -> None:
    """5.0 gets a DISCONNECT with the reason first ([MQTT-4.13.1-1]), 3.1.1 just
    the close; nothing of the offending packet is routed."""
    others = Bystanders(broker)
    raw = RawClient(broker.port, version)
    raw.connect("offender")
    raw.send_bytes(make(version))
    assert raw.wait_closed() == ([Disconnect(code)] if version == 5 else [])
    others.check()
    others.sub.fence()
    assert len(others.sub.messages) == others.sent
    assert broker.stats.protocol_errors == 1


def test_garbage_after_a_good_packet(broker: RunningBroker) -> None:
    """Packets before the bad bytes in the same segment are still handled."""
    others = Bystanders(broker)
    raw = RawClient(broker.port)
    raw.connect("offender")
    raw.send_bytes(encode(Publish("bystander/t", b"good", qos=0), 5) + b"\x00\x00")
    assert raw.wait_closed() == [Disconnect(ReasonCode.MALFORMED_PACKET)]
    assert others.sub.wait_messages(2)[1].payload == b"good"
    others.sent += 1
    others.check()


# ------------------------------------------------------------ resources


def test_max_connections(broker_factory: Callable[..., RunningBroker]) -> None:
    b = broker_factory(config=BrokerConfig(max_connections=2))
    first = RawClient(b.port)
    assert first.connect("one").reason_code == 0
    second = RawClient(b.port)
    assert second.connect("two").reason_code == 0
    third = RawClient(b.port)
    third.send(Connect("three", 5))
    assert third.wait_closed() == []
    assert b.stats.connects_refused == 1
    assert first.ping() == [] and second.ping() == []

    first.send(Disconnect())
    first.wait_closed()
    wait_until(lambda: b.stats.connections == 1, what="the closed connection to be released")
    fourth = RawClient(b.port)
    assert fourth.connect("four").reason_code == 0


def test_max_connections_per_address(broker_factory: Callable[..., RunningBroker]) -> None:
    """One host cannot take every connection: beyond the per-address cap its new
    sockets are closed as they arrive, while another host still gets in."""
    b = broker_factory(config=BrokerConfig(max_connections_per_address=2))
    first, second = RawClient(b.port), RawClient(b.port)
    assert first.connect("one").reason_code == 0
    assert second.connect("two").reason_code == 0
    third = RawClient(b.port)
    third.send(Connect("three", 5))
    assert third.wait_closed() == []
    elsewhere = RawClient(b.port, source="127.0.0.2")
    assert elsewhere.connect("elsewhere").reason_code == 0
    assert b.stats.connects_refused_per_address == 1
    first.send(Disconnect())
    first.wait_closed()
    wait_until(lambda: b.stats.connections == 2, what="the closed connection to be released")
    again = RawClient(b.port)
    assert again.connect("again").reason_code == 0


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_a_flood_of_half_open_sockets_is_dropped_at_the_connect_timeout(
    broker_factory: Callable[..., RunningBroker],
) -> None:
    """500 sockets that connect and never send CONNECT (or send half of one) are
    all closed at `connect_timeout`; memory stays bounded; a real client gets in
    throughout."""
    b = broker_factory(config=BrokerConfig(connect_timeout=1.0, sweep_interval=0.1))
    before = _rss()
    flood: list[socket.socket] = []
    try:
        for i in range(500):
            sock = socket.create_connection(("127.0.0.1", b.port))
            flood.append(sock)
            if i % 2:
                sock.sendall(encode(Connect(f"half{i}", 5), 5)[:7])  # a CONNECT cut short
        # Counted by the total: on a loaded machine the first sockets may reach
        # their timeout before the last is accepted.
        wait_until(lambda: b.stats.connections_total == 500, what="the flood to be accepted")
        grown = _rss() - before
        real = RawClient(b.port)
        assert real.connect("real").reason_code == 0
        wait_until(lambda: b.stats.connections == 1, 10, "the half-open sockets to be dropped")
        for sock in flood:
            sock.settimeout(5)
            assert sock.recv(16) == b""  # closed by the server, nothing sent
        assert real.ping() == []
    finally:
        for sock in flood:
            sock.close()
    assert grown < 30 * 1024 * 1024, f"500 half-open sockets took {grown} bytes"


def test_slow_consumer_does_not_stall_others(broker_factory: Callable[..., RunningBroker]) -> None:
    """A subscriber that stops reading: QoS 0 messages to it are dropped (and
    counted) once its outgoing buffer passes `max_outgoing_buffer`, the buffer
    stays bounded, and everybody else is still served. (The healthy subscriber
    takes QoS 1, which waits in its session instead of being dropped when a
    burst outruns it; a QoS 0 reader that falls behind is itself a slow consumer.)"""
    limit = 32 * 1024
    b = broker_factory(config=BrokerConfig(max_outgoing_buffer=limit))
    stuck = RawClient(b.port, rcvbuf=4096)
    stuck.connect("stuck")
    stuck.subscribe("firehose", qos=0)
    healthy = PahoClient(b.port, "healthy")
    healthy.subscribe("firehose", qos=1)
    pub = PahoClient(b.port, "pub")
    payload = b"x" * 65536
    # The kernel absorbs the first few MB (send buffers autotune up to
    # tcp_wmem's maximum), so publish until the server starts dropping, and
    # then some more; 40 MB would mean it never does.
    count = 0
    while b.stats.dropped_slow_consumer < 20:
        assert count < 600, "the server never dropped anything for the stuck subscriber"
        assert pub.publish("firehose", payload, qos=1) == 0
        count += 1

    assert len(healthy.wait_messages(count, timeout=10)) == count
    stats = b.stats
    assert stats.dropped_slow_consumer + stats.messages_out == 2 * count
    conn = b.call(lambda: b.broker.sessions["stuck"].connection)
    assert conn is not None, "a slow consumer is not disconnected"
    assert b.call(conn.buffered_out) <= limit + len(payload) + 64


def test_a_slow_reader_holds_up_its_publisher_instead_of_losing_qos0(
    broker_factory: Callable[..., RunningBroker],
) -> None:
    """A burst larger than the write buffer limit, to a subscriber that reads slowly
    but keeps reading: the publisher is held up (backpressure) and nothing is lost,
    where dropping QoS 0 would have been allowed but needless."""
    b = broker_factory(
        config=BrokerConfig(
            write_high_water=64 * 1024, max_outgoing_buffer=2 * 1024 * 1024, max_hold=5.0
        )
    )
    slow = RawClient(b.port, 4, rcvbuf=8192)
    slow.connect("slow")
    slow.subscribe("burst", qos=0)
    pub = RawClient(b.port, 4)
    pub.connect("pub")
    # 16 MB in all: beyond what the kernel's socket buffers absorb (they grow to a
    # few MB), so the server's own buffer for `slow` must pass both limits.
    count = 2000
    payload = b"y" * 8192
    burst = b"".join(encode(Publish("burst", payload), 4) for _ in range(count))
    # The publisher's write blocks while the server holds it up: send from a thread.
    sender = threading.Thread(target=pub.send_bytes, args=(burst,))
    sender.start()
    received = 0
    while received < count:
        packet = slow.recv(timeout=10)
        assert isinstance(packet, Publish) and packet.payload == payload
        received += 1
        if received % 200 == 0:
            time.sleep(0.05)  # a slow reader, not a stuck one
    sender.join(10)
    assert b.stats.dropped_slow_consumer == 0
    pub.ping()  # the publisher was held up, not disconnected


def _qos1_burst_to_a_subscriber(
    b: RunningBroker, count: int
) -> tuple[RawClient, RawClient, threading.Thread]:
    """A subscriber at QoS 1 on `burst`, and a publisher sending it `count` QoS 1
    messages numbered 0.. in one write, from a thread (the write blocks while the
    server holds the publisher up). The subscriber receives and acknowledges."""
    slow = RawClient(b.port, 4)
    slow.connect("slow")
    slow.subscribe("burst", qos=1)
    pub = RawClient(b.port, 4)
    pub.connect("pub")
    burst = b"".join(
        encode(Publish("burst", i.to_bytes(4, "big"), qos=1, packet_id=i % 65535 + 1), 4)
        for i in range(count)
    )
    sender = threading.Thread(target=pub.send_bytes, args=(burst,))
    sender.start()
    return slow, pub, sender


def test_a_slow_acknowledger_holds_up_its_publisher_instead_of_losing_qos1(
    broker_factory: Callable[..., RunningBroker],
) -> None:
    """A QoS 1 burst to a subscriber that acknowledges slower than it is published
    to: once a window's worth waits behind its in-flight window, the publisher is
    held up until the queue drains, so the small queue never overflows. The burst
    lasts several `max_hold`s, with the publisher held and released many times:
    a hold that ended must not later count as one that expired."""
    b = broker_factory(config=BrokerConfig(max_inflight=10, max_queued=50, max_hold=0.3))
    count = 2000
    started = time.monotonic()
    slow, pub, sender = _qos1_burst_to_a_subscriber(b, count)
    for i in range(count):
        packet = slow.recv(timeout=10)
        assert isinstance(packet, Publish) and packet.payload == i.to_bytes(4, "big")
        slow.ack(packet)
        if i % 50 == 49:
            time.sleep(0.02)  # acknowledges slowly, but keeps going
    sender.join(10)
    assert time.monotonic() - started > 0.6  # it spanned several holds' expiry
    assert b.stats.dropped_queue_full == 0
    pub.ping()  # held up, never disconnected


def test_a_subscriber_that_acknowledges_steadily_is_never_taken_for_stuck(
    broker_factory: Callable[..., RunningBroker],
) -> None:
    """Holding a publisher up must start early enough that the queue drains well
    within `max_hold`: a subscriber that keeps acknowledging, only slowly, must
    not be taken for stuck, or the publisher runs free and the queue overflows.
    (Holding only once the queue was half full lost messages exactly so.)"""
    b = broker_factory(config=BrokerConfig(max_inflight=10, max_queued=400, max_hold=0.2))
    count = 600
    slow, _, sender = _qos1_burst_to_a_subscriber(b, count)
    for i in range(count):
        try:
            packet = slow.recv(timeout=5)
        except TimeoutError:
            pytest.fail(f"message {i} never came: {b.stats.dropped_queue_full} dropped")
        assert isinstance(packet, Publish) and packet.payload == i.to_bytes(4, "big")
        time.sleep(0.002)  # ~500 acknowledgements a second, without pause
        slow.ack(packet)
    sender.join(10)
    assert b.stats.dropped_queue_full == 0


def test_a_held_publisher_that_keeps_sending_is_no_longer_read(
    broker_factory: Callable[..., RunningBroker],
) -> None:
    """A hold stops reading from the publisher only once more bytes come while it
    is held (most holds end before): then the socket's reading pauses, so what
    the server keeps of its bytes stays bounded however much it sends; when the
    subscriber catches up, reading resumes and nothing is lost."""
    b = broker_factory(config=BrokerConfig(max_inflight=10, max_queued=100, max_hold=10.0))
    slow = RawClient(b.port, 4)
    slow.connect("slow")
    slow.subscribe("burst", qos=1)
    pub = RawClient(b.port, 4)
    pub.connect("pub")
    count, size = 3000, 4096  # 12 MB: more than the kernel's socket buffers take
    burst = b"".join(
        encode(Publish("burst", i.to_bytes(4, "big") * (size // 4), qos=1, packet_id=i + 1), 4)
        for i in range(count)
    )
    sender = threading.Thread(target=pub.send_bytes, args=(burst,))
    sender.start()
    conn = b.call(lambda: b.broker.sessions["pub"].connection)
    assert conn is not None
    # The subscriber acknowledges nothing yet: its window, then its queue, fill up.
    wait_until(lambda: b.call(lambda: conn._held is not None and not conn.transport.is_reading()))
    time.sleep(0.3)  # the publisher keeps sending meanwhile
    assert b.call(lambda: conn._held is not None and not conn.transport.is_reading())
    assert b.call(lambda: conn.reader.buffered) < 1024 * 1024
    for i in range(count):
        packet = slow.recv(timeout=10)
        assert isinstance(packet, Publish) and packet.payload[:4] == i.to_bytes(4, "big")
        slow.ack(packet)
    sender.join(10)
    assert b.stats.dropped_queue_full == 0
    pub.ping()  # held up, never disconnected
