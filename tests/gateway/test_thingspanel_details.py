"""What ThingsPanel firmware relies on beyond the direct-device topics, end to end over
real sockets in both MQTT versions: an access token as the whole login (user name
alone), the OTA inform on either spelling (`inform`, and `infrom` as ThingsPanel's
default configuration has it), and the `devices/status/{dn}` presence topic."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.conftest import RunningPlatform
from tests.gateway.test_login import BAD_CREDENTIALS, refused
from tests.gateway.test_ota import TASKS, upload
from tests.mqtt.clients import PahoClient, wait_until


@pytest.fixture(params=[5, 4], ids=["mqtt5", "mqtt311"])
def version(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def make_device(platform: RunningPlatform, name: str, **fields: Any) -> dict[str, Any]:
    api = platform.http()
    api.post("/api/v1/products", json={"id": "p1", "name": "p1"})
    r = api.post("/api/v1/products/p1/devices", json={"name": name, **fields})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def token_client(platform: RunningPlatform, token: str, version: int, **kw: Any) -> PahoClient:
    return PahoClient(platform.mqtt_port, "tp", version=version, username=token, **kw)


def test_an_access_token_alone_logs_in(platform: RunningPlatform, version: int) -> None:
    generated = make_device(platform, "d1", access_token=True)["access_token"]
    assert len(generated) == 20 and generated.isalnum()
    given = make_device(platform, "d2", access_token="tok-en:123")["access_token"]
    assert given == "tok-en:123"
    assert make_device(platform, "d3")["access_token"] is None  # only when asked for
    for token in (generated, given):
        client = token_client(platform, token, version)
        assert client.connack_code == 0
        assert client.publish("devices/telemetry", b'{"t": 1}', qos=1) == 0
        client.disconnect()
    api = platform.http()
    assert api.get("/api/v1/products/p1/devices/d2/telemetry/latest").json()["t"]["value"] == 1
    bad = BAD_CREDENTIALS[version]
    assert refused(platform.mqtt_port, version, "tp", "nope", None) == bad
    empty = PahoClient(
        platform.mqtt_port, "tp", version=version, username=given, password="", connect=False
    )
    assert empty.connect() == 0  # an empty password is no password
    clash = api.post("/api/v1/products/p1/devices", json={"name": "d4", "access_token": given})
    assert clash.status_code == 409
    spaced = api.post("/api/v1/products/p1/devices", json={"name": "d5", "access_token": "a b"})
    assert spaced.status_code == 400
    api.delete("/api/v1/products/p1/devices/d2")
    assert refused(platform.mqtt_port, version, "tp", given, None) == bad


def test_the_ota_inform_reaches_either_spelling(platform: RunningPlatform, version: int) -> None:
    api = platform.http()
    devices = {}
    for name, topics in (("a", ["infrom"]), ("b", ["inform", "infrom"])):
        created = make_device(platform, name)
        client = PahoClient(
            platform.mqtt_port,
            name,
            version=version,
            username=created["username"],
            password=created["password"],
        )
        dn = created["device_number"]
        for spelling in topics:
            assert client.subscribe(f"ota/devices/{spelling}/{dn}", qos=1) == [1]
        devices[name] = (client, len(topics))
    fw = upload(api, os.urandom(1000))
    assert fw.status_code == 201, fw.text
    task = api.post(TASKS, json={"firmware_id": fw.json()["id"], "devices": ["a", "b"]})
    assert task.status_code == 201, task.text
    for client, count in devices.values():
        wait_until(lambda c=client, n=count: len(c.messages) >= n, what="the informs")
        bodies = [json.loads(m.payload) for m in client.messages]
        assert len(bodies) == count and all(b == bodies[0] for b in bodies)  # identical
        assert bodies[0]["params"]["version"] == fw.json()["version"]
    states = {
        d["name"]: d["state"] for d in api.get(f"{TASKS}/{task.json()['id']}").json()["devices"]
    }
    assert states == {"a": "INFORMED", "b": "INFORMED"}


def test_the_status_topic(platform: RunningPlatform, version: int) -> None:
    created = make_device(platform, "d1")
    other = make_device(platform, "d2")
    dn = created["device_number"]

    def connect() -> PahoClient:
        return PahoClient(
            platform.mqtt_port,
            "status",
            version=version,
            clean=False,
            properties={"SessionExpiryInterval": 600} if version == 5 else None,
            username=created["username"],
            password=created["password"],
        )

    client = connect()
    assert client.subscribe(f"devices/status/{dn}", qos=1) == [1]
    denied = 0x87 if version == 5 else 0x80
    assert client.subscribe(f"devices/status/{other['device_number']}", qos=1) == [denied]
    # Its own publish there is accepted and ignored: presence comes from the connection.
    assert client.publish(f"devices/status/{dn}", b"0", qos=1) == 0
    api = platform.http()
    assert api.get("/api/v1/products/p1/devices/d1").json()["connectionState"] == "online"
    client.disconnect()
    again = connect()  # its session kept the subscription: it hears itself come online
    wait_until(lambda: any(m.topic == f"devices/status/{dn}" for m in again.messages), what="1")
    status = [m.payload for m in again.messages if m.topic == f"devices/status/{dn}"]
    assert status == [b"1"]
