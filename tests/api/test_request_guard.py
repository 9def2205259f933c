"""Bodies under /api, over real sockets: the key is checked before a body is read,
and JSON bodies over 1 MiB are refused as they arrive (issue 12, row 2).

"Before the body is read" is shown the way a client sees it: the answer comes
while most of the body is still unsent.
"""

from __future__ import annotations

import httpx
import pytest

from tests.api import rawhttp
from tests.conftest import RunningPlatform

MIB = 1024 * 1024
CHUNK = b"x" * 65536


def _head(p: RunningPlatform, headers: dict[str, str], key: str | None) -> bytes:
    all_headers = {"Content-Type": "application/json", **headers}
    if key is not None:
        all_headers["Authorization"] = f"Bearer {key}"
    return rawhttp.request("POST", "/api/v1/products", all_headers)


@pytest.mark.parametrize("key", [None, "wrong"])
def test_no_valid_key_is_401_before_the_body(platform: RunningPlatform, key: str | None) -> None:
    announced = rawhttp.connect(platform.http_port)
    chunked = rawhttp.connect(platform.http_port)
    with announced, chunked:
        announced.sendall(_head(platform, {"Content-Length": str(100 * MIB)}, key))
        announced.sendall(b'{"id": "s", "name": "' + CHUNK)
        chunked.sendall(_head(platform, {"Transfer-Encoding": "chunked"}, key))
        chunked.sendall(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
        for sock in (announced, chunked):
            answer = rawhttp.read_response(sock)
            assert answer.status == 401
            assert answer.headers["www-authenticate"] == "Bearer"
            assert "API key" in answer.body.decode()
            # The rest of the body is not wanted: the server ends the connection
            # rather than read it.
            assert answer.headers["connection"] == "close"
            assert rawhttp.closed_by_server(sock, timeout=5) == b""
    assert platform.http().get("/api/v1/products").json()["items"] == []


def test_a_json_body_over_1_mib_is_413(platform: RunningPlatform) -> None:
    key = platform.api_key
    # Announced: refused before a byte of it is sent.
    with rawhttp.connect(platform.http_port) as announced:
        announced.sendall(_head(platform, {"Content-Length": str(MIB + 1)}, key))
        answer = rawhttp.read_response(announced)
        assert answer.status == 413 and answer.headers["connection"] == "close"
        assert "error" in httpx.Response(200, content=answer.body).json()
    # Chunked: refused once more than 1 MiB has come, however long it goes on.
    with rawhttp.connect(platform.http_port) as streamed:
        streamed.sendall(_head(platform, {"Transfer-Encoding": "chunked"}, key))
        streamed.sendall(b"%x\r\n%s\r\n" % (22, b'{"id": "s", "name": "x'))
        for _ in range(MIB // len(CHUNK) + 1):
            streamed.sendall(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
        answer = rawhttp.read_response(streamed)
        assert answer.status == 413
    # Up to 1 MiB, the body reaches the route (which finds the name too long).
    api = platform.http()
    body = b'{"id": "s", "name": "' + b"x" * (MIB - 40) + b'"}'
    r = api.post("/api/v1/products", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "name" in r.json()["error"]
    assert api.get("/api/v1/products").json()["items"] == []


def test_firmware_uploads_keep_their_own_limit(platform_factory) -> None:
    p = platform_factory(firmware_max_size=3 * MIB)
    api = p.http()
    api.post("/api/v1/products", json={"id": "p1", "name": "P"})
    fields = {"version": "1.0.0", "module": "MCU"}
    ok = api.post(
        "/api/v1/products/p1/firmware", data=fields, files={"file": ("fw.bin", b"\1" * (2 * MIB))}
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["size"] == 2 * MIB
    big = api.post(
        "/api/v1/products/p1/firmware", data=fields, files={"file": ("fw.bin", b"\1" * (4 * MIB))}
    )
    assert big.status_code == 413


def test_what_needs_no_key_still_needs_none(platform: RunningPlatform) -> None:
    bare = platform.http(authorized=False)
    assert bare.get("/healthz").json() == {"status": "ok"}
    assert bare.get("/metrics").status_code == 200
    assert bare.get("/docs").status_code == 200
    assert bare.get("/openapi.json").status_code == 200
    # The OTA download answers for its token (403 for a forged one), not for a key.
    assert bare.get("/ota/download/t1/d1", params={"token": "forged"}).status_code == 403
