"""Presence across the nodes of a cluster: a node that stops has its devices
offline everywhere at once; one that dies, within the lease (the presence
sweep); one that restarts with its id cleans only its own leftovers."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.api.served import serving
from tests.cluster.fleet import login, register, state, within
from tests.conftest import RunningPlatform


def open_stream(node: RunningPlatform, query: str) -> ClientConnection:
    url = f"ws://127.0.0.1:{node.http_port}/api/v1/stream?{query}"
    return connect(url, additional_headers={"Authorization": f"Bearer {node.api_key}"})


def presence_told(ws: ClientConnection, timeout: float = 5.0) -> Any:
    message: dict[str, Any] = json.loads(ws.recv(timeout=timeout))
    assert message["kind"] == "presence", message
    return message["data"]["connectionState"]


def test_a_node_stopping_has_its_devices_offline_everywhere_at_once(
    node_factory: Callable[..., RunningPlatform],
) -> None:
    n1, n2 = node_factory("n1"), node_factory("n2")
    dev = register(n2)
    with open_stream(n2, f"product={dev.product_id}&device={dev.name}") as ws:
        # The stream on n2 hears of n1's devices once n1 knows n2 wants presence.
        client = None
        for attempt in range(20):
            client = login(n1.mqtt_port, dev, f"c{attempt}")
            try:
                if presence_told(ws, 0.5) == "online":
                    break
            except TimeoutError:
                client.disconnect()
        assert client is not None
        within(3, lambda: state(n2, dev) == "online", "online in n2's API")

        node_factory.stop(n1)  # type: ignore[attr-defined]

        assert state(n2, dev) == "offline"
        assert presence_told(ws) == "offline"
        client.wait_disconnected()
    assert [n.id for n in n2.run(n2.platform.nodes.nodes())] == ["n2"]
    assert n2.run(n2.platform.storage.devices.holder(dev.product_id, dev.name)) is None


def cluster_config(pg_url: str, nats_url: str, node_id: str, lease: float) -> str:
    return (
        f'database_url = "{pg_url}"\nnats_url = "{nats_url}"\n'
        f'node_id = "{node_id}"\nnode_lease = {lease}\n'
    )


def test_a_dead_nodes_devices_go_offline_everywhere_within_the_lease(
    node_factory: Callable[..., RunningPlatform], pg_url: str, nats_url: str, tmp_path: Path
) -> None:
    """A `thingshub serve` node killed (SIGKILL: no clean stop at all); the
    in-process node sweeps it, taking the sweep over if the dead one held it."""
    lease = 2.0
    with serving(tmp_path, config=cluster_config(pg_url, nats_url, "doomed", lease)) as dead:
        n2 = node_factory("n2", node_lease=lease)
        dev = register(n2)
        other = register(n2, name="d2")
        client = login(dead.mqtt_port, dev)
        mine = login(n2.mqtt_port, other)
        within(3, lambda: state(n2, dev) == "online", "online in n2's API")
        assert n2.run(n2.platform.storage.devices.holder(dev.product_id, dev.name)) == "doomed"

        os.kill(dead.pid, signal.SIGKILL)
        killed = time.monotonic()
        client.wait_disconnected()
        within(lease + 1.5, lambda: state(n2, dev) == "offline", "offline after the kill")
        took = time.monotonic() - killed
        assert state(n2, other) == "online"
        assert [n.id for n in n2.run(n2.platform.nodes.nodes())] == ["n2"]
        job = n2.platform.sweep.job
        assert job.holding and n2.run(n2.platform.storage.locks.still_held(job.lock_name))
        mine.disconnect()
    # Dead 0.6 lease after its last beat (at most lease/5 before the kill), swept
    # every lease/10: offline within the lease of the kill, as the interfaces say.
    assert took <= lease


def test_a_node_restarting_with_its_id_cleans_only_its_own(
    node_factory: Callable[..., RunningPlatform], pg_url: str, nats_url: str, tmp_path: Path
) -> None:
    """A long lease: the restart, not the sweep, cleans what the killed node left."""
    config = cluster_config(pg_url, nats_url, "n1", 60)
    n2 = node_factory("n2", node_lease=60)
    dev, other = register(n2), register(n2, name="d2")
    mine = login(n2.mqtt_port, other)
    with serving(tmp_path, config=config) as first:
        client = login(first.mqtt_port, dev)
        within(3, lambda: state(n2, dev) == "online", "online in n2's API")
        os.kill(first.pid, signal.SIGKILL)
        client.wait_disconnected()
    assert state(n2, dev) == "online"  # nobody said otherwise yet
    with serving(tmp_path, config=config):
        assert state(n2, dev) == "offline"
        assert state(n2, other) == "online"
    mine.disconnect()
