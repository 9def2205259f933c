"""Calls to devices across the nodes of a cluster: through node n1's API to devices
connected to node n2 (paho-mqtt on n2's MQTT port), with the answers, timeouts and
errors of one node; and NATS going away and coming back."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from paho.mqtt.client import MQTTMessage

from tests.conftest import RunningPlatform
from tests.gateway.test_commands import Answer, answer_with, cmd_id_of, echo
from tests.mqtt.clients import PahoClient, wait_until
from thingshub.dialects.onenet import token as onenet

Node = Callable[..., RunningPlatform]
DEV = "/api/v1/products/{}/devices/{}"


def make(api: httpx.Client, pid: str, name: str, **fields: Any) -> dict[str, Any]:
    api.post("/api/v1/products", json={"id": pid, "name": pid})
    r = api.post(f"/api/v1/products/{pid}/devices", json={"name": name, **fields})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def onenet_device(node: RunningPlatform, made: dict[str, Any], pid: str = "p1") -> PahoClient:
    token = onenet.make_token(made["key"], pid, made["name"], int(time.time()) + 3600)
    return PahoClient(node.mqtt_port, made["name"], username=pid, password=token)


def tp_device(node: RunningPlatform, made: dict[str, Any]) -> PahoClient:
    return PahoClient(
        node.mqtt_port, "tp-" + made["name"], username=made["username"], password=made["password"]
    )


def online_for(api: httpx.Client, pid: str, name: str) -> None:
    """Wait until the node of `api` sees the device online (the presence flush)."""

    def online() -> bool:
        return bool(api.get(DEV.format(pid, name)).json()["connectionState"] == "online")

    wait_until(online, 5, f"{pid}/{name} online")


@pytest.fixture
def nodes(node_factory: Node) -> tuple[RunningPlatform, RunningPlatform]:
    return node_factory("n1", ota_tick=0.05), node_factory("n2", ota_tick=0.05)


def test_onenet_command_answered_across_nodes(nodes: Any) -> None:
    n1, n2 = nodes
    api = n1.http()
    client = onenet_device(n2, make(api, "p1", "d1"))
    seen = answer_with(client, "$sys/p1/d1/cmd/request/+", echo("$sys/p1/d1"))
    online_for(api, "p1", "d1")
    r = api.post(DEV.format("p1", "d1") + "/commands", content=b"\x00go", params={"timeout": 5})
    assert r.status_code == 200, r.text
    assert base64.b64decode(r.json()["response"]) == b"done:\x00go"
    assert seen[0].payload == b"\x00go" and cmd_id_of(seen[0]) == r.json()["cmd_id"]
    # Recorded by the node that ran it, read on either.
    records = api.get(DEV.format("p1", "d1") + "/commands").json()["items"]
    assert records[0]["cmd_id"] == r.json()["cmd_id"] and records[0]["status"] == "answered"


def test_thingspanel_call_attributes_and_control_across_nodes(nodes: Any) -> None:
    n1, n2 = nodes
    api = n1.http()
    made = make(api, "p1", "t1")
    dn = made["device_number"]
    client = tp_device(n2, made)

    def respond(kind: str) -> Answer:
        def answer(m: MQTTMessage) -> tuple[str, bytes]:
            body = {"result": 0, "message": "success", "ts": 1, "method": kind}
            return f"devices/{kind}/response/{cmd_id_of(m)}", json.dumps(body).encode()

        return answer

    answer_with(client, f"devices/command/{dn}/+", respond("command"))
    answer_with(client, f"devices/attributes/set/{dn}/+", respond("attributes/set"))
    answer_with(
        client,
        f"devices/attributes/get/{dn}",
        lambda m: ("devices/attributes/42", json.dumps({"fw": "1.2", "ip": "10.0.0.9"}).encode()),
    )
    client.subscribe(f"devices/telemetry/control/{dn}", qos=1)
    online_for(api, "p1", "t1")
    path = DEV.format("p1", "t1")
    r = api.post(path + "/calls", json={"method": "Restart", "params": {"delay": 5}})
    assert r.status_code == 200 and r.json()["method"] == "command", r.text
    r = api.put(path + "/attributes", json={"interval": 30})
    assert r.status_code == 200 and r.json()["result"] == 0, r.text
    r = api.post(path + "/attributes/get", json={"keys": ["fw"]})
    assert r.status_code == 200 and r.json() == {"fw": "1.2"}, r.text
    r = api.post(path + "/control", json={"led": True})
    assert r.status_code == 202, r.text
    wait_until(lambda: any("telemetry/control" in m.topic for m in client.messages))
    control = next(m for m in client.messages if "telemetry/control" in m.topic)
    assert json.loads(control.payload) == {"led": True}


def test_a_device_that_moves_to_another_node_is_reached_there(
    nodes: Any, node_factory: Node
) -> None:
    n1, n2 = nodes
    n3 = node_factory("n3")
    api = n1.http()
    made = make(api, "p1", "d1")
    cmd = DEV.format("p1", "d1") + "/commands"

    def serve_on(node: RunningPlatform) -> PahoClient:
        client = onenet_device(node, made)
        answer_with(
            client,
            "$sys/p1/d1/cmd/request/+",
            lambda m: (
                f"$sys/p1/d1/cmd/response/{cmd_id_of(m)}",
                node.platform.nodes.node_id.encode(),
            ),
        )
        return client

    client = serve_on(n2)
    online_for(api, "p1", "d1")
    r = api.post(cmd, content=b"x")
    assert r.status_code == 200 and r.json()["response_text"] == "n2", r.text
    client.close()
    serve_on(n3)

    def answered_by_n3() -> bool:
        r = api.post(cmd, content=b"x")
        return bool(r.status_code == 200 and r.json()["response_text"] == "n3")

    wait_until(answered_by_n3, 5, "the call answered on n3")


def test_errors_across_nodes_are_those_of_one_node(nodes: Any) -> None:
    n1, n2 = nodes
    api = n1.http()
    cmd = DEV.format("p1", "d1") + "/commands"
    made = make(api, "p1", "d1")
    started = time.monotonic()
    r = api.post(cmd, content=b"x", params={"timeout": 10})
    assert r.status_code == 409 and "offline" in r.json()["error"]
    assert time.monotonic() - started < 2
    client = onenet_device(n2, made)  # connected, listening to nothing
    online_for(api, "p1", "d1")
    r = api.post(cmd, content=b"x", params={"timeout": 10})
    assert r.status_code == 409 and "subscribed" in r.json()["error"], r.text
    client.subscribe("$sys/p1/d1/cmd/request/+", qos=1)  # listens, never answers
    started = time.monotonic()
    r = api.post(cmd, content=b"x", params={"timeout": 1})
    elapsed = time.monotonic() - started
    assert r.status_code == 504 and "did not answer within 1 s" in r.json()["error"], r.text
    assert 0.9 <= elapsed < 3
    answer_with(
        client,
        "$sys/p1/d1/cmd/request/+",
        lambda m: (f"$sys/p1/d1/cmd/response/{cmd_id_of(m)}", b"x" * 1024),
    )
    r = api.post(cmd, content=b"big", params={"timeout": 5})
    assert r.status_code == 400 and r.json()["err_code"] == 99, r.text
    assert r.json()["err_msg"]
    client.close()
    wait_until(
        lambda: api.post(cmd, content=b"x").status_code == 409, 5, "offline once disconnected"
    )


def test_image_delta_reaches_a_device_on_another_node(nodes: Any) -> None:
    n1, n2 = nodes
    api = n1.http()
    client = onenet_device(n2, make(api, "p1", "d1"))
    client.subscribe("$sys/p1/d1/image/update/delta", qos=1)
    online_for(api, "p1", "d1")
    r = api.patch(DEV.format("p1", "d1") + "/image", json={"desired": {"fan": {"speed": 5}}})
    assert r.status_code == 200, r.text
    wait_until(lambda: client.messages, 5, "the delta")
    delta = json.loads(client.messages[0].payload)
    assert delta["state"] == {"fan": {"speed": 5}}


def thing_answer(client: PahoClient, prefix: str, kinds: dict[str, Any]) -> list[dict[str, Any]]:
    """Answer thing-model calls under `prefix` (`property/set` ...) with code 200."""
    seen: list[dict[str, Any]] = []

    def answer(m: MQTTMessage) -> tuple[str, bytes] | None:
        kind = m.topic.removeprefix(prefix)
        if kind not in kinds:
            return None
        request = json.loads(m.payload)
        seen.append({"topic": kind, **request})
        body = {"id": request["id"], "code": 200, "msg": "success", **kinds[kind]}
        return f"{prefix}{kind}_reply", json.dumps(body).encode()

    answer_with(client, prefix + "#", answer)
    return seen


def test_thing_model_calls_across_nodes_also_through_a_gateway(nodes: Any) -> None:
    n1, n2 = nodes
    api = n1.http()
    device = onenet_device(n2, make(api, "p1", "d1"))
    seen = thing_answer(
        device, "$sys/p1/d1/thing/", {"property/set": {}, "property/get": {"data": {"t": 20}}}
    )
    gw_made = make(api, "p1", "gw")
    make(api, "p2", "s1", gateway={"product_id": "p1", "name": "gw"})
    gw = onenet_device(n2, gw_made)
    gw_seen = thing_answer(gw, "$sys/p1/gw/thing/", {"sub/property/set": {}})
    online_for(api, "p1", "d1")
    online_for(api, "p1", "gw")

    r = api.post(DEV.format("p1", "d1") + "/properties", json={"t": 21}, params={"timeout": 5})
    assert r.status_code == 200 and r.json()["code"] == 200, r.text
    assert seen[0]["topic"] == "property/set" and seen[0]["params"] == {"t": 21}
    r = api.post(DEV.format("p1", "d1") + "/properties/get", json={"identifiers": ["t"]})
    assert r.status_code == 200 and r.json()["data"] == {"t": 20}, r.text
    # Desired values are pushed to it where it is connected (a property/set it answers).
    r = api.patch(DEV.format("p1", "d1") + "/desired", json={"t": 25})
    assert r.status_code == 200, r.text
    wait_until(lambda: len(seen) == 3 and seen[2]["params"] == {"t": 25}, 5, "the push")

    r = api.post(DEV.format("p2", "s1") + "/properties", json={"t": 7}, params={"timeout": 5})
    assert r.status_code == 200 and r.json()["code"] == 200, r.text
    assert gw_seen[0]["topic"] == "sub/property/set"
    assert gw_seen[0]["params"] == {"productID": "p2", "deviceName": "s1", "params": {"t": 7}}
    records = api.get(DEV.format("p2", "s1") + "/commands").json()["items"]
    assert [r["status"] for r in records] == ["answered"]
    # The thing model's codes come across too: offline is its 2xx code, 409.
    gw.close()
    wait_until(
        lambda: api.post(DEV.format("p2", "s1") + "/properties", json={"t": 1}).status_code == 409,
        5,
        "the gateway offline",
    )
    body = api.post(DEV.format("p2", "s1") + "/properties", json={"t": 1}).json()
    assert body["err_code"] and "offline" in body["error"]


def test_ota_inform_reaches_a_device_on_another_node(nodes: Any) -> None:
    n1, n2 = nodes
    api = n1.http()
    made = make(api, "p1", "d1")
    client = tp_device(n2, made)
    client.subscribe(f"ota/devices/inform/{made['device_number']}", qos=1)
    online_for(api, "p1", "d1")
    data = os.urandom(1000)
    r = api.post(
        "/api/v1/products/p1/firmware",
        files={"file": ("fw.bin", data, "application/octet-stream")},
        data={"version": "1.0.1", "module": "MCU"},
    )
    assert r.status_code == 201, r.text
    r = api.post(
        "/api/v1/products/p1/ota-tasks", json={"firmware_id": r.json()["id"], "devices": ["d1"]}
    )
    assert r.status_code == 201, r.text
    task_id = r.json()["id"]
    wait_until(lambda: client.messages, 5, "the inform")
    inform = json.loads(client.messages[0].payload)
    assert inform["id"] == task_id and inform["params"]["version"] == "1.0.1"


# ---------------------------------------------------------------- NATS away


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """A private nats-server on a fixed port, to stop and start again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.binary = str(Path(sys.executable).with_name("nats-server"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-a", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
            except OSError:
                return False
            return True

        wait_until(listening, 10, "nats-server")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def private_nats() -> Iterator[NatsServer]:
    server = NatsServer(free_port())
    if not Path(server.binary).exists():
        pytest.skip("nats-server is not installed beside this Python")
    server.start()
    yield server
    server.stop()


def test_nats_away_fails_remote_calls_with_503_and_local_ones_go_on(
    private_nats: NatsServer, node_factory: Node
) -> None:
    n1 = node_factory("n1", nats_url=private_nats.url)
    n2 = node_factory("n2", nats_url=private_nats.url)
    api: httpx.Client = n1.http()

    for node, name in ((n2, "far"), (n1, "near")):
        client = onenet_device(node, make(api, "p1", name))
        answer_with(client, f"$sys/p1/{name}/cmd/request/+", echo(f"$sys/p1/{name}"))
    online_for(api, "p1", "far")

    def call(name: str) -> httpx.Response:
        return api.post(DEV.format("p1", name) + "/commands", content=b"x", params={"timeout": 5})

    assert call("far").status_code == 200
    private_nats.stop()
    wait_until(lambda: not n1.platform.nats.connected, 10, "n1 to lose NATS")
    r = call("far")
    assert r.status_code == 503 and "NATS" in r.json()["error"], r.text
    assert call("near").status_code == 200  # its own devices are not affected
    private_nats.start()
    wait_until(lambda: call("far").status_code == 200, 15, "calls across nodes again")
