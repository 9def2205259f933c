"""Requests to a ThingsPanel sub-gateway, end to end in both MQTT versions: the
top gateway gets them in the sub-gateway form ThingsPanel's backend sends
(`sub_gateway_data.{address}.gateway_data`), a leaf below it as
`sub_device_data` under its parent's node, and its answers complete the
calls they belong to. Whether a device is a sub-gateway is read from the
tree when the request is made: once its last child leaves, it is addressed
as a leaf again."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import RunningPlatform
from tests.gateway.test_gateways import child, connect, device
from tests.mqtt.clients import PahoClient, wait_until


@pytest.fixture
def answering() -> Iterator[Callable[[PahoClient], None]]:
    """Starts a thread answering every command and attribute set the gateway
    gets, echoing the request's payload; stopped and joined after the test."""
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def answer(gw: PahoClient) -> None:
        seen = 0
        while not stop.is_set():
            requests = [m for m in list(gw.messages) if "/response/" not in m.topic]
            for message in requests[seen:]:
                parts = message.topic.split("/")  # gateway/{kind...}/{dn}/{message id}
                if parts[1] == "command":
                    reply = f"gateway/command/response/{parts[-1]}"
                elif parts[1:3] == ["attributes", "set"]:
                    reply = f"gateway/attributes/set/response/{parts[-1]}"
                else:
                    continue  # control and attribute gets are not answered
                body = {"result": 0, "message": "done", "echo": json.loads(message.payload)}
                gw.publish(reply, json.dumps(body).encode(), qos=1)
            seen = len(requests)
            stop.wait(0.005)

    def start(gw: PahoClient) -> None:
        thread = threading.Thread(target=answer, args=(gw,), daemon=True)
        threads.append(thread)
        thread.start()

    yield start
    stop.set()
    for thread in threads:
        thread.join(5)


def last_control(gw: PahoClient, count: int) -> Any:
    """The payload of the gateway's `count`th control message."""

    def controls() -> list[Any]:
        return [m for m in list(gw.messages) if "/control/" in m.topic]

    wait_until(lambda: len(controls()) >= count, what=f"control message {count}")
    return json.loads(controls()[count - 1].payload)


def test_requests_to_a_sub_gateway_and_to_a_leaf_below_it(
    served: RunningPlatform, version: int, answering: Callable[[PahoClient], None]
) -> None:
    """gw (level 1) -> sg (address "sg", level 2) -> leaf ("s:1", level 3)."""
    api = served.http()
    made = {"gw": device(api, "gw")}
    made["sg"] = child(api, "sg", "gw", "sg")
    made["leaf"] = child(api, "leaf", "sg", "s:1")
    gw = connect(served, made["gw"], version)
    dn = made["gw"]["device_number"]
    granted = gw.subscribe(
        f"gateway/command/{dn}/+",
        f"gateway/attributes/set/{dn}/+",
        f"gateway/telemetry/control/{dn}",
        qos=1,
    )
    assert granted == [1, 1, 1]
    answering(gw)
    command = {"method": "reboot", "params": {"delay": 1}}

    def at_sg(content: Any) -> dict[str, Any]:
        return {"sub_gateway_data": {"sg": {"gateway_data": content}}}

    def at_leaf(content: Any) -> dict[str, Any]:
        return {"sub_gateway_data": {"sg": {"sub_device_data": {"s:1": content}}}}

    for name, nested in (("sg", at_sg), ("leaf", at_leaf)):
        r = api.post(f"/api/v1/products/p1/devices/{name}/calls?timeout=5", json=command)
        assert r.status_code == 200, r.text
        assert r.json()["echo"] == nested(command)
        r = api.put(f"/api/v1/products/p1/devices/{name}/attributes?timeout=5", json={"mode": 2})
        assert r.status_code == 200, r.text
        assert r.json()["echo"] == nested({"mode": 2})
        records = api.get(f"/api/v1/products/p1/devices/{name}/commands").json()["items"]
        assert [rec["status"] for rec in records] == ["answered", "answered"], name
    sent = [m for m in gw.messages if "/response/" not in m.topic]
    assert [m.topic.rsplit("/", 1)[0] for m in sent] == [
        f"gateway/command/{dn}",
        f"gateway/attributes/set/{dn}",
    ] * 2
    r = api.post("/api/v1/products/p1/devices/sg/control", json={"on": True})
    assert r.status_code == 202, r.text
    assert last_control(gw, 1) == at_sg({"on": True})
    r = api.post("/api/v1/products/p1/devices/leaf/control", json={"on": False})
    assert r.status_code == 202, r.text
    assert last_control(gw, 2) == at_leaf({"on": False})
    # Its only child gone, sg is a leaf of gw again.
    assert api.delete("/api/v1/products/p1/devices/leaf/gateway").status_code == 204
    assert api.post("/api/v1/products/p1/devices/sg/control", json={"x": 1}).status_code == 202
    assert last_control(gw, 3) == {"sub_device_data": {"sg": {"x": 1}}}
