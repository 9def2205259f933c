"""An unexpected error is a 500 JSON answer, and only that: the keep-alive
connection stays usable (issue 12, row 10)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

import pytest

from tests.api import rawhttp
from tests.conftest import RunningPlatform


@pytest.mark.allow_logged_errors
def test_a_500_keeps_the_connection_open(platform_factory: Callable[..., RunningPlatform]) -> None:
    p = platform_factory()
    api = p.http()
    assert api.post("/api/v1/products", json={"id": "p1", "name": "P"}).status_code == 201
    # A genuine failure nobody planned for: the table is gone from under the API.
    with sqlite3.connect(p.data_dir / "thingshub.db") as db:
        db.execute("ALTER TABLE products RENAME TO products_gone")
    auth = {"Authorization": f"Bearer {p.api_key}"}
    with rawhttp.connect(p.http_port) as sock:
        sock.sendall(rawhttp.request("GET", "/api/v1/products/p1", auth))
        failed = rawhttp.read_response(sock)
        assert failed.status == 500
        assert json.loads(failed.body) == {"error": "internal error"}
        assert failed.headers.get("connection") != "close"
        # The same connection serves the next request.
        sock.sendall(rawhttp.request("GET", "/healthz"))
        assert rawhttp.read_response(sock).status == 200
