"""What SQLite and PostgreSQL cannot share, as the protocol the shared repositories use.

Rules:
- Only what the databases genuinely do differently: how a device gets its
  id, the substring function, how many keys go in one query, how a chunk
  of rows is deleted (by rowid or ctid), SQLite's cache of device ids.
- Each database's dialect is a module (sqlite/dialect.py,
  postgres/dialect.py); its queries are made when it is imported, by
  `sql()`, from the templates of devices.py, ota.py and series.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from thingshub.storage.sql.connection import Connection, Query, Row

Keys = Sequence[tuple[str, str]]


class Dialect(Protocol):
    name: str  # "SQLite", "PostgreSQL": for messages
    insert_device: Query  # of rows.device_values
    device_search: tuple[Query, Query]  # devices.search_queries
    purge: dict[str, Query]  # series.chunk_deletes
    retention: dict[str, Query]  # series.chunk_deletes

    async def presence_many(self, db: Connection, keys: Keys) -> list[Row]:
        """(product_id, name, online, last_activity, changed_at) of the devices among `keys`."""

    async def task_counts(self, db: Connection, task_ids: Sequence[str]) -> list[Row]:
        """(task_id, state, count) of the devices of the tasks among `task_ids`."""

    def forget_device(self, conn: Connection, product_id: str, name: str) -> None:
        """In the transaction deleting a device: forget what the writer cached of it."""
