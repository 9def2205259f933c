"""`OneNetDevice` against a real platform: token login, the image kept in sync across an
offline change, a command answered, thing-model property set and service call answered,
and a reconnect (with its subscriptions) after the server restarted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import RunningPlatform
from tests.device.conftest import api, free_port, register
from thingshub.device import LoginRefused, OneNetDevice, Rejected, ThingError

DEV = "/api/v1/products/p1/devices/d1"


def device(hub: RunningPlatform, key: str, **options: Any) -> OneNetDevice:
    options.setdefault("backoff", (0.05, 0.5))
    return OneNetDevice("p1", "d1", key, f"mqtt://127.0.0.1:{hub.mqtt_port}", **options)


def test_image_sync_after_an_offline_change(hub: RunningPlatform) -> None:
    creds = register(hub, "p1", "d1")

    async def scenario() -> None:
        dev = device(hub, creds.key)
        seen: list[dict[str, Any]] = []
        dev.on_delta(seen.append)  # None: report the delta as applied
        await dev.connect()
        assert seen == [] and dev.image["version"] == 0  # no image yet
        assert await dev.report({"led": "off", "temp": 21}) == 1
        await dev.close()

        async with api(hub) as http:
            r = await http.patch(f"{DEV}/image", json={"desired": {"led": "on"}})
            assert r.status_code == 200, r.text
            await dev.connect()  # reads the image, applies the delta, reports it
            assert seen == [{"led": "on"}]
            assert dev.image["reported"] == {"led": "on", "temp": 21}
            state = (await http.get(f"{DEV}/image")).json()["properties"]["state"]
            assert state["reported"] == {"led": "on", "temp": 21}
            assert "delta" not in state

            # Online, a change is pushed: the handler reports what it applied.
            dev.on_delta(lambda delta: {"led": delta["led"], "applied": True})
            r = await http.patch(f"{DEV}/image", json={"desired": {"led": "blink"}})
            assert r.status_code == 200, r.text
            for _ in range(200):
                state = (await http.get(f"{DEV}/image")).json()["properties"]["state"]
                if "delta" not in state:
                    break
                await asyncio.sleep(0.02)
            assert state["reported"] == {"led": "blink", "temp": 21, "applied": True}
            assert seen == [{"led": "on"}]
        with pytest.raises(Rejected, match="165"):
            await dev.report({"bad key!": 1})
        await dev.close()

    asyncio.run(scenario())


def test_commands_and_thing_model_calls_are_answered(hub: RunningPlatform) -> None:
    creds = register(hub, "p1", "d1")

    async def scenario() -> None:
        dev = device(hub, creds.key, image=False)
        dev.on_command(lambda payload: b"done:" + payload)
        props: dict[str, Any] = {"power": 1}

        def set_props(values: dict[str, Any]) -> None:
            if "broken" in values:
                raise ThingError(302, "broken cannot be set")
            props.update(values)

        async def reboot(params: dict[str, Any]) -> dict[str, Any]:
            await asyncio.sleep(0)
            return {"took_ms": 5, "delay": params["delay"]}

        dev.on_property_set(set_props)
        dev.on_property_get(lambda ids: {i: props[i] for i in ids})
        dev.on_service("reboot", reboot)
        await dev.connect()
        async with api(hub) as http:
            r = await http.post(f"{DEV}/commands", content=b"hello")
            assert r.status_code == 200, r.text
            assert r.json()["response_text"] == "done:hello"

            r = await http.post(f"{DEV}/properties", json={"power": 3})
            assert r.status_code == 200, r.text
            assert r.json()["code"] == 200 and props["power"] == 3
            r = await http.post(f"{DEV}/properties", json={"broken": 1})
            assert r.json()["code"] == 302 and r.json()["msg"] == "broken cannot be set"
            r = await http.post(f"{DEV}/properties/get", json={"identifiers": ["power"]})
            assert r.status_code == 200, r.text
            assert r.json()["data"] == {"power": 3}
            r = await http.post(f"{DEV}/services/reboot", json={"delay": 2})
            assert r.status_code == 200, r.text
            assert r.json()["code"] == 200
            assert r.json()["data"] == {"took_ms": 5, "delay": 2}
            r = await http.post(f"{DEV}/services/nope", json={})
            assert r.json()["code"] == 309

            await dev.post_properties({"temp": 21.5})
            await dev.post_event("overheat", {"temp": 99})
            await dev.post_history({"temp": [(20.0, 1_700_000_000_000), (20.5, 1_700_000_060_000)]})
            latest = (await http.get(f"{DEV}/telemetry/latest")).json()
            assert latest["temp"]["value"] == 21.5
            r = await http.patch(f"{DEV}/desired", json={"mode": 2})
            assert r.status_code == 200, r.text
            desired = await dev.get_desired("mode")
            assert desired["mode"]["value"] == 2
            for _ in range(200):  # the desired value is pushed on property/set as well
                if props.get("mode") == 2:
                    break
                await asyncio.sleep(0.01)
            assert props["mode"] == 2
        assert dev.calls_answered == 7
        await dev.close()

    asyncio.run(scenario())


def test_reconnects_and_resubscribes_after_the_server_restarts(
    platform_factory: Callable[..., RunningPlatform],
) -> None:
    port = free_port()
    hub = platform_factory(mqtt_port=port)
    creds = register(hub, "p1", "d1")

    async def scenario() -> None:
        dev = device(hub, creds.key)
        dev.on_command(lambda payload: "again:" + payload.decode())
        await dev.connect()
        assert dev.client.connects == 1
        await asyncio.to_thread(platform_factory.stop, hub)  # type: ignore[attr-defined]
        for _ in range(200):
            if not dev.online:
                break
            await asyncio.sleep(0.02)
        assert not dev.online
        again = await asyncio.to_thread(platform_factory, mqtt_port=port)
        await asyncio.wait_for(dev.client.connected.wait(), 10)
        assert dev.client.connects == 2
        async with api(again) as http:
            r = None
            for _ in range(100):  # subscribed again a moment after the CONNACK
                r = await http.post(f"{DEV}/commands?timeout=5", content=b"x")
                if r.status_code != 409:
                    break
                await asyncio.sleep(0.05)
            assert r is not None and r.status_code == 200, r.text
            assert r.json()["response_text"] == "again:x"
        await dev.close()

    asyncio.run(scenario())


def test_a_wrong_key_is_refused(hub: RunningPlatform) -> None:
    register(hub, "p1", "d1")

    async def scenario() -> None:
        dev = device(hub, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
        with pytest.raises(LoginRefused, match="bad user name or password"):
            await dev.connect()
        await dev.close()

    asyncio.run(scenario())
    with pytest.raises(ValueError, match="not a server URL"):
        OneNetDevice("p1", "d1", "AAAA", "http://x")
