"""`OneNetGateway` against a real platform: sub-devices added to its tree and logged in,
their data visible through the HTTP API, the API's property set, get and service calls
to a sub-device answered by its handlers, tree changes told to the gateway, sub-devices
logged in again after the server restarts, and OneNET's refusals raised as `Rejected`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.conftest import RunningPlatform
from tests.device.conftest import Creds, api, free_port, register
from thingshub.device import DeviceError, OneNetGateway, Rejected, SubDevice, ThingError

P2 = "/api/v1/products/p2/devices"
BOUND = {"product_id": "p1", "name": "gw"}


def gateway(hub: RunningPlatform, creds: Creds, **options: Any) -> OneNetGateway:
    options.setdefault("backoff", (0.05, 0.5))
    options.setdefault("image", False)
    return OneNetGateway("p1", "gw", creds.key, f"mqtt://127.0.0.1:{hub.mqtt_port}", **options)


async def state(http: httpx.AsyncClient, name: str) -> str:
    return str((await http.get(f"{P2}/{name}")).json()["connectionState"])


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(250):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never: {what}")


def test_sub_devices_added_logged_in_and_posting(hub: RunningPlatform) -> None:
    gw_creds = register(hub, "p1", "gw")
    register(hub, "p2", "s1", gateway=BOUND)
    s2_creds = register(hub, "p2", "s2")  # free: the gateway adds it with its key
    for n in range(3, 13):
        register(hub, "p2", f"s{n}", gateway=BOUND)

    async def scenario() -> None:
        gw = gateway(hub, gw_creds)
        async with gw, api(hub) as http:
            s2 = gw.sub_device("p2", "s2", key=s2_creds.key)
            await s2.add()
            assert (await http.get(f"{P2}/s2")).json()["gateway"]["name"] == "gw"
            children = await gw.topology()
            assert sorted(c.name for c in children) == sorted(f"s{n}" for n in range(1, 13))
            assert gw.sub_device("p2", "s2") is s2 and s2 in children
            url = "/api/v1/products/p1/devices/gw/events?start=0&end=99999999999999"
            noted = (await http.get(url)).json()  # the gateway's result of the listing
            assert [(e["method"], e["params"]["code"]) for e in noted] == [
                ("sub/topo/get/result", 200)
            ]

            assert await state(http, "s2") == "offline"
            await s2.login()
            assert s2.logged_in and await state(http, "s2") == "online"

            await s2.post_properties({"temp": 21.5})
            await s2.post_event("overheat", {"temp": 99})
            await s2.post_history({"temp": [(20.0, 1_700_000_000_000)]})
            latest = (await http.get(f"{P2}/s2/telemetry/latest")).json()
            assert latest["temp"]["value"] == 21.5
            events = (await http.get(f"{P2}/s2/events?start=0&end=99999999999999")).json()
            assert [e["method"] for e in events] == ["overheat"]
            assert events[0]["params"] == {"temp": 99}

            # One batch: the gateway itself (None), s1 by its ids, s2 by its handle.
            await gw.post_batch(
                properties={None: {"load": 0.5}, ("p2", "s1"): {"temp": 3}, s2: {"temp": 4}},
                events={("p2", "s1"): {"alarm": {"level": 1}}},
            )
            own = (await http.get("/api/v1/products/p1/devices/gw/telemetry/latest")).json()
            assert own["load"]["value"] == 0.5
            for name, value in (("s1", 3), ("s2", 4)):
                latest = (await http.get(f"{P2}/{name}/telemetry/latest")).json()
                assert latest["temp"]["value"] == value
            assert await state(http, "s1") == "online"  # data for it made it online
            # More devices than one pack/post holds (10) go in several messages.
            await gw.post_batch(properties={c: {"n": c.name} for c in children})
            for child in children:
                latest = (await http.get(f"{P2}/{child.name}/telemetry/latest")).json()
                assert latest["n"]["value"] == child.name
            with pytest.raises(ValueError, match="needs properties or events"):
                await gw.post_batch()

            await s2.logout()
            assert not gw.sub_device("p2", "s2").logged_in  # (mypy keeps s2.logged_in True)
            assert await state(http, "s2") == "offline"
            await s2.delete()
            assert (await http.get(f"{P2}/s2")).json()["gateway"] is None

    asyncio.run(scenario())


def test_calls_to_sub_devices_are_answered_by_their_handlers(hub: RunningPlatform) -> None:
    gw_creds = register(hub, "p1", "gw")
    for name in ("s1", "s2"):
        register(hub, "p2", name, gateway=BOUND)

    async def scenario() -> None:
        gw = gateway(hub, gw_creds)
        s1 = gw.sub_device("p2", "s1")
        props: dict[str, Any] = {"power": 1}

        def set_s1(values: dict[str, Any]) -> None:
            if "broken" in values:
                raise ThingError(302, "broken cannot be set")
            props.update(values)

        async def reboot(given: dict[str, Any]) -> dict[str, Any]:
            await asyncio.sleep(0)
            return {"took_ms": 5, "delay": given["delay"]}

        s1.on_property_set(set_s1)
        s1.on_property_get(lambda ids: {i: props[i] for i in ids})
        s1.on_service("reboot", reboot)
        # s2 has no handlers of its own: the gateway-wide ones take the sub-device.
        seen: list[tuple[str, Any]] = []
        gw.on_sub_property_set(lambda sub, values: seen.append((sub.name, values)))
        gw.on_sub_property_get(lambda sub, ids: {i: sub.name for i in ids})
        gw.on_sub_service("ping", lambda sub, given: {"pong": sub.name, **given})
        await gw.connect()
        async with api(hub) as http:
            r = await http.post(f"{P2}/s1/properties?timeout=5", json={"power": 3})
            assert r.status_code == 200, r.text
            assert r.json()["code"] == 200 and props["power"] == 3
            r = await http.post(f"{P2}/s1/properties?timeout=5", json={"broken": 1})
            assert (r.json()["code"], r.json()["msg"]) == (302, "broken cannot be set")
            r = await http.post(
                f"{P2}/s1/properties/get?timeout=5", json={"identifiers": ["power"]}
            )
            assert r.status_code == 200, r.text
            assert r.json()["data"] == {"power": 3}
            r = await http.post(f"{P2}/s1/services/reboot?timeout=5", json={"delay": 2})
            assert r.status_code == 200, r.text
            assert r.json()["data"] == {
                "productID": "p2",
                "deviceName": "s1",
                "identifier": "reboot",
                "output": {"took_ms": 5, "delay": 2},
            }
            r = await http.post(f"{P2}/s1/services/ping?timeout=5", json={"n": 1})
            assert r.json()["data"]["output"] == {"pong": "s1", "n": 1}

            r = await http.post(f"{P2}/s2/properties?timeout=5", json={"mode": 2})
            assert r.json()["code"] == 200 and seen == [("s2", {"mode": 2})]
            r = await http.post(f"{P2}/s2/properties/get?timeout=5", json={"identifiers": ["a"]})
            assert r.json()["data"] == {"a": "s2"}
            r = await http.post(f"{P2}/s2/services/reboot?timeout=5", json={})
            assert r.status_code == 200, r.text
            assert r.json()["code"] == 309  # nobody serves reboot for s2: at once, no timeout
            records = (await http.get(f"{P2}/s1/commands")).json()["items"]
            assert {rec["status"] for rec in records} == {"answered"}
        assert gw.calls_answered == 8
        await gw.close()

    asyncio.run(scenario())


def test_a_handler_less_gateway_answers_309_and_refusals_are_raised(hub: RunningPlatform) -> None:
    gw_creds = register(hub, "p1", "gw")
    register(hub, "p2", "s1", gateway=BOUND)
    register(hub, "p2", "free")
    register(hub, "p1", "other")
    theirs = register(hub, "p2", "theirs", gateway={"product_id": "p1", "name": "other"})

    async def scenario() -> None:
        gw = gateway(hub, gw_creds)
        async with gw, api(hub) as http:
            r = await http.post(f"{P2}/s1/properties?timeout=5", json={"a": 1})
            assert r.status_code == 200 and r.json()["code"] == 309, r.text
            r = await http.post(f"{P2}/s1/properties/get?timeout=5", json={"identifiers": []})
            assert r.json()["code"] == 309

            # Not in this gateway's tree: 307; no such device: 1107; the tree unchanged.
            for target, code in ((("p2", "free"), 307), (("p2", "theirs"), 307)):
                with pytest.raises(Rejected, match=str(code)) as refused:
                    await gw.login_sub_device(target)
                assert refused.value.code == code
            with pytest.raises(Rejected) as refused:
                await gw.sub_device("p2", "ghost").login()
            assert refused.value.code == 1107
            assert not gw.sub_device("p2", "free").logged_in
            with pytest.raises(Rejected) as refused:
                await gw.post_sub_properties(("p2", "free"), {"t": 1})
            assert refused.value.code == 307
            assert (await http.get(f"{P2}/free/telemetry/latest")).json() == {}

            # Adding needs the sub-device's own key: another key's token is 1106.
            with pytest.raises(DeviceError, match="needs its key"):
                await gw.add_sub_device(("p2", "free"))
            with pytest.raises(ValueError, match="not base64"):
                gw.sub_device("p2", "free", key="not base64!")
            with pytest.raises(Rejected) as refused:
                await gw.sub_device("p2", "free", key=gw_creds.key).add()
            assert refused.value.code == 1106
            with pytest.raises(Rejected) as refused:  # bound to another gateway: 313
                await gw.sub_device("p2", "theirs", key=theirs.key).add()
            assert refused.value.code == 313
            assert (await http.get(f"{P2}/free")).json()["gateway"] is None
            assert (await http.get(f"{P2}/theirs")).json()["gateway"]["name"] == "other"

    asyncio.run(scenario())


def test_tree_changes_are_told_to_the_gateway(hub: RunningPlatform) -> None:
    gw_creds = register(hub, "p1", "gw")
    register(hub, "p2", "s1", gateway=BOUND)
    register(hub, "p2", "s2")

    async def scenario() -> None:
        gw = gateway(hub, gw_creds, image=True)  # its own image kept in sync as well
        told: list[list[str]] = []
        gw.on_topology_change(lambda children: told.append(sorted(c.name for c in children)))
        async with gw, api(hub) as http:
            s1 = gw.sub_device("p2", "s1")
            await s1.login()
            r = await http.put(f"{P2}/s2/gateway", json=BOUND)
            assert r.status_code == 200, r.text

            async def told_twice() -> bool:
                return len(told) == 2

            assert (await http.delete(f"{P2}/s1/gateway")).status_code == 204
            await until(told_twice, "two tree changes")
            assert told == [["s1", "s2"], ["s2"]]
            assert [c.name for c in gw.children] == ["s2"]
            assert not s1.logged_in  # it left the tree: not logged in again later

            async def recorded() -> bool:
                url = "/api/v1/products/p1/devices/gw/events?start=0&end=99999999999999"
                return len((await http.get(url)).json()) == 2

            await until(recorded, "the gateway's answers recorded")
            url = "/api/v1/products/p1/devices/gw/events?start=0&end=99999999999999"
            answers = (await http.get(url)).json()
            assert {a["method"] for a in answers} == {"sub/topo/change_reply"}
            assert {a["params"]["code"] for a in answers} == {200}
        assert gw.calls_answered == 0  # notices are not calls

    asyncio.run(scenario())


def test_sub_devices_are_logged_in_again_after_the_server_restarts(
    platform_factory: Callable[..., RunningPlatform],
) -> None:
    port = free_port()
    hub = platform_factory(mqtt_port=port)
    gw_creds = register(hub, "p1", "gw")
    for name in ("s1", "s2"):
        register(hub, "p2", name, gateway=BOUND)

    async def scenario() -> None:
        gw = gateway(hub, gw_creds)
        s1 = gw.sub_device("p2", "s1")
        s1.on_property_get(lambda ids: {"back": True})
        await gw.connect()
        await s1.login()
        await asyncio.to_thread(platform_factory.stop, hub)  # type: ignore[attr-defined]
        again = await asyncio.to_thread(platform_factory, mqtt_port=port)
        await asyncio.wait_for(gw.client.connected.wait(), 10)
        assert gw.client.connects == 2
        async with api(again) as http:

            async def s1_online() -> bool:
                return await state(http, "s1") == "online"

            await until(s1_online, "s1 logged in again")
            assert await state(http, "s2") == "offline"  # never logged in
            r = await http.post(f"{P2}/s1/properties/get?timeout=5", json={"identifiers": []})
            assert r.status_code == 200 and r.json()["data"] == {"back": True}, r.text
            # Unbound while the gateway was away: its login is refused, and dropped.
            await gw.close()
            assert (await http.delete(f"{P2}/s1/gateway")).status_code == 204
            errors = gw.errors
            await gw.connect()

            async def dropped() -> bool:
                return not s1.logged_in

            await until(dropped, "s1's refused login dropped")
            assert gw.errors == errors + 1 and await state(http, "s1") == "offline"
        await gw.close()

    asyncio.run(scenario())


def test_the_blocking_face(hub: RunningPlatform) -> None:
    gw_creds = register(hub, "p1", "gw")
    register(hub, "p2", "s1", gateway=BOUND)
    dev = gateway(hub, gw_creds).blocking()
    with dev:
        s1 = dev.sub_device("p2", "s1")
        assert isinstance(s1, SubDevice) and repr(s1) == "SubDevice(p2/s1)"
        dev.login_sub_device(s1)
        dev.post_sub_properties(s1, {"temp": 7})
        dev.post_sub_event(s1, "alarm", {"level": 2})
        http = hub.http()
        assert http.get(f"{P2}/s1").json()["connectionState"] == "online"
        assert http.get(f"{P2}/s1/telemetry/latest").json()["temp"]["value"] == 7
        dev.logout_sub_device(("p2", "s1"))
        assert http.get(f"{P2}/s1").json()["connectionState"] == "offline"


def test_malformed_requests_are_answered_313_and_garbage_ignored(hub: RunningPlatform) -> None:
    """What the platform never sends, fed to the gateway as if it had: the answers
    it publishes (to the real server, which drops their unknown ids) are recorded."""
    gw_creds = register(hub, "p1", "gw")

    async def scenario() -> None:
        gw = gateway(hub, gw_creds)
        sent: list[tuple[str, dict[str, Any]]] = []
        publish = gw.client.publish

        async def recording(topic: str, payload: bytes | str, *args: Any) -> None:
            if "thing/sub/" in topic:
                sent.append((topic.removeprefix(gw.prefix + "thing/"), json.loads(payload)))
            await publish(topic, payload, *args)

        gw.client.publish = recording  # type: ignore[method-assign,assignment]

        def refuse(children: list[SubDevice]) -> None:
            raise RuntimeError("tree too big")

        junk = [1, {"productID": 1, "deviceName": "x"}, {"productID": "p2", "deviceName": "s1"}]
        async with gw:
            on_message = gw.client.on_message
            assert on_message is not None
            sub = gw.prefix + "thing/sub/"
            for topic, payload in [
                (sub + "property/set", b"{not json"),
                (sub + "property/set", b"[1]"),
                (sub + "property/set", b'{"id": "1", "params": []}'),
                (sub + "property/get", b'{"id": "2", "params": {"productID": "p2"}}'),
                (sub + "topo/change", b'{"id": "3", "params": {}}'),
                (
                    sub + "topo/change",
                    json.dumps({"id": "4", "params": {"subList": junk}}).encode(),
                ),
            ]:
                on_message(topic, payload)

            async def answered() -> bool:
                return len(sent) == 4

            await until(answered, "four answers")
            assert sorted((t, a["id"], a["code"]) for t, a in sent) == [
                ("sub/property/get_reply", "2", 313),
                ("sub/property/set_reply", "1", 313),
                ("sub/topo/change_reply", "3", 313),
                ("sub/topo/change_reply", "4", 200),
            ]
            assert [c.name for c in gw.children] == ["s1"]

            gw.on_topology_change(refuse)  # a handler that fails answers 500
            on_message(sub + "topo/change", b'{"id": "5", "params": {"subList": []}}')

            async def failed() -> bool:
                return len(sent) == 5

            await until(failed, "the failed handler's answer")
            assert sent[-1][1]["code"] == 500 and "tree too big" in sent[-1][1]["msg"]
            assert gw.errors == 1 and gw.calls_answered == 2 and gw.online

    asyncio.run(scenario())
