"""The SQLite connection and the one thread it lives on (see sqlite/storage.py's rules).

Rules:
- `Db.call(fn)` runs `fn(conn)` on the connection's thread; the thread runs
  calls one at a time, in the order they were made, so each call is atomic
  with respect to the others.
- `in_transaction(fn, conn)` is `fn` inside `BEGIN IMMEDIATE ... COMMIT`,
  rolled back if anything raises.
- `Connection` is the writer's connection: it carries the cache of device
  ids ((product_id, name) -> devices.id) that the telemetry writes use,
  touched only on the connection's thread (sqlite/series.py).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from thingshub.core.errors import Unavailable

T = TypeVar("T")


class Connection(sqlite3.Connection):
    """A sqlite3 connection with the device-id cache of the writer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.device_ids: dict[tuple[str, str], int] = {}
        self.data_version: int | None = None  # PRAGMA data_version when the cache was checked


class Db:
    """The connection and the thread every operation runs on."""

    def __init__(self) -> None:
        self.conn: sqlite3.Connection | None = None
        self.thread: ThreadPoolExecutor | None = None

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` on the connection's thread, after everything asked before."""
        conn, thread = self.conn, self.thread
        if conn is None or thread is None:
            raise Unavailable("the SQLite storage is not open")
        return await asyncio.get_running_loop().run_in_executor(thread, fn, conn)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return await self.call(lambda c: c.execute(sql, params).fetchall())

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return await self.call(lambda c: c.execute(sql, params).fetchone())

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement, autocommitted; its row count."""
        return await self.call(lambda c: c.execute(sql, params).rowcount)

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.call(partial(in_transaction, fn))


def in_transaction(fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
    """`fn(conn)` inside BEGIN IMMEDIATE ... COMMIT, rolled back if anything raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result
