"""An SQLite connection and the one thread it lives on, as an `sql.Database`.

Rules:
- The connection is made, used and closed on its own thread (a
  single-thread executor), never on the event loop. `Db.call(fn)` runs
  `fn(conn)` there, one call after the other in the order they were made:
  each is atomic with respect to the others, and a call whose caller is
  cancelled is dropped if not started, else runs to its end.
- `Db.transaction(body)` is one call: `BEGIN IMMEDIATE`, `body`, `COMMIT`
  (`ROLLBACK` if anything raises). The body gets a `ThreadConnection`,
  whose methods never suspend, so `drive` runs it at once: nothing lands
  inside another's transaction, and no lock is needed.
- A database that cannot be written for now (its disk full, an I/O
  error) is `StorageUnreachable`: the API answers it 503, the writer waits
  it out.
- `Connection` is the writer's: it carries the cache of device ids of the
  telemetry writes, touched only on its thread (writes.py).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Concatenate, ParamSpec, TypeVar

from thingshub.core.errors import StorageUnreachable, Unavailable
from thingshub.storage.sql import connection
from thingshub.storage.sql.connection import Body, Bulk, Query, Row, Rows

T = TypeVar("T")
P = ParamSpec("P")

_VIOLATIONS = {
    "SQLITE_CONSTRAINT_FOREIGNKEY": connection.ForeignKeyViolation,
    "SQLITE_CONSTRAINT_PRIMARYKEY": connection.UniqueViolation,
    "SQLITE_CONSTRAINT_UNIQUE": connection.UniqueViolation,
}


class Connection(sqlite3.Connection):
    """A sqlite3 connection with the device-id cache of the writer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.device_ids: dict[tuple[str, str], int] = {}
        self.data_version: int | None = None  # PRAGMA data_version when the cache was checked


#: Primary result codes of a database that cannot be written for now.
_AWAY = {sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR}


def _unreachable(exc: sqlite3.OperationalError) -> StorageUnreachable | None:
    if exc.sqlite_errorcode & 0xFF not in _AWAY:
        return None
    return StorageUnreachable(f"the SQLite database cannot be written ({exc})")


def _run(call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    try:
        return call(*args, **kwargs)
    except sqlite3.IntegrityError as exc:
        violation = _VIOLATIONS.get(exc.sqlite_errorname)
        if violation is None:
            raise
        raise violation(str(exc)) from exc


class ThreadConnection:
    """The connection as its own thread sees it: every method finishes at once."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.raw = conn

    async def execute(self, query: Query, *args: Any) -> int:
        return _run(self.raw.execute, query.sqlite, args).rowcount

    async def executemany(self, query: Query | Bulk, rows: Rows) -> None:
        _run(self.raw.executemany, query.sqlite, rows)

    async def fetch(self, query: Query, *args: Any) -> list[Row]:
        return _run(self.raw.execute, query.sqlite, args).fetchall()

    async def fetchone(self, query: Query, *args: Any) -> Row | None:
        cursor = _run(self.raw.execute, query.sqlite, args)
        row: Row | None = cursor.fetchone()
        cursor.close()  # a statement with RETURNING is done once reset
        return row

    async def bulk(self, query: Bulk, rows: Rows) -> list[Row]:
        text, execute = query.sqlite, self.raw.execute
        if query.reads:
            return [found for row in rows for found in _run(execute, text, row).fetchall()]
        return [row for row in rows if _run(execute, text, row).rowcount > 0]


def drive(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (it awaits a ThreadConnection only) to its end."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()
    raise RuntimeError("a body run on the SQLite thread awaited something else than its connection")


def run_body(body: Body[T], conn: sqlite3.Connection) -> T:
    """`body` inside BEGIN IMMEDIATE ... COMMIT, rolled back if anything raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = drive(body(ThreadConnection(conn)))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _on_thread(
    method: Callable[Concatenate[ThreadConnection, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Db, P], Coroutine[Any, Any, T]]:
    """A method of `Db`: `method` of the ThreadConnection, run on the thread (autocommit)."""

    async def on_thread(db: Db, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await db.call(lambda conn: drive(method(ThreadConnection(conn), *args, **kwargs)))

    return on_thread


def _close_all(conns: list[sqlite3.Connection]) -> None:
    for conn in conns:
        conn.close()


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
        try:
            return await asyncio.get_running_loop().run_in_executor(thread, fn, conn)
        except sqlite3.OperationalError as exc:
            away = _unreachable(exc)
            if away is None:
                raise
            raise away from exc

    execute = _on_thread(ThreadConnection.execute)
    executemany = _on_thread(ThreadConnection.executemany)
    fetch = _on_thread(ThreadConnection.fetch)
    fetchone = _on_thread(ThreadConnection.fetchone)
    bulk = _on_thread(ThreadConnection.bulk)

    async def transaction(self, body: Body[T]) -> T:
        return await self.call(partial(run_body, body))

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
