"""One device, one connection (docs/operations.md, "Limits against hostile input"), over
real MQTT, HTTP and the live stream: a new login of a device closes its older
connection whatever client ids both use (5.0: DISCONNECT 0x8E) and discards the
older session, persistent or not; presence stays online through the takeover,
without an offline in between."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.conftest import Registered, RunningPlatform
from tests.mqtt.clients import PahoClient

NEVER = 0xFFFFFFFF


def open_stream(platform: RunningPlatform, query: str) -> ClientConnection:
    url = f"ws://127.0.0.1:{platform.http_port}/api/v1/stream?{query}"
    return connect(url, additional_headers={"Authorization": f"Bearer {platform.api_key}"})


def next_message(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.recv(timeout=timeout))
    return message


def persistent(platform: RunningPlatform, dev: Registered, client_id: str, version: int) -> Any:
    """A login that asks for a session that never expires."""
    return PahoClient(
        platform.mqtt_port,
        client_id,
        version=version,
        clean=False,
        properties={"SessionExpiryInterval": NEVER} if version == 5 else None,
        username=dev.username,
        password=dev.password,
    )


def device_sessions(platform: RunningPlatform, dev: Registered) -> list[str]:
    prefix = f"{dev.product_id}/{dev.name}/"
    broker = platform.platform.broker
    return platform.call(lambda: sorted(k for k in broker.sessions if k.startswith(prefix)))


@pytest.mark.parametrize("version", [4, 5])
def test_a_device_holds_one_connection_and_one_session(
    platform: RunningPlatform, register, version: int
) -> None:
    dev = register()
    api = platform.http()
    url = f"/api/v1/products/{dev.product_id}/devices/{dev.name}"
    with open_stream(platform, f"product={dev.product_id}&device={dev.name}") as ws:
        first = persistent(platform, dev, "first", version)
        assert first.subscribe(f"devices/command/{dev.device_number}/+", qos=1) == [1]
        assert next_message(ws)["data"] == {"connectionState": "online"}

        second = persistent(platform, dev, "second", version)

        code = first.wait_disconnected()
        if version == 5:
            assert (code, first.disconnect_from_server) == (0x8E, True)
        assert device_sessions(platform, dev) == [f"{dev.product_id}/{dev.name}/second"]
        assert api.get(url).json()["connectionState"] == "online"
        # The next thing the stream tells is this telemetry: no offline (nor a
        # second online) came in between.
        second.publish("devices/telemetry", b'{"t": 1}', qos=1)
        assert next_message(ws)["kind"] == "telemetry"

        # The older client id finds nothing left of its session.
        again = PahoClient(
            platform.mqtt_port,
            "first",
            version=version,
            clean=False,
            properties={"SessionExpiryInterval": NEVER} if version == 5 else None,
            username=dev.username,
            password=dev.password,
        )
        assert again.session_present is False
        second.wait_disconnected()
        assert device_sessions(platform, dev) == [f"{dev.product_id}/{dev.name}/first"]
        again.disconnect()
        assert next_message(ws)["data"] == {"connectionState": "offline"}


def test_many_logins_of_one_device_leave_one_session(platform: RunningPlatform, register) -> None:
    """20 client ids, each asking for a session that never expires, one after
    another: one connection and one session remain."""
    dev = register()
    clients = [persistent(platform, dev, f"c{i}", 5) for i in range(20)]
    for older in clients[:-1]:
        assert older.wait_disconnected() == 0x8E
    clients[-1].fence()
    assert device_sessions(platform, dev) == [f"{dev.product_id}/{dev.name}/c19"]
    started = time.monotonic()
    while platform.call(lambda: len(platform.platform.broker.connections())) > 1:
        assert time.monotonic() - started < 5, "older connections still open"
        time.sleep(0.01)
