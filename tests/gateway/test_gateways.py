"""ThingsPanel gateways end to end, over real sockets in both MQTT versions: every
`gateway/...` topic of the gateway spec, three levels of sub-gateways, unknown
addresses skipped and counted, `devices/register`, the tree through the API (a
cycle and a sixth level refused), calls on a sub-device answered through its
gateway, and sub-devices' presence following their gateway's."""

from __future__ import annotations

import json
import threading
from typing import Any

from tests.api.test_stream import open_stream, receive
from tests.conftest import RunningPlatform
from tests.mqtt.clients import PahoClient, wait_until

Api = Any


def device(api: Api, name: str, pid: str = "p1", **fields: Any) -> dict[str, Any]:
    api.post("/api/v1/products", json={"id": pid, "name": pid})
    r = api.post(f"/api/v1/products/{pid}/devices", json={"name": name, **fields})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def child(api: Api, name: str, gateway: str, address: str, pid: str = "p1") -> dict[str, Any]:
    return device(
        api, name, pid, gateway={"product_id": "p1", "name": gateway}, sub_address=address
    )


def connect(platform: RunningPlatform, created: dict[str, Any], version: int) -> PahoClient:
    return PahoClient(
        platform.mqtt_port,
        created["name"],
        version=version,
        username=created["username"],
        password=created["password"],
    )


def tree(api: Api) -> dict[str, dict[str, Any]]:
    """gw -> a (address "a"), sg1 ("sg1") -> sg2 ("sg2") -> sg3 ("sg3") -> leaf ("leaf")."""
    made = {"gw": device(api, "gw")}
    made["a"] = child(api, "a", "gw", "a")
    made["sg1"] = child(api, "sg1", "gw", "sg1")
    made["sg2"] = child(api, "sg2", "sg1", "sg2")
    made["sg3"] = child(api, "sg3", "sg2", "sg3")
    made["leaf"] = child(api, "leaf", "sg3", "leaf:1", pid="p2")
    return made


def latest(api: Api, name: str, pid: str = "p1") -> dict[str, Any]:
    body: dict[str, Any] = api.get(f"/api/v1/products/{pid}/devices/{name}/telemetry/latest").json()
    return {k: v["value"] for k, v in body.items()}


def response(client: PahoClient, topic: str) -> dict[str, Any]:
    wait_until(lambda: any(m.topic == topic for m in client.messages), what=topic)
    body: dict[str, Any] = json.loads(next(m for m in client.messages if m.topic == topic).payload)
    return body


DEEP = {
    "gateway_data": {"t": 1},
    "sub_device_data": {"a": {"t": 2}, "ghost": {"t": 9}},
    "sub_gateway_data": {
        "sg1": {
            "gateway_data": {"t": 3},
            "sub_gateway_data": {
                "sg2": {
                    "sub_gateway_data": {
                        "sg3": {"gateway_data": {"t": 4}, "sub_device_data": {"leaf:1": {"t": 5}}}
                    }
                }
            },
        },
        "nobody": {"gateway_data": {"t": 9}},
    },
}


def test_telemetry_of_three_levels_of_sub_gateways(served: RunningPlatform, version: int) -> None:
    api = served.http()
    made = tree(api)
    gw = connect(served, made["gw"], version)
    assert gw.publish("gateway/telemetry", json.dumps(DEEP).encode(), qos=1) == 0
    # Acknowledged once stored: every known node has its points now.
    assert latest(api, "gw") == {"t": 1}
    assert latest(api, "a") == {"t": 2}
    assert latest(api, "sg1") == {"t": 3}
    assert latest(api, "sg2") == {}
    assert latest(api, "sg3") == {"t": 4}
    assert latest(api, "leaf", "p2") == {"t": 5}
    # Sub-devices heard from are online, reached through the gateway.
    for name, pid in (("a", "p1"), ("sg1", "p1"), ("sg3", "p1"), ("leaf", "p2")):
        state = api.get(f"/api/v1/products/{pid}/devices/{name}").json()["connectionState"]
        assert state == "online", name
    assert api.get("/api/v1/products/p1/devices/sg2").json()["connectionState"] == "offline"
    # Unknown addresses are skipped and counted (an answer names them, below).
    metrics = api.get("/metrics").text
    assert "thingshub_gateway_nodes_skipped_total 2.0" in metrics


def test_attributes_and_events_answered_on_the_gateway_topics(
    served: RunningPlatform, version: int
) -> None:
    api = served.http()
    made = tree(api)
    gw = connect(served, made["gw"], version)
    dn = made["gw"]["device_number"]
    assert gw.subscribe(
        f"gateway/attributes/response/{dn}/+", f"gateway/event/response/{dn}/+", qos=1
    ) == [1, 1]
    attrs = {
        "gateway_data": {"ip": "10.0.0.1"},
        "sub_device_data": {"ghost": {"x": 1}},
        "sub_gateway_data": {"sg1": {"sub_gateway_data": {"sg2": {"gateway_data": {"fw": "2"}}}}},
    }
    assert gw.publish("gateway/attributes/m1", json.dumps(attrs).encode(), qos=1) == 0
    answer = response(gw, f"gateway/attributes/response/{dn}/m1")
    assert answer["result"] == 0
    assert answer["message"] == "success; 1 unknown sub-device address skipped: ghost"
    assert api.get("/api/v1/products/p1/devices/gw/attributes").json() == {"ip": "10.0.0.1"}
    assert api.get("/api/v1/products/p1/devices/sg2/attributes").json() == {"fw": "2"}
    event = {"sub_device_data": {"a": {"method": "alarm", "params": {"level": 3}}}}
    assert gw.publish("gateway/event/e1", json.dumps(event).encode(), qos=1) == 0
    answer = response(gw, f"gateway/event/response/{dn}/e1")
    assert answer["result"] == 0 and answer["message"] == "success" and "method" not in answer
    events = api.get("/api/v1/products/p1/devices/a/events?start=0&end=99999999999999").json()
    assert [(e["method"], e["params"]) for e in events] == [("alarm", {"level": 3})]
    # A wrong shape anywhere stores nothing and is answered INVALID_PARAM.
    bad = {"gateway_data": {"ok": 1}, "sub_device_data": {"a": [1]}}
    assert gw.publish("gateway/attributes/m2", json.dumps(bad).encode(), qos=1) == 0
    answer = response(gw, f"gateway/attributes/response/{dn}/m2")
    assert answer["result"] == 1 and answer["errcode"] == "INVALID_PARAM"
    assert "ok" not in api.get("/api/v1/products/p1/devices/gw/attributes").json()
    six = {
        "sub_gateway_data": {
            "sg1": {
                "sub_gateway_data": {
                    "sg2": {
                        "sub_gateway_data": {
                            "sg3": {
                                "sub_gateway_data": {"leaf:1": {"sub_device_data": {"x": {"t": 1}}}}
                            }
                        }
                    }
                }
            }
        }
    }
    assert gw.publish("gateway/event/e2", json.dumps(six).encode(), qos=1) == 0
    answer = response(gw, f"gateway/event/response/{dn}/e2")
    assert answer["result"] == 1 and "deeper than 5 levels" in answer["message"]


def test_calls_on_a_sub_device_go_through_its_gateway(
    served: RunningPlatform, version: int
) -> None:
    api = served.http()
    made = tree(api)
    gw = connect(served, made["gw"], version)
    dn = made["gw"]["device_number"]
    granted = gw.subscribe(
        f"gateway/command/{dn}/+",
        f"gateway/attributes/set/{dn}/+",
        f"gateway/attributes/get/{dn}",
        f"gateway/telemetry/control/{dn}",
        qos=1,
    )
    assert granted == [1, 1, 1, 1]

    def answer_requests() -> None:
        for index in range(2):

            def requests() -> list[Any]:
                return [m for m in gw.messages if "/response/" not in m.topic]

            wait_until(lambda n=index: len(requests()) > n)  # type: ignore[misc]
            message = requests()[index]
            parts = message.topic.split("/")
            reply = f"gateway/{parts[1]}/response/{parts[-1]}"
            if parts[1] == "attributes":
                reply = f"gateway/attributes/set/response/{parts[-1]}"
            body = {"result": 0, "message": "done", "echo": json.loads(message.payload)}
            gw.publish(reply, json.dumps(body).encode(), qos=1)

    worker = threading.Thread(target=answer_requests)
    worker.start()
    r = api.post(
        "/api/v1/products/p2/devices/leaf/calls?timeout=5",
        json={"method": "reboot", "params": {"delay": 1}},
    )
    assert r.status_code == 200, r.text
    nested = {
        "sg1": {
            "sub_gateway_data": {
                "sg2": {
                    "sub_gateway_data": {
                        "sg3": {
                            "sub_device_data": {
                                "leaf:1": {"method": "reboot", "params": {"delay": 1}}
                            }
                        }
                    }
                }
            }
        }
    }
    assert r.json()["echo"] == {"sub_gateway_data": nested}
    r = api.put("/api/v1/products/p1/devices/a/attributes?timeout=5", json={"mode": 2})
    assert r.status_code == 200, r.text
    assert r.json()["echo"] == {"sub_device_data": {"a": {"mode": 2}}}
    worker.join(5)
    r = api.post("/api/v1/products/p1/devices/sg1/control", json={"on": True})
    assert r.status_code == 202, r.text
    wait_until(lambda: any("control" in m.topic for m in gw.messages))
    control = next(m for m in gw.messages if "control" in m.topic)
    assert control.topic == f"gateway/telemetry/control/{dn}"
    # sg1 has sub-devices of its own: it is addressed as a sub-gateway.
    assert json.loads(control.payload) == {
        "sub_gateway_data": {"sg1": {"gateway_data": {"on": True}}}
    }
    # The gateway itself, listening only in the gateway form, gets gateway_data.
    assert api.post("/api/v1/products/p1/devices/gw/control", json={"x": 1}).status_code == 202
    wait_until(lambda: len([m for m in gw.messages if "control" in m.topic]) == 2)
    own = [m for m in gw.messages if "control" in m.topic][1]
    assert json.loads(own.payload) == {"gateway_data": {"x": 1}}

    # An attribute get is answered by the gateway's next report for that device.
    def report_attributes() -> None:
        wait_until(lambda: any("attributes/get" in m.topic for m in gw.messages))
        asked = next(m for m in gw.messages if "attributes/get" in m.topic)
        assert asked.topic == f"gateway/attributes/get/{dn}"
        assert json.loads(asked.payload) == {"sub_device_data": {"a": ["fw"]}}
        report = {"sub_device_data": {"a": {"fw": "9", "other": 1}}}
        gw.publish("gateway/attributes/g1", json.dumps(report).encode(), qos=1)

    worker = threading.Thread(target=report_attributes)
    worker.start()
    r = api.post("/api/v1/products/p1/devices/a/attributes/get?timeout=5", json={"keys": ["fw"]})
    worker.join(5)
    assert r.status_code == 200 and r.json() == {"fw": "9"}, r.text
    records = api.get("/api/v1/products/p2/devices/leaf/commands").json()["items"]
    assert [r["status"] for r in records] == ["answered"]
    gw.disconnect()
    wait_until(
        lambda: api.get("/api/v1/products/p1/devices/gw").json()["connectionState"] == "offline"
    )
    r = api.post("/api/v1/products/p1/devices/a/calls?timeout=1", json={"method": "m"})
    assert r.status_code == 409 and "gateway 'gw'" in r.json()["error"]


def test_sub_devices_go_offline_with_their_gateway_on_the_stream(
    served: RunningPlatform, version: int
) -> None:
    api = served.http()
    made = tree(api)
    with open_stream(served, "device=a&kinds=presence,telemetry") as ws:
        gw = connect(served, made["gw"], version)
        payload = {"sub_device_data": {"a": {"t": 1}}}
        assert gw.publish("gateway/telemetry", json.dumps(payload).encode(), qos=1) == 0
        assert receive(ws, "presence")["data"] == {"connectionState": "online"}
        telemetry = receive(ws, "telemetry")
        assert telemetry["product_id"] == "p1" and telemetry["data"]["values"] == {"t": 1}
        gw.disconnect()
        assert receive(ws, "presence")["data"] == {"connectionState": "offline"}
    state = api.get("/api/v1/products/p1/devices/a").json()["connectionState"]
    assert state == "offline"
    subs = api.get("/api/v1/products/p1/devices/gw/sub-devices").json()
    assert [(s["name"], s["sub_address"], s["connectionState"]) for s in subs["items"]] == [
        ("a", "a", "offline"),
        ("sg1", "sg1", "offline"),
    ]


def test_gateways_register_their_sub_devices(served: RunningPlatform, version: int) -> None:
    api = served.http()
    gw_dev = device(api, "gw")
    device(api, "other", "meters")
    device(api, "gw-taken")  # the name `taken` would get
    gw = connect(served, gw_dev, version)
    dn = gw_dev["device_number"]
    assert gw.subscribe(f"devices/register/response/{dn}", qos=1) == [1]
    registers = [
        {"sub_addr": "s:1", "model": "meters"},
        {"sub_addr": "s2"},
        {"sub_addr": "taken"},
        {"sub_addr": "bad/addr"},
    ]
    body = json.dumps({"registers": registers}).encode()
    assert gw.publish("devices/register", body, qos=1) == 0
    answer = response(gw, f"devices/register/response/{dn}")
    assert answer["type"] == "sub-register-response" and answer["status"] == "success"
    results = {k: (v["result"], v["errorcode"]) for k, v in answer["registersRes"].items()}
    assert results == {
        "s:1": (0, ""),
        "s2": (0, ""),
        "taken": (1, "INVALID_PARAM"),
        "bad/addr": (1, "INVALID_PARAM"),
    }
    meter = api.get("/api/v1/products/meters/devices/gw-s_1").json()
    assert meter["gateway"] == {"product_id": "p1", "name": "gw", "sub_address": "s:1"}
    gw.messages.clear()
    assert gw.publish("devices/register", json.dumps({"registers": registers[1:2]}).encode()) == 0
    again = response(gw, f"devices/register/response/{dn}")
    assert again["registersRes"]["s2"]["errorcode"] == "exists"
    gw.messages.clear()
    assert gw.publish("devices/register", b"nope") == 0
    assert response(gw, f"devices/register/response/{dn}")["status"] == "fail"
    # Registered sub-devices report through the gateway at once.
    telemetry = {"sub_device_data": {"s:1": {"kwh": 7}}}
    assert gw.publish("gateway/telemetry", json.dumps(telemetry).encode(), qos=1) == 0
    assert latest(api, "gw-s_1", "meters") == {"kwh": 7}


def test_the_tree_through_the_api(platform: RunningPlatform) -> None:
    api = platform.http()
    made = tree(api)
    assert made["a"]["gateway"] == {"product_id": "p1", "name": "gw", "sub_address": "a"}
    assert api.get("/api/v1/products/p1/devices/gw").json()["gateway"] is None
    # A cycle, a sixth level, a missing gateway, a sibling's address.
    cycle = api.put(
        "/api/v1/products/p1/devices/gw/gateway", json={"product_id": "p1", "name": "sg2"}
    )
    assert cycle.status_code == 400 and "cycle" in cycle.json()["error"]
    itself = api.put(
        "/api/v1/products/p1/devices/gw/gateway", json={"product_id": "p1", "name": "gw"}
    )
    assert itself.status_code == 400
    deep = api.post(
        "/api/v1/products/p1/devices",
        json={"name": "x", "gateway": {"product_id": "p2", "name": "leaf"}, "sub_address": "x"},
    )
    assert deep.status_code == 400 and "at most 5 levels" in deep.json()["error"]
    device(api, "top")
    moved = api.put(
        "/api/v1/products/p1/devices/gw/gateway", json={"product_id": "p1", "name": "top"}
    )
    assert moved.status_code == 400  # gw's tree is 5 deep: under top it would be 6
    assert "6 devices deep" in moved.json()["error"]
    missing = api.put(
        "/api/v1/products/p1/devices/top/gateway", json={"product_id": "p1", "name": "no"}
    )
    assert missing.status_code == 404
    clash = api.put(
        "/api/v1/products/p1/devices/top/gateway",
        json={"product_id": "p1", "name": "gw", "sub_address": "a"},
    )
    assert clash.status_code == 409 and "sub_address" in clash.json()["error"]
    with open_stream(platform, "device=top&kinds=topology") as ws:
        ok = api.put(
            "/api/v1/products/p1/devices/top/gateway",
            json={"product_id": "p1", "name": "gw", "sub_address": "t"},
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["gateway"] == {"product_id": "p1", "name": "gw", "sub_address": "t"}
        assert receive(ws, "topology")["data"] == {"gateway": {"product_id": "p1", "name": "gw"}}
        assert api.delete("/api/v1/products/p1/devices/top/gateway").status_code == 204
        assert receive(ws, "topology")["data"] == {"gateway": None}
    assert api.get("/api/v1/products/p1/devices/top").json()["gateway"] is None
    page = api.get("/api/v1/products/p1/devices/gw/sub-devices?limit=1").json()
    assert [d["name"] for d in page["items"]] == ["a"] and page["next"]
    rest = api.get(f"/api/v1/products/p1/devices/gw/sub-devices?cursor={page['next']}").json()
    assert [d["name"] for d in rest["items"]] == ["sg1"] and rest["next"] is None
    # Deleting a gateway unbinds its children.
    assert api.delete("/api/v1/products/p1/devices/sg3").status_code == 204
    assert api.get("/api/v1/products/p2/devices/leaf").json()["gateway"] is None
