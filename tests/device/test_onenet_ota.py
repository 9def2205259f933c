"""`OneNetDevice` OTA against a real platform, through OneNET's HTTP API: a task's MQTT
notice sets off check, download (broken once by a proxy, resumed with Range), MD5
check, steps and install; a corrupted download is reported as step 205 (FAILED); a
device offline when the task was made finds it by its check at connect, and an install
hook that raises is step 206."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from typing import Any

import httpx

from tests.conftest import RunningPlatform
from tests.device.conftest import BreakingProxy, api, register
from tests.mqtt.clients import until
from thingshub.device import Firmware, OneNetDevice
from thingshub.device.onenet_ota import onenet_step

TASKS = "/api/v1/products/p1/ota-tasks"


def upload(http: httpx.Client, images: dict[str, bytes], module: str = "MCU") -> dict[str, str]:
    ids = {}
    for version, data in images.items():
        r = http.post(
            "/api/v1/products/p1/firmware",
            files={"file": ("fw.bin", data, "application/octet-stream")},
            data={"version": version, "module": module},
        )
        assert r.status_code == 201, r.text
        ids[version] = r.json()["id"]
    return ids


async def finished(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    """The device entry of a one-device task once the task has completed."""
    task: dict[str, Any] = {}
    for _ in range(200):
        task = (await client.get(f"{TASKS}/{task_id}")).json()
        if task["status"] == "COMPLETED":
            break
        await asyncio.sleep(0.05)
    assert task["status"] == "COMPLETED", task
    return dict(task["devices"][0])


def test_an_ota_notice_upgrades_with_a_resumed_download_and_a_bad_md5_fails(
    platform_factory: Callable[..., RunningPlatform],
) -> None:
    hub = platform_factory(ota_tick=0.05)
    proxy = BreakingProxy(hub.http_port)
    creds = register(hub, "p1", "d1")
    images = {v: os.urandom(150_000) for v in ("1.0.1", "1.0.2")}
    firmware = upload(hub.http(), images)

    async def scenario() -> None:
        await proxy.start()
        dev = OneNetDevice(
            "p1", "d1", creds.key, f"mqtt://127.0.0.1:{hub.mqtt_port}", backoff=(0.05, 0.5)
        )
        installed: list[tuple[Firmware, bytes]] = []

        async def install(fw: Firmware, data: bytes) -> None:
            await asyncio.sleep(0)
            installed.append((fw, data))

        ota = dev.on_ota(install, api_url=f"http://127.0.0.1:{proxy.port}", version="1.0.0")
        await dev.connect()
        async with api(hub) as client:

            async def run(version: str) -> tuple[str, dict[str, Any]]:
                body = {"firmware_id": firmware[version], "devices": ["d1"]}
                r = await client.post(TASKS, json=body)
                assert r.status_code == 201, r.text
                task_id = r.json()["id"]
                entry = await finished(client, task_id)
                await until(lambda: str(entry["tid"]) in dev.ota_results, "the device's result")
                return task_id, entry

            proxy.plan = ["cut"]  # the first transfer breaks after 60,000 bytes
            _, done = await run("1.0.1")
            assert done["state"] == "SUCCEEDED" and done["step"] == 201, done
            assert done["protocol"] == "onenet"
            assert dev.ota_results[str(done["tid"])] == 100
            [(fw, data)] = installed
            assert fw.version == "1.0.1" and data == images["1.0.1"]
            assert fw.sign == hashlib.md5(data).hexdigest()
            downloads = [
                r for p, r in zip(proxy.paths, proxy.ranges, strict=True) if "/download" in p
            ]
            assert downloads[0] is None
            assert downloads[1] is not None and downloads[1] != "bytes=0-", downloads
            assert ota.versions[2] == "1.0.1"
            versions = await ota.call("GET", "/version")
            assert versions["s_version"] == "1.0.1"

            proxy.plan, proxy.cut_at = ["corrupt"], 100_000
            _, failed = await run("1.0.2")
            assert failed["state"] == "FAILED" and failed["step"] == 205, failed
            assert failed["desc"] == "upgrade failed: MD5 check failed", failed
            assert dev.ota_results[str(failed["tid"])] == -3
            assert len(installed) == 1 and ota.versions[2] == "1.0.1"
        await dev.close()
        await proxy.stop()

    asyncio.run(scenario())


def test_an_offline_device_finds_its_task_at_connect_and_a_failed_install_is_206(
    hub: RunningPlatform,
) -> None:
    creds = register(hub, "p1", "d1")
    firmware = upload(hub.http(), {"2.0": os.urandom(5_000)}, module="FOTA")

    async def scenario() -> None:
        async with api(hub) as client:
            r = await client.post(TASKS, json={"firmware_id": firmware["2.0"], "devices": ["d1"]})
            assert r.status_code == 201, r.text
            task_id = r.json()["id"]
            dev = OneNetDevice(
                "p1", "d1", creds.key, f"ws://127.0.0.1:{hub.http_port}/mqtt", image=False
            )

            def install(fw: Firmware, data: bytes) -> None:
                assert fw.module == "FOTA" and len(data) == 5_000
                raise RuntimeError("flash write failed")

            dev.on_ota(install, api_url=hub.base_url, version="1.0", module_version="1.9")
            async with dev:
                entry = await finished(client, task_id)
                assert entry["state"] == "FAILED" and entry["step"] == 206, entry
                await until(lambda: str(entry["tid"]) in dev.ota_results, "the result")
                assert dev.ota_results[str(entry["tid"])] == -4
            assert dev.ota is not None and dev.ota.versions == {1: "1.9", 2: "1.0"}

    asyncio.run(scenario())


def test_the_steps_a_onenet_device_reports() -> None:
    assert [onenet_step(s) for s in (1, 10, 45, 89, 90)] == [1, 11, 50, 98, 99]
    assert [onenet_step(s) for s in (95, 100, -2, -3, -4)] == [101, 201, 107, 205, 206]
