"""What SQLite does its own way, for the shared repositories (sql/dialect.py).

Rules:
- A new device's id is above every id in use and every id ever deleted
  (`device_purges` keeps those): rows of a deleted device never become
  another's.
- Many keys go in VALUES or IN lists of at most KEYS_PER_QUERY keys; the
  query of each length is made once, when first needed. Chunks of points
  and events are deleted by rowid (`seq`).
- Deleting a device drops it from the writer's device-id cache (writes.py),
  in the deleting transaction, on the writer's thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache

from thingshub.storage.sql import devices, ota, series
from thingshub.storage.sql.connection import Connection, Query, Row, Rows, sql
from thingshub.storage.sql.dialect import Keys
from thingshub.storage.sql.rows import DEVICE_COLUMNS
from thingshub.storage.sqlite import writes
from thingshub.storage.sqlite.thread import ThreadConnection

KEYS_PER_QUERY = 400

NEXT_DEVICE_ID = (
    "max(coalesce((SELECT max(id) FROM devices), 0),"
    " coalesce((SELECT max(device_id) FROM device_purges), 0)) + 1"
)

name = "SQLite"
insert_device = sql(
    f"INSERT INTO devices (id, {DEVICE_COLUMNS})"
    f" VALUES ({NEXT_DEVICE_ID}, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
)
device_search = devices.search_queries("instr({0}, {1}) > 0")
purge, retention = series.chunk_deletes("seq", "seq IN ({0})")


@cache
def _presence_query(count: int) -> Query:
    values = ", ".join(f"(${2 * i + 1}, ${2 * i + 2})" for i in range(count))
    return sql(
        f"WITH k(product_id, name) AS (VALUES {values}) " + devices.PRESENCE_OF_KEYS.format("k")
    )


@cache
def _counts_query(count: int) -> Query:
    return sql(
        ota.TASK_COUNTS.format("IN ({})".format(", ".join(f"${i + 1}" for i in range(count))))
    )


async def _chunked(db: Connection, query: Callable[[int], Query], keys: Rows) -> list[Row]:
    found: list[Row] = []
    for start in range(0, len(keys), KEYS_PER_QUERY):
        chunk = keys[start : start + KEYS_PER_QUERY]
        found += await db.fetch(query(len(chunk)), *[part for key in chunk for part in key])
    return found


async def presence_many(db: Connection, keys: Keys) -> list[Row]:
    return await _chunked(db, _presence_query, keys)


async def task_counts(db: Connection, task_ids: Sequence[str]) -> list[Row]:
    return await _chunked(db, _counts_query, [(task_id,) for task_id in task_ids])


def forget_device(conn: Connection, product_id: str, name: str) -> None:
    assert isinstance(conn, ThreadConnection), "a device is deleted on the writer's thread"
    writes.forget_device(conn.raw, product_id, name)
