"""A simulated device for the console tests: a paho-mqtt client (tests/mqtt/clients.py,
closed after each test) that answers calls from paho's thread."""

from __future__ import annotations

import json
import time
from typing import Any

from paho.mqtt.client import Client, MQTTMessage

from tests.mqtt.clients import PahoClient
from thingshub.dialects.onenet import token as onenet


def onenet_login(port: int, product_id: str, name: str, key: str) -> PahoClient:
    token = onenet.make_token(key, product_id, name, int(time.time()) + 3600)
    return PahoClient(port, name, username=product_id, password=token)


def answer_onenet(client: PahoClient, product_id: str, name: str) -> None:
    """Answer every OneNET command with `done:` + its bytes."""
    prefix = f"$sys/{product_id}/{name}/cmd"

    def on_request(c: Client, _u: object, message: MQTTMessage) -> None:
        cmd_id = message.topic.rsplit("/", 1)[1]
        c.publish(f"{prefix}/response/{cmd_id}", b"done:" + message.payload, qos=1)

    client.client.message_callback_add(f"{prefix}/request/+", on_request)
    client.subscribe(f"{prefix}/request/+", qos=1)


def answer_thingspanel(client: PahoClient, device_number: str, ignore: str = "") -> None:
    """Answer ThingsPanel commands with result 0 and the params echoed, except the
    method `ignore`, which gets no answer."""

    def on_command(c: Client, _u: object, message: MQTTMessage) -> None:
        body = json.loads(message.payload)
        if body.get("method") == ignore:
            return
        message_id = message.topic.rsplit("/", 1)[1]
        answer = {"result": 0, "message": "ok", "ts": int(time.time()), "echo": body.get("params")}
        c.publish(f"devices/command/response/{message_id}", json.dumps(answer), qos=1)

    client.client.message_callback_add(f"devices/command/{device_number}/+", on_command)
    client.subscribe(f"devices/command/{device_number}/+", qos=1)


def telemetry(client: PahoClient, values: dict[str, Any] | list[Any]) -> None:
    client.publish("devices/telemetry", json.dumps(values).encode(), qos=1)


def deltas(client: PahoClient, product_id: str, name: str) -> list[dict[str, Any]]:
    topic = f"$sys/{product_id}/{name}/image/update/delta"
    return [json.loads(m.payload) for m in client.messages if m.topic == topic]


def report(client: PahoClient, product_id: str, name: str, reported: dict[str, Any]) -> None:
    body = {"id": "r1", "state": {"reported": reported}}
    client.publish(f"$sys/{product_id}/{name}/image/update", json.dumps(body).encode(), qos=1)
