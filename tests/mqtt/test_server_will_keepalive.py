"""Wills and keepalive.

A will is published when a connection ends without a normal DISCONNECT
(network loss, keepalive expiry, protocol error, takeover, DISCONNECT 0x04),
after the 5.0 will delay or at session end, whichever comes first, and never
if the session resumes before that. Keepalive: a client silent for 1.5x its
keepalive is disconnected, not before and not much after.

The broker here checks its timers every 50 ms, so timing bounds are tight.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.conftest import RunningBroker
from tests.mqtt.clients import PahoClient, RawClient, brief, wait_until
from thingshub.mqtt.codec import Disconnect, PingReq, PingResp, ReasonCode, Will
from thingshub.mqtt.codec.properties import Properties
from thingshub.mqtt.server import BrokerConfig

VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]
SWEEP = 0.05


@pytest.fixture
def fast(broker_factory: Callable[..., RunningBroker]) -> RunningBroker:
    """A broker whose timers are checked every 50 ms."""
    return broker_factory(config=BrokerConfig(sweep_interval=SWEEP))


def watcher(b: RunningBroker, topic: str = "will/#") -> PahoClient:
    w = PahoClient(b.port, "watcher")
    w.subscribe(topic, qos=1)
    return w


def with_will(
    b: RunningBroker,
    version: int,
    client_id: str = "mortal",
    *,
    will: Will | None = None,
    keepalive: int = 0,
    expiry: int | None = None,
) -> RawClient:
    raw = RawClient(b.port, version)
    props = Properties(session_expiry_interval=expiry) if expiry is not None else Properties()
    connack = raw.connect(
        client_id,
        clean=expiry is None,
        keepalive=keepalive,
        will=will or Will("will/" + client_id, b"gone", qos=1),
        properties=props,
    )
    assert connack.reason_code == 0
    return raw


# ------------------------------------------------------------ when a will is sent


@pytest.mark.parametrize("version", VERSIONS)
def test_will_on_network_loss(fast: RunningBroker, version: int) -> None:
    w = watcher(fast)
    raw = with_will(fast, version)
    raw.close()
    [msg] = w.wait_messages(1)
    assert brief(msg) == ("will/mortal", b"gone", 1, False)


@pytest.mark.parametrize("version", VERSIONS)
def test_will_on_protocol_error(fast: RunningBroker, version: int) -> None:
    w = watcher(fast)
    raw = with_will(fast, version)
    raw.send_bytes(b"\x30\x01\x00")  # PUBLISH shorter than its topic length
    closed = raw.wait_closed()
    assert closed == ([Disconnect(ReasonCode.MALFORMED_PACKET)] if version == 5 else [])
    assert [m.payload for m in w.wait_messages(1)] == [b"gone"]


@pytest.mark.parametrize("version", VERSIONS)
def test_no_will_on_normal_disconnect(fast: RunningBroker, version: int) -> None:
    w = watcher(fast)
    raw = with_will(fast, version)
    raw.send(Disconnect())
    assert raw.wait_closed() == []
    w.fence()  # the will, had it been sent, went out when DISCONNECT was handled
    assert w.messages == []


def test_will_on_disconnect_with_will_message(fast: RunningBroker) -> None:
    """5.0 DISCONNECT 0x04: a clean disconnect that still wants the will sent."""
    w = watcher(fast)
    raw = with_will(fast, 5)
    raw.send(Disconnect(ReasonCode.DISCONNECT_WITH_WILL))
    assert raw.wait_closed() == []
    assert [m.payload for m in w.wait_messages(1)] == [b"gone"]


@pytest.mark.parametrize("version", VERSIONS)
def test_will_on_takeover(fast: RunningBroker, version: int) -> None:
    """[MQTT-3.1.4-3]: the connection a new CONNECT takes over is closed and its will sent."""
    w = watcher(fast)
    old = with_will(fast, version, "twin")
    new = RawClient(fast.port, version)
    assert new.connect("twin").reason_code == 0
    old.wait_closed()
    assert [m.payload for m in w.wait_messages(1)] == [b"gone"]


def test_will_retained_and_qos(fast: RunningBroker) -> None:
    raw = with_will(fast, 5, will=Will("will/state", b"offline", qos=2, retain=True))
    raw.close()
    wait_until(lambda: fast.call(lambda: len(fast.broker.delivery.retained)) == 1)
    late = PahoClient(fast.port, "late")
    late.subscribe("will/state", qos=2)
    assert [brief(m) for m in late.wait_messages(1)] == [("will/state", b"offline", 2, True)]


def test_will_properties_are_carried(fast: RunningBroker) -> None:
    """5.0 will properties travel with the will message; the will delay does not."""
    w = watcher(fast)
    props = Properties(
        payload_format_indicator=1,
        message_expiry_interval=60,
        content_type="text/plain",
        response_topic="will/reply",
        correlation_data=b"\x01\x02",
        user_properties=(("device", "d1"), ("why", "lost")),
        will_delay_interval=0,
    )
    raw = with_will(fast, 5, will=Will("will/props", b"bye", qos=1, properties=props))
    raw.close()
    [msg] = w.wait_messages(1)
    p = msg.properties
    assert p.PayloadFormatIndicator == 1
    assert 59 <= p.MessageExpiryInterval <= 60
    assert p.ContentType == "text/plain"
    assert p.ResponseTopic == "will/reply"
    assert p.CorrelationData == b"\x01\x02"
    assert p.UserProperty == [("device", "d1"), ("why", "lost")]
    assert not hasattr(p, "WillDelayInterval")


def test_paho_will_with_user_properties_on_connection_loss(fast: RunningBroker) -> None:
    """The same through paho: its will, with user properties, after its socket
    dies without DISCONNECT."""
    w = watcher(fast)
    c = PahoClient(
        fast.port,
        "sensor-7",
        will=("will/sensor-7", b"lost", 1, False),
        will_properties={"UserProperty": [("site", "north")], "ContentType": "text/plain"},
    )
    c.drop()
    [msg] = w.wait_messages(1)
    assert brief(msg) == ("will/sensor-7", b"lost", 1, False)
    assert msg.properties.UserProperty == [("site", "north")]
    assert msg.properties.ContentType == "text/plain"


# ------------------------------------------------------------ will delay


def test_will_delay(fast: RunningBroker) -> None:
    w = watcher(fast)
    raw = with_will(
        fast,
        5,
        will=Will("will/late", b"late", qos=1, properties=Properties(will_delay_interval=1)),
        expiry=60,
    )
    raw.close()
    t0 = time.monotonic()
    w.wait_messages(1, timeout=3)
    assert 0.9 <= time.monotonic() - t0 < 1.8


def test_will_not_sent_when_session_resumes_in_time(fast: RunningBroker) -> None:
    w = watcher(fast)
    will = Will("will/late", b"late", qos=1, properties=Properties(will_delay_interval=1))
    raw = with_will(fast, 5, "phoenix", will=will, expiry=60)
    raw.close()
    wait_until(lambda: not fast.call(lambda: fast.broker.is_connected("phoenix")))
    again = RawClient(fast.port)
    connack = again.connect(
        "phoenix", clean=False, properties=Properties(session_expiry_interval=60)
    )
    assert connack.session_present
    # Let the will's due time pass; then make sure nothing was sent.
    time.sleep(1.2)
    w.fence()
    assert w.messages == []


def test_will_sent_at_session_end_when_that_is_earlier(fast: RunningBroker) -> None:
    """Will delay 10 s but session expiry 1 s: the will goes when the session ends."""
    w = watcher(fast)
    will = Will("will/late", b"at expiry", qos=1, properties=Properties(will_delay_interval=10))
    raw = with_will(fast, 5, "ephemeral", will=will, expiry=1)
    raw.close()
    t0 = time.monotonic()
    assert [m.payload for m in w.wait_messages(1, timeout=3)] == [b"at expiry"]
    assert 0.9 <= time.monotonic() - t0 < 1.8
    assert not fast.call(lambda: "ephemeral" in fast.broker.sessions)


def test_will_delay_with_session_expiry_0_is_immediate(fast: RunningBroker) -> None:
    """Session expiry 0 ends the session with the connection, so the will cannot wait."""
    w = watcher(fast)
    will = Will("will/now", b"now", qos=1, properties=Properties(will_delay_interval=30))
    raw = with_will(fast, 5, will=will)
    raw.close()
    assert [m.payload for m in w.wait_messages(1, timeout=1)] == [b"now"]


# ------------------------------------------------------------ keepalive


@pytest.mark.parametrize("version", VERSIONS)
def test_keepalive_expiry_at_one_and_a_half_times(fast: RunningBroker, version: int) -> None:
    """[MQTT-3.1.2-24]: silent for 1.5x keepalive means disconnected (5.0 gets
    DISCONNECT 0x8D) and the will is published; not earlier, not much later."""
    w = watcher(fast)
    t0 = time.monotonic()
    raw = with_will(fast, version, keepalive=1)
    closed = raw.wait_closed(timeout=4)
    elapsed = time.monotonic() - t0
    assert closed == ([Disconnect(ReasonCode.KEEP_ALIVE_TIMEOUT)] if version == 5 else [])
    assert 1.5 <= elapsed < 1.5 + 0.4, elapsed
    assert [m.payload for m in w.wait_messages(1)] == [b"gone"]


def test_keepalive_is_reset_by_any_packet(fast: RunningBroker) -> None:
    raw = RawClient(fast.port)
    raw.connect("pinger", keepalive=1)
    time.sleep(1.0)  # idle, as a client with nothing to say would be
    t_ping = time.monotonic()
    raw.send(PingReq())
    assert raw.expect(PingResp) == PingResp()
    assert raw.wait_closed(timeout=4) == [Disconnect(ReasonCode.KEEP_ALIVE_TIMEOUT)]
    assert 1.5 <= time.monotonic() - t_ping < 1.9


def test_keepalive_0_means_no_timeout_for_v311(fast: RunningBroker) -> None:
    """3.1.1 keepalive 0 turns the mechanism off (section 3.1.2.10); the server
    keeps the connection (checked after several sweeps)."""
    raw = RawClient(fast.port, 4)
    raw.connect("forever", keepalive=0)
    time.sleep(SWEEP * 6)
    assert raw.ping() == []
