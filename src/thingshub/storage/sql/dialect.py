"""What SQLite and PostgreSQL cannot share, as the protocol the shared repositories use.

Rules:
- Only what the two databases genuinely do differently is here: how a new
  device gets its id, the substring function of searches, how many keys go
  in one query (SQLite: VALUES or IN lists per chunk; PostgreSQL: arrays),
  how a chunk of rows is deleted (SQLite by rowid, PostgreSQL by ctid), and
  the writer's cache SQLite keeps per device.
- Each database's dialect is a module satisfying `Dialect` (sqlite/dialect.py,
  postgres/dialect.py); its queries are made by `sql()` when it is
  imported, from the shared templates (devices.py, ota.py, series.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from thingshub.storage.sql.connection import Connection, Query, Row

Keys = Sequence[tuple[str, str]]


class Dialect(Protocol):
    @property
    def name(self) -> str:
        """ "SQLite", "PostgreSQL": for messages."""

    @property
    def insert_device(self) -> Query:
        """Insert a device from rows.device_values."""

    @property
    def device_search(self) -> tuple[Query, Query]:
        """devices.search_queries: without and after a cursor."""

    @property
    def purge(self) -> Mapping[str, Query]:
        """Table (points, events) -> delete at most $2 rows of device $1."""

    @property
    def retention(self) -> Mapping[str, Query]:
        """Table (points, events) -> delete at most $3 rows of product $1 older than $2."""

    async def presence_many(self, db: Connection, keys: Keys) -> list[Row]:
        """(product_id, name, online, last_activity, changed_at) of the devices among `keys`."""

    async def task_counts(self, db: Connection, task_ids: Sequence[str]) -> list[Row]:
        """(task_id, state, count) of the devices of the tasks among `task_ids`."""

    def forget_device(self, conn: Connection, product_id: str, name: str) -> None:
        """In the transaction deleting a device: forget what the writer cached of it."""
