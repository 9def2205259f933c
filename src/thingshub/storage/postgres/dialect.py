"""What PostgreSQL does its own way, for the shared repositories (sql/dialect.py).

Rules:
- A device's id is an identity column. Many keys go in one query as arrays
  (`unnest`, `= ANY`): one round trip, one prepared statement. Chunks of
  points and events are deleted by ctid (a TID scan): their tables have no
  single-column key.
"""

from __future__ import annotations

from collections.abc import Sequence

from thingshub.storage.sql import devices, ota, series
from thingshub.storage.sql.connection import Connection, Row, sql
from thingshub.storage.sql.dialect import Keys
from thingshub.storage.sql.rows import DEVICE_COLUMNS

name = "PostgreSQL"
insert_device = sql(
    f"INSERT INTO devices ({DEVICE_COLUMNS})"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
)
device_search = devices.search_queries("strpos({0}, {1}) > 0")
purge, retention = series.chunk_deletes("ctid", "ctid = ANY(ARRAY({0}))")

_PRESENCE_MANY = sql(
    devices.PRESENCE_OF_KEYS.format("unnest($1::text[], $2::text[]) AS k(product_id, name)")
)
_TASK_COUNTS = sql(ota.TASK_COUNTS.format("= ANY($1::text[])"))


async def presence_many(db: Connection, keys: Keys) -> list[Row]:
    return await db.fetch(_PRESENCE_MANY, [k[0] for k in keys], [k[1] for k in keys])


async def task_counts(db: Connection, task_ids: Sequence[str]) -> list[Row]:
    return await db.fetch(_TASK_COUNTS, list(task_ids))


def forget_device(conn: Connection, product_id: str, name: str) -> None:
    """Nothing to forget: the writer finds and locks the devices of each batch."""
