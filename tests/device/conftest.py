"""Fixtures of the device SDK tests: a real platform (`serve` in-process, SQLite, real
sockets) and devices registered on it through its HTTP API.

The SDK's devices run on the test's own event loop (`asyncio.run` in each test),
so the test talks to the API with an async httpx client: a blocking call would
stop the loop the device answers on.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import RunningPlatform


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
        base_url=hub.base_url, headers={"Authorization": f"Bearer {hub.api_key}"}, timeout=15
    )
