"""`ThingsPanelDevice` on its edges, against a real platform: an event stamped by the
device, a report the platform refuses, garbage and a non-object command on its topics
(the command answered as a failure), an OTA notice it cannot read or has seen, and a
reconnect over WebSocket after the server restarted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.conftest import RunningPlatform
from tests.device.conftest import api, free_port, register
from tests.device.test_thingspanel import DEV, device
from tests.mqtt.clients import until
from thingshub.device import Rejected


def test_stamped_event_refusal_and_garbage(hub: RunningPlatform) -> None:
    creds = register(hub, "p1", "d1")

    async def scenario() -> None:
        dev = device(hub, creds)
        dev.on_command(lambda method, params: {"done": method})
        await dev.connect()
        reply = await dev.send_event("Boot", {"n": 1}, ts_ms=1_700_000_000_000)
        assert reply["result"] == 0
        with pytest.raises(Rejected):
            await dev.send_events([(1_700_000_000_000, "", {})])  # an event names its method

        on_message = dev.client.on_message
        assert on_message is not None
        number = creds.device_number
        on_message(f"devices/command/{number}/m1", b"{not json")  # ignored
        on_message(f"devices/command/{number}/m2", b"[1, 2]")  # answered: not an object
        on_message(f"ota/devices/inform/{number}", b'{"no": "firmware"}')  # unreadable
        await until(lambda: dev.calls_answered == 1, "the answer to the bad command")
        assert dev.errors == 1 and dev.online
        async with api(hub) as http:
            r = await http.post(f"{DEV}/calls", json={"method": "still"})
            assert r.status_code == 200, r.text
            assert r.json()["done"] == "still"
        await dev.close()

    asyncio.run(scenario())


def test_a_websocket_device_reconnects_after_the_server_restarts(
    platform_factory: Callable[..., RunningPlatform],
) -> None:
    port = free_port()
    hub = platform_factory(http_port=port)
    creds = register(hub, "p1", "d1")

    async def scenario() -> None:
        dev = device(hub, creds, f"ws://127.0.0.1:{port}/mqtt")
        dev.on_command(lambda method, params: {"again": method})
        await dev.connect()
        dev.client.drop()  # a network loss: over WebSocket there is no transport to abort
        await until(lambda: dev.client.connects == 2 and dev.online, "the reconnect")
        await asyncio.to_thread(platform_factory.stop, hub)  # type: ignore[attr-defined]
        await until(lambda: not dev.online, "the device offline")
        again = await asyncio.to_thread(platform_factory, http_port=port)
        await asyncio.wait_for(dev.client.connected.wait(), 15)
        assert dev.client.connects >= 3
        async with api(again) as http:
            r = None
            for _ in range(100):  # subscribed again a moment after the CONNACK
                r = await http.post(f"{DEV}/calls", json={"method": "x"})
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert r is not None and r.status_code == 200, r.text
            assert r.json()["again"] == "x"
        await dev.close()

    asyncio.run(scenario())


def test_the_blocking_face_after_close(hub: RunningPlatform) -> None:
    creds = register(hub, "p1", "d1")
    dev = device(hub, creds).blocking()
    with dev:
        dev.send_telemetry({"rssi": -61})
    dev.close()  # a second close does nothing
    with pytest.raises(RuntimeError, match="thread has stopped"):
        dev.send_telemetry({"rssi": -62})
