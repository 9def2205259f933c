"""Two platforms in one process: one set of routes, each request its own platform's.

The routes (and the state FastAPI builds for them on a first request) are made
once a process (api/served.py says why); what differs between platforms (the
services, the keys, the metrics, the readiness) comes with each request.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import RunningPlatform


def test_two_platforms_share_their_routes_and_keep_their_own_parts(
    platform_factory: Callable[..., RunningPlatform], tmp_path: Path
) -> None:
    a, b = platform_factory(data_dir=tmp_path / "a"), platform_factory(data_dir=tmp_path / "b")
    assert a.platform._http.config.app.app is b.platform._http.config.app.app  # one set of routes
    assert a.platform._http.config.app is not b.platform._http.config.app

    api_a, api_b = a.http(), b.http()
    assert api_a.post("/api/v1/products", json={"id": "only-a", "name": "A"}).status_code == 201
    assert api_a.get("/api/v1/products/only-a").status_code == 200
    assert api_b.get("/api/v1/products/only-a").status_code == 404  # b's own storage
    assert b.http(a.api_key).get("/api/v1/products").status_code == 401  # b's own keys

    server_a, server_b = api_a.get("/api/v1/server").json(), api_b.get("/api/v1/server").json()
    assert (server_a["mqtt_port"], server_b["mqtt_port"]) == (a.mqtt_port, b.mqtt_port)

    created = 'route="/api/v1/products",status="201"'
    assert created in httpx.get(f"{a.base_url}/metrics").text
    assert created not in httpx.get(f"{b.base_url}/metrics").text  # each counts its own
