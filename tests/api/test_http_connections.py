"""The HTTP listener's own limits, over real sockets: a request head must be
complete in time, and HTTP connections are capped so that they can never take
the file descriptors the MQTT listener needs (issue 12, row 1).

The head timeout is a setting (`http_head_timeout`, 15 s by default); these
tests set it short instead of sleeping through 15 s.
"""

from __future__ import annotations

import contextlib
import gc
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.api import rawhttp
from tests.api.served import serving
from tests.conftest import RunningPlatform
from tests.mqtt.clients import PahoClient
from thingshub.api import connections


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


def _names(head: bytes) -> list[bytes]:
    """The header names of a raw response head, as written."""
    return [line.partition(b":")[0] for line in head.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]]


def _head_of(sock: socket.socket) -> bytes:
    """A response's head as written, its body (of `Content-Length` bytes) read past."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line[16:]) for line in head.split(b"\r\n") if line.startswith(b"Content-Length: ")),
        0,
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n"


def test_header_names_are_written_in_canonical_case(platform: RunningPlatform) -> None:
    """Some device SDKs (OneNET's C SDK) look `Content-Length` up case-sensitively;
    uvicorn alone writes `content-length`. Read as bytes, every answer has them
    canonical: an ordinary one, a 401 with its challenge, one after `100 Continue`,
    and the 400 uvicorn writes itself for a request it cannot parse."""
    auth = {"Authorization": f"Bearer {platform.api_key}"}
    with rawhttp.connect(platform.http_port) as sock:
        sock.sendall(rawhttp.request("GET", "/healthz"))
        head = _head_of(sock)
        assert b"\r\nContent-Length: 15\r\n" in head
        assert b"\r\nContent-Type: application/json\r\n" in head
        assert _names(head) == [b"Date", b"Content-Length", b"Content-Type"]
        sock.sendall(rawhttp.request("GET", "/api/v1/products"))  # the same connection
        head = _head_of(sock)
        assert head.startswith(b"HTTP/1.1 401 ")
        assert b"\r\nWWW-Authenticate: Bearer\r\n" in head
        assert all(name[:1].isupper() for name in _names(head)), head
    with rawhttp.connect(platform.http_port) as sock:
        body = b'{"id": "p1", "name": "P"}'
        headers = {**auth, "Content-Type": "application/json", "Expect": "100-continue"}
        sock.sendall(rawhttp.request("POST", "/api/v1/products", headers, body)[: -len(body)])
        assert _head_of(sock) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        head = _head_of(sock)
        assert head.startswith(b"HTTP/1.1 201 ")
        assert b"\r\nContent-Length: " in head and b"\r\nContent-Type: " in head
    with rawhttp.connect(platform.http_port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n")
        answer = rawhttp.closed_by_server(sock, timeout=5)
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert b"\r\nContent-Length: " in answer and b"\r\nConnection: close\r\n" in answer


def test_only_the_head_is_recased() -> None:
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\netag: x\r\nx-a-b: c: d\r\n\r\n"
    body = b"5\r\nab-cd: e\r\n0\r\n\r\n"
    assert connections.canonical_head(head + body) == (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nETag: x\r\nX-A-B: c: d\r\n\r\n" + body
    )
    assert connections.canonical_head(b"no head yet") == b"no head yet"


def test_answers_are_sent_without_waiting_for_the_clients_ack(
    platform_factory: Callable[..., RunningPlatform],
) -> None:
    """Nagle is off on the server's side of every HTTP connection: uvicorn writes an
    answer's head and body apart, and with Nagle on the body waited for the
    client's delayed ACK, 40 ms on each keep-alive request."""
    p = platform_factory()
    with rawhttp.connect(p.http_port) as sock:
        for _ in range(2):  # the second answer is the one Nagle held back
            sock.sendall(rawhttp.request("GET", "/healthz"))
            assert rawhttp.read_response(sock).status == 200

        def nodelay() -> list[int]:
            http = p.platform._http
            assert http is not None
            return [
                c.transport.get_extra_info("socket").getsockopt(
                    socket.IPPROTO_TCP, socket.TCP_NODELAY
                )
                for c in http.server_state.connections
            ]

        flags = p.call(nodelay)
    assert flags and all(flags), flags


def test_a_closed_connection_is_freed_without_the_cyclic_collector(
    platform_factory: Callable[..., RunningPlatform],
) -> None:
    """A closed HTTP connection's protocol, its request cycle and their transports
    are freed by reference counting as the socket closes. They used to form a
    reference cycle (the cycle's transport called back the protocol's
    `close_after_answer`) of ~35 objects, ~10 KB, freed only by a collection of the
    oldest generation: between two such collections every connection of the hour's
    soak stayed in memory (issue 19, point 6)."""
    p = platform_factory()
    auth = {"Authorization": f"Bearer {p.api_key}"}

    def protocols() -> int:
        return sum(type(o).__name__ == "LimitedHttpProtocol" for o in gc.get_objects())

    gc.collect()
    gc.disable()
    try:
        before = protocols()  # another test's server may still hold some
        for _ in range(10):
            for path, head in (("/healthz", {}), ("/api/v1/products", auth)):
                with rawhttp.connect(p.http_port) as sock:
                    sock.sendall(rawhttp.request("GET", path, head))
                    assert rawhttp.read_response(sock).status == 200
        deadline = time.monotonic() + 5
        while protocols() > before and time.monotonic() < deadline:  # the server sees each EOF
            time.sleep(0.05)
        assert protocols() <= before
    finally:
        gc.enable()
