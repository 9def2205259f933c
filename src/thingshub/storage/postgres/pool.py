"""The asyncpg pool and its connections, as `sql.Database` and `sql.Connection`.

Rules:
- `Pool` runs each statement on a connection of the pool (autocommitted)
  and `transaction(body)` on one connection taken for it, inside
  `conn.transaction()`: rolled back if `body` raises or is cancelled.
  Until `open()` sets it (and after `close()`), every use is `Unavailable`.
- A bulk statement is one round trip: its rows go as one array a column.
- The row count of `execute` is read from the command status ("UPDATE 3").
- A server that cannot be reached or written (refused, connection lost,
  shutting down, out of disk) is `StorageUnreachable`, whatever asyncpg or
  the socket raised: the API answers it 503, the writer waits it out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import asyncpg

from thingshub.core.errors import StorageUnreachable, Unavailable
from thingshub.storage.sql import connection
from thingshub.storage.sql.connection import Body, Bulk, Query, Row, Rows

T = TypeVar("T")


def rowcount(status: str) -> int:
    """The row count of a command status such as "DELETE 1" or "INSERT 0 12" (0 for
    one without, such as "CREATE TABLE")."""
    count = status.rsplit(" ", 1)[-1]
    return int(count) if count.isdigit() else 0


def columns(rows: Rows, width: int) -> list[list[Any]]:
    """`rows` as `width` columns, for unnest()."""
    return [[row[i] for row in rows] for i in range(width)]


#: What asyncpg raises when the server is away or cannot write, rather than
#: because of the statement: connection errors (class 08), shutdowns (57P01-3),
#: insufficient resources such as a full disk (class 53).
_AWAY = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.InsufficientResourcesError,
)


def unreachable(exc: BaseException) -> StorageUnreachable | None:
    """`exc` as StorageUnreachable if it says the server is away, else None."""
    away = isinstance(exc, _AWAY) or (
        isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)
    )
    if not away:
        return None
    error = StorageUnreachable(
        f"the PostgreSQL database is unreachable ({type(exc).__name__}: {exc})"
    )
    error.__cause__ = exc
    return error


@contextmanager
def translated() -> Iterator[None]:
    """Constraint violations as ours, a server away as StorageUnreachable."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        raise connection.UniqueViolation(str(exc.constraint_name)) from exc
    except asyncpg.ForeignKeyViolationError as exc:
        raise connection.ForeignKeyViolation(str(exc.constraint_name)) from exc
    except Exception as exc:
        away = unreachable(exc)
        if away is None:
            raise
        raise away from exc


class PgConnection:
    """Statements on one asyncpg connection (or on the pool: see `Pool`)."""

    def __init__(self, conn: Any = None) -> None:
        self.conn = conn

    def raw(self) -> Any:
        if self.conn is None:
            raise Unavailable("the PostgreSQL storage is not open")
        return self.conn

    async def execute(self, query: Query, *args: Any) -> int:
        with translated():
            return rowcount(await self.raw().execute(query.postgres, *args))

    async def executemany(self, query: Query | Bulk, rows: Rows) -> None:
        with translated():
            if isinstance(query, Bulk):
                await self.raw().execute(query.postgres, *columns(rows, query.width))
            else:
                await self.raw().executemany(query.postgres, rows)

    async def fetch(self, query: Query, *args: Any) -> list[Row]:
        with translated():
            return cast(list[Row], await self.raw().fetch(query.postgres, *args))

    async def fetchone(self, query: Query, *args: Any) -> Row | None:
        with translated():
            return cast(Row | None, await self.raw().fetchrow(query.postgres, *args))

    async def bulk(self, query: Bulk, rows: Rows) -> list[Row]:
        with translated():
            found = await self.raw().fetch(query.postgres, *columns(rows, query.width))
        return cast(list[Row], found)


class Pool(PgConnection):
    """The storage's pool (`conn` is the asyncpg pool, set by `open()`)."""

    async def transaction(self, body: Body[T]) -> T:
        with translated():
            async with self.raw().acquire() as conn, conn.transaction():
                return await body(PgConnection(conn))
