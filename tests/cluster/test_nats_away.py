"""NATS stops under a cluster, the durability side (README, "Failure behaviour").

A node whose NATS goes away keeps serving its own devices: their QoS 1
telemetry is stored and acknowledged (only after the write), nothing is lost,
its API answers for them; when NATS is back the node rejoins and the other
node answers for them too. (Calls to devices on other nodes answer 503
meanwhile: tests/cluster/test_calls.py.) A private nats-server, stopped and
started again on the same port; the machine's NATS is not touched.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator

import asyncpg
import pytest

from tests.cluster.test_bus import PrivateNats
from tests.conftest import RunningPlatform
from tests.faults.publisher import Publisher
from tests.mqtt.clients import wait_until


@pytest.fixture
def own_nats() -> Iterator[PrivateNats]:
    server = PrivateNats()
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def _stored(url: str, key: str) -> set[int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT value FROM points WHERE key = $1", key)
    finally:
        await conn.close()
    return {int(json.loads(row["value"])) for row in rows}


def test_a_node_without_nats_stores_and_serves_its_own_devices(
    own_nats: PrivateNats, node_factory: Callable[..., RunningPlatform], pg_url: str
) -> None:
    n1 = node_factory("n1", nats_url=own_nats.url)
    n2 = node_factory("n2", nats_url=own_nats.url)
    api = n1.http()
    api.post("/api/v1/products", json={"id": "p", "name": "p"})
    d = api.post("/api/v1/products/p/devices", json={"name": "d"}).json()
    pub = Publisher(n1.mqtt_port, d["username"], d["password"], "k", version=5, pause=0.002)
    pub.start()
    try:
        wait_until(lambda: len(pub.acked) > 50, 20, "acknowledgements")

        own_nats.stop()
        wait_until(lambda: not n1.platform.nats.connected, 10, "n1 to lose NATS")
        away = len(pub.acked)
        wait_until(lambda: len(pub.acked) > away + 200, 20, "acknowledgements without NATS")
        r = api.get("/api/v1/products/p/devices/d")
        assert r.status_code == 200 and r.json()["connectionState"] == "online", r.text
        r = api.get(
            "/api/v1/products/p/devices/d/telemetry",
            params={"key": "k", "start": 0, "end": 2**41, "limit": 10},
        )
        assert r.status_code == 200 and r.json()["points"], r.text

        own_nats.start()
        wait_until(lambda: n1.platform.nats.connected, 15, "n1 to find NATS again")
        back = len(pub.acked)
        wait_until(lambda: len(pub.acked) > back + 100, 20, "acknowledgements after NATS")
        r = n2.http().get("/api/v1/products/p/devices/d")
        assert r.status_code == 200 and r.json()["connectionState"] == "online", r.text
    finally:
        pub.stop()
    assert pub.error is None, pub.error
    assert not pub.closed, "the publisher was dropped"
    assert pub.codes == []
    missing = set(pub.acked) - asyncio.run(_stored(pg_url, "k"))
    assert not missing, f"{len(missing)} acknowledged messages were not stored"
