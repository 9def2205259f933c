"""The products and devices API over real HTTP: every success and every error path."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.conftest import RunningPlatform


@pytest.fixture
def api(platform: RunningPlatform) -> httpx.Client:
    return platform.http()


def make_product(api: httpx.Client, pid: str = "p1", name: str = "Product 1") -> dict:
    r = api.post("/api/v1/products", json={"id": pid, "name": name})
    assert r.status_code == 201, r.text
    created = r.json()
    assert len(base64.b64decode(created.pop("access_key"), validate=True)) == 32  # shown once
    return created


def test_every_api_call_needs_the_key(platform: RunningPlatform) -> None:
    bare = platform.http(authorized=False)
    for method, path in [
        ("GET", "/api/v1/products"),
        ("POST", "/api/v1/products"),
        ("GET", "/api/v1/products/p1/devices"),
        ("DELETE", "/api/v1/products/p1/devices/d1"),
        ("GET", "/api/v1/server"),
    ]:
        r = bare.request(method, path)
        assert r.status_code == 401, (method, path, r.text)
        assert r.json()["error"]
        assert r.headers["www-authenticate"] == "Bearer"
    assert platform.http("nope").get("/api/v1/products").status_code == 401
    basic = platform.http(authorized=False)
    basic.headers["Authorization"] = "Basic eDp5"
    assert basic.get("/api/v1/products").status_code == 401


def test_health_metrics_and_docs_need_no_key(platform: RunningPlatform) -> None:
    bare = platform.http(authorized=False)
    assert bare.get("/healthz").json() == {"status": "ok"}
    metrics = bare.get("/metrics")
    assert metrics.status_code == 200
    assert "thingshub_mqtt_connections" in metrics.text
    assert "thingshub_http_requests_total" in metrics.text
    # SQLite's heap beside the cap of its page caches (64 + 16 MiB); none on PostgreSQL.
    values = {
        name: float(value)
        for name, value in (line.split(" ", 1) for line in metrics.text.splitlines())
        if name.startswith("thingshub_sqlite")
    }
    if platform.platform.settings.database_url is None:
        assert 0 < values["thingshub_sqlite_memory_bytes"] < 80 * 1024 * 1024
        assert values["thingshub_sqlite_cache_limit_bytes"] == 80 * 1024 * 1024
    else:
        assert values == {}
    assert bare.get("/docs").status_code == 200
    spec = bare.get("/openapi.json").json()
    assert "/api/v1/products/{pid}/devices" in spec["paths"]


def test_product_lifecycle(api: httpx.Client) -> None:
    created = make_product(api)
    assert created["id"] == "p1" and created["name"] == "Product 1"
    assert isinstance(created["created_at"], int)
    assert api.get("/api/v1/products/p1").json() == created
    generated = api.post("/api/v1/products", json={"name": "auto"}).json()
    assert generated["id"] and generated["id"] != "p1"
    listed = api.get("/api/v1/products").json()
    assert {p["id"] for p in listed["items"]} == {"p1", generated["id"]}
    assert listed["next"] is None
    assert api.delete("/api/v1/products/p1").status_code == 204
    assert api.get("/api/v1/products/p1").status_code == 404


def test_product_errors(api: httpx.Client) -> None:
    make_product(api)
    dup = api.post("/api/v1/products", json={"id": "p1", "name": "again"})
    assert dup.status_code == 409 and "p1" in dup.json()["error"]
    for body in (
        {"id": "bad/id", "name": "x"},
        {"id": "x" * 65, "name": "x"},
        {"id": "ok"},
        {"id": "ok", "name": ""},
        {"id": "ok", "name": "x", "extra": 1},
        {"id": 5, "name": "x"},
        {"id": "ok", "name": "x", "gateway_auto_register": "yes"},
    ):
        r = api.post("/api/v1/products", json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]
    not_json = api.post(
        "/api/v1/products", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 400
    assert api.get("/api/v1/products/nope").status_code == 404
    assert api.delete("/api/v1/products/nope").status_code == 404
    assert api.get("/api/v1/products?limit=0").status_code == 400
    assert api.get("/api/v1/products?cursor=%%%").status_code == 400


def test_product_settings_change_by_patch(api: httpx.Client) -> None:
    """PATCH changes the fields it gives and keeps the others; a product is made
    with `gateway_auto_register` on unless the body turns it off."""
    created = make_product(api)
    assert created["gateway_auto_register"] is True and created["retention_days"] is None
    off = api.post(
        "/api/v1/products", json={"id": "p2", "name": "x", "gateway_auto_register": False}
    )
    assert off.status_code == 201 and off.json()["gateway_auto_register"] is False
    r = api.patch("/api/v1/products/p1", json={"name": "Meters", "gateway_auto_register": False})
    assert r.status_code == 200
    assert r.json() == {**created, "name": "Meters", "gateway_auto_register": False}
    r = api.patch("/api/v1/products/p1", json={"retention_days": 30})
    assert r.json() == {
        **created,
        "name": "Meters",
        "gateway_auto_register": False,
        "retention_days": 30,
    }
    assert api.patch("/api/v1/products/p1", json={}).json() == r.json()
    assert (
        api.patch("/api/v1/products/p1", json={"retention_days": None}).json()["retention_days"]
        is None
    )
    assert api.get("/api/v1/products/p1").json()["name"] == "Meters"
    listed = {
        p["id"]: p["gateway_auto_register"] for p in api.get("/api/v1/products").json()["items"]
    }
    assert listed == {"p1": False, "p2": False}


def test_product_patch_errors_change_nothing(api: httpx.Client) -> None:
    before = make_product(api)
    for body in (
        {"name": ""},
        {"name": " "},
        {"name": None},
        {"name": "x" * 129},
        {"gateway_auto_register": "no"},
        {"gateway_auto_register": None},
        {"gateway_auto_register": 0},
        {"retention_days": 0},
        {"dynamic_registration": "yes"},
        {"name": "ok", "gateway_auto_register": "no"},  # one bad field: none stored
        [],
    ):
        r = api.patch("/api/v1/products/p1", json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]
    assert api.get("/api/v1/products/p1").json() == before
    missing = api.patch("/api/v1/products/nope", json={"name": "x"})
    assert missing.status_code == 404 and missing.json()["error"]


def test_device_creation_shows_secrets_once(api: httpx.Client) -> None:
    make_product(api)
    r = api.post("/api/v1/products/p1/devices", json={"name": "d1", "tags": {"room": "4"}})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["product_id"] == "p1" and created["name"] == "d1"
    assert created["device_number"] == "d1"  # defaults to the name when free
    assert len(__import__("base64").b64decode(created["key"])) == 32
    assert created["username"] and len(created["password"]) >= 24
    assert created["tags"] == {"room": "4"}
    assert created["connectionState"] == "offline"
    shown = api.get("/api/v1/products/p1/devices/d1").json()
    assert "key" not in shown and "password" not in shown
    assert shown["username"] == created["username"]
    assert shown["connectionState"] == "offline" and shown["lastActivityTime"] is None


def test_device_number_defaults_and_uniqueness(api: httpx.Client) -> None:
    make_product(api, "p1")
    make_product(api, "p2")
    assert api.post("/api/v1/products/p1/devices", json={"name": "d1"}).status_code == 201
    # Same name in another product: allowed; its number cannot be "d1" again.
    other = api.post("/api/v1/products/p2/devices", json={"name": "d1"}).json()
    assert other["device_number"] != "d1"
    dup_name = api.post("/api/v1/products/p1/devices", json={"name": "d1"})
    assert dup_name.status_code == 409 and "d1" in dup_name.json()["error"]
    dup_number = api.post("/api/v1/products/p1/devices", json={"name": "d2", "device_number": "d1"})
    assert dup_number.status_code == 409 and "device_number" in dup_number.json()["error"]


def test_device_errors(api: httpx.Client) -> None:
    make_product(api)
    cases = [
        ("/api/v1/products/nope/devices", {"name": "d"}, 404),
        ("/api/v1/products/p1/devices", {"name": "a b"}, 400),
        ("/api/v1/products/p1/devices", {"name": "a/b"}, 400),
        ("/api/v1/products/p1/devices", {"name": "x" * 65}, 400),
        ("/api/v1/products/p1/devices", {"name": ""}, 400),
        ("/api/v1/products/p1/devices", {}, 400),
        ("/api/v1/products/p1/devices", {"name": "d", "device_number": "#"}, 400),
        ("/api/v1/products/p1/devices", {"name": "d", "tags": {"k": 1}}, 400),
        ("/api/v1/products/p1/devices", {"name": "d", "tags": ["k"]}, 400),
        ("/api/v1/products/p1/devices", {"name": "d", "password": "mine"}, 400),
    ]
    for path, body, status in cases:
        r = api.post(path, json=body)
        assert r.status_code == status, (body, r.text)
        assert isinstance(r.json()["error"], str) and r.json()["error"]
    assert api.get("/api/v1/products/p1/devices/nope").status_code == 404
    assert api.get("/api/v1/products/nope/devices/nope").status_code == 404
    assert api.delete("/api/v1/products/p1/devices/nope").status_code == 404
    assert api.get("/api/v1/products/nope/devices").status_code == 404


def test_device_paging_and_search(api: httpx.Client) -> None:
    make_product(api)
    names = [f"dev{i:03d}" for i in range(25)] + ["special_x", "specialz"]
    for name in names:
        assert api.post("/api/v1/products/p1/devices", json={"name": name}).status_code == 201
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/v1/products/p1/devices", params=params).json()
        seen += [d["name"] for d in page["items"]]
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == sorted(names) and pages == 3
    found = api.get("/api/v1/products/p1/devices", params={"search": "DEV01"}).json()
    assert [d["name"] for d in found["items"]] == [f"dev01{i}" for i in range(10)]
    # `_` is a LIKE wildcard in SQL: it must match only a literal underscore here.
    literal = api.get("/api/v1/products/p1/devices", params={"search": "l_"}).json()
    assert [d["name"] for d in literal["items"]] == ["special_x"]


def test_product_with_devices_cannot_be_deleted(api: httpx.Client) -> None:
    make_product(api)
    api.post("/api/v1/products/p1/devices", json={"name": "d1"})
    r = api.delete("/api/v1/products/p1")
    assert r.status_code == 409 and "device" in r.json()["error"]
    assert api.delete("/api/v1/products/p1/devices/d1").status_code == 204
    assert api.delete("/api/v1/products/p1").status_code == 204


def test_token_endpoint_mints_a_verifiable_token(api: httpx.Client) -> None:
    from thingshub.dialects.onenet import token as onenet

    make_product(api)
    key = api.post("/api/v1/products/p1/devices", json={"name": "d1"}).json()["key"]
    r = api.post("/api/v1/products/p1/devices/d1/token", json={"expires_in": 600})
    assert r.status_code == 200, r.text
    token = r.json()
    assert token["client_id"] == "d1" and token["username"] == "p1"
    parsed = onenet.parse_token(token["password"])
    onenet.verify_token(
        parsed, key_b64=key, product_id="p1", device_name="d1", now_s=token["expires_at"] - 1
    )
    assert (
        api.post("/api/v1/products/p1/devices/d1/token", json={"expires_in": 1}).status_code == 400
    )
    assert api.post("/api/v1/products/p1/devices/nope/token", json={}).status_code == 404


def test_http_requests_are_counted_by_route(platform: RunningPlatform, api: httpx.Client) -> None:
    make_product(api)
    api.get("/api/v1/products/p1")
    api.get("/api/v1/products/nope")
    text = httpx.get(f"{platform.base_url}/metrics").text
    assert 'route="/api/v1/products/{pid}",status="200"' in text
    assert 'route="/api/v1/products/{pid}",status="404"' in text


def test_response_is_never_a_device_number(api: httpx.Client) -> None:
    """`devices/command/response/+` is where every device answers; a device numbered
    `response` would subscribe to everyone's answers."""
    make_product(api)
    r = api.post("/api/v1/products/p1/devices", json={"name": "x", "device_number": "response"})
    assert r.status_code == 400 and "reserved" in r.json()["error"]
    named = api.post("/api/v1/products/p1/devices", json={"name": "response"}).json()
    assert named["device_number"] == "p1.response"
