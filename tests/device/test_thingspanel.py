"""`ThingsPanelDevice` against a real platform: reports, a command and an attribute set
answered, an attribute get, control, MQTT over WebSocket, the blocking face, and OTA
through a proxy that breaks the first download (resumed with Range) and then corrupts
one (the digest mismatch reported as a failure)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from typing import Any

from tests.conftest import RunningPlatform
from tests.device.conftest import BreakingProxy, api, register
from tests.mqtt.clients import until
from thingshub.device import Firmware, ThingsPanelDevice, ThingsPanelGateway

DEV = "/api/v1/products/p1/devices/d1"
TASKS = "/api/v1/products/p1/ota-tasks"


def device(hub: RunningPlatform, creds: Any, url: str | None = None) -> ThingsPanelDevice:
    return ThingsPanelDevice(
        creds.device_number,
        creds.username,
        creds.password,
        url or f"mqtt://127.0.0.1:{hub.mqtt_port}",
        backoff=(0.05, 0.5),
    )


def test_reports_and_calls(hub: RunningPlatform) -> None:
    creds = register(hub, "p1", "d1")

    async def scenario() -> None:
        dev = device(hub, creds)
        attrs: dict[str, Any] = {"fw": "1.0"}
        controls: list[dict[str, Any]] = []

        def command(method: str, params: Any) -> dict[str, Any]:
            if method == "fail":
                raise RuntimeError("cannot do that")
            return {"echo": params}

        dev.on_command(command)
        dev.on_attributes_set(attrs.update)
        dev.on_attributes_get(lambda keys: {k: attrs[k] for k in keys} if keys else attrs)
        dev.on_control(controls.append)
        await dev.connect()
        await dev.send_telemetry({"temperature": 21.5})
        await dev.send_history([(1_700_000_000, {"temperature": 20.0})])
        assert (await dev.send_attributes({"fw": "1.0"}))["result"] == 0
        reply = await dev.send_event("Alarm", {"level": 2})
        assert reply["method"] == "Alarm"
        await dev.send_events([(1_700_000_000_000, "Boot", {})])
        async with api(hub) as http:
            latest = (await http.get(f"{DEV}/telemetry/latest")).json()
            assert latest["temperature"]["value"] == 21.5
            r = await http.post(f"{DEV}/calls", json={"method": "go", "params": {"x": 1}})
            assert r.status_code == 200, r.text
            assert r.json()["result"] == 0 and r.json()["echo"] == {"x": 1}
            r = await http.post(f"{DEV}/calls", json={"method": "fail"})
            assert r.json()["result"] == 1 and r.json()["message"] == "cannot do that"
            r = await http.put(f"{DEV}/attributes", json={"mode": "eco"})
            assert r.status_code == 200 and r.json()["result"] == 0, r.text
            assert attrs["mode"] == "eco"
            r = await http.post(f"{DEV}/attributes/get", json={"keys": ["mode"]})
            assert r.status_code == 200, r.text
            assert r.json()["mode"] == "eco"
            r = await http.post(f"{DEV}/control", json={"valve": 1})
            assert r.status_code == 202, r.text
            await until(lambda: controls == [{"valve": 1}], "the control")
        assert dev.calls_answered == 4
        await dev.close()

    asyncio.run(scenario())


def test_websocket_and_the_blocking_face(hub: RunningPlatform) -> None:
    creds = register(hub, "p1", "d1")
    dev = device(hub, creds, f"ws://127.0.0.1:{hub.http_port}/mqtt").blocking()
    dev.on_command(lambda method, params: {"over": "websocket", "method": method})
    with dev:
        assert dev.online
        dev.send_telemetry({"rssi": -60})
        assert dev.send_attributes({"ip": "10.0.0.2"})["result"] == 0
        http = hub.http()
        r = http.post(f"{DEV}/calls", json={"method": "ping"})
        assert r.status_code == 200, r.text
        assert r.json()["over"] == "websocket" and r.json()["method"] == "ping"
        assert http.get(f"{DEV}/telemetry/latest").json()["rssi"]["value"] == -60
    assert http.get(DEV).json()["connectionState"] == "offline"


def test_ota_resumes_a_broken_download_and_reports_a_bad_digest(
    platform_factory: Callable[..., RunningPlatform],
) -> None:
    proxy = BreakingProxy(0)  # bound first: the platform's download links name its port
    hub = platform_factory(ota_tick=0.05, public_url=f"http://127.0.0.1:{proxy.port}")
    proxy.upstream = hub.http_port
    creds = register(hub, "p1", "d1")
    http = hub.http()
    images = {v: os.urandom(150_000) for v in ("1.0.1", "1.0.2")}
    firmware = {}
    for version, data in images.items():
        r = http.post(
            "/api/v1/products/p1/firmware",
            files={"file": ("fw.bin", data, "application/octet-stream")},
            data={"version": version, "module": "MCU"},
        )
        assert r.status_code == 201, r.text
        firmware[version] = r.json()["id"]

    async def scenario() -> None:
        await proxy.start()
        dev = device(hub, creds)
        installed: list[tuple[Firmware, bytes]] = []
        dev.on_ota(lambda fw, data: installed.append((fw, data)))
        await dev.connect()
        async with api(hub) as client:

            async def run(version: str) -> dict[str, Any]:
                body = {"firmware_id": firmware[version], "devices": ["d1"]}
                r = await client.post(TASKS, json=body)
                assert r.status_code == 201, r.text
                tid = r.json()["id"]
                await until(lambda: tid in dev.ota_results, f"the upgrade to {version}")
                for _ in range(100):
                    task = (await client.get(f"{TASKS}/{tid}")).json()
                    if task["status"] == "COMPLETED":
                        break
                    await asyncio.sleep(0.05)
                assert task["status"] == "COMPLETED", task
                return dict(task["devices"][0])

            proxy.plan = ["cut"]  # the first transfer breaks after 60,000 bytes
            done = await run("1.0.1")
            assert done["state"] == "SUCCEEDED" and done["step"] == 100, done
            [(fw, data)] = installed
            assert fw.version == "1.0.1" and data == images["1.0.1"]
            assert fw.sign == hashlib.sha256(data).hexdigest()
            assert proxy.ranges[0] is None
            resumed = proxy.ranges[1]
            assert resumed is not None and resumed.startswith("bytes=") and resumed != "bytes=0-"

            proxy.plan, proxy.cut_at = ["corrupt"], 100_000
            failed = await run("1.0.2")
            assert failed["state"] == "FAILED" and failed["step"] == -3, failed
            assert "verification failed" in failed["detail"]
            assert len(installed) == 1  # nothing installed from a bad file
        await dev.close()
        await proxy.stop()

    asyncio.run(scenario())


def test_a_gateway_reports_for_its_sub_devices_and_answers_for_them(
    hub: RunningPlatform,
) -> None:
    gw = register(hub, "p1", "gw")
    register(hub, "p1", "s1", gateway={"product_id": "p1", "name": "gw"}, sub_address="28da")

    async def scenario() -> None:
        dev = ThingsPanelGateway(
            gw.device_number, gw.username, gw.password, f"mqtt://127.0.0.1:{hub.mqtt_port}"
        )
        dev.on_command(lambda address, method, params: {"who": address, "did": method})
        async with dev, api(hub) as http:
            await dev.send_telemetry({"load": 0.5}, sub_devices={"28da": {"pm25": 12}})
            assert (await dev.send_sub_attributes({"28da": {"fw": "2"}}))["result"] == 0
            assert (await dev.send_sub_event("28da", "Alarm"))["result"] == 0
            latest = (await http.get("/api/v1/products/p1/devices/s1/telemetry/latest")).json()
            assert latest["pm25"]["value"] == 12
            r = await http.post("/api/v1/products/p1/devices/s1/calls", json={"method": "open"})
            assert r.status_code == 200, r.text
            assert r.json()["who"] == "28da" and r.json()["did"] == "open"
            r = await http.post("/api/v1/products/p1/devices/gw/calls", json={"method": "own"})
            assert r.json()["who"] is None and r.json()["did"] == "own"

    asyncio.run(scenario())
