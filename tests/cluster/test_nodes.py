"""Nodes joining one cluster: ids held, heartbeats, events crossing between nodes."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import RunningPlatform, _admin
from thingshub.config import Settings, SettingsError
from thingshub.config import load as load_settings
from thingshub.core.events import Event, PresenceChanged


def test_a_cluster_needs_postgresql() -> None:
    with pytest.raises(SettingsError, match="needs a PostgreSQL database_url"):
        load_settings({"nats_url": "nats://127.0.0.1:4222"}, {})
    with pytest.raises(SettingsError, match="several processes need a PostgreSQL"):
        load_settings({"workers": 2, "database_url": "sqlite:///x.db"}, {})
    with pytest.raises(SettingsError, match="node_id"):
        load_settings({"node_id": "no spaces"}, {})
    s = load_settings({"nats_url": "nats://h:4222", "database_url": "postgresql://h/db"}, {})
    assert isinstance(s, Settings) and s.node_lease == 15.0


def test_a_second_live_node_with_the_same_id_is_refused(
    node_factory: Callable[..., RunningPlatform], tmp_path: Any
) -> None:
    node_factory("n1")
    with pytest.raises(Exception, match="already has the id 'n1'"):
        node_factory("n1", data_dir=tmp_path / "other")


def test_nodes_see_each_other_and_events_cross(
    node_factory: Callable[..., RunningPlatform],
) -> None:
    a = node_factory("node.a")
    b = node_factory("node-b")
    listed = b.run(b.platform.nodes.nodes())
    assert [n.id for n in listed] == ["node-b", "node.a"]

    seen: list[Event] = []
    got = threading.Event()

    def on_event(event: Event) -> None:
        seen.append(event)
        got.set()

    b.call(lambda: b.platform.bus.subscribe(on_event, [PresenceChanged]))
    http = a.http()
    assert http.post("/api/v1/products", json={"id": "p1", "name": "P"}).status_code == 201
    device = http.post("/api/v1/products/p1/devices", json={"name": "d1"}).json()
    # The announcement of what b wants reaches a within a couple of seconds.
    deadline = time.monotonic() + 10
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="d1")
    client.username_pw_set(device["username"], device["password"])
    while not got.is_set() and time.monotonic() < deadline:
        client.connect("127.0.0.1", a.mqtt_port)
        client.loop_start()
        got.wait(1.0)
        client.loop_stop()
        client.disconnect()
    assert any(isinstance(e, PresenceChanged) and e.name == "d1" for e in seen)


def test_clusters_sharing_one_database_keep_their_ids_and_jobs_apart(
    platform_factory: Callable[..., RunningPlatform],
    pg_database: str,
    nats_url: str,
    tmp_path: Any,
) -> None:
    """Advisory locks are the server's, across schemas: each cluster's names
    carry its own id, so two clusters (two schemas) both have a node "n1", and
    each runs its own jobs."""
    nodes = []
    for name in ("one", "two"):
        schema = f"t_{secrets.token_hex(6)}"
        asyncio.run(_admin(pg_database, f'CREATE SCHEMA "{schema}"'))
        nodes.append(
            platform_factory(
                data_dir=tmp_path / name,
                database_url=f"{pg_database}?search_path={schema}",
                nats_url=nats_url,
                node_id="n1",
            )
        )
    a, b = nodes
    assert a.run(a.platform.storage.settings.get("cluster_id")) != b.run(
        b.platform.storage.settings.get("cluster_id")
    )
    for node in nodes:
        assert node.platform.retention.job.holding  # each cluster's retention runs
