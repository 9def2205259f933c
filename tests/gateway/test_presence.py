"""Presence over real MQTT and HTTP: online on CONNECT; offline on DISCONNECT, on a lost
connection, on keepalive expiry; a device logging in again (another client id) stays
online, its older connection closed (test_takeover.py); lastActivityTime moves with
traffic."""

from __future__ import annotations

import time

import httpx

from tests.conftest import RunningPlatform
from tests.mqtt.clients import PahoClient, RawClient, wait_until


def state(api: httpx.Client, name: str = "d1") -> dict:
    return api.get(f"/api/v1/products/p1/devices/{name}").json()


def wait_state(api: httpx.Client, wanted: str, name: str = "d1") -> dict:
    wait_until(lambda: state(api, name)["connectionState"] == wanted, what=f"{name} {wanted}")
    return state(api, name)


def test_transitions(platform: RunningPlatform, register) -> None:
    dev = register()
    api = platform.http()
    assert state(api)["connectionState"] == "offline"
    client = PahoClient(platform.mqtt_port, "c1", username=dev.username, password=dev.password)
    online = wait_state(api, "online")
    assert online["lastActivityTime"] is not None
    assert abs(online["lastActivityTime"] - time.time() * 1000) < 5000
    client.disconnect()
    wait_state(api, "offline")
    # A lost connection.
    client = PahoClient(platform.mqtt_port, "c1", username=dev.username, password=dev.password)
    wait_state(api, "online")
    client.drop()
    wait_state(api, "offline")


def test_keepalive_expiry_makes_a_device_offline(platform: RunningPlatform, register) -> None:
    dev = register()
    api = platform.http()
    raw = RawClient(platform.mqtt_port, 4)
    assert (
        raw.connect(
            "c1", keepalive=1, username=dev.username, password=dev.password.encode()
        ).reason_code
        == 0
    )
    wait_state(api, "online")
    raw.wait_closed(timeout=5)  # closed after 1.5 s of silence
    wait_state(api, "offline")


def test_two_connections_of_one_device(platform: RunningPlatform, register) -> None:
    # b takes over from a (one device, one connection): a's end leaves it online.
    dev = register()
    api = platform.http()
    a = PahoClient(platform.mqtt_port, "a", username=dev.username, password=dev.password)
    b = PahoClient(platform.mqtt_port, "b", username=dev.username, password=dev.password)
    wait_state(api, "online")
    a.disconnect()
    b.fence()
    assert state(api)["connectionState"] == "online"
    b.disconnect()
    wait_state(api, "offline")


def test_activity_time_follows_traffic(platform: RunningPlatform, register) -> None:
    dev = register()
    api = platform.http()
    client = PahoClient(platform.mqtt_port, "c", username=dev.username, password=dev.password)
    first = wait_state(api, "online")["lastActivityTime"]
    time.sleep(1.2)
    client.publish("devices/telemetry", b'{"t": 1}', qos=1)
    wait_until(lambda: state(api)["lastActivityTime"] > first, timeout=5, what="activity")


def test_presence_and_devices_survive_a_restart(platform_factory, database_url) -> None:
    p = platform_factory(database_url=database_url)
    api = p.http()
    api.post("/api/v1/products", json={"id": "p1", "name": "p"})
    created = api.post("/api/v1/products/p1/devices", json={"name": "d1"}).json()
    client = PahoClient(
        p.mqtt_port, "c", username=created["username"], password=created["password"]
    )
    wait_until(lambda: state(api)["connectionState"] == "online")
    client.fence()
    platform_factory.stop(p)
    client.wait_disconnected()
    p2 = platform_factory(database_url=database_url)
    api2 = p2.http()
    assert api2.headers["Authorization"] == api.headers["Authorization"]  # same key file
    shown = state(api2)
    assert shown["connectionState"] == "offline"  # nobody is connected to the new process
    assert shown["lastActivityTime"] is not None
    assert shown["username"] == created["username"]
    again = PahoClient(
        p2.mqtt_port, "c", username=created["username"], password=created["password"], connect=False
    )
    assert again.connect() == 0  # credentials kept (the pepper is in the database)
