"""The asyncpg pool and its connections, as `sql.Database` and `sql.Connection`.

Rules:
- `Pool` runs each statement on a connection of the pool (autocommitted)
  and `transaction(body)` on one connection taken for it, inside
  `conn.transaction()`: committed when `body` returns, rolled back when it
  raises or is cancelled.
- Until `open()` sets it (and after `close()`), every use is `Unavailable`.
- The row count of `execute` is read from the command status ("UPDATE 3").
- asyncpg's unique and foreign-key violations are raised as sql.connection's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import asyncpg

from thingshub.core.errors import Unavailable
from thingshub.storage.sql.connection import (
    Body,
    ForeignKeyViolation,
    Query,
    Row,
    UniqueViolation,
)

T = TypeVar("T")


def rowcount(status: str) -> int:
    """The row count of a command status such as "DELETE 1" or "INSERT 0 12" (0 for
    one without, such as "CREATE TABLE")."""
    count = status.rsplit(" ", 1)[-1]
    return int(count) if count.isdigit() else 0


@contextmanager
def _violations() -> Iterator[None]:
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        raise UniqueViolation(str(exc.constraint_name)) from exc
    except asyncpg.ForeignKeyViolationError as exc:
        raise ForeignKeyViolation(str(exc.constraint_name)) from exc


class PgConnection:
    """Statements on one asyncpg connection (or pool: see `Pool`)."""

    def __init__(self, conn: Any = None) -> None:
        self.conn = conn

    def raw(self) -> Any:
        if self.conn is None:
            raise Unavailable("the PostgreSQL storage is not open")
        return self.conn

    async def execute(self, query: Query, *args: Any) -> int:
        with _violations():
            return rowcount(await self.raw().execute(query.postgres, *args))

    async def executemany(self, query: Query, rows: Iterable[Sequence[Any]]) -> None:
        with _violations():
            await self.raw().executemany(query.postgres, rows)

    async def fetch(self, query: Query, *args: Any) -> list[Row]:
        with _violations():
            rows: list[Row] = await self.raw().fetch(query.postgres, *args)
        return rows

    async def fetchone(self, query: Query, *args: Any) -> Row | None:
        with _violations():
            row: Row | None = await self.raw().fetchrow(query.postgres, *args)
        return row


class Pool(PgConnection):
    """The storage's pool (`conn` is the asyncpg pool, set by `open()`)."""

    async def transaction(self, body: Body[T]) -> T:
        async with self.raw().acquire() as conn, conn.transaction():
            return await body(PgConnection(conn))
