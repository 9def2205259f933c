"""Fixtures of the device SDK tests: a real platform (`serve` in-process, SQLite, real
sockets) and devices registered on it through its HTTP API.

The SDK's devices run on the test's own event loop (`asyncio.run` in each test),
so the test talks to the API with an async httpx client: a blocking call would
stop the loop the device answers on.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import RunningPlatform, default_tls


@dataclass
class Creds:
    product_id: str
    name: str
    device_number: str
    key: str
    username: str
    password: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def hub(platform_factory: Callable[..., RunningPlatform]) -> RunningPlatform:
    """The platform, with an OTA rollout loop quick enough for tests."""
    return platform_factory(ota_tick=0.05)


def register(hub: RunningPlatform, product_id: str, name: str, **fields: Any) -> Creds:
    api = hub.http()
    api.post("/api/v1/products", json={"id": product_id, "name": product_id})
    r = api.post(f"/api/v1/products/{product_id}/devices", json={"name": name, **fields})
    assert r.status_code == 201, r.text
    d = r.json()
    return Creds(product_id, name, d["device_number"], d["key"], d["username"], d["password"])


def api(hub: RunningPlatform) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=hub.base_url,
        headers={"Authorization": f"Bearer {hub.api_key}"},
        timeout=15,
        verify=default_tls(),
    )


class BreakingProxy:
    """A TCP proxy in front of the HTTP port. The first answer that reaches `cut_at`
    bytes takes the next of `plan`: "cut" (the answer stops there) or "corrupt" (the
    byte there flipped); answers are passed whole once the plan is spent, and short
    answers (an API's JSON) always are. It records the path and the Range header of
    every GET."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = int(self.sock.getsockname()[1])
        self.plan: list[str] = []
        self.cut_at = 60_000
        self.ranges: list[str | None] = []
        self.paths: list[str] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    async def start(self) -> asyncio.Server:
        self._server = await asyncio.start_server(self._serve, sock=self.sock)
        return self._server

    async def stop(self) -> None:
        """Stop listening and end the connections still open (a test's loop ends next)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        assert me is not None
        self._handlers.add(me)
        me.add_done_callback(self._handlers.discard)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)

        async def upstream() -> None:
            while data := await reader.read(65536):
                for line in data.split(b"\r\n"):
                    if line.startswith(b"GET "):
                        self.ranges.append(None)
                        self.paths.append(line.split()[1].decode())
                    if line.lower().startswith(b"range:"):
                        self.ranges[-1] = line.split(b":", 1)[1].strip().decode()
                up_writer.write(data)
            up_writer.close()

        sent = 0
        task = asyncio.create_task(upstream())
        try:
            while data := await up_reader.read(65536):
                if self.plan and sent <= self.cut_at < sent + len(data):
                    at = self.cut_at - sent
                    if self.plan.pop(0) == "cut":
                        writer.write(data[:at])
                        break
                    data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
                writer.write(data)
                sent += len(data)
        finally:
            task.cancel()
            writer.close()
            up_writer.close()
            with contextlib.suppress(asyncio.CancelledError):
                await task
