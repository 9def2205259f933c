"""`Fleet` in-process against a real platform: one device of each family on the
random-walk profile, paced, counted (online, connect time, messages a second), events
among the telemetry, and a thing-model property set followed and reported."""

from __future__ import annotations

import asyncio

from tests.conftest import RunningPlatform
from tests.device.conftest import api, register
from thingshub.device.fleet import Fleet, Profile, Spec


def spec(hub: RunningPlatform, protocol: str, product: str, name: str) -> Spec:
    c = register(hub, product, name)
    return Spec(protocol, product, name, c.device_number, c.key, c.username, c.password)


def test_a_small_fleet_of_each_family_sends_counts_and_follows(hub: RunningPlatform) -> None:
    specs = [
        spec(hub, "onenet", "p1", "one"),
        spec(hub, "thingspanel", "p1", "tp"),
        spec(hub, "thing-model", "p2", "tm"),
    ]

    async def scenario() -> None:
        fleet = Fleet(f"mqtt://127.0.0.1:{hub.mqtt_port}", specs, rate=90, profile="walk")
        stop = asyncio.Event()
        running = asyncio.create_task(fleet.run(None, stop))
        stats = fleet.stats
        for _ in range(500):
            if stats.connect_time is not None and stats.rate() > 0 and stats.sent >= 75:
                break
            await asyncio.sleep(0.02)
        assert stats.online == 3 and stats.connect_time is not None
        assert stats.rate() > 0
        thing = fleet.members[2]
        async with api(hub) as http:
            r = await http.post("/api/v1/products/p2/devices/tm/properties", json={"mode": "eco"})
            assert r.status_code == 200, r.text
            assert r.json()["code"] == 200
            assert thing.state["mode"] == "eco"
            for _ in range(200):  # followed, then reported as a property
                latest = (await http.get("/api/v1/products/p2/devices/tm/telemetry/latest")).json()
                if latest.get("mode", {}).get("value") == "eco":
                    break
                await asyncio.sleep(0.02)
            assert latest["mode"]["value"] == "eco"
            assert "temperature" in latest and "humidity" in latest
            for product, name in (("p1", "one"), ("p1", "tp")):
                path = f"/api/v1/products/{product}/devices/{name}/telemetry/latest"
                assert "temperature" in (await http.get(path)).json()
        assert all(m.count >= 20 for m in fleet.members)  # an event each among them
        stop.set()
        final = await running
        assert final.errors == 0 and final.sent >= 75
        assert getattr(thing.device, "calls_answered", 0) == 1  # counted once a second

    asyncio.run(scenario())


def test_profiles() -> None:
    walk, sine = Profile("walk", 1), Profile("sine", 1)
    values = [walk.next() for _ in range(200)]
    assert all(0 <= v["humidity"] <= 100 for v in values)
    assert len({v["temperature"] for v in values}) > 100  # it walks
    s = sine.next()
    assert abs(s["temperature"] - sine.temperature) <= 5.01
