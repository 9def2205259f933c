"""Devices of the cluster tests: registered through one node's API, logged in
with paho-mqtt to any node, their presence read through any node's API."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.conftest import Registered, RunningPlatform
from tests.mqtt.clients import PahoClient

NEVER = 0xFFFFFFFF


def register(node: RunningPlatform, product_id: str = "p1", name: str = "d1") -> Registered:
    api = node.http()
    api.post("/api/v1/products", json={"id": product_id, "name": product_id})
    r = api.post(f"/api/v1/products/{product_id}/devices", json={"name": name})
    assert r.status_code == 201, r.text
    d = r.json()
    return Registered(product_id, name, d["device_number"], d["key"], d["username"], d["password"])


def login(
    port: int,
    dev: Registered,
    client_id: str = "c1",
    *,
    version: int = 5,
    clean: bool = True,
    connect: bool = True,
) -> PahoClient:
    """A ThingsPanel login of the device to the MQTT `port` of a node (connected
    unless not `connect`); a persistent session unless `clean`."""
    return PahoClient(
        port,
        client_id,
        version=version,
        clean=clean,
        properties={"SessionExpiryInterval": NEVER} if version == 5 and not clean else None,
        username=dev.username,
        password=dev.password,
        connect=connect,
    )


def state(node: RunningPlatform, dev: Registered) -> str:
    """The device's connectionState as the node's API tells it."""
    r = node.http().get(f"/api/v1/products/{dev.product_id}/devices/{dev.name}")
    assert r.status_code == 200, r.text
    return str(r.json()["connectionState"])


def within(seconds: float, predicate: Callable[[], Any], what: str) -> float:
    """Poll until `predicate()` is true; how long it took (failing past `seconds`)."""
    started = time.monotonic()
    while not predicate():
        took = time.monotonic() - started
        assert took < seconds, f"{what}: not within {seconds} s"
        time.sleep(0.02)
    return time.monotonic() - started
