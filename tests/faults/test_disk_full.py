"""SQLite on a full disk: the data dir on a small tmpfs that the test fills.

The same promises as PostgreSQL stopping (test_postgres_away.py): no PUBACK
without the durable write, publishers held and not dropped, a clear 503 for
writes through the API, nothing acknowledged lost, and everything resumes
once space is freed.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import RunningPlatform
from tests.faults.publisher import (
    Publisher,
    assert_held,
    assert_resumed,
    assert_stored,
    start_publishers,
)
from tests.faults.services import SmallDisk, mount_unavailable_reason
from tests.mqtt.clients import wait_until


@pytest.fixture
def small_disk() -> Iterator[SmallDisk]:
    reason = mount_unavailable_reason()
    if reason:
        pytest.skip(reason)
    disk = SmallDisk(16 * 1024 * 1024)
    try:
        yield disk
    finally:
        disk.destroy()


def _quiet(publishers: list[Publisher], seconds: float) -> bool:
    """No acknowledgement for `seconds` (the database stopped taking writes)."""
    return all(time.monotonic() - p.last_ack_at > seconds for p in publishers)


def test_a_full_disk_holds_publishers_and_loses_nothing(
    small_disk: SmallDisk, platform_factory: Callable[..., RunningPlatform]
) -> None:
    p = platform_factory(data_dir=small_disk.path / "data")
    api = p.http()
    publishers = start_publishers(p, api, (4, 5))

    filler = small_disk.fill()
    # What the WAL already has room for may still go in; then nothing more.
    wait_until(lambda: _quiet(publishers, 1.0), 60, "the disk to be full")
    before = [len(x.acked) for x in publishers]
    time.sleep(1.5)
    assert_held(p, api, publishers, before, "a write")
    r = api.post("/api/v1/products", json={"id": "q", "name": "q"})
    assert r.status_code == 503 and "SQLite" in r.json()["error"], r.text

    filler.unlink()
    assert_resumed(api, publishers, before, "once space was freed")
    assert api.post("/api/v1/products", json={"id": "q", "name": "q"}).status_code == 201
    assert_stored(publishers, _stored(small_disk.path / "data"))


def _stored(data: Path) -> dict[str, set[int]]:
    (db,) = data.glob("*.db")
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT key, value FROM points").fetchall()
    finally:
        conn.close()
    out: dict[str, set[int]] = {"k0": set(), "k1": set()}
    for key, value in rows:
        out.setdefault(key, set()).add(int(value))
    return out
