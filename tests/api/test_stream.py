"""The live stream over a real WebSocket (the `websockets` client, which we did not
write): authentication at the handshake, filters, and what each kind carries."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.conftest import Registered, RunningPlatform
from tests.mqtt.clients import PahoClient


def open_stream(
    platform: RunningPlatform, query: str = "", *, header: bool = True
) -> ClientConnection:
    url = f"ws://127.0.0.1:{platform.http_port}/api/v1/stream"
    if query:
        url += "?" + query
    headers = {"Authorization": f"Bearer {platform.api_key}"} if header else None
    return connect(url, additional_headers=headers, open_timeout=5)


def receive(ws: ClientConnection, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    """The next message of `kind` (others are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
        if message["kind"] == kind:
            return message


def tp(platform: RunningPlatform, dev: Registered) -> PahoClient:
    return PahoClient(platform.mqtt_port, "tp", username=dev.username, password=dev.password)


def test_the_key_is_checked_at_the_handshake(platform: RunningPlatform) -> None:
    for query, header in (("", False), ("key=wrong", False)):
        with pytest.raises(InvalidStatus) as refused:
            open_stream(platform, query, header=header)
        assert refused.value.response.status_code == 401
        assert b"API key" in refused.value.response.body
    with open_stream(platform, f"key={platform.api_key}", header=False) as ws:
        ws.ping().wait(5)
    with pytest.raises(InvalidStatus) as bad:
        open_stream(platform, "kinds=telemetry,gossip")
    assert bad.value.response.status_code == 400


def test_telemetry_presence_attributes_and_events(platform: RunningPlatform, register) -> None:
    dev = register("p1", "d1")
    with open_stream(platform, "product=p1") as ws:
        client = tp(platform, dev)
        presence = receive(ws, "presence")
        assert presence["device"] == "d1" and presence["data"] == {"connectionState": "online"}
        client.publish(
            "devices/telemetry",
            json.dumps(
                [
                    {"ts": 1700000000, "values": {"t": 1, "h": 2}},
                    {"ts": 1700000001, "values": {"t": 3}},
                ]
            ).encode(),
            qos=1,
        )
        first, second = receive(ws, "telemetry"), receive(ws, "telemetry")
        assert first["data"] == {"ts": 1700000000000, "values": {"t": 1, "h": 2}}
        assert second["data"] == {"ts": 1700000001000, "values": {"t": 3}}
        assert first["product_id"] == "p1" and first["ts"] == 1700000000000
        client.publish("devices/attributes/1", b'{"fw": "1.2"}', qos=1)
        assert receive(ws, "attributes")["data"] == {"fw": "1.2"}
        client.publish("devices/event/2", b'{"method": "Boot", "params": {"n": 1}}', qos=1)
        assert receive(ws, "event")["data"] == {"method": "Boot", "params": {"n": 1}}
        client.disconnect()
        assert receive(ws, "presence")["data"] == {"connectionState": "offline"}


def test_filters_by_device_and_kind(platform: RunningPlatform, register) -> None:
    a, b = register("p1", "a"), register("p1", "b")
    with open_stream(platform, "device=b&kinds=telemetry") as ws:
        ca = PahoClient(platform.mqtt_port, "ca", username=a.username, password=a.password)
        cb = PahoClient(platform.mqtt_port, "cb", username=b.username, password=b.password)
        ca.publish("devices/telemetry", b'{"x": 1}', qos=1)
        cb.publish("devices/telemetry", b'{"x": 2}', qos=1)
        message = json.loads(ws.recv(timeout=5))
        assert message["kind"] == "telemetry" and message["device"] == "b"
        assert message["data"]["values"] == {"x": 2}


def test_image_and_command_changes(platform: RunningPlatform, register) -> None:
    register("p1", "d1")
    api = platform.http()
    with open_stream(platform, "kinds=image") as ws:
        api.patch("/api/v1/products/p1/devices/d1/image", json={"desired": {"on": True}})
        image = receive(ws, "image")
        assert image["data"]["version"] == 1
        assert image["data"]["state"]["desired"] == {"on": True}


def test_a_slow_client_is_told_what_it_missed(
    platform: RunningPlatform, register, monkeypatch: pytest.MonkeyPatch
) -> None:
    from thingshub.api import streamhub as stream

    monkeypatch.setattr(stream, "QUEUE_LIMIT", 5)
    dev = register("p1", "d1")
    client = tp(platform, dev)
    with open_stream(platform, "kinds=telemetry") as ws:
        # Hold the hub's loop busy is not possible from here; instead publish a burst
        # in one message: 50 timestamps arrive in the queue at once.
        client.publish(
            "devices/telemetry",
            json.dumps([{"ts": 1700000000 + i, "values": {"n": i}} for i in range(50)]).encode(),
            qos=1,
        )
        first = json.loads(ws.recv(timeout=5))
        assert first == {"kind": "dropped", "count": 45}
        values = [json.loads(ws.recv(timeout=5))["data"]["values"]["n"] for _ in range(5)]
        assert values == [45, 46, 47, 48, 49]


def _silent_stream(platform: RunningPlatform, query: str) -> socket.socket:
    """A WebSocket on the stream that completes the handshake and then never reads.

    A small receive buffer keeps the kernel from soaking up what the server sends.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", platform.http_port))
    sock.sendall(
        (
            f"GET /api/v1/stream?{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {platform.api_key}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # byte by byte: not one byte of a frame is read
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _stream_metric(platform: RunningPlatform, name: str) -> float:
    text = platform.http().get("/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _flood(platform: RunningPlatform, dev: Registered, megabytes: int) -> None:
    """About `megabytes` MB of telemetry, 60 KB a message, each a stream message as big."""
    client = tp(platform, dev)
    value = "x" * 4000
    payload = json.dumps({f"k{i}": value for i in range(15)}).encode()
    for _ in range(megabytes * 1_000_000 // len(payload) + 1):
        client.publish("devices/telemetry", payload, qos=1)
    client.disconnect()


def _assert_dropped(platform: RunningPlatform, sock: socket.socket, reason: str) -> None:
    deadline = time.monotonic() + 10
    metric = f'thingshub_stream_clients_dropped_total{{reason="{reason}"}}'
    while _stream_metric(platform, metric) < 1:
        assert time.monotonic() < deadline, "the client that does not read was never dropped"
        time.sleep(0.1)
    assert _stream_metric(platform, "thingshub_stream_clients") == 0
    # The connection is gone: what was buffered can still be read, then it ends.
    sock.settimeout(5)
    with contextlib.suppress(ConnectionResetError):
        while sock.recv(1 << 20):
            pass
    sock.close()


def test_a_client_that_does_not_read_is_dropped_past_its_backlog(
    platform_factory: Any, tmp_path: Any
) -> None:
    """Row 6 of the probe: the backlog is bounded in bytes, not messages, and a
    client that never reads is disconnected rather than held for ever."""
    platform = platform_factory(stream_stall_timeout=3600)
    dev = _register(platform)
    sock = _silent_stream(platform, "kinds=telemetry")
    # Past the kernel's buffers (4 MB here at most) and the transport's, then 1 MiB.
    _flood(platform, dev, megabytes=8)
    _assert_dropped(platform, sock, "backlog")
    with open_stream(platform, "kinds=presence") as ws:  # the stream still serves others
        ws.ping().wait(5)


def test_a_client_that_leaves_a_message_waiting_is_dropped_after_the_stall_timeout(
    platform_factory: Any,
) -> None:
    platform = platform_factory(stream_stall_timeout=1.0, stream_max_backlog=64 << 20)
    dev = _register(platform)
    sock = _silent_stream(platform, "kinds=telemetry")
    _flood(platform, dev, megabytes=8)  # more than the buffers hold, less than the backlog
    _assert_dropped(platform, sock, "stalled")


def _register(platform: RunningPlatform) -> Registered:
    api = platform.http()
    assert api.post("/api/v1/products", json={"id": "p1", "name": "p1"}).status_code == 201
    r = api.post("/api/v1/products/p1/devices", json={"name": "d1"})
    assert r.status_code == 201, r.text
    d = r.json()
    return Registered("p1", "d1", d["device_number"], d["key"], d["username"], d["password"])
