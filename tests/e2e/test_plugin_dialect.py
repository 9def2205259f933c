"""A device protocol defined only in the tests (tests/dialects/toy.py) plugs into
the platform through the dialect registry and works end to end over real
sockets: its login, its topic rights, its reports stored and refused, and a
call answered through the one call path, beside OneNET and ThingsPanel."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import RunningPlatform
from tests.dialects.toy import Toy
from tests.mqtt.clients import PahoClient, wait_until
from thingshub.core.commands import CallRequest
from thingshub.core.errors import AnswerTooLarge
from thingshub.dialects.registry import Registry, default_registry


def toy_platform(platform_factory: Any) -> tuple[RunningPlatform, dict[str, Any]]:
    registry: Registry = default_registry()
    registry.register(Toy())
    platform = platform_factory(dialects=registry)
    api = platform.http()
    assert api.post("/api/v1/products", json={"id": "p", "name": "P"}).status_code == 201
    device = api.post("/api/v1/products/p/devices", json={"name": "d"})
    assert device.status_code == 201
    return platform, device.json()


def toy_device(platform: RunningPlatform, key: str, version: int = 5) -> PahoClient:
    return PahoClient(
        platform.mqtt_port, "anything", username="toy:p/d", password=key, version=version
    )


def test_a_dialect_of_the_tests_logs_in_reports_and_answers(platform_factory: Any) -> None:
    platform, created = toy_platform(platform_factory)
    api = platform.http()
    wrong = PahoClient(
        platform.mqtt_port, "x", username="toy:p/d", password="not-the-key", connect=False
    )
    assert wrong.connect() == 0x86  # the toy dialect's verify refused it
    device = toy_device(platform, created["key"])
    assert device.connack_code == 0
    assert api.get("/api/v1/products/p/devices/d").json()["connectionState"] == "online"

    # Its reports are decoded by the toy dialect and stored like any telemetry.
    assert device.publish("toy/p/d/temp", b"21.5", qos=1) == 0
    latest = api.get("/api/v1/products/p/devices/d/telemetry/latest").json()
    assert latest["temp"]["value"] == 21.5
    assert device.publish("toy/p/d/temp", b"warm", qos=1) == 0  # refused, counted, acknowledged
    wait_until(lambda: '{errcode="NaN",kind="telemetry"}' in _metrics(platform), what="refusal")

    # Its topic rights: its own topics only.
    assert device.subscribe("toy/p/d/#", qos=1) == [1]
    assert device.subscribe("toy/p/other/#", qos=1) == [0x87]
    assert device.publish("toy/p/other/temp", b"1", qos=1) == 0x87

    # A call goes out on its call topic and its answer comes back through the one path.
    answered: list[str] = []

    def answer(client: Any, _userdata: object, message: Any) -> None:
        call_id = message.topic.rsplit("/", 1)[1]
        answered.append(call_id)
        reply = b"pong" if message.payload == b"ping" else b"x" * 17
        client.publish(f"toy/p/d/answer/{call_id}", reply, qos=1)

    device.client.message_callback_add("toy/p/d/call/+", answer)
    commands = platform.platform.commands
    result = platform.run(commands.call("p", "d", CallRequest("toy", "command", b"ping"), 5))
    assert result.payload == b"pong" and result.call_id == answered[0]
    records = api.get("/api/v1/products/p/devices/d/commands").json()["items"]
    assert records[0]["family"] == "toy" and records[0]["status"] == "answered"

    # Its answer limit travels with the answer and fails an over-long one.
    try:
        platform.run(commands.call("p", "d", CallRequest("toy", "command", b"long"), 5))
    except AnswerTooLarge as exc:
        assert exc.err_code == 1 and "at most 16" in exc.message
    else:
        raise AssertionError("an answer past the toy limit was accepted")


def test_the_toy_dialect_leaves_the_others_working(platform_factory: Any) -> None:
    platform, created = toy_platform(platform_factory)
    tp = PahoClient(
        platform.mqtt_port, "tp", username=created["username"], password=created["password"]
    )
    assert tp.connack_code == 0
    assert tp.publish("devices/telemetry", b'{"h": 40}', qos=1) == 0
    latest = platform.http().get("/api/v1/products/p/devices/d/telemetry/latest").json()
    assert latest["h"]["value"] == 40
    # Rights belong to the device, whichever dialect it logged in with: its own
    # toy topics, never another device's.
    assert tp.subscribe("toy/p/d/#", qos=1) == [1]
    assert tp.subscribe("toy/p/e/#", qos=1) == [0x87]


def _metrics(platform: RunningPlatform) -> str:
    return httpx.get(f"{platform.base_url}/metrics").text
