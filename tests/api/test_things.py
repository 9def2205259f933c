"""The thing model's HTTP rows end to end: model CRUD, property set and get, services
synchronous and asynchronous, desired values pushed, the command records of family
`thing` and the live stream's `desired` kind, with a paho-mqtt device answering
on its `thing/` topics like the official device SDK does."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from websockets.sync.client import connect as ws_connect

from tests.conftest import Registered, RunningPlatform
from tests.gateway.test_thing import MODEL, T, connect
from tests.mqtt.clients import PahoClient, wait_until

DEV = "/api/v1/products/p1/devices/d1"


def answering(client: PahoClient, code: int = 200, data: Any = None) -> list[dict[str, Any]]:
    """Answer every platform request on the device's thing topics; the requests seen."""
    seen: list[dict[str, Any]] = []

    def on_message(c: Any, _u: object, m: Any) -> None:
        request = json.loads(m.payload)
        seen.append({"topic": m.topic, **request})
        reply: dict[str, Any] = {"id": request["id"], "code": code}
        if data is not None:
            reply["data"] = data
        c.publish(m.topic + "_reply", json.dumps(reply, separators=(",", ":")), qos=0)

    for topic in ("property/set", "property/get", "service/+/invoke"):
        client.client.message_callback_add(T + topic, on_message)
    client.subscribe(T + "property/set", T + "property/get", T + "service/+/invoke", qos=0)
    return seen


@pytest.fixture
def dev(platform: RunningPlatform, register) -> Registered:
    return register("p1", "d1")


def test_model_crud_and_its_errors(platform: RunningPlatform, dev: Registered) -> None:
    api = platform.http()
    missing = api.get("/api/v1/products/p1/thing-model")
    assert missing.status_code == 404 and missing.json()["err_code"] == 305
    put = api.put("/api/v1/products/p1/thing-model", json=MODEL)
    assert put.status_code == 200, put.text
    assert put.json()["revision"] == 1 and put.json()["services"][1]["callType"] == "a"
    assert api.put("/api/v1/products/p1/thing-model", json=MODEL).json()["revision"] == 2
    broken = json.loads(json.dumps(MODEL))
    broken["properties"][1]["dataType"]["specs"]["min"] = "1000"
    bad = api.put("/api/v1/products/p1/thing-model", json=broken)
    assert bad.status_code == 400
    assert bad.json()["path"] == "/properties/1/dataType/specs"
    assert api.get("/api/v1/products/p1/thing-model").json()["revision"] == 2  # unchanged
    assert api.delete("/api/v1/products/p1/thing-model").status_code == 204
    assert api.get("/api/v1/products/p1/thing-model").status_code == 404
    assert api.put("/api/v1/products/none/thing-model", json=MODEL).status_code == 404


def test_property_set_and_get_reach_the_device(platform: RunningPlatform, dev: Registered) -> None:
    api = platform.http()
    api.put("/api/v1/products/p1/thing-model", json=MODEL)
    offline = api.post(f"{DEV}/properties", json={"temp": 20})
    assert offline.status_code == 409 and offline.json()["err_code"] == 308
    device = connect(platform, dev)
    quiet = api.post(f"{DEV}/properties", json={"temp": 20})
    assert quiet.status_code == 409 and quiet.json()["err_code"] == 1022
    seen = answering(device, data={"temp": 20.5})
    ok = api.post(f"{DEV}/properties", json={"temp": "20"})
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["code"] == 200 and body["call_id"] and body["id"] == seen[-1]["id"]
    assert seen[-1]["params"] == {"temp": 20} and seen[-1]["version"] == "1.0"
    assert len(seen[-1]["id"]) <= 13 and seen[-1]["id"].isdigit()  # device code's buffer
    assert api.post(f"{DEV}/properties", json={"temp": 300}).json()["err_code"] == 302
    assert api.post(f"{DEV}/properties", json={"nope": 1}).json()["err_code"] == 309
    read_only = api.post(f"{DEV}/properties", json={"count": 1})
    assert read_only.status_code == 400 and read_only.json()["err_code"] == 313
    got = api.post(f"{DEV}/properties/get", json={"identifiers": []})
    assert got.status_code == 200 and got.json()["data"] == {"temp": 20.5}
    assert seen[-1]["params"] == ["temp", "count"]  # [] means all the model's properties
    records = api.get(f"{DEV}/commands").json()["items"]
    assert [(r["family"], r["kind"], r["status"]) for r in records[:2]] == [
        ("thing", "property_get", "answered"),
        ("thing", "property_set", "answered"),
    ]


def test_a_silent_device_times_out_and_a_bad_reply_is_502(
    platform: RunningPlatform, dev: Registered
) -> None:
    api = platform.http()
    device = connect(platform, dev)
    device.subscribe(T + "property/set", qos=0)  # listens, never answers
    started = time.monotonic()
    late = api.post(f"{DEV}/properties", params={"timeout": 1}, json={"x": 1})
    assert late.status_code == 504 and late.json()["err_code"] == 306
    assert time.monotonic() - started < 5

    def no_code(c: Any, _u: object, m: Any) -> None:
        request = json.loads(m.payload)
        c.publish(T + "property/set_reply", json.dumps({"id": request["id"], "msg": "ok"}))

    device.client.message_callback_add(T + "property/set", no_code)
    bad = api.post(f"{DEV}/properties", json={"x": 1})
    assert bad.status_code == 502 and bad.json()["err_code"] == 304


def test_services_sync_and_async(platform: RunningPlatform, dev: Registered) -> None:
    api = platform.http()
    api.put("/api/v1/products/p1/thing-model", json=MODEL)
    device = connect(platform, dev)
    seen = answering(device, data={"c": 3})
    added = api.post(f"{DEV}/services/add", json={"a": 1, "b": 2})
    assert added.status_code == 200 and added.json()["data"] == {"c": 3}
    assert seen[-1]["topic"] == T + "service/add/invoke" and seen[-1]["params"] == {"a": 1, "b": 2}
    assert api.post(f"{DEV}/services/add", json={"a": "x"}).json()["err_code"] == 302
    assert api.post(f"{DEV}/services/nope", json={}).json()["err_code"] == 309
    later = api.post(f"{DEV}/services/reboot", json={})
    assert later.status_code == 202, later.text
    call_id = later.json()["call_id"]

    def answered() -> bool:
        items = api.get(f"{DEV}/commands").json()["items"]
        return any(r["cmd_id"] == call_id and r["status"] == "answered" for r in items)

    wait_until(answered, what="the asynchronous service's reply completing its record")


def test_desired_values_are_versioned_pushed_and_streamed(
    platform: RunningPlatform, dev: Registered
) -> None:
    api = platform.http()
    api.put("/api/v1/products/p1/thing-model", json=MODEL)
    url = f"ws://127.0.0.1:{platform.http_port}/api/v1/stream?kinds=desired&key={platform.api_key}"
    with ws_connect(url, open_timeout=5) as ws:
        first = api.patch(f"{DEV}/desired", json={"temp": 22})
        assert first.status_code == 200 and first.json()["temp"]["version"] == 1
        streamed = json.loads(ws.recv(timeout=5))
        assert streamed["kind"] == "desired"
        assert streamed["data"] == {"temp": {"value": 22, "version": 1}}
    assert api.patch(f"{DEV}/desired", json={"temp": 999}).json()["err_code"] == 302
    device = connect(platform, dev)
    seen = answering(device)
    pushed = api.patch(f"{DEV}/desired", json={"temp": 23})
    assert pushed.json()["temp"]["version"] == 2
    wait_until(lambda: any(s.get("params") == {"temp": 23} for s in seen), what="the push")
    # The device reads and deletes them on its own topics.
    device.subscribe(T + "property/desired/#", qos=1)
    device.publish(T + "property/desired/get", json.dumps({"id": "5", "params": []}).encode(), 1)
    wait_until(
        lambda: any(m.topic == T + "property/desired/get/reply" for m in device.messages),
        what="desired/get/reply",
    )
    reply = json.loads(next(m.payload for m in device.messages if m.topic.endswith("get/reply")))
    assert reply == {
        "id": "5",
        "code": 200,
        "msg": "success",
        "data": {"temp": {"value": 23, "version": 2}},
    }
    device.publish(
        T + "property/desired/delete",
        json.dumps({"id": "6", "params": {"temp": {"version": 2}}}).encode(),
        1,
    )
    wait_until(lambda: api.get(f"{DEV}/desired").json() == {}, what="the deletion")
    assert api.patch(f"{DEV}/desired", json={"temp": 24}).json()["temp"]["version"] == 1


@pytest.mark.parametrize("version", [5, 4], ids=["mqtt5", "mqtt311"])
def test_the_devices_set_reply_completes_a_desired_push(
    platform: RunningPlatform, dev: Registered, version: int
) -> None:
    """Desired values pushed on `property/set` are answered on `property/set_reply`,
    as the official SDK answers every set: that reply completes the push's record."""
    api = platform.http()
    api.put("/api/v1/products/p1/thing-model", json=MODEL)
    device = connect(platform, dev, version)
    seen = answering(device)
    api.patch(f"{DEV}/desired", json={"temp": 25})
    wait_until(lambda: any(s.get("params") == {"temp": 25} for s in seen), what="the push")

    def push() -> dict[str, Any]:
        items = api.get(f"{DEV}/commands").json()["items"]
        found: dict[str, Any] = next(r for r in items if r["kind"] == "desired_push")
        return found

    wait_until(lambda: push()["status"] == "answered", what="the push's record answered")
    record = push()
    assert record["request"] == {"temp": 25}
    assert record["response"] == {"id": seen[-1]["id"], "code": 200}
    assert record["answered_at"] is not None


def test_a_product_can_be_created_with_its_model(platform: RunningPlatform) -> None:
    api = platform.http()
    broken = json.loads(json.dumps(MODEL))
    broken["events"][0]["eventType"] = "fatal"
    bad = api.post("/api/v1/products", json={"id": "p2", "name": "P2", "thing_model": broken})
    assert bad.status_code == 400 and bad.json()["path"] == "/events/0/eventType"
    assert api.get("/api/v1/products/p2").status_code == 404  # nothing made
    made = api.post("/api/v1/products", json={"id": "p2", "name": "P2", "thing_model": MODEL})
    assert made.status_code == 201, made.text
    model = api.get("/api/v1/products/p2/thing-model").json()
    assert model["revision"] == 1 and [p["identifier"] for p in model["properties"]] == [
        "temp",
        "count",
    ]
