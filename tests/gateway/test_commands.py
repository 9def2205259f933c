"""Calls to devices end to end: an application on the HTTP API, paho-mqtt devices that
answer (or not), for OneNET commands (docs/protocols.md section 3) and ThingsPanel commands,
attribute set/get and control (section 4)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from paho.mqtt.client import Client, MQTTMessage

from tests.conftest import Registered, RunningPlatform
from tests.mqtt.clients import PahoClient, wait_until
from thingshub.dialects.onenet import token as onenet

Answer = Callable[[MQTTMessage], tuple[str, bytes] | None]


def device(platform: RunningPlatform, dev: Registered, version: int = 5) -> PahoClient:
    token = onenet.make_token(dev.key, dev.product_id, dev.name, int(time.time()) + 3600)
    return PahoClient(
        platform.mqtt_port, dev.name, version=version, username=dev.product_id, password=token
    )


def answer_with(client: PahoClient, topic_filter: str, answer: Answer) -> list[MQTTMessage]:
    """Answer every request on `topic_filter` from paho's thread; returns the requests seen."""
    seen: list[MQTTMessage] = []

    def on_request(c: Client, _u: object, message: MQTTMessage) -> None:
        seen.append(message)
        reply = answer(message)
        if reply is not None:
            c.publish(reply[0], reply[1], qos=1)

    client.client.message_callback_add(topic_filter, on_request)
    client.subscribe(topic_filter, qos=1)
    return seen


def cmd_id_of(message: MQTTMessage) -> str:
    return message.topic.rsplit("/", 1)[1]


def echo(prefix: str) -> Answer:
    return lambda m: (f"{prefix}/cmd/response/{cmd_id_of(m)}", b"done:" + m.payload)


@pytest.fixture
def d1(platform: RunningPlatform, register) -> tuple[Registered, PahoClient]:
    dev = register("p1", "d1")
    return dev, device(platform, dev)


CMD = "/api/v1/products/p1/devices/d1/commands"


def test_onenet_command_round_trip(platform: RunningPlatform, d1) -> None:
    _dev, client = d1
    seen = answer_with(client, "$sys/p1/d1/cmd/request/+", echo("$sys/p1/d1"))
    client.subscribe("$sys/p1/d1/cmd/response/+/+", qos=1)
    api = platform.http()
    r = api.post(CMD, content=b"\x00\x01switch", params={"timeout": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert base64.b64decode(body["response"]) == b"done:\x00\x01switch"
    assert body["response_text"] == "done:\x00\x01switch"
    assert seen[0].payload == b"\x00\x01switch"  # the application's bytes, untouched
    assert cmd_id_of(seen[0]) == body["cmd_id"]
    wait_until(lambda: any(m.topic.endswith(f"{body['cmd_id']}/accepted") for m in client.messages))
    accepted = next(m for m in client.messages if m.topic.endswith("/accepted"))
    assert accepted.payload == b""
    records = api.get(CMD).json()["items"]
    assert records[0]["cmd_id"] == body["cmd_id"] and records[0]["status"] == "answered"
    assert base64.b64decode(records[0]["request"]) == b"\x00\x01switch"


def test_offline_device_fails_at_once(platform: RunningPlatform, register) -> None:
    register("p1", "d1")
    api = platform.http()
    started = time.monotonic()
    r = api.post(CMD, content=b"x", params={"timeout": 30})
    assert r.status_code == 409 and "offline" in r.json()["error"]
    assert time.monotonic() - started < 2
    r = api.post("/api/v1/products/p1/devices/d1/calls", json={"method": "Restart"})
    assert r.status_code == 409


def test_timeout_is_504_and_bounded(platform: RunningPlatform, d1) -> None:
    _, client = d1
    client.subscribe("$sys/p1/d1/cmd/request/+", qos=1)  # listens, never answers
    api = platform.http()
    started = time.monotonic()
    r = api.post(CMD, content=b"x", params={"timeout": 1})
    elapsed = time.monotonic() - started
    assert r.status_code == 504 and r.json()["error"]
    assert 0.9 <= elapsed < 3
    assert api.get(CMD).json()["items"][0]["status"] == "timeout"
    for bad in ("0", "31", "x", "1.5"):
        assert api.post(CMD, content=b"x", params={"timeout": bad}).status_code == 400


def test_late_duplicate_unknown_and_too_long_answers(platform: RunningPlatform, d1) -> None:
    _, client = d1
    client.subscribe("$sys/p1/d1/cmd/request/+", "$sys/p1/d1/cmd/response/+/+", qos=1)
    api = platform.http()
    assert api.post(CMD, content=b"x", params={"timeout": 1}).status_code == 504
    request = [m for m in client.messages if "/cmd/request/" in m.topic][-1]
    late_id = cmd_id_of(request)

    def verdict(cmd_id: str) -> dict[str, Any]:
        topic = f"$sys/p1/d1/cmd/response/{cmd_id}/rejected"
        wait_until(lambda: any(m.topic == topic for m in client.messages), what=topic)
        message = [m for m in client.messages if m.topic == topic][-1]
        client.messages.remove(message)
        return json.loads(message.payload)

    client.publish(f"$sys/p1/d1/cmd/response/{late_id}", b"late", qos=1)
    assert verdict(late_id) == {"err_code": 112, "err_msg": "CMD response timeout"}
    client.publish("$sys/p1/d1/cmd/response/nosuchid", b"?", qos=1)
    assert verdict("nosuchid") == {"err_code": 113, "err_msg": "CMD id not found"}

    # An over-long answer: rejected with 99 to the device, 400 err_code 99 to the caller.
    answer_with(
        client,
        "$sys/p1/d1/cmd/request/+",
        lambda m: (f"$sys/p1/d1/cmd/response/{cmd_id_of(m)}", b"x" * 1024),
    )
    r = api.post(CMD, content=b"big", params={"timeout": 5})
    assert r.status_code == 400 and r.json()["err_code"] == 99, r.text
    long_id = api.get(CMD).json()["items"][0]["cmd_id"]
    assert verdict(long_id)["err_code"] == 99
    assert api.get(CMD).json()["items"][0]["status"] == "rejected"


def test_a_second_answer_is_113(platform: RunningPlatform, d1) -> None:
    _, client = d1
    answer_with(client, "$sys/p1/d1/cmd/request/+", echo("$sys/p1/d1"))
    client.subscribe("$sys/p1/d1/cmd/response/+/+", qos=1)
    api = platform.http()
    cmd_id = api.post(CMD, content=b"a").json()["cmd_id"]
    client.publish(f"$sys/p1/d1/cmd/response/{cmd_id}", b"again", qos=1)
    topic = f"$sys/p1/d1/cmd/response/{cmd_id}/rejected"
    wait_until(lambda: any(m.topic == topic for m in client.messages))
    rejected = next(m for m in client.messages if m.topic == topic)
    assert json.loads(rejected.payload)["err_code"] == 113


def test_another_device_cannot_answer(platform: RunningPlatform, register, d1) -> None:
    _, client = d1
    client.subscribe("$sys/p1/d1/cmd/request/+", qos=1)
    other = device(platform, register("p1", "d2"))
    other.subscribe("$sys/p1/d2/cmd/response/+/+", qos=1)
    api = platform.http()
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(api.post, CMD, content=b"x", params={"timeout": 2})
        wait_until(lambda: client.messages)
        cmd_id = cmd_id_of(client.messages[0])
        # d2 may publish only on its own topics; on them, d1's id is unknown (113).
        other.publish(f"$sys/p1/d2/cmd/response/{cmd_id}", b"spoof", qos=1)
        assert call.result().status_code == 504
    wait_until(lambda: other.messages)
    assert json.loads(other.messages[0].payload)["err_code"] == 113


def test_disconnect_during_a_call_fails_it_at_once(platform: RunningPlatform, d1) -> None:
    _, client = d1
    client.subscribe("$sys/p1/d1/cmd/request/+", qos=1)
    api = platform.http()
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        call = pool.submit(api.post, CMD, content=b"x", params={"timeout": 20})
        wait_until(lambda: client.messages)
        client.drop()
        r = call.result()
    assert r.status_code == 409, r.text
    assert time.monotonic() - started < 5
    assert api.get(CMD).json()["items"][0]["status"] == "failed"


def test_many_concurrent_calls(platform: RunningPlatform, register) -> None:
    clients = []
    for i in range(5):
        dev = register("p1", f"c{i}")
        c = device(platform, dev)
        answer_with(c, f"$sys/p1/c{i}/cmd/request/+", echo(f"$sys/p1/c{i}"))
        clients.append(c)
    api = platform.http()

    def call(n: int) -> tuple[int, bytes]:
        r = api.post(f"/api/v1/products/p1/devices/c{n % 5}/commands", content=str(n).encode())
        return r.status_code, base64.b64decode(r.json()["response"])

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, range(60)))
    assert results == [(200, b"done:" + str(n).encode()) for n in range(60)]


def test_records_page_newest_first(platform: RunningPlatform, d1) -> None:
    _, client = d1
    answer_with(client, "$sys/p1/d1/cmd/request/+", echo("$sys/p1/d1"))
    api = platform.http()
    ids = [api.post(CMD, content=str(i).encode()).json()["cmd_id"] for i in range(5)]
    page1 = api.get(CMD, params={"limit": 3}).json()
    page2 = api.get(CMD, params={"limit": 3, "cursor": page1["next"]}).json()
    assert [r["cmd_id"] for r in page1["items"] + page2["items"]] == ids[::-1]
    assert page2["next"] is None


# ---------------------------------------------------------------- ThingsPanel


def tp_device(platform: RunningPlatform, dev: Registered) -> PahoClient:
    return PahoClient(platform.mqtt_port, "tp", username=dev.username, password=dev.password)


def test_thingspanel_call_and_attribute_set(platform: RunningPlatform, register) -> None:
    dev = register("p1", "d1")
    client = tp_device(platform, dev)
    dn = dev.device_number

    def respond(kind: str) -> Answer:
        def answer(m: MQTTMessage) -> tuple[str, bytes]:
            request = json.loads(m.payload)
            body = {"result": 0, "message": "success", "ts": 1, "method": request.get("method")}
            return f"devices/{kind}/response/{m.topic.rsplit('/', 1)[1]}", json.dumps(body).encode()

        return answer

    seen = answer_with(client, f"devices/command/{dn}/+", respond("command"))
    api = platform.http()
    r = api.post(
        "/api/v1/products/p1/devices/d1/calls", json={"method": "Restart", "params": {"delay": 5}}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"result": 0, "message": "success", "ts": 1, "method": "Restart"}
    assert json.loads(seen[0].payload) == {"method": "Restart", "params": {"delay": 5}}
    message_id = seen[0].topic.rsplit("/", 1)[1]
    assert len(message_id) == 7 and message_id.isdigit()

    set_seen = answer_with(client, f"devices/attributes/set/{dn}/+", respond("attributes/set"))
    r = api.put("/api/v1/products/p1/devices/d1/attributes", json={"interval": 30})
    assert r.status_code == 200 and r.json()["result"] == 0, r.text
    assert json.loads(set_seen[0].payload) == {"interval": 30}
    records = api.get(CMD).json()["items"]
    assert [(r["family"], r["kind"], r["status"]) for r in records] == [
        ("thingspanel", "attributes_set", "answered"),
        ("thingspanel", "command", "answered"),
    ]
    assert records[1]["response"]["method"] == "Restart"
    bad = api.post("/api/v1/products/p1/devices/d1/calls", json={"params": {}})
    assert bad.status_code == 400


def test_thingspanel_timeout_and_control(platform: RunningPlatform, register) -> None:
    dev = register("p1", "d1")
    client = tp_device(platform, dev)
    client.subscribe(
        f"devices/command/{dev.device_number}/+",
        f"devices/telemetry/control/{dev.device_number}",
        qos=1,
    )
    api = platform.http()
    r = api.post(
        "/api/v1/products/p1/devices/d1/calls", json={"method": "X"}, params={"timeout": 1}
    )
    assert r.status_code == 504
    r = api.post("/api/v1/products/p1/devices/d1/control", json={"led": True})
    assert r.status_code == 202
    wait_until(
        lambda: any(m.topic.startswith("devices/telemetry/control/") for m in client.messages)
    )
    control = next(m for m in client.messages if "control" in m.topic)
    assert json.loads(control.payload) == {"led": True}


def test_not_subscribed_device_fails_at_once(platform: RunningPlatform, register) -> None:
    dev = register("p1", "d1")
    tp_device(platform, dev)  # online, subscribed to nothing
    api = platform.http()
    started = time.monotonic()
    r = api.post(
        "/api/v1/products/p1/devices/d1/calls", json={"method": "X"}, params={"timeout": 10}
    )
    assert r.status_code == 409 and "subscribed" in r.json()["error"]
    assert time.monotonic() - started < 2
    # Nothing reached the device, so nothing is counted as sent to it.
    metrics = api.get("/metrics").text
    assert 'thingshub_messages_out_total{family="thingspanel"}' not in metrics


def test_records_survive_a_restart(platform_factory, database_url) -> None:
    p = platform_factory(database_url=database_url)
    api = p.http()
    api.post("/api/v1/products", json={"id": "p1", "name": "p"})
    d = api.post("/api/v1/products/p1/devices", json={"name": "d1"}).json()
    dev = Registered("p1", "d1", d["device_number"], d["key"], d["username"], d["password"])
    client = device(p, dev)
    answer_with(client, "$sys/p1/d1/cmd/request/+", echo("$sys/p1/d1"))
    cmd_id = api.post(CMD, content=b"kept").json()["cmd_id"]
    platform_factory.stop(p)
    client.wait_disconnected()
    p2 = platform_factory(database_url=database_url)
    records = p2.http().get(CMD).json()["items"]
    assert records[0]["cmd_id"] == cmd_id and records[0]["status"] == "answered"
    assert base64.b64decode(records[0]["response"]) == b"done:kept"
