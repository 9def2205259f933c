"""A OneNET device with only its product's access key registers itself over the HTTP
API, then logs in with the key it was given and answers a command; registering again
returns the same key; a key of its own is kept; a product that does not allow
registration refuses (000002)."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import RunningPlatform
from tests.device.conftest import api
from thingshub.device import OneNetDevice, Rejected, registration


def test_a_device_registers_itself_then_logs_in(hub: RunningPlatform) -> None:
    http = hub.http()
    r = http.post("/api/v1/products", json={"id": "p1", "name": "p1", "dynamic_registration": True})
    assert r.status_code == 201, r.text
    access_key = r.json()["access_key"]
    r = http.post("/api/v1/products", json={"id": "p2", "name": "p2"})
    assert r.status_code == 201, r.text
    closed_key = r.json()["access_key"]
    mqtt = f"mqtt://127.0.0.1:{hub.mqtt_port}"

    async def scenario() -> None:
        dev = await OneNetDevice.register(hub.base_url, "p1", access_key, "boot-1", mqtt)
        dev.on_command(lambda payload: b"registered:" + payload)
        async with dev, api(hub) as client:
            r = await client.post("/api/v1/products/p1/devices/boot-1/commands", content=b"hi")
            assert r.status_code == 200, r.text
            assert r.json()["response_text"] == "registered:hi"
        again = await OneNetDevice.register(hub.base_url, "p1", access_key, "boot-1", mqtt)
        assert again.key == dev.key

        own_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
        data = await registration.register(
            hub.base_url, "p1", access_key, "boot-4", key=own_key, desc="made at the factory"
        )
        assert data["key"] == own_key and data["name"] == "boot-4" and data["pid"] == "p1"

        with pytest.raises(Rejected, match="000002") as refused:
            await OneNetDevice.register(hub.base_url, "p2", closed_key, "boot-2", mqtt)
        assert refused.value.code == "000002"
        with pytest.raises(Rejected, match="000002"):  # a key that is not the product's
            await OneNetDevice.register(hub.base_url, "p1", closed_key, "boot-3", mqtt)

    asyncio.run(scenario())
