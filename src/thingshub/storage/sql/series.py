"""Telemetry, attributes and events in SQL: reads, retention, and the purge of
deleted devices (their writes: handlers.py, and each database's writes.py).

Rules:
- Reads run on the reader, never on the writer's connection (a long
  aggregate never delays ingest), and find the device by (product_id, name)
  in the same query: rows of a deleted device are never read, even unpurged.
- History and events page one way: the range starts at the cursor's ts
  (`ts >= max(start, after.ts)`, one bound the index seeks to) and
  `(ts, seq) > after` drops what the previous page had of that ts.
- Aggregates (rules in common.py) are one statement per function, made at
  import; `last` is row_number() over each bucket by ts DESC, seq DESC.
- Retention and the purge of deleted devices delete at most
  common.DELETE_CHUNK rows a transaction (points, then events) on the
  writer's database, so batches queue behind one chunk at most. Retention
  walks (device, key) pairs through `latest`: a range seek per series,
  never a scan of recent rows. A purge is marked done only when a fresh look
  finds no row of the device left (another process may be deleting too).
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any

from thingshub.core.model import DeviceEvent, Point
from thingshub.core.settlement import Settlement
from thingshub.storage import common
from thingshub.storage.sql import writes
from thingshub.storage.sql.batch import GroupCommit, Write
from thingshub.storage.sql.connection import Connection, Database, Query, page, pages, sql
from thingshub.storage.sql.dialect import Dialect

_OF_DEVICE = "JOIN devices d ON d.id = {0}.device_id AND d.product_id = $1 AND d.name = $2"
LATEST = sql(f"SELECT l.key, l.ts, l.value FROM latest l {_OF_DEVICE.format('l')}")
ATTRIBUTES = sql(f"SELECT a.key, a.value FROM attributes a {_OF_DEVICE.format('a')}")


def _pages(select: str, t: str, first: int) -> tuple[Query, Query]:
    """`pages` of `select ... WHERE` over the table aliased `t`: start ${first},
    end ${first + 1}, limit ${first + 2}; a cursor (ts, seq) after them."""
    cursor = f"({t}.ts, {t}.seq) > (${first + 3}::bigint, ${first + 4}::bigint)"
    order = f"ORDER BY {t}.ts, {t}.seq LIMIT ${first + 2}"
    return pages(f"{select} {t}.ts >= ${first} AND {t}.ts < ${first + 1}", cursor, order)


HISTORY = _pages(
    f"SELECT p.ts, p.seq, p.value FROM points p {_OF_DEVICE.format('p')} WHERE p.key = $3 AND",
    "p",
    4,
)
EVENTS = _pages(
    f"SELECT e.ts, e.seq, e.method, e.params, e.type FROM events e {_OF_DEVICE.format('e')} WHERE",
    "e",
    3,
)

_BUCKET = "(p.ts - $1::bigint) / $2::bigint"
_SERIES = (
    "FROM points p JOIN devices d ON d.id = p.device_id AND d.product_id = $3 AND d.name = $4"
    " WHERE p.key = $5 AND p.ts >= $1 AND p.ts < $6"
)
AGGREGATES = {
    "last": sql(
        f"SELECT b, value FROM (SELECT {_BUCKET} AS b, p.value, row_number() OVER"
        f" (PARTITION BY {_BUCKET} ORDER BY p.ts DESC, p.seq DESC) AS r {_SERIES}) AS s"
        " WHERE r = 1 ORDER BY b"
    ),
    "count": sql(f"SELECT {_BUCKET} AS b, count(*) {_SERIES} GROUP BY b ORDER BY b"),
    **{
        f: sql(
            f"SELECT {_BUCKET} AS b, {f}(p.num) {_SERIES} GROUP BY b HAVING count(p.num) > 0"
            " ORDER BY b"
        )
        for f in common.NUMERIC_AGGREGATES
    },
}

_RETAINED = {  # the rows of a product older than $2, at most $3 (CROSS JOIN: in this order)
    "points": "SELECT p.{0} FROM devices d CROSS JOIN latest l CROSS JOIN points p"
    " WHERE d.product_id = $1 AND l.device_id = d.id"
    " AND p.device_id = l.device_id AND p.key = l.key AND p.ts < $2 LIMIT $3",
    "events": "SELECT e.{0} FROM devices d JOIN events e ON e.device_id = d.id AND e.ts < $2"
    " WHERE d.product_id = $1 LIMIT $3",
}


def chunk_deletes(rowid: str, among: str) -> tuple[dict[str, Query], dict[str, Query]]:
    """`Dialect.purge` and `Dialect.retention`, given the column that identifies a
    row and the SQL of "it is among the rows {0}"."""
    purge, retention = {}, {}
    for table, retained in _RETAINED.items():
        of_device = f"SELECT {rowid} FROM {table} WHERE device_id = $1 LIMIT $2"
        purge[table] = sql(f"DELETE FROM {table} WHERE " + among.format(of_device))
        retention[table] = sql(f"DELETE FROM {table} WHERE " + among.format(retained.format(rowid)))
    return purge, retention


PENDING_PURGE = sql("SELECT device_id FROM device_purges WHERE purged_at IS NULL LIMIT 1")
PURGED = sql(
    "UPDATE device_purges SET purged_at = $2 WHERE device_id = $1"
    " AND NOT EXISTS (SELECT 1 FROM points WHERE device_id = $1)"
    " AND NOT EXISTS (SELECT 1 FROM events WHERE device_id = $1)"
)


async def purge_step(dialect: Dialect, conn: Connection) -> bool:
    """Delete one chunk of a deleted device's points and events; False when
    nothing is pending."""
    row = await conn.fetchone(PENDING_PURGE)
    if row is None:
        return False
    device_id, room = row[0], common.DELETE_CHUNK
    for table in ("points", "events"):
        if room > 0:
            room -= await conn.execute(dialect.purge[table], device_id, room)
    if room > 0:
        await conn.execute(PURGED, device_id, common.now_ms())
    return True


async def _delete_before(
    dialect: Dialect, product_id: str, before: int, room: int, conn: Connection
) -> int:
    deleted = await conn.execute(dialect.retention["points"], product_id, before, room)
    if deleted < room:
        rest = room - deleted
        deleted += await conn.execute(dialect.retention["events"], product_id, before, rest)
    return deleted


_TELEMETRY = writes.TELEMETRY_APPEND
_DEVICES = writes.TELEMETRY_APPEND_DEVICES


def _failed(exc: Exception) -> asyncio.Future[int | None]:
    """A write refused before it is queued (a value no storage takes): the caller's failure."""
    future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future


async def _merged(
    refused: dict[int, Exception], stored: asyncio.Future[Any] | None, size: int
) -> tuple[object, ...]:
    """The outcome of `append_devices_settled` where some devices' values were
    refused: theirs, and the others' (the write's, None or one a device)."""
    outcome = await stored if stored is not None else None
    kept = iter(outcome or (None,) * (size - len(refused)))
    return tuple(refused[i] if i in refused else next(kept) for i in range(size))


class SqlTelemetry:
    def __init__(
        self, db: Database, reader: Database, dialect: Dialect, writer: GroupCommit
    ) -> None:
        self._db = db
        self._reader = reader
        self._dialect = dialect
        self._writer = writer

    async def append(self, product_id: str, name: str, points: Sequence[Point]) -> None:
        await self._writer.submit(writes.telemetry(product_id, name, points))

    def append_now(
        self,
        product_id: str,
        name: str,
        points: Sequence[Point],
        then: Callable[[], None] | None = None,
    ) -> asyncio.Future[int | None]:
        try:
            write = writes.telemetry(product_id, name, points)
        except (TypeError, ValueError) as exc:  # a value no storage takes: this caller's failure
            return _failed(exc)
        return self._writer.submit_now(write, missing=0, then=then)

    def append_settled(
        self,
        product_id: str,
        name: str,
        points: Sequence[Point],
        then: Callable[[], None] | None = None,
    ) -> Settlement | asyncio.Future[int | None]:
        try:  # `writes.telemetry` written out: every message of the ingest path
            rows = common.point_rows(points)
        except (TypeError, ValueError) as exc:
            return _failed(exc)
        return self._writer.join_now(Write(_TELEMETRY, None, (product_id, name, rows)), then)

    def append_devices_settled(
        self, devices: Sequence[tuple[str, str, Sequence[Point]]]
    ) -> Settlement | Awaitable[tuple[object, ...] | None]:
        rows = []
        refused: dict[int, Exception] | None = None
        for position, (product_id, name, points) in enumerate(devices):
            try:
                rows.append((product_id, name, common.point_rows(points)))
            except (TypeError, ValueError) as exc:  # that device's failure, the others go on
                refused = refused or {}
                refused[position] = exc
        if refused is None:
            return self._writer.join_now(Write(_DEVICES, None, tuple(rows)))
        # A rare path (the dialect checked the values): the others' write queued
        # now, as any write, not a settlement's member; its outcome merged.
        write = Write(_DEVICES, None, tuple(rows))
        return _merged(refused, self._writer.submit_now(write) if rows else None, len(devices))

    async def latest(self, product_id: str, name: str) -> dict[str, tuple[int, object]]:
        found = await self._reader.fetch(LATEST, product_id, name)
        return {r[0]: (r[1], common.decode_value(r[2])) for r in found}

    async def history(
        self,
        product_id: str,
        name: str,
        key: str,
        start: int,
        end: int,
        limit: int,
        after: tuple[int, int] | None = None,
    ) -> builtins.list[tuple[int, int, object]]:
        if limit <= 0:
            return []
        first = start if after is None else max(start, after[0])
        found = await page(self._reader, HISTORY, after, product_id, name, key, first, end, limit)
        return [(r[0], r[1], common.decode_value(r[2])) for r in found]

    async def aggregate(
        self,
        product_id: str,
        name: str,
        key: str,
        start: int,
        end: int,
        interval: int,
        function: str,
    ) -> builtins.list[tuple[int, object]]:
        common.check_aggregate(start, end, interval, function)
        args = (start, interval, product_id, name, key, end)
        found = await self._reader.fetch(AGGREGATES[function], *args)
        return [(start + r[0] * interval, common.bucket_value(function, r[1])) for r in found]

    async def delete_before(self, product_id: str, before: int, limit: int) -> int:
        deleted = 0
        while deleted < limit:
            room = min(limit - deleted, common.DELETE_CHUNK)
            chunk = partial(_delete_before, self._dialect, product_id, before, room)
            count = await self._db.transaction(chunk)
            deleted += count
            if count < room:
                break
        return deleted


class SqlAttributes:
    def __init__(self, reader: Database, writer: GroupCommit) -> None:
        self._reader = reader
        self._writer = writer

    async def upsert(
        self, product_id: str, name: str, values: Mapping[str, object], ts: int
    ) -> None:
        await self._writer.submit(writes.attributes(product_id, name, values, ts))

    async def get(self, product_id: str, name: str) -> dict[str, object]:
        found = await self._reader.fetch(ATTRIBUTES, product_id, name)
        return {r[0]: common.decode_value(r[1]) for r in found}


class SqlEvents:
    def __init__(self, reader: Database, writer: GroupCommit) -> None:
        self._reader = reader
        self._writer = writer

    async def append(self, product_id: str, name: str, events: Sequence[DeviceEvent]) -> None:
        await self._writer.submit(writes.events(product_id, name, events))

    async def list(
        self,
        product_id: str,
        name: str,
        start: int,
        end: int,
        limit: int,
        after: tuple[int, int] | None = None,
    ) -> builtins.list[tuple[int, int, DeviceEvent]]:
        if limit <= 0:
            return []
        first = start if after is None else max(start, after[0])
        found = await page(self._reader, EVENTS, after, product_id, name, first, end, limit)
        return [
            (r[0], r[1], DeviceEvent(r[0], r[2], common.decode_value(r[3]), r[4])) for r in found
        ]
