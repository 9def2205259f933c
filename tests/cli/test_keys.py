"""`thingshub key ...` as an operator runs it: a real `serve` process and the CLI in
subprocesses: a key made, listed without its secret, used, and revoked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cli.test_serve import Server, start_server, stop


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    proc, lines = start_server(tmp_path / "data", env={"THINGSHUB_CONSOLE": "false"})
    srv = Server(proc, tmp_path / "data", lines)
    with srv.api() as api:
        for pid in ("gh", "barn"):
            assert api.post("/api/v1/products", json={"id": pid, "name": pid}).status_code == 201
    yield srv
    if proc.poll() is None:
        code, out = stop(proc)
        assert code == 0, out


def test_create_list_and_revoke(server: Server) -> None:
    out = server.cli("key", "create", "dashboard", "--role", "reader", "--product", "gh").stdout
    assert "(reader, gh); it is shown only now:" in out
    key = next(line for line in out.splitlines() if line.startswith("thk_"))
    key_id = key.split("_")[1]
    base = f"http://127.0.0.1:{server.http_port}"
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as api:
        assert [p["id"] for p in api.get("/api/v1/products").json()["items"]] == ["gh"]
        assert api.post("/api/v1/products", json={"name": "x"}).status_code == 403

    made = json.loads(server.cli("key", "create", "ops", "--role", "operator", "--json").stdout)
    assert made["products"] is None and made["key"].startswith("thk_")

    listed = server.cli("key", "list").stdout
    for text in (key_id, "dashboard", "reader", "gh", made["id"], "ops", "every product"):
        assert text in listed, text
    assert key.split("_", 2)[2] not in listed and made["key"] not in listed
    as_json = json.loads(server.cli("key", "list", "--json").stdout)
    assert {k["id"] for k in as_json} == {key_id, made["id"]}

    assert f"revoked key {key_id}" in server.cli("key", "revoke", key_id).stdout
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as api:
        assert api.get("/api/v1/products").status_code == 401
    again = server.cli("key", "revoke", key_id, check=False)
    assert again.returncode == 1 and "does not exist" in again.stderr and "HTTP 404" in again.stderr


def test_refusals_say_why(server: Server) -> None:
    bad = server.cli("key", "create", "x", "--role", "root", check=False)
    assert bad.returncode == 1 and "HTTP 400" in bad.stderr
    missing = server.cli("key", "create", "x", "--role", "reader", "--product", "nope", check=False)
    assert missing.returncode == 1 and "product 'nope' does not exist" in missing.stderr
    reader = server.cli("key", "create", "r", "--role", "reader").stdout
    key = next(line for line in reader.splitlines() if line.startswith("thk_"))
    weak = server.cli("key", "list", "--api-key", key, check=False)
    assert weak.returncode == 1 and "HTTP 403" in weak.stderr
