"""The ThingsPanel data plane end to end: paho-mqtt devices report telemetry, attributes
and events (docs/protocols.md section 4); the HTTP API reads them back (the README's HTTP API)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import Registered, RunningPlatform
from tests.mqtt.clients import PahoClient, wait_until

BASE = "/api/v1/products/p1/devices/d1"


@pytest.fixture
def dev(register) -> Registered:
    return register("p1", "d1")


@pytest.fixture
def client(platform: RunningPlatform, dev: Registered) -> PahoClient:
    c = PahoClient(platform.mqtt_port, "tp", username=dev.username, password=dev.password)
    c.subscribe(
        f"devices/attributes/response/{dev.device_number}/+",
        f"devices/event/response/{dev.device_number}/+",
        qos=1,
    )
    return c


def response(client: PahoClient, kind: str, message_id: str) -> dict[str, Any]:
    suffix = f"/{message_id}"
    wait_until(
        lambda: any(
            m.topic.startswith(f"devices/{kind}/response/") and m.topic.endswith(suffix)
            for m in client.messages
        ),
        what=f"{kind} response {message_id}",
    )
    message = next(
        m
        for m in client.messages
        if m.topic.startswith(f"devices/{kind}/response/") and m.topic.endswith(suffix)
    )
    return json.loads(message.payload)


def publish(client: PahoClient, topic: str, body: Any, qos: int = 1) -> int:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.publish(topic, raw, qos=qos)


def test_realtime_telemetry(platform: RunningPlatform, client: PahoClient) -> None:
    before = int(time.time() * 1000)
    assert (
        publish(
            client,
            "devices/telemetry",
            {
                "temperature": 25.5,
                "humidity": 65.0,
                "switch": True,
                "mode": "eco",
                "shape": {"w": 1, "h": [2, 3]},
            },
        )
        == 0
    )
    after = int(time.time() * 1000)
    api = platform.http()
    latest = api.get(f"{BASE}/telemetry/latest").json()
    assert {k: v["value"] for k, v in latest.items()} == {
        "temperature": 25.5,
        "humidity": 65.0,
        "switch": True,
        "mode": "eco",
        "shape": {"w": 1, "h": [2, 3]},
    }
    ts = latest["temperature"]["ts"]
    assert before <= ts <= after  # server time, in ms
    history = api.get(
        f"{BASE}/telemetry", params={"key": "switch", "start": before, "end": after + 1}
    ).json()
    assert history == {"key": "switch", "points": [[ts, True]], "next": None}


def test_historical_telemetry_uses_seconds(platform: RunningPlatform, client: PahoClient) -> None:
    publish(
        client,
        "devices/telemetry",
        [
            {"ts": 1609459200, "values": {"temperature": 22.5, "humidity": 60.0}},
            {"ts": 1609462800, "values": {"temperature": 23.0, "humidity": 61.5}},
        ],
    )
    api = platform.http()
    history = api.get(
        f"{BASE}/telemetry",
        params={"key": "temperature", "start": 1609459200000, "end": 1609462800001},
    ).json()
    assert history["points"] == [[1609459200000, 22.5], [1609462800000, 23.0]]
    latest = api.get(f"{BASE}/telemetry/latest").json()
    assert latest["humidity"] == {"ts": 1609462800000, "value": 61.5}


def test_points_of_the_same_millisecond_are_all_kept(
    platform: RunningPlatform, client: PahoClient
) -> None:
    for value in (1, 2, 3):
        publish(client, "devices/telemetry", [{"ts": 1700000000, "values": {"v": value}}])
    points = (
        platform.http()
        .get(f"{BASE}/telemetry", params={"key": "v", "start": 1700000000000, "end": 1700000000001})
        .json()["points"]
    )
    assert points == [[1700000000000, 1], [1700000000000, 2], [1700000000000, 3]]
    latest = platform.http().get(f"{BASE}/telemetry/latest").json()
    assert latest["v"]["value"] == 3  # newest by ts, then by arrival


def test_history_pages(platform: RunningPlatform, client: PahoClient) -> None:
    publish(
        client, "devices/telemetry", [{"ts": 1700000000 + i, "values": {"n": i}} for i in range(25)]
    )
    api = platform.http()
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"key": "n", "start": 0, "end": 2**41, "limit": 10}
        if cursor:
            params["cursor"] = cursor
        page = api.get(f"{BASE}/telemetry", params=params).json()
        seen += [v for _, v in page["points"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == list(range(25))


def test_aggregation_against_hand_computed_values(
    platform: RunningPlatform, client: PahoClient
) -> None:
    # Buckets of 10 s from t0: [t0, t0+10 s) holds 1, 2, 6; [t0+10, +20) is empty;
    # [t0+20, +30) holds 10 and a string (counted, not averaged).
    t0 = 1700000000
    publish(
        client,
        "devices/telemetry",
        [
            {"ts": t0, "values": {"x": 1}},
            {"ts": t0 + 4, "values": {"x": 2}},
            {"ts": t0 + 9, "values": {"x": 6}},
            {"ts": t0 + 21, "values": {"x": 10}},
            {"ts": t0 + 25, "values": {"x": "n/a"}},
            {"ts": t0 + 30, "values": {"x": 99}},  # at `end`: excluded
        ],
    )
    api = platform.http()

    def agg(name: str) -> list[list[Any]]:
        return api.get(
            f"{BASE}/telemetry",
            params={
                "key": "x",
                "start": t0 * 1000,
                "end": (t0 + 30) * 1000,
                "interval": 10_000,
                "agg": name,
            },
        ).json()["points"]

    b0, b2 = t0 * 1000, (t0 + 20) * 1000
    assert agg("avg") == [[b0, 3.0], [b2, 10.0]]
    assert agg("min") == [[b0, 1], [b2, 10]]
    assert agg("max") == [[b0, 6], [b2, 10]]
    assert agg("sum") == [[b0, 9], [b2, 10]]
    assert agg("count") == [[b0, 3], [b2, 2]]
    assert agg("last") == [[b0, 6], [b2, "n/a"]]
    assert (
        api.get(
            f"{BASE}/telemetry",
            params={"key": "x", "start": 0, "end": 1, "interval": 10, "agg": "median"},
        ).status_code
        == 400
    )


def test_attributes_with_their_response(
    platform: RunningPlatform, dev: Registered, client: PahoClient
) -> None:
    publish(client, "devices/attributes/1234567", {"ip": "192.168.1.100", "version": "1.0.0"})
    assert response(client, "attributes", "1234567")["result"] == 0
    publish(client, "devices/attributes/1234568", {"version": "1.0.1"})
    assert response(client, "attributes", "1234568")["message"] == "success"
    attrs = platform.http().get(f"{BASE}/attributes").json()
    assert attrs == {"ip": "192.168.1.100", "version": "1.0.1"}


def test_events_realtime_and_historical(platform: RunningPlatform, client: PahoClient) -> None:
    before = int(time.time() * 1000)
    publish(client, "devices/event/11", {"method": "AlarmTriggered", "params": {"level": "high"}})
    reply = response(client, "event", "11")
    assert reply["result"] == 0 and reply["method"] == "AlarmTriggered"
    publish(
        client,
        "devices/event/12",
        [
            {"ts": 1609459200000, "method": "AlarmTriggered", "params": {"level": "high"}},
            {"ts": 1609462800000, "method": "DeviceStarted", "params": {"version": "1.0.0"}},
        ],
    )
    reply = response(client, "event", "12")
    assert reply["result"] == 0 and "method" not in reply
    api = platform.http()
    old = api.get(f"{BASE}/events", params={"start": 1609459200000, "end": 1609462800001})
    assert old.json() == [
        {"ts": 1609459200000, "method": "AlarmTriggered", "params": {"level": "high"}},
        {"ts": 1609462800000, "method": "DeviceStarted", "params": {"version": "1.0.0"}},
    ]
    now = api.get(f"{BASE}/events", params={"start": before, "end": 2**41}).json()
    assert [e["method"] for e in now] == ["AlarmTriggered"]


BAD = [
    (b"not json", "INVALID_JSON"),
    (b"\xff\xfe", "INVALID_JSON"),
    (b"[1, 2]", "INVALID_PARAM"),
    (b'"text"', "INVALID_PARAM"),
    (json.dumps({"k": "x" * 70_000}).encode(), "PAYLOAD_TOO_LARGE"),
]


@pytest.mark.parametrize(("payload", "errcode"), BAD)
def test_bad_attribute_reports(
    platform: RunningPlatform, client: PahoClient, payload: bytes, errcode: str
) -> None:
    assert publish(client, "devices/attributes/99", payload) == 0  # still acknowledged
    reply = response(client, "attributes", "99")
    assert reply["result"] == 1 and reply["errcode"] == errcode and reply["message"]
    assert platform.http().get(f"{BASE}/attributes").json() == {}


@pytest.mark.parametrize(
    ("payload", "errcode"),
    [
        (b"{oops", "INVALID_JSON"),
        (b'{"params": {}}', "INVALID_PARAM"),
        (b'[{"method": "A", "ts": "yesterday"}]', "INVALID_PARAM"),
        (
            json.dumps({"method": "Big", "params": {"k": "x" * 70_000}}).encode(),
            "PAYLOAD_TOO_LARGE",
        ),
    ],
)
def test_bad_event_reports(
    platform: RunningPlatform, client: PahoClient, payload: bytes, errcode: str
) -> None:
    publish(client, "devices/event/77", payload)
    reply = response(client, "event", "77")
    assert reply["result"] == 1 and reply["errcode"] == errcode
    assert platform.http().get(f"{BASE}/events", params={"start": 0, "end": 2**41}).json() == []


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"42",
        b'[{"ts": 1700000000}]',
        b'[{"ts": "x", "values": {"a": 1}}]',
        b'[{"ts": 1700000000, "values": {"a": 1}}, {"values": {"b": 2}}]',
        json.dumps({"k": "x" * 70_000}).encode(),
    ],
)
def test_bad_telemetry_stores_nothing_and_keeps_the_connection(
    platform: RunningPlatform, client: PahoClient, payload: bytes
) -> None:
    assert publish(client, "devices/telemetry", payload) == 0
    assert platform.http().get(f"{BASE}/telemetry/latest").json() == {}
    assert publish(client, "devices/telemetry", {"ok": 1}) == 0  # still connected
    assert platform.http().get(f"{BASE}/telemetry/latest").json()["ok"]["value"] == 1
    text = platform.http().get("/metrics").text
    assert "thingshub_reports_refused_total" in text


def test_queries_of_a_device_without_data(platform: RunningPlatform, dev: Registered) -> None:
    api = platform.http()
    assert api.get(f"{BASE}/telemetry/latest").json() == {}
    assert api.get(f"{BASE}/telemetry", params={"key": "k", "start": 0, "end": 1}).json() == {
        "key": "k",
        "points": [],
        "next": None,
    }
    assert api.get(f"{BASE}/attributes").json() == {}
    assert api.get(f"{BASE}/events", params={"start": 0, "end": 1}).json() == []
    assert api.get(f"{BASE}/telemetry", params={"key": "k"}).status_code == 400
    assert api.get("/api/v1/products/p1/devices/nope/telemetry/latest").status_code == 404


def test_retention_deletes_old_points(platform: RunningPlatform, client: PahoClient) -> None:
    now_s = int(time.time())
    publish(
        client,
        "devices/telemetry",
        [
            {"ts": now_s - 10 * 86400, "values": {"t": 1}},
            {"ts": now_s - 60, "values": {"t": 2}},
        ],
    )
    api = platform.http()
    assert (
        api.patch("/api/v1/products/p1", json={"retention_days": 7}).json()["retention_days"] == 7
    )
    deleted = platform.run(platform.platform.retention.run_once())
    assert deleted == 1
    points = api.get(f"{BASE}/telemetry", params={"key": "t", "start": 0, "end": 2**41}).json()
    assert [v for _, v in points["points"]] == [2]
    assert api.patch("/api/v1/products/p1", json={"retention_days": 0}).status_code == 400
