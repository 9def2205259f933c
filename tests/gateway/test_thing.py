"""The OneNET thing model end to end over real sockets: a paho-mqtt device posting on
`$sys/{pid}/{name}/thing/...` in both MQTT versions, stored and answered; the
application's calls (property set and get, services sync and async, desired
values) reaching the device and coming back."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import Registered, RunningPlatform
from tests.mqtt.clients import PahoClient, wait_until
from thingshub.core.messages import DeviceRef
from thingshub.dialects.onenet import token as onenet

T = "$sys/p1/d1/thing/"
MODEL: dict[str, Any] = {
    "properties": [
        {
            "identifier": "temp",
            "name": "Temperature",
            "accessMode": "rw",
            "dataType": {"type": "float", "specs": {"min": "-40", "max": "125", "unit": "°C"}},
        },
        {
            "identifier": "count",
            "name": "Count",
            "accessMode": "r",
            "dataType": {"type": "int32", "specs": {"min": "0", "max": "100"}},
        },
    ],
    "events": [
        {
            "identifier": "alarm",
            "name": "Alarm",
            "eventType": "alert",
            "outputData": [{"identifier": "level", "name": "L", "dataType": {"type": "int32"}}],
        }
    ],
    "services": [
        {
            "identifier": "add",
            "name": "Add",
            "callType": "s",
            "input": [
                {"identifier": "a", "name": "a", "dataType": {"type": "int32"}},
                {"identifier": "b", "name": "b", "dataType": {"type": "int32"}},
            ],
            "output": [{"identifier": "c", "name": "c", "dataType": {"type": "int64"}}],
        },
        {"identifier": "reboot", "name": "Reboot", "callType": "a"},
    ],
}


def connect(platform: RunningPlatform, dev: Registered, version: int = 5) -> PahoClient:
    token = onenet.make_token(dev.key, dev.product_id, dev.name, int(time.time()) + 3600)
    return PahoClient(
        platform.mqtt_port, dev.name, version=version, username=dev.product_id, password=token
    )


def replies(client: PahoClient, topic: str) -> list[bytes]:
    return [m.payload for m in client.messages if m.topic == T + topic]


def post(client: PahoClient, topic: str, body: Any, qos: int = 1) -> dict[str, Any]:
    """Publish a request; the reply that answers it (by count: replies come in order)."""
    before = len(replies(client, topic + "/reply"))
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    client.publish(T + topic, raw, qos=qos)
    wait_until(lambda: len(replies(client, topic + "/reply")) > before, what=f"{topic}/reply")
    raw_reply = replies(client, topic + "/reply")[before]
    reply: dict[str, Any] = json.loads(raw_reply)
    # Compact, as field code looks for the text `"code":200`.
    compact = json.dumps(reply, separators=(",", ":"), ensure_ascii=False).encode()
    assert raw_reply == compact
    return reply


def set_model(platform: RunningPlatform) -> None:
    platform.run(platform.platform.things.set_model("p1", MODEL))


@pytest.fixture(params=[5, 4], ids=["mqtt5", "mqtt311"])
def version(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def device(platform: RunningPlatform, register, version: int) -> PahoClient:
    dev = register("p1", "d1")
    client = connect(platform, dev, version)
    client.subscribe(T + "#", qos=1)
    return client


def test_property_post_is_stored_and_answered(
    platform: RunningPlatform, device: PahoClient
) -> None:
    reply = post(
        device,
        "property/post",
        {"id": "1", "params": {"temp": {"value": 21.5}, "mode": {"value": "eco"}}},
    )
    assert reply == {"id": "1", "code": 200, "msg": "success"}
    latest = platform.http().get("/api/v1/products/p1/devices/d1/telemetry/latest").json()
    assert latest["temp"]["value"] == 21.5 and latest["mode"]["value"] == "eco"
    # Its own uplink never comes back to it on its thing/# subscription.
    device.fence()
    assert not [m for m in device.messages if m.topic == T + "property/post"]


def test_a_post_no_connection_hears_is_stored_without_its_reply(
    platform: RunningPlatform, register: Any
) -> None:
    """No connection holds a subscription (`heard` is False): the post is stored and
    acknowledged, its reply not built; once the device subscribes, posts are answered."""
    dev = register("p1", "d1")
    set_model(platform)
    client = connect(platform, dev)
    gateway = platform.platform.gateway
    ref = DeviceRef(dev.product_id, dev.name, dev.device_number)
    assert not gateway.heard(ref)
    body = {"id": "1", "params": {"temp": {"value": 21.5, "time": 1_700_000_000_000}}}
    assert client.publish(T + "property/post", json.dumps(body).encode(), qos=1) == 0
    latest = platform.http().get("/api/v1/products/p1/devices/d1/telemetry/latest").json()
    assert latest["temp"]["value"] == 21.5
    client.subscribe(T + "#", qos=1)
    assert gateway.heard(ref)
    assert post(client, "property/post", {"id": "2", "params": {"temp": {"value": 22.5}}}) == {
        "id": "2",
        "code": 200,
        "msg": "success",
    }
    assert replies(client, "property/post/reply") == [b'{"id":"2","code":200,"msg":"success"}']


def test_a_model_checks_what_devices_post(platform: RunningPlatform, device: PahoClient) -> None:
    set_model(platform)
    api = platform.http()
    ok = post(
        device,
        "property/post",
        {"id": "2", "params": {"temp": {"value": "30.5", "time": 1_700_000_000_000}}},
    )
    assert ok["code"] == 200
    history = api.get(
        "/api/v1/products/p1/devices/d1/telemetry",
        params={"key": "temp", "start": 1_699_999_999_999, "end": 1_700_000_000_001},
    ).json()
    assert history["points"] == [[1_700_000_000_000, 30.5]]  # a numeric string, stored as a number
    too_hot = post(device, "property/post", {"id": "3", "params": {"temp": {"value": 130}}})
    assert too_hot == {"id": "3", "code": 302, "msg": "data type error: temp: 130 > max 125"}
    unknown = post(device, "property/post", {"id": "4", "params": {"hum": {"value": 1}}})
    assert unknown["code"] == 309 and "hum" in unknown["msg"]
    metrics = api.get("/metrics").text
    assert 'thingshub_thing_requests_refused_total{code="309"} 1.0' in metrics
    # Refused whole: the valid value in a refused post is not stored.
    post(
        device,
        "property/post",
        {"id": "5", "params": {"temp": {"value": 1}, "count": {"value": 900}}},
    )
    assert (
        api.get("/api/v1/products/p1/devices/d1/telemetry/latest").json()["temp"]["value"] == 30.5
    )
    event = post(device, "event/post", {"id": "6", "params": {"alarm": {"value": {"level": 3}}}})
    assert event["code"] == 200
    events = api.get(
        "/api/v1/products/p1/devices/d1/events", params={"start": 0, "end": 2**62}
    ).json()
    assert events[-1] == {
        "ts": events[-1]["ts"],
        "method": "alarm",
        "params": {"level": 3},
        "type": "alert",  # the model's eventType
    }


def test_a_replaced_model_checks_the_next_post(
    platform: RunningPlatform, device: PahoClient
) -> None:
    set_model(platform)
    hot = {"id": "1", "params": {"temp": {"value": 130}}}
    assert post(device, "property/post", hot)["code"] == 302
    warmer = json.loads(json.dumps(MODEL))
    warmer["properties"][0]["dataType"]["specs"]["max"] = "150"
    platform.run(platform.platform.things.set_model("p1", warmer))
    assert post(device, "property/post", {**hot, "id": "2"})["code"] == 200
    platform.run(platform.platform.things.delete_model("p1"))
    assert post(device, "property/post", {**hot, "id": "3", "params": {"hum": {"value": 1}}}) == {
        "id": "3",
        "code": 200,
        "msg": "success",
    }


def test_the_envelope_errors_are_answered_on_the_reply_topic(device: PahoClient) -> None:
    assert post(device, "property/post", b"{not json")["code"] == 301
    bad_id = post(device, "property/post", {"id": "x1", "params": {"t": {"value": 1}}})
    assert bad_id == {
        "id": "x1",
        "code": 312,
        "msg": "invalid msg id: id must be a string of 1-13 decimal digits",
    }
    assert post(device, "property/post", {"id": "7", "params": {}})["code"] == 313
    other = post(
        device,
        "pack/post",
        {
            "id": "8",
            "params": [
                {
                    "identity": {"productID": "p1", "deviceName": "zz"},
                    "properties": {"t": {"value": 1}},
                }
            ],
        },
    )
    assert other["code"] == 307


def test_pack_and_history_posts(platform: RunningPlatform, device: PahoClient) -> None:
    pack = {
        "id": "9",
        "params": [
            {"properties": {"a": {"value": 1}}, "events": {"boot": {"value": {"n": 1}}}},
            {
                "identity": {"productID": "p1", "deviceName": "d1"},
                "properties": {"b": {"value": 2}},
            },
        ],
    }
    assert post(device, "pack/post", pack)["code"] == 200
    history = {
        "id": "10",
        "params": [
            {
                "properties": {
                    "a": [
                        {"value": 5, "time": 1_700_000_000_000},
                        {"value": 6, "time": 1_700_000_001_000},
                    ]
                }
            }
        ],
    }
    assert post(device, "history/post", history)["code"] == 200
    points = (
        platform.http()
        .get(
            "/api/v1/products/p1/devices/d1/telemetry",
            params={"key": "a", "start": 1_699_999_000_000, "end": 1_700_000_002_000},
        )
        .json()["points"]
    )
    assert points == [[1_700_000_000_000, 5], [1_700_000_001_000, 6]]


def test_legacy_data_points(platform: RunningPlatform, device: PahoClient) -> None:
    device.subscribe("$sys/p1/d1/dp/post/json/+", qos=1)
    device.publish(
        "$sys/p1/d1/dp/post/json",
        json.dumps({"id": 77, "dp": {"temperature": [{"v": 30, "t": 1_700_000_000}]}}).encode(),
        qos=1,
    )
    wait_until(lambda: any(m.topic.endswith("accepted") for m in device.messages), what="accepted")
    accepted = next(m for m in device.messages if m.topic == "$sys/p1/d1/dp/post/json/accepted")
    assert json.loads(accepted.payload) == {"id": 77}
    latest = platform.http().get("/api/v1/products/p1/devices/d1/telemetry/latest").json()
    assert latest["temperature"] == {"ts": 1_700_000_000_000, "value": 30}
    device.publish("$sys/p1/d1/dp/post/json", b'{"id": 78, "dp": 5}', qos=1)
    wait_until(lambda: any(m.topic.endswith("rejected") for m in device.messages), what="rejected")
    rejected = json.loads(next(m for m in device.messages if m.topic.endswith("rejected")).payload)
    assert (
        rejected["id"] == 78
        and rejected["err_code"] == 98
        and rejected["err_msg"] == "Illegal Data"
    )


def test_data_points_numbered_from_zero_as_the_device_sdk_sends_them(
    platform: RunningPlatform, register, version: int
) -> None:
    """OneNET's device SDK (its MQTT-kit example) subscribes to `$sys/{pid}/{name}/#`,
    posts at QoS 0 every 2 s with ids counted from 0, and waits for the answer
    whose numeric id is the one it sent: id 0 is taken and answered too."""
    client = connect(platform, register("p1", "d1"), version)
    client.subscribe("$sys/p1/d1/#", qos=0)
    for post_id, value in enumerate((2, 4, 6)):
        body = {"id": post_id, "dp": {"data_stream_01": [{"v": value}]}}
        client.publish("$sys/p1/d1/dp/post/json", json.dumps(body, separators=(",", ":")), qos=0)
    accepted = "$sys/p1/d1/dp/post/json/accepted"

    def answers() -> list[bytes]:
        return [m.payload for m in client.messages if m.topic == accepted]

    wait_until(lambda: len(answers()) == 3, what="three accepted answers")
    assert answers() == [b'{"id":0}', b'{"id":1}', b'{"id":2}']
    latest = platform.http().get("/api/v1/products/p1/devices/d1/telemetry/latest").json()
    assert latest["data_stream_01"]["value"] == 6
    client.fence()
    assert not [m for m in client.messages if not m.topic.endswith("/accepted")]


def test_properties_and_data_points_count_as_points_stored(
    platform: RunningPlatform, device: PahoClient
) -> None:
    """They are telemetry like any other: `/metrics` counts them with the rest."""
    api = platform.http()

    def stored() -> float:
        for line in api.get("/metrics").text.splitlines():
            if line.startswith("thingshub_points_stored_total "):
                return float(line.split()[1])
        raise AssertionError("no thingshub_points_stored_total")

    before = stored()
    post(device, "property/post", {"id": "1", "params": {"a": {"value": 1}, "b": {"value": 2}}})
    device.subscribe("$sys/p1/d1/dp/post/json/accepted", qos=1)
    device.publish("$sys/p1/d1/dp/post/json", b'{"id":1,"dp":{"c":[{"v":3},{"v":4}]}}', qos=1)
    wait_until(lambda: any(m.topic.endswith("/accepted") for m in device.messages), what="accepted")
    assert stored() == before + 4
