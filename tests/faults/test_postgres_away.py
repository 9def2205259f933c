"""PostgreSQL stops under QoS 1 load: a private server, stopped and started again.

The promises (README, "Failure behaviour"): no PUBACK leaves without the
durable write; the publishers are held (their connections stay open, their
messages unacknowledged), not dropped; the API answers 503 with a JSON
`error`; when the database returns, the held messages are acknowledged and
every acknowledged message is stored.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator

import asyncpg
import pytest

from tests.conftest import RunningPlatform
from tests.faults.publisher import assert_held, assert_resumed, assert_stored, start_publishers
from tests.faults.services import PrivatePostgres, postgres_unavailable_reason


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    reason = postgres_unavailable_reason()
    if reason:
        pytest.skip(reason)
    pg = PrivatePostgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.destroy()


async def _stored(url: str, keys: list[str]) -> dict[str, set[int]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT key, value FROM points WHERE key = ANY($1)", keys)
    finally:
        await conn.close()
    out: dict[str, set[int]] = {k: set() for k in keys}
    for row in rows:
        out[row["key"]].add(int(json.loads(row["value"])))
    return out


def test_postgres_stopped_under_qos1_load_holds_publishers_and_loses_nothing(
    private_pg: PrivatePostgres, platform_factory: Callable[..., RunningPlatform]
) -> None:
    p = platform_factory(database_url=private_pg.url)
    api = p.http()
    publishers = start_publishers(p, api, (4, 5))  # MQTT 3.1.1 and 5.0

    private_pg.stop()
    time.sleep(0.5)  # what was committed before the stop may still be acknowledged
    before = [len(x.acked) for x in publishers]
    time.sleep(2)
    assert_held(p, api, publishers, before, "the database")
    r = api.get("/api/v1/products/p/devices")
    assert r.status_code == 503, r.text
    assert "PostgreSQL" in r.json()["error"], r.text
    r = api.post("/api/v1/products/p/devices/d0/commands", content=b"x")
    assert r.status_code in (409, 503), r.text  # never a hang, never a 500

    private_pg.start()
    assert_resumed(api, publishers, before, "after the database came back")
    assert api.get("/api/v1/products/p/devices").status_code == 200
    assert_stored(publishers, asyncio.run(_stored(private_pg.url, ["k0", "k1"])))
