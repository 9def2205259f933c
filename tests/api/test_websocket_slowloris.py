"""Slowloris on the WebSocket listeners: the live stream (/api/v1/stream) and
MQTT over WebSocket (/mqtt), on the HTTP port.

- A handshake trickled byte by byte is an HTTP request head that is not
  complete: closed `http_head_timeout` after the connection opened, however
  steadily its bytes come (api/connections.py).
- Over /mqtt, once upgraded, the MQTT rules hold: a CONNECT trickled a byte
  a frame is closed `connect_timeout` after the socket opened.
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Callable

import pytest

from tests.conftest import RunningPlatform
from tests.mqtt.test_slowloris import trickle
from tests.mqtt.wsclient import WsRawClient
from thingshub.mqtt.codec import Connect, encode


def _handshake(path: str, key: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: {base64.b64encode(b'0123456789abcdef').decode()}\r\n"
        f"Sec-WebSocket-Protocol: mqtt\r\nAuthorization: Bearer {key}\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("path", ["/api/v1/stream", "/mqtt"])
def test_a_websocket_handshake_trickled_is_closed_at_the_head_timeout(
    platform_factory: Callable[..., RunningPlatform], path: str
) -> None:
    p = platform_factory(http_head_timeout=0.6)
    head = _handshake(path, p.api_key)
    assert len(head) * 0.02 > 4  # the whole handshake would take seconds more
    with socket.create_connection(("127.0.0.1", p.http_port)) as sock:
        took = trickle(sock, head, 0.02, 10)
    assert took is not None, "a trickled handshake held its connection"
    assert 0.6 <= took < 1.5, took
    # A handshake sent in time is answered (the listener is healthy).
    with socket.create_connection(("127.0.0.1", p.http_port), timeout=5) as sock:
        sock.sendall(head)
        assert sock.recv(64).startswith(b"HTTP/1.1 101")


def test_an_mqtt_connect_trickled_over_websocket_is_closed_at_the_connect_timeout(
    platform_factory: Callable[..., RunningPlatform],
) -> None:
    p = platform_factory(connect_timeout=0.6)
    c = WsRawClient(p.http_port)
    connect = encode(Connect("slow", 5, True, 0, "user", b"x" * 200), 5)
    started = time.monotonic()
    for i in range(len(connect)):
        try:
            c.frames(connect[i : i + 1])
        except Exception:
            break
        time.sleep(0.02)
        if c.ws.protocol.state.name != "OPEN":  # the server closed it
            break
        assert time.monotonic() - started < 5, "a trickled CONNECT held its WebSocket"
    assert 0.6 <= time.monotonic() - started < 1.5
