"""`OneNetDevice` on its edges, against a real platform: the device changing desired
state (objects merged, null deleting), data points posted the OneNET way, a
`pack/post` of its own properties, a request the platform refuses, handlers that fail
(a command's and a service's failure answered, counted), garbage on its topics
ignored, and OTA turned on while online."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import RunningPlatform
from tests.device.conftest import api, register
from tests.device.test_onenet import DEV, device
from tests.mqtt.clients import until
from thingshub.device import Rejected


def test_desired_state_data_points_and_pack(hub: RunningPlatform) -> None:
    creds = register(hub, "p1", "d1")

    async def scenario() -> None:
        dev = device(hub, creds.key)
        deltas: list[dict[str, Any]] = []
        dev.on_delta(lambda delta: deltas.append(delta) or {})  # applied, nothing reported
        await dev.connect()
        await until(dev.synced.is_set, "the first image sync")
        v1 = await dev.desire({"mode": {"a": 1, "b": 2}, "led": "on"})
        v2 = await dev.desire({"mode": {"b": 3}, "led": None})  # merged; null deletes
        assert v2 > v1
        assert dev.image["desired"] == {"mode": {"a": 1, "b": 3}}
        async with api(hub) as http:
            state = (await http.get(f"{DEV}/image")).json()["properties"]["state"]
            assert state["desired"] == {"mode": {"a": 1, "b": 3}}

            await dev.post_datapoints({"temp": 20.5})
            await dev.post_datapoints({"hum": 40}, time_s=1_700_000_000)
            latest = (await http.get(f"{DEV}/telemetry/latest")).json()
            assert latest["temp"]["value"] == 20.5 and latest["hum"]["value"] == 40

            identity = {"productID": "p1", "deviceName": "d1"}
            await dev.pack_post([{"identity": identity, "properties": {"u": {"value": 3}}}])
            latest = (await http.get(f"{DEV}/telemetry/latest")).json()
            assert latest["u"]["value"] == 3
        with pytest.raises(Rejected):
            await dev.pack_post([{"identity": {"productID": "p1", "deviceName": "nobody"}}])
        await dev.close()

    asyncio.run(scenario())


def test_failing_handlers_and_garbage(hub: RunningPlatform) -> None:
    creds = register(hub, "p1", "d1")

    def command(payload: bytes) -> bytes:
        raise RuntimeError("motor stuck")

    def service(params: dict[str, Any]) -> None:
        raise KeyError("no such gear")

    async def scenario() -> None:
        dev = device(hub, creds.key, image=False)
        dev.on_command(command)
        dev.on_service("shift", service)
        await dev.connect()
        async with api(hub) as http:
            r = await http.post(f"{DEV}/commands", content=b"go")
            assert r.status_code == 200, r.text
            assert r.json()["response_text"] == "error: motor stuck"
            r = await http.post(f"{DEV}/services/shift", json={})
            assert r.status_code == 200, r.text
            assert r.json()["code"] == 500
            assert "no such gear" in r.json()["msg"]
            assert dev.errors == 2 and dev.calls_answered == 2

            # What the server never sends a device is ignored, and costs no connection.
            on_message = dev.client.on_message
            assert on_message is not None
            prefix = dev.prefix
            for topic, payload in [
                ("$sys/other/d9/cmd/request/1", b"x"),  # not its own
                (prefix + "image/get/accepted", b"{not json"),
                (prefix + "thing/property/set", b"{not json"),
                (prefix + "thing/property/set", b"[1, 2]"),
                (prefix + "dp/post/json/accepted", b"{not json"),
            ]:
                on_message(topic, payload)
            assert dev.online and dev.errors == 2

            # OTA turned on while online checks for a task at once (there is none).
            ota = dev.on_ota(None, api_url=hub.base_url, version="1.0")
            await asyncio.sleep(0.3)
            assert ota is dev.ota and dev.online
            r = await http.post(f"{DEV}/commands", content=b"again")
            assert r.json()["response_text"] == "error: motor stuck"
        await dev.close()

    asyncio.run(scenario())
