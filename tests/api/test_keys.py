"""API keys with roles and product scope, over real sockets: made, listed and
revoked through the API; every route's role read from the one table (roles.py)
and tried with keys of each role; a key limited to a product finds every other
product absent, on every route that names one, in lists and in the stream."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.api.test_stream import open_stream, receive
from tests.conftest import RunningPlatform
from tests.mqtt.clients import PahoClient
from thingshub.api import roles
from thingshub.api.params import ApiRoute
from thingshub.core.access import ADMIN, OPERATOR, READER

#: Values for the path parameters of the table's templates.
PARAMS = {
    "pid": "p1",
    "name": "d1",
    "firmware_id": "fw1",
    "task_id": "t1",
    "identifier": "reboot",
    "key_id": "k1",
    "device": "d1",
}


def fill(template: str, **given: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: {**PARAMS, **given}[m.group(1)], template)


def make_key(admin: Any, role: str, products: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": f"{role} key", "role": role}
    if products is not None:
        body["products"] = products
    r = admin.post("/api/v1/keys", json=body)
    assert r.status_code == 201, r.text
    made: dict[str, Any] = r.json()
    return made


def setup(p: RunningPlatform) -> Any:
    """Products p1 and p2, each with a device d1; returns the serve key's client."""
    admin = p.http()
    for pid in ("p1", "p2"):
        assert admin.post("/api/v1/products", json={"id": pid, "name": pid}).status_code == 201
        r = admin.post(f"/api/v1/products/{pid}/devices", json={"name": "d1"})
        assert r.status_code == 201, r.text
    return admin


def app_routes(p: RunningPlatform) -> list[APIRoute]:
    routes, stack = [], list(p.platform._http.config.app.app.routes)
    while stack:  # included routers hold their routes
        route = stack.pop()
        stack += getattr(getattr(route, "original_router", None), "routes", [])
        if isinstance(route, APIRoute):
            routes.append(route)
    return routes


def guarded() -> list[tuple[str, str, Any]]:
    return [(m, path, need) for (m, path), need in roles.ROUTES.items() if need is not None]


def test_every_route_has_its_role_in_the_table(
    platform_factory: Callable[..., RunningPlatform],
) -> None:
    p = platform_factory()
    served = {(m, r.path) for r in app_routes(p) for m in r.methods}
    assert served == set(roles.ROUTES), "the table and the routes differ"
    for (method, path), need in roles.ROUTES.items():
        assert (need is None) != path.startswith("/api/"), (method, path)
    # A route without an entry cannot even be built.
    router = APIRouter(route_class=ApiRoute)
    with pytest.raises(roles.MissingRole, match="GET /api/v1/unguarded has no entry"):

        @router.get("/api/v1/unguarded")
        async def unguarded() -> None: ...

    # Every route a weaker role is refused documents its 403.
    spec = p.http().get("/openapi.json").json()
    for method, path, need in guarded():
        if need.role != READER and method != "HEAD":
            assert "403" in spec["paths"][path][method.lower()]["responses"], (method, path)


def test_each_role_is_refused_what_it_may_not_do(
    platform_factory: Callable[..., RunningPlatform],
) -> None:
    p = platform_factory()
    setup(p)
    reader = p.http(make_key(p.http(), READER)["key"])
    for path in ("/api/v1/products", "/api/v1/products/p1", "/api/v1/products/p1/devices/d1"):
        assert reader.get(path).status_code == 200, path
    rank = {READER: 0, OPERATOR: 1, ADMIN: 2}
    for role in (READER, OPERATOR):
        api = p.http(make_key(p.http(), role)["key"])
        for method, path, need in guarded():
            r = api.request(method, fill(path))
            if rank[need.role] > rank[role]:
                assert r.status_code == 403, (role, method, path, r.status_code, r.text)
                assert need.role in r.json()["error"]
            else:
                assert r.status_code not in (401, 403), (role, method, path, r.text)
    # A refused write changed nothing, whatever its body.
    r = reader.post("/api/v1/products/p1/devices", json={"name": "d2"})
    assert r.status_code == 403
    assert p.http().get("/api/v1/products/p1/devices/d2").status_code == 404
    operator = p.http(make_key(p.http(), OPERATOR)["key"])
    assert operator.post("/api/v1/products/p1/devices", json={"name": "d2"}).status_code == 201
    assert operator.patch("/api/v1/products/p1", json={"name": "x"}).status_code == 403


def test_a_limited_key_finds_other_products_absent(
    platform_factory: Callable[..., RunningPlatform],
) -> None:
    p = platform_factory()
    admin = setup(p)
    limited = p.http(make_key(admin, ADMIN, ["p1"])["key"])
    absent = {
        "product": admin.get("/api/v1/products/nope").json(),
        "device": admin.get("/api/v1/products/nope/devices/d1").json(),
    }
    for method, path, _ in guarded():
        if "{pid}" not in path:
            continue
        r = limited.request(method, fill(path, pid="p2"))
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        expected = absent["device" if "{name}" in path else "product"]
        assert r.json() == {"error": expected["error"].replace("'nope'", "'p2'")}, (method, path)
    listed = limited.get("/api/v1/products").json()
    assert [x["id"] for x in listed["items"]] == ["p1"] and listed["next"] is None
    assert limited.get("/api/v1/products/p1/devices/d1").status_code == 200
    # A gateway of another product is as absent in a body as in a path.
    r = limited.put(
        "/api/v1/products/p1/devices/d1/gateway", json={"product_id": "p2", "name": "d1"}
    )
    assert (
        r.status_code == 404 and r.json()["error"] == "gateway 'd1' of product 'p2' does not exist"
    )
    r = limited.post(
        "/api/v1/products/p1/devices",
        json={"name": "d9", "gateway": {"product_id": "p2", "name": "d1"}},
    )
    assert r.status_code == 404
    bound = admin.put(
        "/api/v1/products/p1/devices/d1/gateway", json={"product_id": "p2", "name": "d1"}
    )
    assert bound.status_code == 200 and bound.json()["gateway"]["product_id"] == "p2"
    assert limited.get("/api/v1/products/p1/devices/d1").json()["gateway"] is None
    assert limited.get("/api/v1/products/p1/devices").json()["items"][0]["gateway"] is None
    sub = limited.get("/api/v1/products/p2/devices/d1/sub-devices")
    assert sub.status_code == 404
    assert admin.get("/api/v1/products/p2/devices/d1/sub-devices").json()["items"]
    # A gateway it sees lists only the children it sees.
    admin.post("/api/v1/products/p1/devices", json={"name": "gw"})
    for pid, name in (("p2", "c2"), ("p1", "c1")):
        gateway = {"product_id": "p1", "name": "gw"}
        r = admin.post(f"/api/v1/products/{pid}/devices", json={"name": name, "gateway": gateway})
        assert r.status_code == 201, r.text
    children = "/api/v1/products/p1/devices/gw/sub-devices"
    assert [d["name"] for d in admin.get(children).json()["items"]] == ["c1", "c2"]
    assert [d["name"] for d in limited.get(children).json()["items"]] == ["c1"]
    # It may not make products or keys: it could make one that sees more than it does.
    assert limited.post("/api/v1/products", json={"id": "p3", "name": "p3"}).status_code == 403
    r = limited.post("/api/v1/keys", json={"name": "wider", "role": "admin"})
    assert r.status_code == 403 and "limited" in r.json()["error"]


def test_pages_of_a_limited_product_list(
    platform_factory: Callable[..., RunningPlatform],
) -> None:
    p = platform_factory()
    admin = p.http()
    for pid in ("a", "b", "c", "d"):
        admin.post("/api/v1/products", json={"id": pid, "name": pid})
    limited = p.http(make_key(admin, READER, ["d", "b", "a"])["key"])
    admin.delete("/api/v1/products/a")  # deleted since: absent, not an error
    first = limited.get("/api/v1/products", params={"limit": 1}).json()
    assert [x["id"] for x in first["items"]] == ["b"] and first["next"]
    second = limited.get("/api/v1/products", params={"limit": 1, "cursor": first["next"]}).json()
    assert [x["id"] for x in second["items"]] == ["d"] and second["next"] is None


def test_keys_are_made_listed_and_revoked(platform: RunningPlatform) -> None:
    admin = setup(platform)
    made = make_key(admin, OPERATOR, ["p2", "p1"])
    assert set(made) == {"id", "name", "role", "products", "created_at", "key"}
    assert made["role"] == OPERATOR and made["products"] == ["p1", "p2"]
    assert made["key"].startswith(f"thk_{made['id']}_")
    everywhere = make_key(admin, READER)
    assert everywhere["products"] is None
    api = platform.http(made["key"])
    assert api.get("/api/v1/products/p1").status_code == 200
    listed = admin.get("/api/v1/keys")
    assert listed.status_code == 200
    text = listed.text
    secret = made["key"].split("_", 2)[2]
    assert secret not in text and made["key"] not in text and platform.api_key not in text
    assert "hash" not in text and '"key"' not in text
    items = {k["id"]: k for k in listed.json()["items"]}
    assert set(items) == {made["id"], everywhere["id"]}  # the serve key is not one of them
    assert items[made["id"]]["last_used_at"] is not None
    assert items[everywhere["id"]]["last_used_at"] is None
    assert admin.delete(f"/api/v1/keys/{made['id']}").status_code == 204
    r = api.get("/api/v1/products/p1")
    assert r.status_code == 401 and "API key" in r.json()["error"]
    assert admin.delete(f"/api/v1/keys/{made['id']}").status_code == 404
    # The serve key cannot be deleted: it has no id, and it goes on working.
    assert admin.delete("/api/v1/keys/serve").status_code == 404
    assert admin.get("/api/v1/keys").status_code == 200
    for bad in (
        {"name": "x", "role": "root"},
        {"name": "", "role": "reader"},
        {"name": "x", "role": "reader", "products": []},
        {"name": "x", "role": "reader", "secret": "mine"},
    ):
        r = admin.post("/api/v1/keys", json=bad)
        assert r.status_code == 400 and r.json()["error"], (bad, r.text)
    r = admin.post("/api/v1/keys", json={"name": "x", "role": "reader", "products": ["nope"]})
    assert r.status_code == 404 and r.json() == {"error": "product 'nope' does not exist"}
    assert [k["id"] for k in admin.get("/api/v1/keys").json()["items"]] == [everywhere["id"]]


def test_last_use_and_keys_outlive_a_restart(
    platform_factory: Callable[..., RunningPlatform],
) -> None:
    p = platform_factory()
    made = make_key(p.http(), READER)
    assert p.http(made["key"]).get("/api/v1/products").status_code == 200
    platform_factory.stop(p)  # type: ignore[attr-defined]
    again = platform_factory()
    assert again.http(made["key"]).get("/api/v1/products").status_code == 200
    stored = again.http().get("/api/v1/keys").json()["items"]
    assert stored[0]["last_used_at"] is not None


def test_the_stream_carries_only_the_products_a_key_sees(
    platform_factory: Callable[..., RunningPlatform],
) -> None:
    p = platform_factory()
    admin = p.http()
    devices = {}
    for pid in ("p1", "p2"):
        admin.post("/api/v1/products", json={"id": pid, "name": pid})
        devices[pid] = admin.post(f"/api/v1/products/{pid}/devices", json={"name": "d1"}).json()
    made = make_key(admin, READER, ["p1"])
    url = f"ws://127.0.0.1:{p.http_port}/api/v1/stream"
    from websockets.sync.client import connect

    with connect(f"{url}?kinds=telemetry&key={made['key']}", open_timeout=5) as ws:
        clients = {
            pid: PahoClient(p.mqtt_port, pid, username=d["username"], password=d["password"])
            for pid, d in devices.items()
        }
        clients["p2"].publish("devices/telemetry", b'{"x": 2}', qos=1)
        clients["p1"].publish("devices/telemetry", b'{"x": 1}', qos=1)
        message = receive(ws, "telemetry")
        assert message["product_id"] == "p1" and message["data"]["values"] == {"x": 1}
        clients["p2"].publish("devices/telemetry", b'{"x": 3}', qos=1)
        clients["p1"].publish("devices/telemetry", b'{"x": 4}', qos=1)
        assert json.loads(ws.recv(timeout=5))["data"]["values"] == {"x": 4}
    # Asking for another product is a stream of nothing (as for one that does not exist).
    with connect(f"{url}?product=p2&key={made['key']}", open_timeout=5) as ws:
        clients["p2"].publish("devices/telemetry", b'{"x": 5}', qos=1)
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.5)
    with connect(f"{url}?key={made['key']}", open_timeout=5) as ws:
        assert admin.delete(f"/api/v1/keys/{made['id']}").status_code == 204
        with pytest.raises(ConnectionClosed) as closed:  # revoked: closed at once
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{url}?key={made['key']}", open_timeout=5)
    assert refused.value.response.status_code == 401
    with open_stream(p, "kinds=telemetry") as ws:  # the serve key sees everything
        clients["p2"].publish("devices/telemetry", b'{"x": 6}', qos=1)
        assert receive(ws, "telemetry")["product_id"] == "p2"
