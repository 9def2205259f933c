"""OneNET gateways end to end, over real sockets in both MQTT versions: every
`thing/sub/...` topic on the gateway's own prefix (login and logout, topology
add, delete and get with their token checks, topo/change after API changes),
sub-device data in `pack/post` and `history/post`, and the thing calls to a
sub-device answered through its gateway (also on `get_reply`, as OneNET's C
SDK answers a failed set)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.api.test_stream import open_stream, receive
from tests.conftest import RunningPlatform
from tests.gateway.test_gateways import device
from tests.mqtt.clients import PahoClient, wait_until
from thingshub.dialects.onenet import token as onenet

Api = Any
GW = "$sys/p1/gw/thing/"


def sas(made: dict[str, Any], pid: str = "p2", expires: int = 3600, **kw: Any) -> str:
    return onenet.make_token(
        made["key"], pid, made["name"], int(time.time()) + expires, method="sha1", **kw
    )


def connect(
    served: RunningPlatform, made: dict[str, Any], version: int, pid: str = "p1"
) -> PahoClient:
    token = onenet.make_token(made["key"], pid, made["name"], int(time.time()) + 3600)
    client = PahoClient(
        served.mqtt_port, made["name"], version=version, username=pid, password=token
    )
    client.subscribe(f"$sys/{pid}/{made['name']}/thing/#", qos=1)
    return client


def replies(client: PahoClient, topic: str) -> list[bytes]:
    return [m.payload for m in client.messages if m.topic == GW + topic]


def post(client: PahoClient, topic: str, body: Any) -> dict[str, Any]:
    """Publish a request at QoS 1; the reply that answers it (compact JSON)."""
    before = len(replies(client, topic + "/reply"))
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    assert client.publish(GW + topic, raw, qos=1) == 0
    wait_until(lambda: len(replies(client, topic + "/reply")) > before, what=topic + "/reply")
    raw_reply = replies(client, topic + "/reply")[before]
    reply: dict[str, Any] = json.loads(raw_reply)
    assert raw_reply == json.dumps(reply, separators=(",", ":"), ensure_ascii=False).encode()
    return reply


def state(api: Api, name: str, pid: str = "p2") -> str:
    body: dict[str, Any] = api.get(f"/api/v1/products/{pid}/devices/{name}").json()
    return str(body["connectionState"])


def gateway_of(api: Api, name: str, pid: str = "p2") -> Any:
    return api.get(f"/api/v1/products/{pid}/devices/{name}").json()["gateway"]


def ident(name: str, pid: str = "p2") -> dict[str, str]:
    return {"productID": pid, "deviceName": name}


@pytest.fixture
def setup(served: RunningPlatform, version: int) -> tuple[Api, dict[str, Any], PahoClient]:
    """gw (p1) online and listening; s1, s2 (p2) bound to it; free and other's (p2) not."""
    api = served.http()
    made = {"gw": device(api, "gw"), "other": device(api, "other")}
    bound = {"product_id": "p1", "name": "gw"}
    for name in ("s1", "s2"):
        made[name] = device(api, name, "p2", gateway=bound)
    made["free"] = device(api, "free", "p2")
    made["theirs"] = device(api, "theirs", "p2", gateway={"product_id": "p1", "name": "other"})
    return api, made, connect(served, made["gw"], version)


def test_login_and_logout_make_a_sub_device_online_and_offline(setup: Any) -> None:
    api, _, gw = setup
    assert post(gw, "sub/login", {"id": "1", "params": ident("s1")}) == {
        "id": "1",
        "code": 200,
        "msg": "success",
    }
    assert state(api, "s1") == "online" and state(api, "s2") == "offline"
    assert post(gw, "sub/logout", {"id": 2, "params": ident("s1")})["code"] == 200
    assert state(api, "s1") == "offline"
    # Not bound to this gateway: 307; no such device: 1107; a bad shape: 313.
    assert post(gw, "sub/login", {"id": "3", "params": ident("free")})["code"] == 307
    assert post(gw, "sub/login", {"id": "4", "params": ident("theirs")})["code"] == 307
    reply = post(gw, "sub/logout", {"id": "5", "params": ident("ghost")})
    assert reply["code"] == 1107 and reply["msg"].startswith("device not found")
    assert post(gw, "sub/login", {"id": "6", "params": {"productID": "p2"}})["code"] == 313
    assert post(gw, "sub/login", {"id": "x", "params": ident("s1")}) == {
        "id": "x",
        "code": 312,
        "msg": "invalid msg id: id must be a string of 1-13 decimal digits",
    }
    assert post(gw, "sub/login", b"{")["code"] == 301
    assert state(api, "free") == "offline"


def test_presence_follows_the_gateway(served: RunningPlatform, setup: Any) -> None:
    api, _, gw = setup
    with open_stream(served) as ws:
        assert post(gw, "sub/login", {"id": "1", "params": ident("s2")})["code"] == 200
        message = receive(ws, "presence")
        assert (message["product_id"], message["device"]) == ("p2", "s2")
        assert message["data"] == {"connectionState": "online"}
        gw.disconnect()
        seen = [receive(ws, "presence") for _ in range(2)]  # the gateway's and s2's
        assert {(m["device"], m["data"]["connectionState"]) for m in seen} == {
            ("gw", "offline"),
            ("s2", "offline"),
        }
    assert state(api, "s2") == "offline" and state(api, "gw", "p1") == "offline"


def test_topo_add_delete_and_get(setup: Any) -> None:
    api, made, gw = setup
    free = made["free"]
    add = {"id": "1", "params": {**ident("free"), "sasToken": sas(free)}}
    assert post(gw, "sub/topo/add", add)["code"] == 200
    assert gateway_of(api, "free") == {"product_id": "p1", "name": "gw", "sub_address": None}
    assert post(gw, "sub/topo/add", {**add, "id": "2"})["code"] == 200  # again: 200
    get = post(gw, "sub/topo/get", {"id": "3"})
    assert get["code"] == 200
    assert sorted(d["deviceName"] for d in get["data"]) == ["free", "s1", "s2"]
    assert post(gw, "sub/topo/get", {"id": "4", "params": {}})["code"] == 200
    assert post(gw, "sub/topo/get", {"id": "5", "params": [1]})["code"] == 313
    # The gateway's result of the listing is recorded as one of its events.
    gw.publish(GW + "sub/topo/get/result", b'{"id":"3","code":200,"msg":"ok"}', qos=1)
    wait_until(lambda: events(api, "gw"), what="the recorded result")
    assert events(api, "gw")[0]["method"] == "sub/topo/get/result"
    assert events(api, "gw")[0]["params"] == {"id": "3", "code": 200, "msg": "ok"}
    delete = {"id": "6", "params": {**ident("free"), "sasToken": sas(free)}}
    assert post(gw, "sub/topo/delete", delete)["code"] == 200
    assert gateway_of(api, "free") is None
    assert post(gw, "sub/topo/delete", {**delete, "id": "7"})["code"] == 200  # unbound: 200
    # A device bound to another gateway: 313, for add and delete alike.
    theirs = {**ident("theirs"), "sasToken": sas(made["theirs"])}
    assert post(gw, "sub/topo/add", {"id": "8", "params": theirs})["code"] == 313
    assert post(gw, "sub/topo/delete", {"id": "9", "params": theirs})["code"] == 313
    assert gateway_of(api, "theirs")["name"] == "other"
    assert post(gw, "sub/topo/add", {"id": "10", "params": ident("free")})["code"] == 313


def events(api: Api, name: str, pid: str = "p1") -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.get(
        f"/api/v1/products/{pid}/devices/{name}/events?start=0&end=99999999999999"
    ).json()
    return items


def test_sas_token_checks(setup: Any) -> None:
    api, made, gw = setup
    free = made["free"]

    def add(token: str, name: str = "free") -> int:
        reply = post(gw, "sub/topo/add", {"id": "1", "params": {**ident(name), "sasToken": token}})
        return int(reply["code"])

    assert add("not a token") == 1103
    assert add(sas(made["s1"]).replace("s1", "free")) == 1106  # res names free, signed by s1's key
    assert add(sas(made["s1"])) == 1103  # res names another device
    assert add(sas(free, expires=-10)) == 1104
    ghost = {"key": free["key"], "name": "ghost"}
    assert add(sas(ghost), "ghost") == 1107
    wrong = {"key": made["s1"]["key"], "name": "free"}
    assert add(sas(wrong)) == 1106
    assert gateway_of(api, "free") is None


def test_topo_change_after_api_changes(setup: Any) -> None:
    api, _, gw = setup

    def changes() -> list[dict[str, Any]]:
        return [json.loads(p) for p in replies(gw, "sub/topo/change")]

    r = api.put("/api/v1/products/p2/devices/free/gateway", json={"product_id": "p1", "name": "gw"})
    assert r.status_code == 200, r.text
    wait_until(lambda: len(changes()) == 1, what="topo/change")
    change = changes()[0]
    assert change["version"] == "1.0" and change["id"].isdigit()
    assert sorted(d["deviceName"] for d in change["params"]["subList"]) == ["free", "s1", "s2"]
    assert api.delete("/api/v1/products/p2/devices/s1/gateway").status_code == 204
    wait_until(lambda: len(changes()) == 2, what="second topo/change")
    assert sorted(d["deviceName"] for d in changes()[1]["params"]["subList"]) == ["free", "s2"]
    device(api, "s3", "p2", gateway={"product_id": "p1", "name": "gw"})
    wait_until(lambda: len(changes()) == 3, what="third topo/change")
    assert api.delete("/api/v1/products/p2/devices/s3").status_code == 204  # deleted: gone too
    wait_until(lambda: len(changes()) == 4, what="topo/change after a deletion")
    assert sorted(d["deviceName"] for d in changes()[3]["params"]["subList"]) == ["free", "s2"]
    # The gateway's answer is recorded; its own changes are not told back to it.
    gw.publish(
        GW + "sub/topo/change_reply",
        json.dumps({"id": change["id"], "code": 200, "msg": "ok"}).encode(),
        qos=1,
    )
    wait_until(lambda: events(api, "gw"), what="the recorded answer")
    assert events(api, "gw")[0]["method"] == "sub/topo/change_reply"
    made_free = api.get("/api/v1/products/p2/devices/free").json()
    assert made_free["gateway"]["name"] == "gw"
    time.sleep(0.2)
    assert len(changes()) == 4


def test_pack_and_history_with_identity(setup: Any) -> None:
    api, _, gw = setup
    pack = {
        "id": "1",
        "params": [
            {"properties": {"t": {"value": 1}}},
            {
                "identity": ident("s1"),
                "properties": {"t": {"value": 2}},
                "events": {"alarm": {"value": {"l": 1}}},
            },
            {"identity": ident("gw", "p1"), "properties": {"u": {"value": 3}}},
        ],
    }
    assert post(gw, "pack/post", pack)["code"] == 200
    assert latest(api, "s1", "p2") == {"t": 2} and latest(api, "gw", "p1") == {"t": 1, "u": 3}
    assert events(api, "s1", "p2")[0]["method"] == "alarm"
    assert state(api, "s1") == "online"
    history = {
        "id": "2",
        "params": [
            {"identity": ident("s2"), "properties": {"t": [{"value": 5, "time": 1700000000000}]}}
        ],
    }
    assert post(gw, "history/post", history)["code"] == 200
    assert latest(api, "s2", "p2") == {"t": 5} and state(api, "s2") == "online"
    # A device outside its tree refuses the whole message: nothing stored.
    bad = {
        "id": "3",
        "params": [
            {"identity": ident("s1"), "properties": {"t": {"value": 7}}},
            {"identity": ident("free"), "properties": {"t": {"value": 7}}},
        ],
    }
    assert post(gw, "pack/post", bad)["code"] == 307
    assert (
        post(
            gw,
            "pack/post",
            {**bad, "params": [{"identity": ident("ghost"), "properties": {"t": {"value": 1}}}]},
        )["code"]
        == 307
    )
    assert latest(api, "s1", "p2") == {"t": 2} and latest(api, "free", "p2") == {}
    assert state(api, "free") == "offline"


def latest(api: Api, name: str, pid: str) -> dict[str, Any]:
    body: dict[str, Any] = api.get(f"/api/v1/products/{pid}/devices/{name}/telemetry/latest").json()
    return {k: v["value"] for k, v in body.items()}


def answering(
    gw: PahoClient, answer: Callable[[str, dict[str, Any]], tuple[str, dict[str, Any]]]
) -> threading.Thread:
    """Answer the next request on a `sub/...` call topic with `answer(topic, request)`."""

    def run() -> None:
        def calls() -> list[Any]:
            return [
                m
                for m in gw.messages
                if m.topic.startswith(GW + "sub/")
                and m.topic.rsplit("/", 1)[-1] in ("set", "get", "invoke")
            ]

        wait_until(calls, what="a call")
        message = calls()[0]
        topic, body = answer(message.topic.removeprefix(GW), json.loads(message.payload))
        gw.publish(GW + topic, json.dumps(body).encode(), qos=1)

    worker = threading.Thread(target=run)
    worker.start()
    return worker


def test_calls_to_a_sub_device_go_through_its_gateway(setup: Any) -> None:
    api, _, gw = setup
    seen: list[tuple[str, dict[str, Any]]] = []

    def set_reply(topic: str, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        seen.append((topic, request))
        return "sub/property/set_reply", {"id": request["id"], "code": 200, "msg": "success"}

    worker = answering(gw, set_reply)
    r = api.post("/api/v1/products/p2/devices/s1/properties?timeout=5", json={"t": 21})
    worker.join(5)
    assert r.status_code == 200, r.text
    assert r.json()["code"] == 200
    topic, request = seen[0]
    assert topic == "sub/property/set"
    assert request["params"] == {"productID": "p2", "deviceName": "s1", "params": {"t": 21}}
    gw.messages.clear()

    def invoke_reply(topic: str, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        seen.append((topic, request))
        data = {**request["params"], "output": {"c": 3}}
        data.pop("input")
        return "sub/service/invoke_reply", {
            "id": request["id"],
            "code": 200,
            "msg": "ok",
            "data": data,
        }

    worker = answering(gw, invoke_reply)
    r = api.post("/api/v1/products/p2/devices/s1/services/add?timeout=5", json={"a": 1, "b": 2})
    worker.join(5)
    assert r.status_code == 200, r.text
    assert seen[-1][0] == "sub/service/invoke"
    assert seen[-1][1]["params"] == {
        "productID": "p2",
        "deviceName": "s1",
        "identifier": "add",
        "input": {"a": 1, "b": 2},
    }
    assert r.json()["data"]["output"] == {"c": 3}
    gw.messages.clear()

    def get_reply(topic: str, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        seen.append((topic, request))
        return "sub/property/get_reply", {
            "id": request["id"],
            "code": 200,
            "msg": "success",
            "data": {"t": 21},
        }

    worker = answering(gw, get_reply)
    r = api.post(
        "/api/v1/products/p2/devices/s1/properties/get?timeout=5", json={"identifiers": ["t"]}
    )
    worker.join(5)
    assert r.status_code == 200 and r.json()["data"] == {"t": 21}, r.text
    assert seen[-1][1]["params"] == {"productID": "p2", "deviceName": "s1", "params": ["t"]}
    records = api.get("/api/v1/products/p2/devices/s1/commands").json()["items"]
    assert [r["status"] for r in records] == ["answered"] * 3


def test_a_failed_set_answered_on_get_reply(setup: Any) -> None:
    api, _, gw = setup

    def failed(topic: str, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return "sub/property/get_reply", {"id": request["id"], "code": 100, "msg": "failed"}

    worker = answering(gw, failed)
    r = api.post("/api/v1/products/p2/devices/s2/properties?timeout=5", json={"t": 1})
    worker.join(5)
    assert r.status_code == 200, r.text
    assert r.json()["code"] == 100 and r.json()["msg"] == "failed"


def test_call_errors_through_the_gateway(served: RunningPlatform, setup: Any, version: int) -> None:
    api, made, gw = setup
    # No answer in time: 504 (306).
    r = api.post("/api/v1/products/p2/devices/s1/properties?timeout=1", json={"t": 1})
    assert r.status_code == 504 and r.json()["err_code"] == 306, r.text
    # An answer without an integer code: 502 (304).
    gw.messages.clear()
    worker = answering(gw, lambda t, req: ("sub/property/set_reply", {"id": req["id"]}))
    r = api.post("/api/v1/products/p2/devices/s1/properties?timeout=5", json={"t": 1})
    worker.join(5)
    assert r.status_code == 502 and r.json()["err_code"] == 304, r.text
    # Not subscribed to the sub-device call topics: 409 (1022), nothing sent.
    quiet = connect(served, made["other"], version)
    quiet.unsubscribe("$sys/p1/other/thing/#")
    time.sleep(0.1)
    r = api.post("/api/v1/products/p2/devices/theirs/properties?timeout=1", json={"t": 1})
    assert r.status_code == 409 and r.json()["err_code"] == 1022, r.text
    # The gateway offline: 409 (308).
    gw.disconnect()
    wait_until(lambda: state(api, "gw", "p1") == "offline")
    r = api.post(
        "/api/v1/products/p2/devices/s1/properties/get?timeout=1", json={"identifiers": []}
    )
    assert r.status_code == 409 and r.json()["err_code"] == 308, r.text


def test_acl_own_prefix_only(served: RunningPlatform, setup: Any, version: int) -> None:
    api, _made, gw = setup
    expected = 0x87 if version == 5 else 0  # 3.1.1: PUBACK as Mosquitto does, dropped
    before = served.call(lambda: served.platform.broker.stats.denied_publish)
    login = json.dumps({"id": "1", "params": ident("theirs")}).encode()
    # Another gateway's prefix, and the platform's own request topics: refused.
    for topic in (
        "$sys/p1/other/thing/sub/login",
        GW + "sub/property/set",
        GW + "sub/topo/change",
        GW + "sub/service/invoke",
    ):
        assert gw.publish(topic, login, qos=1) == expected, topic
    after = served.call(lambda: served.platform.broker.stats.denied_publish)
    assert after - before == 4
    assert state(api, "theirs") == "offline"
    refusal = 0x87 if version == 5 else 0x80
    assert gw.subscribe("$sys/p1/other/thing/sub/#", qos=1) == [refusal]
    assert gw.subscribe(GW + "sub/#", qos=1) == [1]
