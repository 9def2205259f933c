"""Calls to devices across nodes, and NATS going away and coming back (issue 17).

A call made through one node's API reaches the device on the node holding its
connection, with the errors of one node (409 offline, 504 no answer); with
NATS stopped, calls to other nodes' devices fail with a clear 503 while each
node keeps serving its own devices and storing their QoS 1 telemetry.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from paho.mqtt.client import MQTTMessage

from tests.cluster.processes.harness import (
    Cluster,
    Node,
    create_device,
    create_product,
    onenet_login,
    stored_values,
    wait_for,
)
from tests.gateway.test_commands import answer_with, echo
from tests.mqtt.clients import PahoClient

PRODUCT = "calls"
BASE = f"/api/v1/products/{PRODUCT}/devices"


def onenet_device(node: Node, device: dict[str, Any], answer: bool = True) -> PahoClient:
    """A OneNET device on `node` that echoes its commands (or only listens)."""
    client_id, username, password = onenet_login(device)
    client = PahoClient(node.mqtt_port, client_id, username=username, password=password)
    prefix = f"$sys/{PRODUCT}/{device['name']}"
    if answer:
        answer_with(client, f"{prefix}/cmd/request/+", echo(prefix))
    else:
        client.subscribe(f"{prefix}/cmd/request/+", qos=1)
    return client


def thingspanel_device(node: Node, device: dict[str, Any]) -> PahoClient:
    """A ThingsPanel device on `node` that answers its calls with their method."""
    client = PahoClient(
        node.mqtt_port, device["name"], username=device["username"], password=device["password"]
    )

    def respond(m: MQTTMessage) -> tuple[str, bytes]:
        method = json.loads(m.payload)["method"]
        body = {"result": 0, "message": "success", "method": method}
        return f"devices/command/response/{m.topic.rsplit('/', 1)[1]}", json.dumps(body).encode()

    answer_with(client, f"devices/command/{device['device_number']}/+", respond)
    return client


def command(node: Node, name: str, body: bytes, timeout: int = 5) -> httpx.Response:
    with node.api() as api:
        return api.post(f"{BASE}/{name}/commands", content=body, params={"timeout": timeout})


def call(node: Node, name: str, method: str, timeout: int = 5) -> httpx.Response:
    with node.api() as api:
        body = {"method": method}
        return api.post(f"{BASE}/{name}/calls", json=body, params={"timeout": timeout})


def answered(r: httpx.Response, body: bytes) -> bool:
    return r.status_code == 200 and base64.b64decode(r.json()["response"]) == b"done:" + body


def test_calls_reach_devices_on_other_nodes_with_the_errors_of_one_node(
    three_nodes: Cluster,
) -> None:
    n1, n2, _ = three_nodes.all
    create_product(n1, PRODUCT)
    onenet_device(n2, create_device(n1, PRODUCT, "on"))
    thingspanel_device(n2, create_device(n1, PRODUCT, "tp"))
    onenet_device(n2, create_device(n1, PRODUCT, "mute"), answer=False)
    create_device(n1, PRODUCT, "off")  # never connected
    gone = onenet_device(n2, create_device(n1, PRODUCT, "gone"))

    # The first call may race the presence of a device that just connected.
    wait_for(lambda: answered(command(n1, "on", b"\x00hi"), b"\x00hi"), 5, "a command via n1")
    r = command(n1, "on", b"switch on")
    assert answered(r, b"switch on"), r.text
    r = call(n1, "tp", "Restart")
    assert r.status_code == 200, r.text
    assert r.json() == {"result": 0, "message": "success", "method": "Restart"}
    with n1.api() as api:  # the record is the same wherever it is read
        records = api.get(f"{BASE}/on/commands").json()["items"]
    assert records[0]["status"] == "answered"

    started = time.monotonic()
    r = command(n1, "off", b"x", timeout=10)
    assert r.status_code == 409 and "offline" in r.json()["error"], r.text
    assert time.monotonic() - started < 2
    wait_for(lambda: answered(command(n1, "gone", b"g"), b"g"), 5, "a command to gone")
    gone.disconnect()
    wait_for(lambda: command(n1, "gone", b"x").status_code == 409, 5, "409 once it left")

    started = time.monotonic()
    r = command(n1, "mute", b"x", timeout=1)
    elapsed = time.monotonic() - started
    assert r.status_code == 504 and r.json()["error"], r.text
    assert 0.9 <= elapsed < 3, elapsed


def test_without_nats_a_node_serves_its_own_devices_and_calls_elsewhere_are_503(
    cluster: Callable[..., Cluster],
) -> None:
    c = cluster(lease=3.0)
    n1, n2 = c.start("n1", "n2")
    create_product(n1, PRODUCT)
    onenet_device(n2, create_device(n1, PRODUCT, "far"))
    onenet_device(n1, create_device(n1, PRODUCT, "near"))
    local = create_device(n1, PRODUCT, "sensor")
    sensor = PahoClient(
        n1.mqtt_port, "sensor", username=local["username"], password=local["password"]
    )
    wait_for(lambda: answered(command(n1, "far", b"a"), b"a"), 5, "a command across nodes")

    c.nats.stop()
    started = time.monotonic()
    r = command(n1, "far", b"b", timeout=10)
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert "nats" in error.lower() or "node" in error.lower(), error
    assert time.monotonic() - started < 5
    # Each node still serves its own devices.
    assert answered(command(n1, "near", b"c"), b"c")
    assert answered(command(n2, "far", b"d"), b"d")
    for k in range(20):
        assert sensor.publish("devices/telemetry", json.dumps({"v": k}).encode(), qos=1) == 0
    assert stored_values(n1, PRODUCT, "sensor", "v") == set(range(20))

    c.nats.start()  # on the same port: the nodes reconnect by themselves
    wait_for(lambda: answered(command(n1, "far", b"e"), b"e"), 20, "calls across nodes again")
    assert answered(command(n2, "near", b"f"), b"f")
