"""Queries written once for SQLite and PostgreSQL, and the one protocol both run on.

Rules:
- A query is written once, in PostgreSQL's style: `$1, $2...` placeholders
  (a number may repeat), `::type` casts where PostgreSQL needs to be told a
  type, row locks (`FOR UPDATE`, `FOR KEY SHARE`) and `true`/`false`.
  `sql()` makes SQLite's text from it once, when the module that defines the
  query is imported, never per call: `?1, ?2...` (SQLite binds numbered
  parameters by position too), no casts (SQLite's column types are
  affinities), no row locks (`BEGIN IMMEDIATE` locks the whole database),
  1 and 0 for `true` and `false` (SQLite has no boolean; a partial index
  `WHERE online = 1` is used only by that very text). Quoted strings are
  left as they are.
- `Connection` is what a query runs on: `execute` (answers the row count),
  `executemany`, `fetch` (every row), `fetchone` (the first row, or None).
  Rows are read by position. `Database` adds `transaction(body)`: `body`
  runs with one connection, in one transaction, committed when it returns
  and rolled back when it raises; nothing else runs on that connection
  meanwhile.
- A transaction body awaits its connection only, nothing else (no sleep, no
  lock, no other I/O): SQLite runs it from start to end on its own thread,
  without an event loop (sqlite/thread.py).
- A write the database refuses for a unique or a foreign-key constraint
  raises `UniqueViolation` or `ForeignKeyViolation`, whichever the driver;
  `detail` is the constraint's name (PostgreSQL) or the driver's message
  (SQLite). Every other database error goes through as the driver raised it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
Row = Sequence[Any]


@dataclass(frozen=True, slots=True)
class Query:
    """One statement, in the text each database reads."""

    postgres: str
    sqlite: str


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


class ConstraintViolation(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class UniqueViolation(ConstraintViolation):
    pass


class ForeignKeyViolation(ConstraintViolation):
    pass


class Connection(Protocol):
    async def execute(self, query: Query, *args: Any) -> int:
        """Run one statement; how many rows it changed."""

    async def executemany(self, query: Query, rows: Iterable[Sequence[Any]]) -> None: ...

    async def fetch(self, query: Query, *args: Any) -> list[Row]: ...

    async def fetchone(self, query: Query, *args: Any) -> Row | None: ...


Body = Callable[[Connection], Coroutine[Any, Any, T]]


class Database(Connection, Protocol):
    async def transaction(self, body: Body[T]) -> T:
        """`body(conn)` in one transaction on one connection (see the module rules)."""
