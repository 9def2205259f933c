"""A simulated device for the console tests: a paho-mqtt client (tests/mqtt/clients.py,
closed after each test) that answers calls from paho's thread: OneNET commands,
ThingsPanel commands, and the thing model's property set/get and service calls."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
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


_post_ids = itertools.count(1)


def thing_topic(product_id: str, name: str, rest: str) -> str:
    return f"$sys/{product_id}/{name}/thing/{rest}"


def answer_thing(
    client: PahoClient,
    product_id: str,
    name: str,
    services: dict[str, Callable[[dict[str, Any]], Any]] | None = None,
    silent: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Answer the platform's thing requests as the OneNET SDK does: on the request's
    topic + `_reply`, `{"id": <the same id>, "code": 200, "data": ...}` (a service's
    data is `services[identifier](params)`). Services named in `silent` get no answer.
    Returns the requests seen, each with its topic."""
    seen: list[dict[str, Any]] = []
    handlers = services or {}

    def on_request(c: Client, _u: object, message: MQTTMessage) -> None:
        request = json.loads(message.payload)
        seen.append({"topic": message.topic, **request})
        reply: dict[str, Any] = {"id": request["id"], "code": 200, "msg": "ok"}
        if message.topic.endswith("/invoke"):
            service = message.topic.split("/")[-2]
            if service in silent:
                return
            if service in handlers:
                reply["data"] = handlers[service](request.get("params") or {})
        elif message.topic.endswith("/property/get"):
            reply["data"] = {k: None for k in request.get("params") or []}
        c.publish(message.topic + "_reply", json.dumps(reply, separators=(",", ":")), qos=0)

    filters = [
        thing_topic(product_id, name, "property/set"),
        thing_topic(product_id, name, "property/get"),
        thing_topic(product_id, name, "service/+/invoke"),
    ]
    for topic in filters:
        client.client.message_callback_add(topic, on_request)
    client.subscribe(*filters, qos=0)
    return seen


def thing_post(
    client: PahoClient, product_id: str, name: str, kind: str, values: dict[str, Any]
) -> None:
    """Post properties (`kind` "property") or events ("event") on the thing topics."""
    body = {
        "id": str(next(_post_ids)),
        "version": "1.0",
        "params": {k: {"value": v} for k, v in values.items()},
    }
    client.publish(thing_topic(product_id, name, f"{kind}/post"), json.dumps(body).encode(), qos=1)
