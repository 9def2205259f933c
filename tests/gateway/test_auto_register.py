"""`gateway_auto_register` end to end, over real sockets in both MQTT versions: a
gateway whose product sets it false has `devices/register` refused whole (status
"fail", nothing created, even in another product its entry names), and turning it
back on through the API lets the same request through."""

from __future__ import annotations

import json

from tests.conftest import RunningPlatform
from tests.gateway.test_gateways import Api, connect, device, response


def products(api: Api) -> None:
    r = api.post(
        "/api/v1/products", json={"id": "p1", "name": "p1", "gateway_auto_register": False}
    )
    assert r.status_code == 201 and r.json()["gateway_auto_register"] is False
    assert api.post("/api/v1/products", json={"id": "meters", "name": "m"}).status_code == 201


def test_registration_off_refuses_the_request_whole(served: RunningPlatform, version: int) -> None:
    api = served.http()
    products(api)
    gw_dev = device(api, "gw")
    gw = connect(served, gw_dev, version)
    topic = f"devices/register/response/{gw_dev['device_number']}"
    assert gw.subscribe(topic, qos=1) == [1]
    body = json.dumps({"registers": [{"sub_addr": "s1"}, {"sub_addr": "s2", "model": "meters"}]})
    assert gw.publish("devices/register", body.encode(), qos=1) == 0
    answer = response(gw, topic)
    assert answer["type"] == "sub-register-response" and answer["status"] == "fail"
    assert "gateway_auto_register" in answer["message"] and "registersRes" not in answer
    assert api.get("/api/v1/products/p1/devices/gw/sub-devices").json()["items"] == []
    assert api.get("/api/v1/products/meters/devices/gw-s2").status_code == 404

    patched = api.patch("/api/v1/products/p1", json={"gateway_auto_register": True})
    assert patched.status_code == 200 and patched.json()["gateway_auto_register"] is True
    gw.messages.clear()
    assert gw.publish("devices/register", body.encode(), qos=1) == 0
    answer = response(gw, topic)
    assert answer["status"] == "success"
    assert {k: v["result"] for k, v in answer["registersRes"].items()} == {"s1": 0, "s2": 0}
    assert api.get("/api/v1/products/meters/devices/gw-s2").json()["gateway"]["name"] == "gw"
