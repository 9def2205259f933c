"""The OneNET device image end to end: a paho-mqtt device on `$sys/{pid}/{name}/image/...`
and an application on the HTTP API, as docs/protocols.md section 2 describes them."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import Registered, RunningPlatform
from tests.mqtt.clients import PahoClient, wait_until
from thingshub.dialects.onenet import token as onenet

P = "$sys/p1/d1/image/"


def connect(platform: RunningPlatform, dev: Registered, version: int = 5) -> PahoClient:
    token = onenet.make_token(dev.key, dev.product_id, dev.name, int(time.time()) + 3600)
    return PahoClient(
        platform.mqtt_port, dev.name, version=version, username=dev.product_id, password=token
    )


def replies(client: PahoClient, suffix: str) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in client.messages if m.topic == P + suffix]


def wait_reply(client: PahoClient, suffix: str, count: int = 1) -> dict[str, Any]:
    wait_until(lambda: len(replies(client, suffix)) >= count, what=f"{count} x {suffix}")
    return replies(client, suffix)[count - 1]


def update(client: PahoClient, body: Any, qos: int = 1) -> int:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.publish(P + "update", raw, qos=qos)


@pytest.fixture
def device(platform: RunningPlatform, register) -> PahoClient:
    dev = register("p1", "d1")
    client = connect(platform, dev)
    client.subscribe(P + "#", qos=1)
    return client


def test_update_accepted_then_delta(device: PahoClient) -> None:
    code = update(
        device,
        {
            "state": {
                "desired": {"lights": {"color": "RED"}, "engine": "ON"},
                "reported": {"engine": "ON"},
            },
            "id": "req-1",
        },
    )
    assert code in (0, 0x10)
    accepted = wait_reply(device, "update/accepted")
    assert accepted["id"] == "req-1"
    assert accepted["version"] == 1
    assert accepted["state"] == {
        "desired": {"lights": {"color": "RED"}, "engine": "ON"},
        "reported": {"engine": "ON"},
    }
    t = accepted["timestamp"]
    assert accepted["metadata"]["desired"]["lights"]["color"] == {"timestamp": t}
    assert accepted["metadata"]["reported"]["engine"] == {"timestamp": t}
    delta = wait_reply(device, "update/delta")
    assert delta["state"] == {"lights": {"color": "RED"}}
    assert delta["version"] == 1
    assert delta["metadata"] == {"lights": {"color": {"timestamp": t}}}
    # Reporting what is desired makes the delta disappear: no new delta message.
    update(device, {"state": {"reported": {"lights": {"color": "RED"}}}})
    assert wait_reply(device, "update/accepted", 2)["version"] == 2
    device.fence()
    assert len(replies(device, "update/delta")) == 1
    device.publish(P + "get", b'{"id": "g1"}', qos=1)
    got = wait_reply(device, "get/accepted")
    assert got["id"] == "g1" and got["version"] == 2
    assert "delta" not in got["state"]
    assert set(got) == {"state", "metadata", "version", "timestamp", "id"}  # properties only


def test_get_without_an_image_is_167(device: PahoClient) -> None:
    device.publish(P + "get", b"", qos=1)
    assert wait_reply(device, "get/rejected") == {
        "err_code": 167,
        "err_msg": "device image not exists",
    }


DEEP_OK = {"state": {"reported": {"one": {"two": {"three": {"four": {"key": "value"}}}}}}}
DEEP_BAD = {"state": {"reported": {"one": {"two": {"three": {"four": {"five": {"k": 1}}}}}}}}

ERROR_CASES = [
    (b"not json", 160),
    (b"[1, 2]", 160),
    (b"\xff\xfe{}", 160),
    (json.dumps({"state": {"reported": {"s": "x" * 5000}}}).encode(), 161),
    (json.dumps(DEEP_BAD).encode(), 162),
    (b'{"id": "x"}', 163),
    (b'{"state": 5}', 163),
    (b'{"state": {}}', 164),
    (b'{"state": {"reported": {"bad key!": 1}}}', 165),
    (json.dumps({"state": {"reported": {"k": "x" * 513}}}).encode(), 165),
    (json.dumps({"state": {"reported": {"k": 2**52 + 1}}}).encode(), 165),
    (b'{"state": {"reported": {"k": 1}}, "version": 7}', 165),
]


@pytest.mark.parametrize(("payload", "code"), ERROR_CASES)
def test_each_error_code_reaches_the_device(device: PahoClient, payload: bytes, code: int) -> None:
    # The PUBACK still comes: the message was handled; the refusal is on `rejected`.
    assert update(device, payload) in (0, 0x10)
    rejected = wait_reply(device, "update/rejected")
    assert rejected["err_code"] == code, rejected
    assert isinstance(rejected["err_msg"], str) and rejected["err_msg"]
    device.fence()
    assert replies(device, "update/accepted") == []


def test_depth_of_the_seed_is_accepted(device: PahoClient) -> None:
    update(device, DEEP_OK)
    assert wait_reply(device, "update/accepted")["version"] == 1


def test_rejected_echoes_the_id(device: PahoClient) -> None:
    update(device, b'{"state": {}, "id": "abc"}')
    rejected = wait_reply(device, "update/rejected")
    assert rejected["err_code"] == 164 and rejected["id"] == "abc"
    assert rejected["err_msg"] == "desired or reported key not found"


def test_version_lock(device: PahoClient) -> None:
    update(device, {"state": {"reported": {"a": 1}}})
    wait_reply(device, "update/accepted")
    update(device, {"state": {"reported": {"a": 2}}, "version": 1})
    assert wait_reply(device, "update/accepted", 2)["version"] == 2
    update(device, {"state": {"reported": {"a": 3}}, "version": 1})
    assert wait_reply(device, "update/rejected")["err_code"] == 165


def test_flooding_device_is_rate_limited(platform: RunningPlatform, device: PahoClient) -> None:
    limiter = platform.platform.images.limiter
    n = int(limiter.burst) + 10
    for i in range(n):
        update(device, {"state": {"reported": {"n": i}}}, qos=0)
    wait_until(
        lambda: (
            len(replies(device, "update/accepted")) + len(replies(device, "update/rejected")) >= n
        ),
        what="all replies",
    )
    rejected = replies(device, "update/rejected")
    assert rejected and all(r["err_code"] == 128 for r in rejected)
    assert "per second" in rejected[0]["detail"]
    # Other devices are not affected, and the server still answers this one later.
    assert len(replies(device, "update/accepted")) >= int(limiter.burst)


def test_other_devices_cannot_see_the_image_topics(
    platform: RunningPlatform, register, device: PahoClient
) -> None:
    other = connect(platform, register("p1", "d2"))
    assert other.subscribe(P + "#", qos=1) == [0x87]
    update(device, {"state": {"reported": {"a": 1}}})
    wait_reply(device, "update/accepted")
    other.fence()
    assert other.messages == []


# ---------------------------------------------------------------- with the HTTP API


def test_application_sets_desired_while_the_device_is_offline(
    platform: RunningPlatform, register
) -> None:
    dev = register("p1", "d1")
    api = platform.http()
    r = api.patch(
        "/api/v1/products/p1/devices/d1/image",
        json={"desired": {"fan": {"speed": 3}}, "tags": {"floor": "2"}},
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["properties"]["version"] == 1
    assert doc["properties"]["state"]["delta"] == {"fan": {"speed": 3}}
    assert doc["tags"] == {"floor": "2"} and doc["connectionState"] == "offline"
    # The device connects, subscribes to its delta topic, and gets the pending delta.
    client = connect(platform, dev)
    client.subscribe(P + "update/delta", P + "update/accepted", qos=1)
    delta = wait_reply(client, "update/delta")
    assert delta["state"] == {"fan": {"speed": 3}} and delta["version"] == 1
    update(client, {"state": {"reported": {"fan": {"speed": 3}}}})
    assert wait_reply(client, "update/accepted")["version"] == 2
    after = api.get("/api/v1/products/p1/devices/d1/image").json()
    assert "delta" not in after["properties"]["state"]
    assert after["connectionState"] == "online"
    # An online device gets a new desired at once.
    api.patch("/api/v1/products/p1/devices/d1/image", json={"desired": {"fan": {"speed": 5}}})
    assert wait_reply(client, "update/delta", 2)["state"] == {"fan": {"speed": 5}}


def test_http_errors_carry_the_protocol_codes(platform: RunningPlatform, register) -> None:
    register("p1", "d1")
    api = platform.http()
    path = "/api/v1/products/p1/devices/d1/image"
    missing = api.get(path)
    assert missing.status_code == 404
    assert missing.json()["err_code"] == 167
    assert missing.json()["err_msg"] == "device image not exists"
    assert missing.json()["error"]
    created = api.post(path)
    assert created.status_code == 201 and created.json()["properties"]["version"] == 1
    again = api.post(path)
    assert again.status_code == 409 and again.json()["err_code"] == 166
    bad = api.patch(path, json={"desired": {"bad key": 1}})
    assert bad.status_code == 400 and bad.json()["err_code"] == 165
    conflict = api.patch(path, json={"desired": {"a": 1}, "version": 9})
    assert conflict.status_code == 400 and conflict.json()["err_code"] == 165
    assert api.patch(path, json={"nothing": 1}).status_code == 400
    assert api.patch(path, json={}).status_code == 400
    assert api.get("/api/v1/products/p1/devices/nope/image").status_code == 404


def test_tags_only_change_neither_version_nor_creates(platform: RunningPlatform, register) -> None:
    register("p1", "d1")
    api = platform.http()
    path = "/api/v1/products/p1/devices/d1/image"
    r = api.patch(path, json={"tags": {"room": "7"}})
    assert r.status_code == 200 and "properties" not in r.json()
    assert api.get(path).status_code == 404
    api.patch(path, json={"desired": {"x": 1}})
    before = api.get(path).json()["properties"]
    r = api.patch(path, json={"tags": {"room": None, "zone": "b"}})
    assert r.json()["tags"] == {"zone": "b"}
    assert r.json()["properties"]["version"] == before["version"]
    assert r.json()["properties"]["timestamp"] == before["timestamp"]


def test_image_survives_a_restart(platform_factory, database_url) -> None:
    p = platform_factory(database_url=database_url)
    api = p.http()
    api.post("/api/v1/products", json={"id": "p1", "name": "p"})
    d = api.post("/api/v1/products/p1/devices", json={"name": "d1"}).json()
    dev = Registered("p1", "d1", d["device_number"], d["key"], d["username"], d["password"])
    client = connect(p, dev)
    client.subscribe(P + "update/accepted", qos=1)
    update(client, {"state": {"reported": {"a": 1}, "desired": {"b": 2}}})
    wait_reply(client, "update/accepted")
    before = api.get("/api/v1/products/p1/devices/d1/image").json()["properties"]
    platform_factory.stop(p)
    client.wait_disconnected()
    p2 = platform_factory(database_url=database_url)
    after = p2.http().get("/api/v1/products/p1/devices/d1/image").json()["properties"]
    assert after == before
