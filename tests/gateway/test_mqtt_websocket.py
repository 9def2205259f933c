"""Devices over MQTT over WebSocket (`ws://host:http-port/mqtt`), end to end on the
platform with paho-mqtt (`transport="websockets"`) in both MQTT versions: ThingsPanel
and OneNET logins, a round trip, QoS 1 telemetry stored before its PUBACK, a OneNET
command answered through the API, a wrong login refused with the protocol's code,
topic rights, takeover between a TCP and a WebSocket connection of one device, and the
metrics. No API key: devices log in with their MQTT logins."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from tests.conftest import RunningPlatform
from tests.gateway.test_commands import answer_with, echo
from tests.mqtt.clients import PahoClient, wait_until
from tests.mqtt.wsclient import WsRawClient
from thingshub.dialects.onenet import token as onenet


def register(api: Any, name: str, pid: str = "p1") -> dict[str, Any]:
    api.post("/api/v1/products", json={"id": pid, "name": pid})
    r = api.post(f"/api/v1/products/{pid}/devices", json={"name": name})
    assert r.status_code == 201, r.text
    made: dict[str, Any] = r.json()
    return made


def thingspanel(
    p: RunningPlatform, dev: dict[str, Any], version: int, *, websocket: bool = True, **kw: Any
) -> PahoClient:
    port = p.http_port if websocket else p.mqtt_port
    return PahoClient(
        port,
        kw.pop("client_id", "tp"),
        version=version,
        username=dev["username"],
        password=kw.pop("password", dev["password"]),
        websocket=websocket,
        **kw,
    )


def onenet_device(p: RunningPlatform, dev: dict[str, Any], version: int) -> PahoClient:
    token = onenet.make_token(dev["key"], "p1", dev["name"], int(time.time()) + 3600)
    return PahoClient(
        p.http_port, dev["name"], version=version, username="p1", password=token, websocket=True
    )


def metric(p: RunningPlatform, line_start: str) -> float:
    text = p.http().get("/metrics").text
    line = next(x for x in text.splitlines() if x.startswith(line_start))
    return float(line.rsplit(" ", 1)[1])


def test_thingspanel_login_round_trip_and_stored_telemetry(
    served: RunningPlatform, version: int
) -> None:
    api = served.http()
    dev = register(api, "d1")
    dn = dev["device_number"]
    client = thingspanel(served, dev, version)
    assert client.subscribe(f"devices/attributes/response/{dn}/+", qos=1) == [1]
    assert client.publish("devices/attributes/m1", b'{"fw": "1.2"}', qos=1) == 0
    answer = client.wait_messages(1)[0]
    assert answer.topic == f"devices/attributes/response/{dn}/m1"
    assert json.loads(answer.payload)["result"] == 0
    # QoS 1 telemetry is PUBACKed once stored: readable at once.
    assert client.publish("devices/telemetry", b'{"t": 21.5}', qos=1) == 0
    latest = api.get("/api/v1/products/p1/devices/d1/telemetry/latest").json()
    assert latest["t"]["value"] == 21.5
    assert api.get("/api/v1/products/p1/devices/d1").json()["connectionState"] == "online"
    assert metric(served, "thingshub_mqtt_websocket_connections ") == 1.0
    assert metric(served, "thingshub_mqtt_connections ") == 1.0
    client.disconnect()
    wait_until(lambda: metric(served, "thingshub_mqtt_websocket_connections ") == 0.0)
    assert metric(served, 'thingshub_mqtt_websocket_events_total{event="connections_total"}') == 1


def test_onenet_token_login_command_and_data_points(served: RunningPlatform, version: int) -> None:
    api = served.http()
    dev = register(api, "d1")
    client = onenet_device(served, dev, version)
    seen = answer_with(client, "$sys/p1/d1/cmd/request/+", echo("$sys/p1/d1"))
    r = api.post("/api/v1/products/p1/devices/d1/commands", content=b"on", params={"timeout": 5})
    assert r.status_code == 200, r.text
    assert base64.b64decode(r.json()["response"]) == b"done:on"
    assert seen[0].payload == b"on"
    assert client.subscribe("$sys/p1/d1/dp/post/json/+", qos=1) == [1]
    post = {"id": 3, "dp": {"level": [{"v": 7}]}}
    assert client.publish("$sys/p1/d1/dp/post/json", json.dumps(post).encode(), qos=1) == 0
    latest = api.get("/api/v1/products/p1/devices/d1/telemetry/latest").json()
    assert latest["level"]["value"] == 7
    accepted = client.wait_messages(1)[-1]
    assert (accepted.topic, json.loads(accepted.payload)) == (
        "$sys/p1/d1/dp/post/json/accepted",
        {"id": 3},
    )


def test_a_wrong_login_is_refused_with_the_protocols_code(
    served: RunningPlatform, version: int
) -> None:
    dev = register(served.http(), "d1")
    client = WsRawClient(served.http_port, version)  # paho shows 3.1.1's code as 0x86
    connack = client.connect("tp", username=dev["username"], password=b"wrong")
    assert connack.reason_code == (0x86 if version == 5 else 4)
    assert client.wait_closed() == [] and client.close_code == 1000


def test_topic_rights_hold_over_websocket(served: RunningPlatform, version: int) -> None:
    api = served.http()
    dev, other = register(api, "d1"), register(api, "d2")
    client = thingspanel(served, dev, version)
    refused = 0x87 if version == 5 else 0x80
    assert client.subscribe(f"devices/command/{other['device_number']}/+", qos=1) == [refused]
    assert client.subscribe("#", qos=1) == [refused]
    code = client.publish("$sys/p1/d2/dp/post/json", b'{"id": 1, "dp": {}}', qos=1)
    assert code == (0x87 if version == 5 else 0)
    assert api.get("/api/v1/products/p1/devices/d2/telemetry/latest").json() == {}


def test_takeover_between_tcp_and_websocket(served: RunningPlatform, version: int) -> None:
    dev = register(served.http(), "d1")
    over_tcp = thingspanel(served, dev, version, websocket=False, client_id="first")
    over_ws = thingspanel(served, dev, version, client_id="second")
    code = over_tcp.wait_disconnected()
    if version == 5:
        assert (code, over_tcp.disconnect_from_server) == (0x8E, True)
    again_tcp = thingspanel(served, dev, version, websocket=False, client_id="third")
    code = over_ws.wait_disconnected()
    if version == 5:
        assert (code, over_ws.disconnect_from_server) == (0x8E, True)
    assert again_tcp.publish("devices/telemetry", b'{"t": 1}', qos=1) == 0
