"""Per-device publish rate limit (`device_publish_rate`), over real sockets.

Over the rate a message stores nothing and is counted in /metrics
(`thingshub_publish_rate_limited`); MQTT 5 QoS 1 gets PUBACK 0x97 (quota
exceeded) and the connection stays; MQTT 3.1.1 QoS 1, which cannot refuse a
message, is closed without the acknowledgement (the device sends again).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.conftest import RunningPlatform
from tests.mqtt.clients import RawClient
from thingshub.mqtt.codec import PubAck, Publish


def _device(p: RunningPlatform, name: str) -> dict:
    api = p.http()
    api.post("/api/v1/products", json={"id": "p", "name": "p"})
    r = api.post("/api/v1/products/p/devices", json={"name": name})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _points(p: RunningPlatform, name: str, key: str) -> set[int]:
    page = (
        p.http()
        .get(
            f"/api/v1/products/p/devices/{name}/telemetry",
            params={"key": key, "start": 0, "end": 2**41, "limit": 1000},
        )
        .json()
    )
    return {int(v) for _, v in page["points"]}


def _limited(p: RunningPlatform) -> float:
    for line in p.http().get("/metrics").text.splitlines():
        if line.startswith("thingshub_publish_rate_limited_total "):
            return float(line.split()[1])
    raise AssertionError("thingshub_publish_rate_limited is not in /metrics")


def test_over_the_rate_mqtt5_gets_quota_exceeded_and_nothing_is_stored(
    platform_factory: Callable[..., RunningPlatform],
) -> None:
    p = platform_factory(device_publish_rate=5)
    d = _device(p, "d5")
    c = RawClient(p.mqtt_port, 5)
    assert c.connect("c5", username=d["username"], password=d["password"].encode()).reason_code == 0
    for n in range(1, 31):
        c.send(Publish("devices/telemetry", json.dumps({"k": n}).encode(), 1, packet_id=n))
    codes = {}
    for _ in range(30):
        ack = c.expect(PubAck)
        codes[ack.packet_id] = ack.reason_code
    accepted = {n for n, code in codes.items() if code == 0}
    refused = {n for n, code in codes.items() if code == 0x97}
    assert accepted | refused == set(range(1, 31)), codes
    assert 5 <= len(accepted) <= 10 and refused, codes  # one second's worth, and a little more
    c.ping()  # still connected
    assert _points(p, "d5", "k") == accepted
    assert _limited(p) == len(refused)
    # QoS 0 over the rate is dropped and counted too.
    for n in range(31, 51):
        c.send(Publish("devices/telemetry", json.dumps({"z": n}).encode(), 0))
    c.ping()
    assert _limited(p) > len(refused)
    assert len(_points(p, "d5", "z")) < 20


def test_over_the_rate_mqtt311_closes_without_acknowledging(
    platform_factory: Callable[..., RunningPlatform],
) -> None:
    p = platform_factory(device_publish_rate=5)
    d = _device(p, "d3")
    c = RawClient(p.mqtt_port, 4)
    assert c.connect("c3", username=d["username"], password=d["password"].encode()).reason_code == 0
    for n in range(1, 31):
        c.send(Publish("devices/telemetry", json.dumps({"k": n}).encode(), 1, packet_id=n))
    received = c.wait_closed()
    acked = {a.packet_id for a in received if isinstance(a, PubAck)}
    assert len(acked) < 30, acked
    stored = _points(p, "d3", "k")
    assert acked <= stored  # everything acknowledged was stored
    assert 5 <= len(stored) <= 10  # the rate's worth (some unacknowledged: sent again later)
    assert _limited(p) >= 1


def test_no_rate_by_default(platform_factory: Callable[..., RunningPlatform]) -> None:
    p = platform_factory()
    d = _device(p, "d0")
    c = RawClient(p.mqtt_port, 5)
    assert c.connect("c0", username=d["username"], password=d["password"].encode()).reason_code == 0
    for n in range(1, 101):
        c.send(Publish("devices/telemetry", json.dumps({"k": n}).encode(), 1, packet_id=n))
    assert all(c.expect(PubAck).reason_code == 0 for _ in range(100))
    assert _limited(p) == 0
