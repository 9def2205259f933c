"""The wall clock jumps (NTP, an operator) under a running platform, over real sockets.

The fake is the outside world's clock only: the platform's `SystemClock.now_ms`
(the wall clock) is moved by the test, its monotonic clock and the event
loop's are the real ones. Durations measured in memory run on the monotonic
clock (services/clock.py), so: a clock set back neither stalls a device's
publish rate nor keeps login penalties for the length of the jump (the old
rule refused a device publishing at its rate for an hour after a one-hour
jump back, and kept wrong-password penalties as long); a clock set forward
drops no connection and expires nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import RunningPlatform
from tests.gateway.test_login_throttle import small_throttle
from tests.mqtt.clients import RawClient
from thingshub.mqtt.codec import PingReq, PingResp, PubAck, Publish
from thingshub.services.clock import SystemClock

HOUR_MS = 3_600_000


class WallClock:
    """The machine's wall clock, as far ahead of (or behind) the real one as set."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def jump(self, ms: int) -> None:
        self.offset_ms += ms


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> Iterator[WallClock]:
    clock = WallClock()
    real = SystemClock.now_ms
    monkeypatch.setattr(SystemClock, "now_ms", lambda self: real(self) + clock.offset_ms)
    yield clock


def _device(p: RunningPlatform, name: str) -> dict:
    api = p.http()
    api.post("/api/v1/products", json={"id": "p", "name": "p"})
    r = api.post("/api/v1/products/p/devices", json={"name": name})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _publish_at_the_rate(c: RawClient, first: int, n: int, every: float) -> list[int]:
    codes = []
    for pid in range(first, first + n):
        c.send(Publish("devices/telemetry", json.dumps({"k": pid}).encode(), 1, packet_id=pid))
        ack = c.expect(PubAck)
        assert ack.packet_id == pid
        codes.append(ack.reason_code)
        time.sleep(every)
    return codes


def test_a_wall_clock_set_back_stalls_no_publish_rate_and_keeps_no_login_penalty(
    wall: WallClock, platform_factory: Callable[..., RunningPlatform]
) -> None:
    p = platform_factory(device_publish_rate=5)
    d = _device(p, "d")
    c = RawClient(p.mqtt_port, 5)
    assert c.connect("c", username=d["username"], password=d["password"].encode()).reason_code == 0
    assert _publish_at_the_rate(c, 1, 4, 0.3) == [0] * 4
    wall.jump(-HOUR_MS)
    assert _publish_at_the_rate(c, 5, 4, 0.3) == [0] * 4  # at the rate: all accepted

    small_throttle(p, free=1, window_ms=1000, base_delay=0.5, max_delay=0.5)
    for _ in range(3):
        raw = RawClient(p.mqtt_port, 5)
        assert raw.connect("g", username=d["username"], password=b"wrong").reason_code == 0x86
    wall.jump(-HOUR_MS)
    time.sleep(1.2)  # the failures' one-second window has passed
    started = time.monotonic()
    raw = RawClient(p.mqtt_port, 5)
    connack = raw.connect("ok", username=d["username"], password=d["password"].encode())
    assert connack.reason_code == 0
    assert time.monotonic() - started < 0.4, "a penalty outlived its window"


def test_a_wall_clock_set_forward_drops_no_connection_and_expires_nothing(
    wall: WallClock, platform_factory: Callable[..., RunningPlatform]
) -> None:
    p = platform_factory()
    d = _device(p, "d")
    c = RawClient(p.mqtt_port, 5)
    connack = c.connect("c", keepalive=1, username=d["username"], password=d["password"].encode())
    assert connack.reason_code == 0
    wall.jump(24 * HOUR_MS)
    for _ in range(4):  # two keepalive periods: pinged, never dropped
        c.send(PingReq())
        assert isinstance(c.expect(PingResp), PingResp)
        time.sleep(0.5)
    r = p.http().get("/api/v1/products/p/devices/d")
    assert r.status_code == 200 and r.json()["connectionState"] == "online", r.text
    assert _publish_at_the_rate(c, 1, 2, 0.0) == [0, 0]
