"""Integers past 64 bits and text that is not valid Unicode are 400, never 500
(issue 12, rows 4 and 5), in queries and in JSON bodies of every kind.

Lone surrogates arrive as JSON escapes (`"\\ud800"`): the bodies here are
written as raw JSON text, since a client library would refuse to encode them.
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Registered, RunningPlatform

HUGE = "99999999999999999999999"
LONE = '"\\ud800"'
JSON = {"content-type": "application/json"}


@pytest.fixture
def api(platform: RunningPlatform) -> httpx.Client:
    return platform.http()


def test_integers_past_64_bits_in_queries_are_400(api: httpx.Client, register) -> None:
    register("p1", "d1")
    base = "/api/v1/products/p1/devices/d1"
    for path in (
        f"{base}/telemetry?key=t&start=0&end={HUGE}",
        f"{base}/telemetry?key=t&start=-{HUGE}&end=0",
        f"{base}/telemetry?key=t&start=0&end=10&interval={HUGE}&agg=avg",
        f"{base}/telemetry?key=t&start=0&end=10&limit={HUGE}",
        f"{base}/events?start=0&end={HUGE}",
        f"/api/v1/products?limit={HUGE}",
        f"{base}/commands?limit={HUGE}",
        f"{base}/calls?timeout={HUGE}",
    ):
        method = "POST" if "/calls" in path else "GET"
        r = api.request(method, path, json={"method": "m"} if method == "POST" else None)
        assert r.status_code == 400, (path, r.text)
        assert r.json()["error"]
    # The widest values are fine, and so is a cursor past every stored point.
    edge = f"start={-(2**63)}&end={2**63 - 1}"
    assert api.get(f"{base}/telemetry?key=t&{edge}").json()["points"] == []
    cursor = f"{HUGE[:19]}.{HUGE[:19]}"
    assert api.get(f"{base}/telemetry?key=t&{edge}&cursor={cursor}").status_code == 200


def test_integers_past_64_bits_in_bodies_are_400(api: httpx.Client, register) -> None:
    register("p1", "d1")
    base = "/api/v1/products/p1/devices/d1"
    assert api.post(f"{base}/image").status_code == 201
    for method, path, body in (
        ("PATCH", "/api/v1/products/p1", f'{{"retention_days": {HUGE}}}'),
        ("PATCH", "/api/v1/products/p1", '{"retention_days": true}'),  # not a number
        ("PATCH", f"{base}/image", f'{{"desired": {{"a": 1}}, "version": {HUGE}}}'),
        ("POST", f"{base}/token", f'{{"expires_in": {HUGE}}}'),
        (
            "POST",
            "/api/v1/products/p1/ota-tasks",
            f'{{"firmware_id": "f", "all": true, "device_timeout_s": {HUGE}}}',
        ),
    ):
        r = api.request(method, path, content=body, headers=JSON)
        assert r.status_code == 400, (path, body, r.text)
        assert r.json()["error"]
    # Free-form values go to the device as JSON: large numbers are the device's affair,
    # never a failure here.
    for method, path, body in (
        ("PATCH", f"{base}/image", f'{{"desired": {{"a": {HUGE}}}}}'),
        ("PUT", f"{base}/attributes", f'{{"a": {HUGE}}}'),
        ("POST", f"{base}/control", f'{{"a": [1, {{"b": -{HUGE}}}]}}'),
    ):
        r = api.request(method, path, content=body, headers=JSON)
        assert r.status_code < 500, (path, body, r.text)


def test_lone_surrogates_are_400(api: httpx.Client, register, platform: RunningPlatform) -> None:
    dev: Registered = register("p1", "d1")
    base = "/api/v1/products/p1/devices/d1"
    assert api.post(f"{base}/image").status_code == 201
    for method, path, body in (
        ("POST", "/api/v1/products", f'{{"id": "s", "name": {LONE}}}'),
        ("POST", "/api/v1/products", '{"id": "s", "name": "a\\udfffb"}'),
        ("POST", "/api/v1/products/p1/devices", f'{{"name": "d2", "tags": {{"t": {LONE}}}}}'),
        ("POST", "/api/v1/products/p1/devices", f'{{"name": "d2", "tags": {{{LONE}: "v"}}}}'),
        ("PATCH", f"{base}/image", f'{{"tags": {{"t": {LONE}}}}}'),
        ("PATCH", f"{base}/image", f'{{"desired": {{"a": {LONE}}}}}'),
        ("POST", "/api/v1/products/p1/ota-tasks", f'{{"firmware_id": {LONE}, "all": true}}'),
        ("POST", f"{base}/control", f'{{"k": [{LONE}]}}'),
        ("POST", f"{base}/calls", f'{{"method": {LONE}}}'),
    ):
        r = api.request(method, path, content=body, headers=JSON)
        assert r.status_code == 400, (path, body, r.text)
        assert r.json()["error"]
    # A firmware package's ext_data is JSON inside a form field.
    upload = api.post(
        "/api/v1/products/p1/firmware",
        data={"version": "1.0", "module": "MCU", "ext_data": f'{{"note": {LONE}}}'},
        files={"file": ("fw.bin", b"\1" * 100)},
    )
    assert upload.status_code == 400, upload.text
    # A pair of surrogates is an ordinary character.
    r = api.post("/api/v1/products", content='{"id": "s", "name": "\\ud83d\\ude00"}', headers=JSON)
    assert r.status_code == 201 and r.json()["name"] == "\U0001f600"
    assert api.get(f"{base}").json()["tags"] == {}
    assert dev.name == "d1"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        # Found by the long schemathesis run: free-form JSON of the thing-model routes.
        ("PUT", "/api/v1/products/p1/thing-model", f'{{"properties": [], "x": [{HUGE}]}}'),
        ("PUT", "/api/v1/products/p1/thing-model", f'{{"properties": [], "x": {LONE}}}'),
        ("POST", "/api/v1/products", f'{{"id": "s", "name": "S", "thing_model": {{"x": {HUGE}}}}}'),
        ("POST", "/api/v1/products", f'{{"id": "s", "name": "S", "thing_model": {{{LONE}: 1}}}}'),
        ("PATCH", "/api/v1/products/p1/devices/d1/desired", f'{{"a": [-{HUGE}]}}'),
        ("PATCH", "/api/v1/products/p1/devices/d1/desired", f'{{"a": {LONE}}}'),
        ("POST", "/api/v1/products/p1/devices/d1/properties", f'{{"a": {HUGE}}}'),
        ("POST", "/api/v1/products/p1/devices/d1/services/s", f'{{"a": {LONE}}}'),
    ],
)
def test_thing_model_bodies_never_fail_on_big_integers_or_lone_surrogates(
    api: httpx.Client, register, method: str, path: str, body: str
) -> None:
    register("p1", "d1")
    r = api.request(method, path, content=body, headers=JSON)
    assert r.status_code < 500, (path, body, r.text)
    if r.status_code >= 400:
        assert r.json()["error"]
