"""The screenshots the README shows, of every console page with a small demo fleet
(into docs/screenshots/ only through scripts/screenshots; see conftest's `shoot`).

The demo: product `greenhouse` with a thing model, sensor-1 with an hour of
history, attributes, typed and untyped events, an image, desired values and
calls, more devices online and offline, an OTA task halfway, and a gateway with its
tree of sub-devices (product `irrigation`).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from typing import Any

from playwright.sync_api import Page, expect

from tests.console.browser import field, series
from tests.console.conftest import ConsoleServer
from tests.console.sim import (
    answer_onenet,
    answer_thing,
    answer_thingspanel,
    onenet_login,
    report,
    telemetry,
    thing_post,
)
from tests.mqtt.clients import PahoClient, wait_until

expect.set_options(timeout=15_000)


def _number(low: float, high: float, unit: str, step: float | None = None) -> dict[str, Any]:
    specs: dict[str, Any] = {"min": str(low), "max": str(high), "unit": unit}
    if step is not None:
        specs["step"] = str(step)
    return {"type": "float", "specs": specs}


#: The greenhouse sensors' thing model, as OneNET exports one.
GREENHOUSE_MODEL: dict[str, Any] = {
    "version": "1.0",
    "profile": {"productId": "greenhouse", "industryId": "agriculture"},
    "properties": [
        {"identifier": "temperature", "name": "Temperature", "accessMode": "r",
         "dataType": _number(-40, 85, "°C")},
        {"identifier": "humidity", "name": "Humidity", "accessMode": "r",
         "dataType": _number(0, 100, "%")},
        {"identifier": "target", "name": "Target temperature", "accessMode": "rw",
         "dataType": _number(10, 35, "°C", 0.5)},
        {"identifier": "fan", "name": "Fan", "accessMode": "rw",
         "dataType": {"type": "enum", "specs": {"0": "off", "1": "auto", "2": "high"}}},
        {"identifier": "lights", "name": "Grow lights", "accessMode": "rw",
         "dataType": {"type": "bool", "specs": {"0": "off", "1": "on"}}},
        {"identifier": "note", "name": "Note", "accessMode": "rw",
         "dataType": {"type": "string", "specs": {"length": "64"}}},
    ],
    "events": [
        {"identifier": "boot", "name": "Booted", "eventType": "info",
         "outputData": [{"identifier": "version", "name": "Firmware",
                         "dataType": {"type": "string", "specs": {"length": "16"}}}]},
        {"identifier": "overheat", "name": "Too hot", "eventType": "alert",
         "outputData": [{"identifier": "temperature", "name": "Temperature",
                         "dataType": _number(-40, 85, "°C")}]},
        {"identifier": "sensor_fault", "name": "Sensor fault", "eventType": "error",
         "outputData": [{"identifier": "code", "name": "Code", "dataType": {"type": "int32"}}]},
    ],
    "services": [
        {"identifier": "calibrate", "name": "Calibrate", "callType": "s",
         "input": [{"identifier": "offset", "name": "Offset", "dataType": _number(-5, 5, "°C")}],
         "output": [{"identifier": "applied", "name": "Applied",
                     "dataType": _number(-5, 5, "°C")}]},
        {"identifier": "reboot", "name": "Reboot", "callType": "a",
         "input": [{"identifier": "delay", "name": "Delay",
                    "dataType": {"type": "int32", "specs": {"min": "0", "max": "60",
                                                           "unit": "s"}}}]},
    ],
}  # fmt: skip


def _demo_fleet(server: ConsoleServer) -> list[PahoClient]:
    """Product `greenhouse`: sensor-1 with an hour of history, attributes, events, an
    image and calls; sensor-2 and sensor-3 online too; five more offline. Returns the
    connected devices, sensor-1 first."""
    with server.api() as api:
        api.post("/api/v1/products", json={"id": "greenhouse", "name": "Greenhouse"})
        created = {}
        for i in range(1, 9):
            tags = {"row": str(1 + i // 3), "zone": "north" if i % 2 else "south"}
            r = api.post(
                "/api/v1/products/greenhouse/devices", json={"name": f"sensor-{i}", "tags": tags}
            )
            assert r.status_code == 201, r.text
            created[f"sensor-{i}"] = r.json()
    devices = []
    for name in ("sensor-1", "sensor-2", "sensor-3"):
        d = onenet_login(server.mqtt_port, "greenhouse", name, created[name]["key"])
        d.subscribe(f"ota/devices/inform/{created[name]['device_number']}", qos=1)
        devices.append(d)
    device = devices[0]
    device.subscribe("$sys/greenhouse/sensor-1/image/#", qos=1)
    answer_onenet(device, "greenhouse", "sensor-1")
    answer_thingspanel(device, created["sensor-1"]["device_number"])
    now = int(time.time())
    history = [
        {
            "ts": now - 3600 + k * 15,
            "values": {
                "temperature": round(21 + 2 * math.sin(k / 25) + (k % 4) * 0.05, 2),
                "humidity": round(55 + 6 * math.cos(k / 40), 1),
            },
        }
        for k in range(240)
    ]
    for start in range(0, len(history), 80):  # a message carries at most 200 points
        telemetry(device, history[start : start + 80])
    telemetry(device, {"temperature": 21.4, "humidity": 57.5, "mode": "auto"})
    device.publish(
        "devices/attributes/1", json.dumps({"firmware": "1.4.2", "ip": "10.0.3.17"}).encode(), 1
    )
    for method, params in (("door_open", {"door": 2}), ("door_closed", {"door": 2})):
        body = json.dumps({"method": method, "params": params}).encode()
        device.publish("devices/event/1", body, 1)
    report(device, "greenhouse", "sensor-1", {"target": 21, "fan": "auto"})
    for d in devices[1:]:
        telemetry(d, {"temperature": 20.5, "humidity": 61})
    return devices


def _demo_thing(server: ConsoleServer, device: PahoClient) -> None:
    """The greenhouse's thing model; sensor-1 answers its calls, reports its properties
    and typed events, and has desired values."""
    with server.api() as api:
        wait_until(
            lambda: (
                "humidity"
                in api.get("/api/v1/products/greenhouse/devices/sensor-1/telemetry/latest").json()
            ),
            what="the demo's telemetry",
        )
        r = api.put("/api/v1/products/greenhouse/thing-model", json=GREENHOUSE_MODEL)
        assert r.status_code == 200, r.text
    answer_thing(
        device,
        "greenhouse",
        "sensor-1",
        {"calibrate": lambda p: {"applied": p.get("offset")}},
    )
    thing_post(device, "greenhouse", "sensor-1", "event", {"boot": {"version": "1.4.2"}})
    properties = {"target": 21.5, "fan": 1, "lights": True, "note": "north bench"}
    thing_post(device, "greenhouse", "sensor-1", "property", properties)
    thing_post(device, "greenhouse", "sensor-1", "event", {"overheat": {"temperature": 31.5}})
    thing_post(device, "greenhouse", "sensor-1", "event", {"sensor_fault": {"code": 17}})
    with server.api() as api:
        r = api.patch(
            "/api/v1/products/greenhouse/devices/sensor-1/desired",
            json={"target": 22.5, "lights": False},
        )
        assert r.status_code == 200, r.text


def _demo_ota(server: ConsoleServer, devices: list[PahoClient]) -> str:
    """A task upgrading sensor-1..4: one done, one halfway, the rest waiting."""
    with server.api() as api:
        fw = api.post(
            "/api/v1/products/greenhouse/firmware",
            files={"file": ("greenhouse-1.5.0.bin", b"\x00" * 180_000)},
            data={"version": "1.5.0", "module": "MCU", "name": "Greenhouse sensor firmware"},
        ).json()
        task = api.post(
            "/api/v1/products/greenhouse/ota-tasks",
            json={"firmware_id": fw["id"], "devices": [f"sensor-{i}" for i in range(1, 5)]},
        ).json()
        for d in devices[:2]:
            wait_until(lambda d=d: any("inform" in m.topic for m in d.messages), what="informs")
    for d, step, desc in ((devices[0], "100", "done"), (devices[1], "60", "downloading")):
        body = {"step": step, "desc": desc, "module": "MCU"}
        d.publish("ota/devices/progress", json.dumps(body).encode(), qos=1)
    task_id: str = task["id"]
    return task_id


def _demo_gateway(server: ConsoleServer) -> PahoClient:
    """Product `irrigation`: controller-1, a ThingsPanel gateway, with three valves and a
    pump house (a gateway itself) with a pump and a level sensor; the controller is
    connected and reports for two valves and the pump, so they are online."""
    tree = [
        ("controller-1", None, None),
        ("valve-1", "controller-1", "v1"),
        ("valve-2", "controller-1", "v2"),
        ("valve-3", "controller-1", "v3"),
        ("pump-house", "controller-1", "ph"),
        ("pump-1", "pump-house", "p1"),
        ("level-1", "pump-house", "l1"),
    ]
    with server.api() as api:
        api.post("/api/v1/products", json={"id": "irrigation", "name": "Irrigation"})
        for name, gateway, address in tree:
            body: dict[str, Any] = {"name": name}
            if gateway is not None:
                body |= {"gateway": {"product_id": "irrigation", "name": gateway}}
                body["sub_address"] = address
            r = api.post("/api/v1/products/irrigation/devices", json=body)
            assert r.status_code == 201, r.text
            if gateway is None:
                top = r.json()
    controller = PahoClient(
        server.mqtt_port, "controller-1", username=top["username"], password=top["password"]
    )
    report = {
        "gateway_data": {"flow": 12.5},
        "sub_device_data": {"v1": {"open": True}, "v2": {"open": False}},
        "sub_gateway_data": {"ph": {"sub_device_data": {"p1": {"rpm": 1450}}}},
    }
    assert controller.publish("gateway/telemetry", json.dumps(report).encode(), qos=1) == 0
    return controller


def test_screenshots_of_each_page(
    console: Page, console_server: ConsoleServer, shoot: Callable[..., Any]
) -> None:
    page, base = console, console_server.base_url
    devices = _demo_fleet(console_server)
    with console_server.api() as api:
        api.patch(
            "/api/v1/products/greenhouse/devices/sensor-1/image", json={"desired": {"target": 23}}
        )
        api.post(
            "/api/v1/products/greenhouse/devices/sensor-1/commands",
            params={"timeout": 5},
            content=b"status",
        )
        api.post(
            "/api/v1/products/greenhouse/devices/sensor-1/calls",
            params={"timeout": 5},
            json={"method": "set_fan", "params": {"speed": 2}},
        )
    task_id = _demo_ota(console_server, devices)
    _demo_thing(console_server, devices[0])

    page.goto(f"{base}/console/products/greenhouse/devices/sensor-1")
    expect(page.get_by_test_id("chart-temperature")).to_be_visible()
    wait_until(lambda: len(series(page, "chart-temperature")) > 100, what="an hour of history")
    expect(page.get_by_test_id("image-delta")).to_contain_text('"target": 23')
    field(page, "onenet-payload").fill("status")
    page.get_by_test_id("send-onenet").click()
    expect(page.get_by_test_id("answer")).to_contain_text("done:status")
    properties = page.get_by_test_id("thing-properties")
    expect(properties.get_by_role("row", name=re.compile("note"))).to_contain_text("north bench")
    expect(page.get_by_test_id("desired-values")).to_contain_text("22.5 °C")
    expect(page.get_by_test_id("events")).to_contain_text("sensor_fault")
    field(page, "thing-input-offset").fill("0.5")
    page.get_by_test_id("thing-invoke").click()
    expect(page.get_by_test_id("thing-invoke-answer")).to_contain_text('"applied": 0.5')
    shoot(page, "device")
    shoot(
        page, "device-thing", page.get_by_test_id("thing-card"), page.get_by_test_id("desired-card")
    )

    _demo_gateway(console_server)
    page.goto(f"{base}/console/products/irrigation/devices/controller-1")
    tree = page.get_by_test_id("sub-devices")
    expect(tree.get_by_role("row", name=re.compile("pump-1"))).to_contain_text("online")
    expect(tree.get_by_role("row", name=re.compile("level-1"))).to_contain_text("offline")
    shoot(page, "device-tree", page.get_by_test_id("sub-devices-card"))

    page.goto(f"{base}/console/devices?product=greenhouse")
    expect(page.get_by_test_id("devices").get_by_role("row")).to_have_count(9)
    shoot(page, "devices")

    page.goto(f"{base}/console/products")
    expect(page.get_by_test_id("products")).to_contain_text("Greenhouse")
    shoot(page, "products")

    page.goto(f"{base}/console/products/greenhouse")
    expect(page.get_by_test_id("model-services")).to_contain_text("calibrate")
    shoot(page, "thing-model")

    page.goto(f"{base}/console/")
    expect(page.get_by_test_id("ingest-chart")).to_be_visible()
    shoot(page, "overview")

    page.goto(f"{base}/console/ota?product=greenhouse&task={task_id}")
    row = page.get_by_test_id("task-devices").get_by_role("row", name=re.compile("sensor-2"))
    expect(row).to_contain_text("60 %")
    shoot(page, "ota")

    page.get_by_test_id("logout").click()
    expect(page.get_by_label("API key")).to_be_visible()
    shoot(page, "login")
