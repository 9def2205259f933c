"""Queries written once for SQLite and PostgreSQL, and the one protocol both run on.

Rules:
- A query is written in PostgreSQL's style: `$1, $2...`, `::type` casts, row
  locks (`FOR UPDATE`, `FOR KEY SHARE`), `true`/`false`. `sql()` derives
  SQLite's text once, when the module defining the query is imported:
  `?1, ?2...`, no casts (SQLite's types are affinities), no row locks
  (`BEGIN IMMEDIATE` locks the database), 1/0 for true/false (SQLite's
  partial index `WHERE online = 1` serves only that very text). Quoted
  strings are left alone.
- A `Bulk` statement applies to many rows: PostgreSQL runs it once, a
  column an array (`unnest`); SQLite runs its own text (written beside it)
  once a row, on its thread, where a statement costs microseconds.
- `execute` answers the row count; rows are read by position. `bulk`
  answers the rows a bulk SELECT finds, or those a bulk write changed, keys
  first (PostgreSQL: what it RETURNs; SQLite: the rows given whose row
  count was not 0, as RETURNING would buffer). `Database.transaction(body)`
  runs `body(conn)` in one transaction on one connection, rolled back if it
  raises; a body awaits its connection only (SQLite runs it on its thread).
- Keyset pages are pairs of queries (`pages`): the first page, and the page
  after a cursor, whose value(s) are the last parameters.
- A unique or foreign-key violation raises `UniqueViolation` or
  `ForeignKeyViolation`, whose message is the constraint's name
  (PostgreSQL) or the driver's message (SQLite).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
Row = Sequence[Any]
Rows = Sequence[Sequence[Any]]


@dataclass(frozen=True, slots=True)
class Query:
    postgres: str
    sqlite: str


@dataclass(frozen=True, slots=True)
class Bulk:
    postgres: str  # over arrays $1::type[], ..., one a column
    sqlite: str  # over one row: ?1, ?2...
    width: int  # the columns of a row
    reads: bool  # a SELECT (else a write)


_POSTGRES_ONLY = re.compile(
    r"'[^']*'|\$(\d+)|\b(true|false)\b|::\w+(?:\[\])?|\s+FOR (?:UPDATE|KEY SHARE)(?: OF \w+)?"
)


def _for_sqlite(match: re.Match[str]) -> str:
    number, boolean = match.group(1), match.group(2)
    if number is not None:
        return "?" + number
    if boolean is not None:
        return "1" if boolean == "true" else "0"
    text = match.group(0)
    return text if text.startswith("'") else ""  # a cast or a row lock goes


def sql(text: str) -> Query:
    """The query `text` (PostgreSQL's style, see the module rules) for both databases."""
    return Query(text, _POSTGRES_ONLY.sub(_for_sqlite, text))


def pages(select: str, cursor: str, order: str) -> tuple[Query, Query]:
    """The queries of a first page (`select order`) and of a page after a cursor."""
    return sql(f"{select} {order}"), sql(f"{select} AND {cursor} {order}")


def bulk(postgres: str, sqlite: str) -> Bulk:
    """A bulk statement: PostgreSQL's over arrays, SQLite's (in the style of `sql`) over a row."""
    width = max(int(n) for n in re.findall(r"\$(\d+)", postgres))
    return Bulk(postgres, sql(sqlite).sqlite, width, sqlite.lstrip().startswith("SELECT"))


class UniqueViolation(Exception):
    """A unique constraint refused a write (see the module rules for its message)."""


class ForeignKeyViolation(Exception):
    """A foreign key refused a write."""


class Connection(Protocol):
    async def execute(self, query: Query, *args: Any) -> int: ...

    async def executemany(self, query: Query | Bulk, rows: Rows) -> None: ...

    async def fetch(self, query: Query, *args: Any) -> list[Row]: ...

    async def fetchone(self, query: Query, *args: Any) -> Row | None: ...

    async def bulk(self, query: Bulk, rows: Rows) -> list[Row]: ...


Body = Callable[[Connection], Coroutine[Any, Any, T]]


class Database(Connection, Protocol):
    async def transaction(self, body: Body[T]) -> T: ...


async def one(db: Connection, make: Callable[[Row], T], query: Query, *args: Any) -> T | None:
    """`make` of the first row of `query`, or None if it finds none."""
    row = await db.fetchone(query, *args)
    return make(row) if row is not None else None


async def page(db: Connection, queries: tuple[Query, Query], after: Any, *args: Any) -> list[Row]:
    """A page of `queries` (`pages`): the first if `after` is None, else the one after
    it (a value, or a tuple of values)."""
    if after is None:
        return await db.fetch(queries[0], *args)
    return await db.fetch(queries[1], *args, *(after if isinstance(after, tuple) else (after,)))
