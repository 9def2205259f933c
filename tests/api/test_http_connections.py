"""The HTTP listener's own limits, over real sockets: a request head must be
complete in time, and HTTP connections are capped so that they can never take
the file descriptors the MQTT listener needs (issue 12, row 1).

The head timeout is a setting (`http_head_timeout`, 15 s by default); these
tests set it short instead of sleeping through 15 s.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.api import rawhttp
from tests.api.served import serving
from tests.conftest import RunningPlatform
from tests.mqtt.clients import PahoClient


def test_a_request_head_that_stalls_is_closed(
    platform_factory: Callable[..., RunningPlatform],
) -> None:
    p = platform_factory(http_head_timeout=0.5)
    half_head = rawhttp.stalled(p.http_port)
    silent = rawhttp.stalled(p.http_port, head=b"")
    # A keep-alive connection whose next head stalls after its first byte.
    kept = rawhttp.connect(p.http_port)
    kept.sendall(rawhttp.request("GET", "/healthz"))
    assert rawhttp.read_response(kept).status == 200
    kept.sendall(b"GET /hea")
    try:
        for sock in (half_head, silent, kept):
            assert rawhttp.closed_by_server(sock, timeout=5) == b""
    finally:
        for sock in (half_head, silent, kept):
            sock.close()
    # A client that sends its head in pieces, in time, is answered.
    with rawhttp.connect(p.http_port) as slow:
        for piece in (b"GET /hea", b"lthz HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):
            slow.sendall(piece)
        assert rawhttp.read_response(slow).status == 200


def test_a_request_body_that_stalls_is_408_and_closed(
    platform_factory: Callable[..., RunningPlatform],
) -> None:
    """A body that stops coming (or trickles slower than the head timeout allows
    between pieces) no longer holds its connection for ever (issue 19)."""
    p = platform_factory(http_head_timeout=0.5)
    auth = {"Authorization": f"Bearer {p.api_key}", "Content-Type": "application/json"}
    body = b'{"id": "p1", "name": "p1"}'
    with rawhttp.connect(p.http_port) as half:
        half.sendall(rawhttp.request("POST", "/api/v1/products", auth, body)[: -len(body) + 5])
        started = time.monotonic()
        answer = rawhttp.read_response(half, timeout=5)
        assert answer.status == 408, answer
        assert answer.headers.get("connection") == "close"
        assert "stalled" in answer.body.decode()
        assert rawhttp.closed_by_server(half, timeout=5) == b""
        assert time.monotonic() - started < 4
    # A body sent in pieces, each in time, is taken.
    with rawhttp.connect(p.http_port) as slow:
        whole = rawhttp.request("POST", "/api/v1/products", auth, body)
        for i in range(0, len(whole), 40):
            slow.sendall(whole[i : i + 40])
            time.sleep(0.1)
        assert rawhttp.read_response(slow).status == 201
    assert p.http().get("/api/v1/products/p1").status_code == 200


def test_connections_beyond_the_cap_are_refused_at_once(
    platform_factory: Callable[..., RunningPlatform], register_on: Callable[..., dict]
) -> None:
    p = platform_factory(max_http_connections=20, http_head_timeout=3)
    device = register_on(p)
    held = [rawhttp.stalled(p.http_port) for _ in range(20)]
    try:
        with rawhttp.stalled(p.http_port) as extra:
            answer = rawhttp.closed_by_server(extra, timeout=2)
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"too many HTTP connections" in answer
        # The MQTT listener is as reachable as ever.
        mqtt = PahoClient(
            p.mqtt_port, "d1", username=device["username"], password=device["password"]
        )
        assert mqtt.connack_code == 0
        mqtt.close()
        # Once the stalled connections are dropped, new clients are served again.
        for sock in held:
            rawhttp.closed_by_server(sock, timeout=10)
        assert httpx.get(f"{p.base_url}/healthz", timeout=5).json() == {"status": "ok"}
    finally:
        for sock in held:
            sock.close()


@pytest.fixture
def register_on() -> Callable[[RunningPlatform], dict]:
    def register(p: RunningPlatform) -> dict:
        api = p.http()
        assert api.post("/api/v1/products", json={"id": "p1", "name": "P"}).status_code == 201
        r = api.post("/api/v1/products/p1/devices", json={"name": "d1"})
        assert r.status_code == 201, r.text
        return dict(r.json())

    return register


# ------------------------------------------------ a process short of file descriptors

FD_LIMIT = 256


@pytest.fixture
def small_server(tmp_path: Path) -> Iterator[tuple[int, int, str]]:
    """`thingshub serve` in a process allowed FD_LIMIT open files, capped at 64 HTTP
    connections: (mqtt port, http port, api key)."""
    with serving(tmp_path, config="max_http_connections = 64\n", fd_limit=FD_LIMIT) as s:
        yield s.mqtt_port, s.http_port, s.api_key


def test_an_http_flood_leaves_mqtt_reachable(small_server: tuple[int, int, str]) -> None:
    """More stalled HTTP connections than the process has file descriptors: MQTT
    devices still connect and /healthz still answers."""
    mqtt_port, http_port, key = small_server
    base = f"http://127.0.0.1:{http_port}"
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=auth, timeout=5) as api:
        assert api.post("/api/v1/products", json={"id": "p1", "name": "P"}).status_code == 201
        device = api.post("/api/v1/products/p1/devices", json={"name": "d1"}).json()
    flood = []
    try:
        for _ in range(FD_LIMIT + 50):
            flood.append(rawhttp.stalled(http_port))
        # The server has taken the whole flood once the last ones are refused.
        refused = 0
        for sock in flood[-40:]:
            sock.settimeout(5)
            with contextlib.suppress(TimeoutError, ConnectionResetError):
                refused += sock.recv(100).startswith(b"HTTP/1.1 503")
        assert refused == 40
        mqtt = PahoClient(mqtt_port, "d1", username=device["username"], password=device["password"])
        assert mqtt.connack_code == 0
        mqtt.close()
    finally:
        for sock in flood:
            sock.close()
    # The flood gone, a new client is served.
    deadline = time.monotonic() + 10
    while True:
        try:
            assert httpx.get(f"{base}/healthz", timeout=2).json() == {"status": "ok"}
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
