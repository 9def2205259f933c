"""An SQLite connection and the one thread it lives on, as an `sql.Database`.

Rules:
- `Db.call(fn)` runs `fn(conn)` on the connection's thread; the thread runs
  calls one at a time, in the order they were made, so each call is atomic
  with respect to the others. Every method of `Db` is one call.
- `Db.transaction(body)` is one call too: `BEGIN IMMEDIATE`, `body` run to
  its end there, `COMMIT` (`ROLLBACK` if anything raises). The body gets a
  `ThreadConnection`, whose methods finish without ever suspending, so
  `drive` runs the whole coroutine in one go on the thread: a transaction
  never interleaves with anything, and a cancelled caller cannot halve it.
- A unique or foreign-key violation is raised as sql.connection's.
- `Connection` is the writer's connection: it carries the cache of device
  ids ((product_id, name) -> devices.id) that the telemetry writes use,
  touched only on the connection's thread (sqlite/writes.py).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, NoReturn, TypeVar

from thingshub.core.errors import Unavailable
from thingshub.storage.sql.connection import (
    Body,
    ForeignKeyViolation,
    Query,
    Row,
    UniqueViolation,
)

T = TypeVar("T")

_VIOLATIONS = {
    "SQLITE_CONSTRAINT_FOREIGNKEY": ForeignKeyViolation,
    "SQLITE_CONSTRAINT_PRIMARYKEY": UniqueViolation,
    "SQLITE_CONSTRAINT_UNIQUE": UniqueViolation,
}


class Connection(sqlite3.Connection):
    """A sqlite3 connection with the device-id cache of the writer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.device_ids: dict[tuple[str, str], int] = {}
        self.data_version: int | None = None  # PRAGMA data_version when the cache was checked


def _reraise(exc: sqlite3.IntegrityError) -> NoReturn:
    violation = _VIOLATIONS.get(exc.sqlite_errorname)
    if violation is None:
        raise exc
    raise violation(str(exc)) from exc


def _cursor(conn: sqlite3.Connection, query: Query, args: Sequence[Any]) -> sqlite3.Cursor:
    try:
        return conn.execute(query.sqlite, args)
    except sqlite3.IntegrityError as exc:
        _reraise(exc)


def _executemany(conn: sqlite3.Connection, query: Query, rows: Iterable[Sequence[Any]]) -> None:
    try:
        conn.executemany(query.sqlite, rows)
    except sqlite3.IntegrityError as exc:
        _reraise(exc)


def _fetchone(conn: sqlite3.Connection, query: Query, args: Sequence[Any]) -> Row | None:
    cursor = _cursor(conn, query, args)
    row: Row | None = cursor.fetchone()
    cursor.close()  # a statement with RETURNING is done once reset
    return row


class ThreadConnection:
    """The connection as its own thread sees it: every method finishes at once."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.raw = conn

    async def execute(self, query: Query, *args: Any) -> int:
        return _cursor(self.raw, query, args).rowcount

    async def executemany(self, query: Query, rows: Iterable[Sequence[Any]]) -> None:
        _executemany(self.raw, query, rows)

    async def fetch(self, query: Query, *args: Any) -> list[Row]:
        return _cursor(self.raw, query, args).fetchall()

    async def fetchone(self, query: Query, *args: Any) -> Row | None:
        return _fetchone(self.raw, query, args)


def drive(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (it awaits a ThreadConnection only) to its end."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()
    raise RuntimeError("a body run on the SQLite thread awaited something else than its connection")


def _close_all(conns: list[sqlite3.Connection]) -> None:
    for conn in conns:
        conn.close()


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


def run_body(body: Body[T], conn: sqlite3.Connection) -> T:
    """`body` in a transaction, on the connection's thread."""
    return in_transaction(lambda c: drive(body(ThreadConnection(c))), conn)


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

    async def open(self, connect: Callable[[list[sqlite3.Connection]], None], name: str) -> None:
        """Make the thread and run `connect` there, which puts the connection in a list."""
        thread = ThreadPoolExecutor(1, thread_name_prefix=name)
        opened: list[sqlite3.Connection] = []
        try:
            await asyncio.get_running_loop().run_in_executor(thread, connect, opened)
        except BaseException:
            # Even when cancelled: close what the thread opens, after it is done.
            thread.submit(_close_all, opened)
            thread.shutdown(wait=False)
            raise
        self.conn, self.thread = opened[0], thread

    async def close(self) -> None:
        """Close the connection after every operation already asked for, and the thread."""
        conn, thread = self.conn, self.thread
        self.conn = self.thread = None
        if conn is None or thread is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(thread, conn.close)
        finally:
            thread.shutdown(wait=False)

    async def execute(self, query: Query, *args: Any) -> int:
        """One statement, autocommitted; its row count."""
        return await self.call(lambda c: _cursor(c, query, args).rowcount)

    async def executemany(self, query: Query, rows: Iterable[Sequence[Any]]) -> None:
        await self.call(lambda c: _executemany(c, query, rows))

    async def fetch(self, query: Query, *args: Any) -> list[Row]:
        return await self.call(lambda c: _cursor(c, query, args).fetchall())

    async def fetchone(self, query: Query, *args: Any) -> Row | None:
        return await self.call(lambda c: _fetchone(c, query, args))

    async def transaction(self, body: Body[T]) -> T:
        return await self.call(partial(run_body, body))
