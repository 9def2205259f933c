"""The device SDK over TLS against a platform serving TLS (certificates from `thingshub
cert create`'s code): a OneNET device registers itself over HTTPS, logs in over
mqtts://, answers a command and performs an OTA upgrade over HTTPS; a ThingsPanel
device answers a call over wss://; a device trusting another CA never connects."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import RunningPlatform
from tests.device.test_onenet_ota import TASKS, finished, upload
from tests.e2e.test_tls import certs, other_ca, tls_settings, trusting  # noqa: F401 - fixtures
from tests.mqtt.clients import until
from thingshub.device import OneNetDevice, ThingsPanelDevice


def test_onenet_over_mqtts_and_https_and_thingspanel_over_wss(
    platform_factory: Callable[..., RunningPlatform],
    certs: Path,  # noqa: F811
    other_ca: Path,  # noqa: F811
) -> None:
    hub = platform_factory(ota_tick=0.05, **tls_settings(certs))
    port = hub.platform.mqtts_port
    https = f"https://127.0.0.1:{hub.http_port}"
    tls = trusting(certs / "ca.pem")
    headers = {"Authorization": f"Bearer {hub.api_key}"}
    http = httpx.Client(base_url=https, headers=headers, verify=tls, timeout=10)
    hub.clients.append(http)
    r = http.post("/api/v1/products", json={"id": "p1", "name": "p1", "dynamic_registration": True})
    assert r.status_code == 201, r.text
    access_key = r.json()["access_key"]
    r = http.post("/api/v1/products/p1/devices", json={"name": "tp"})
    assert r.status_code == 201, r.text
    tp_creds = r.json()
    image = os.urandom(30_000)
    firmware = upload(http, {"2.0": image})

    async def scenario() -> None:
        dev = await OneNetDevice.register(
            https, "p1", access_key, "secure", f"mqtts://127.0.0.1:{port}", ssl_context=tls
        )
        dev.on_command(lambda payload: b"tls:" + payload)
        installed: list[bytes] = []
        dev.on_ota(lambda _fw, data: installed.append(data), api_url=https, version="1.0")
        tp = ThingsPanelDevice(
            tp_creds["device_number"],
            tp_creds["username"],
            tp_creds["password"],
            f"wss://127.0.0.1:{hub.http_port}/mqtt",
            ssl_context=tls,
        )
        tp.on_command(lambda method, _params: {"over": "wss", "method": method})
        client = httpx.AsyncClient(base_url=https, headers=headers, verify=tls, timeout=15)
        async with dev, tp, client:
            r = await client.post("/api/v1/products/p1/devices/secure/commands", content=b"x")
            assert r.status_code == 200 and r.json()["response_text"] == "tls:x", r.text
            r = await client.post("/api/v1/products/p1/devices/tp/calls", json={"method": "m"})
            assert r.status_code == 200 and r.json()["over"] == "wss", r.text
            body = {"firmware_id": firmware["2.0"], "devices": ["secure"]}
            r = await client.post(TASKS, json=body)
            assert r.status_code == 201, r.text
            entry = await finished(client, r.json()["id"])
            assert entry["state"] == "SUCCEEDED" and entry["step"] == 201, entry
            await until(lambda: installed == [image], "the install")

        stranger = OneNetDevice(
            "p1",
            "secure",
            dev.key,
            f"mqtts://127.0.0.1:{port}",
            ssl_context=trusting(other_ca),
            backoff=(0.05, 0.2),
        )
        try:
            await asyncio.wait_for(stranger.connect(), 1.5)
            raise AssertionError("connected to a server its CA did not sign")
        except TimeoutError:
            assert not stranger.online and stranger.client.connects == 0
        finally:
            await stranger.close()

    asyncio.run(scenario())
