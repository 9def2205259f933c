"""SQLite telemetry, attributes and events: the ingest hot path.

Rules:
- Appends and attribute upserts are group-committed (batch.py): each call is
  one `Write` of key None, so a batch holds one group per kind with every
  device's writes in the order they were submitted, applied by ONE
  executemany per table. A call is atomic: its rows all land with its
  batch, or none do (NotFound when the device is missing).
- Devices are found by id through the writer connection's cache
  ((product_id, name) -> id, sqlite/thread.py's Connection), checked inside the
  batch's transaction: a device deleted through this connection leaves the
  cache at once, and `PRAGMA data_version` empties the cache whenever
  another connection (another process) committed anything since.
- `seq` of a point is given by the writer as max(seq) + 1, + 2, ... in
  arrival order (the seq of points deleted while they were the newest may
  be given again; it still orders every point present by arrival); an
  event's seq is its rowid, given the same way. Latest values keep, per key,
  the newest point by ts, then by arrival: the batch's newest point per
  (device, key) is upserted with `ON CONFLICT ... WHERE excluded.ts >=
  latest.ts`.
- Reads (latest, history, aggregates, attributes, events) run on a second,
  read-only connection with its own thread (WAL readers never block the
  writer), so a long aggregate never delays ingest. They find the device by
  (product_id, name) in the same query: rows of a deleted device are never
  read, even before they are purged.
- Retention (`delete_before`) and the purge of deleted devices delete at
  most common.DELETE_CHUNK rows a transaction, on the writer's thread:
  batches of appends queue behind one chunk at most (milliseconds).
  Retention walks (device, key) pairs through `latest`, so each chunk is a
  range seek per series of the product, never a scan of recent rows.
- Aggregates: GROUP BY (ts - start) / interval (integer division; ts >=
  start); avg/min/max/sum over `num` with HAVING count(num) > 0, count(*)
  for count, and for last a window function (row_number() over each
  bucket by ts DESC, seq DESC), which SQLite and PostgreSQL compute alike
  from one statement.
"""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import Any

from thingshub.core.model import DeviceEvent, Point
from thingshub.storage import common
from thingshub.storage.batch import GroupCommit
from thingshub.storage.sqlite.thread import Connection, Db

Rows = list[tuple[Any, ...]]
_IDS_PER_QUERY = 500


def device_ids(
    conn: sqlite3.Connection, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """The ids of the devices among `keys` that exist, inside the writer's transaction."""
    assert isinstance(conn, Connection), "the writer's connection carries the id cache"
    cache = conn.device_ids
    version = conn.execute("PRAGMA data_version").fetchone()[0]
    if version != conn.data_version:  # another connection committed: trust nothing cached
        cache.clear()
        conn.data_version = version
    found: dict[tuple[str, str], int] = {}
    for key in keys:
        device_id = cache.get(key)
        if device_id is None:
            row = conn.execute(
                "SELECT id FROM devices WHERE product_id = ? AND name = ?", key
            ).fetchone()
            if row is None:
                continue
            device_id = cache[key] = row[0]
        found[key] = device_id
    return found


def forget_device(conn: sqlite3.Connection, product_id: str, name: str) -> None:
    if isinstance(conn, Connection):
        conn.device_ids.pop((product_id, name), None)


_UPSERT_LATEST = (
    "INSERT INTO latest (device_id, key, ts, seq, value) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (device_id, key) DO UPDATE"
    " SET ts = excluded.ts, seq = excluded.seq, value = excluded.value"
    " WHERE excluded.ts >= latest.ts"
)


def telemetry_append(conn: sqlite3.Connection, rows: Rows) -> list[object]:
    ids = device_ids(conn, {(r[0], r[1]) for r in rows})
    seq = conn.execute("SELECT max(seq) FROM points").fetchone()[0] or 0
    points: Rows = []
    newest: dict[tuple[int, str], tuple[int, str, int, int, str]] = {}  # of the batch
    out: list[object] = []
    for product_id, name, values in rows:
        device_id = ids.get((product_id, name))
        if device_id is None:
            out.append(common.device_missing(product_id, name))
            continue
        for key, ts, num, value in values:
            seq += 1
            points.append((seq, device_id, key, ts, num, value))
            current = newest.get((device_id, key))
            if current is None or ts >= current[2]:  # a later arrival wins a tie
                newest[(device_id, key)] = (device_id, key, ts, seq, value)
        out.append(None)
    conn.executemany(
        "INSERT INTO points (seq, device_id, key, ts, num, value) VALUES (?, ?, ?, ?, ?, ?)",
        points,
    )
    conn.executemany(_UPSERT_LATEST, newest.values())
    return out


def attributes_upsert(conn: sqlite3.Connection, rows: Rows) -> list[object]:
    ids = device_ids(conn, {(r[0], r[1]) for r in rows})
    values: Rows = []
    out: list[object] = []
    for product_id, name, pairs, ts in rows:
        device_id = ids.get((product_id, name))
        if device_id is None:
            out.append(common.device_missing(product_id, name))
            continue
        values += [(device_id, key, value, ts) for key, value in pairs]
        out.append(None)
    conn.executemany(
        "INSERT INTO attributes (device_id, key, value, ts) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (device_id, key) DO UPDATE SET value = excluded.value, ts = excluded.ts",
        values,
    )
    return out


def events_append(conn: sqlite3.Connection, rows: Rows) -> list[object]:
    ids = device_ids(conn, {(r[0], r[1]) for r in rows})
    events: Rows = []
    out: list[object] = []
    for product_id, name, items in rows:
        device_id = ids.get((product_id, name))
        if device_id is None:
            out.append(common.device_missing(product_id, name))
            continue
        events += [(device_id, ts, method, params) for ts, method, params in items]
        out.append(None)
    # seq is the rowid: max + 1, + 2... in this order, which is arrival order.
    conn.executemany(
        "INSERT INTO events (device_id, ts, method, params) VALUES (?, ?, ?, ?)", events
    )
    return out


WRITE_HANDLERS = {
    common.TELEMETRY_APPEND: telemetry_append,
    common.ATTRIBUTES_UPSERT: attributes_upsert,
    common.EVENTS_APPEND: events_append,
}


# ------------------------------------------------------------------ deleting


def delete_device(product_id: str, name: str, deleted_at: int, conn: sqlite3.Connection) -> bool:
    """In one transaction: the device (its presence, image and command records by
    cascade), its latest values and attributes; its points and events are queued
    for the purge."""
    rows = conn.execute(
        "DELETE FROM devices WHERE product_id = ? AND name = ? RETURNING id", (product_id, name)
    ).fetchall()
    if not rows:
        return False
    forget_device(conn, product_id, name)
    device_id = rows[0][0]
    conn.execute("DELETE FROM latest WHERE device_id = ?", (device_id,))
    conn.execute("DELETE FROM attributes WHERE device_id = ?", (device_id,))
    conn.execute(
        "INSERT INTO device_purges (device_id, deleted_at) VALUES (?, ?)"
        " ON CONFLICT (device_id) DO NOTHING",
        (device_id, deleted_at),
    )
    return True


# A new device's id: above every id in use and every id ever deleted, so an
# id is never given twice (rows of a deleted device never become another's).
NEXT_DEVICE_ID = (
    "max(coalesce((SELECT max(id) FROM devices), 0),"
    " coalesce((SELECT max(device_id) FROM device_purges), 0)) + 1"
)


def purge_step(conn: sqlite3.Connection) -> bool:
    """Delete one chunk of a deleted device's points and events; False when
    nothing is pending."""
    row = conn.execute(
        "SELECT device_id FROM device_purges WHERE purged_at IS NULL LIMIT 1"
    ).fetchone()
    if row is None:
        return False
    device_id, room = row[0], common.DELETE_CHUNK
    for table in ("points", "events"):
        if room > 0:
            room -= conn.execute(
                f"DELETE FROM {table} WHERE seq IN"
                f" (SELECT seq FROM {table} WHERE device_id = ? LIMIT ?)",
                (device_id, room),
            ).rowcount
    if room > 0 and not any(
        conn.execute(f"SELECT 1 FROM {table} WHERE device_id = ? LIMIT 1", (device_id,)).fetchone()
        for table in ("points", "events")
    ):
        conn.execute(
            "UPDATE device_purges SET purged_at = ? WHERE device_id = ?",
            (common.now_ms(), device_id),
        )
    return True


def _delete_before(product_id: str, before: int, room: int, conn: sqlite3.Connection) -> int:
    deleted = conn.execute(
        # CROSS JOIN fixes the order: devices, their keys, then a range seek per key.
        "DELETE FROM points WHERE seq IN ("
        " SELECT p.seq FROM devices d CROSS JOIN latest l CROSS JOIN points p"
        " WHERE d.product_id = ?1 AND l.device_id = d.id"
        " AND p.device_id = l.device_id AND p.key = l.key AND p.ts < ?2 LIMIT ?3)",
        (product_id, before, room),
    ).rowcount
    if deleted < room:
        deleted += conn.execute(
            "DELETE FROM events WHERE seq IN ("
            " SELECT e.seq FROM devices d"
            " JOIN events e ON e.device_id = d.id AND e.ts < ?2"
            " WHERE d.product_id = ?1 LIMIT ?3)",
            (product_id, before, room - deleted),
        ).rowcount
    return int(deleted)


# ------------------------------------------------------------------ repositories

_DEVICE = "JOIN devices d ON d.id = {t}.device_id AND d.product_id = ? AND d.name = ?"


class SqliteTelemetry:
    def __init__(self, db: Db, reader: Db, writer: GroupCommit) -> None:
        self._db = db
        self._reader = reader
        self._writer = writer

    async def append(self, product_id: str, name: str, points: Sequence[Point]) -> None:
        await self._writer.submit(common.telemetry_write(product_id, name, points))

    async def latest(self, product_id: str, name: str) -> dict[str, tuple[int, object]]:
        rows = await self._reader.fetchall(
            f"SELECT l.key, l.ts, l.value FROM latest l {_DEVICE.format(t='l')}",
            (product_id, name),
        )
        return {r[0]: (r[1], common.decode_value(r[2])) for r in rows}

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
        sql = (
            f"SELECT p.ts, p.seq, p.value FROM points p {_DEVICE.format(t='p')}"
            " WHERE p.key = ? AND p.ts >= ? AND p.ts < ?"
        )
        # After a cursor, the index range starts at its ts (one bound, so SQLite
        # seeks there); the OR drops what the previous page had of that ts.
        first = start if after is None else max(start, after[0])
        params: builtins.list[Any] = [product_id, name, key, first, end]
        if after is not None:
            sql += " AND (p.ts > ? OR p.seq > ?)"
            params += [after[0], after[1]]
        sql += " ORDER BY p.ts, p.seq LIMIT ?"
        params.append(limit)
        rows = await self._reader.fetchall(sql, params)
        return [(r[0], r[1], common.decode_value(r[2])) for r in rows]

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
        # ?1 start, ?2 interval, ?3 product, ?4 name, ?5 key, ?6 end
        where = (
            "FROM points p JOIN devices d ON d.id = p.device_id AND d.product_id = ?3"
            " AND d.name = ?4 WHERE p.key = ?5 AND p.ts >= ?1 AND p.ts < ?6"
        )
        bucket = "(p.ts - ?1) / ?2"
        if function == "last":
            sql = (
                f"SELECT b, value FROM (SELECT {bucket} AS b, p.value, row_number() OVER"
                f" (PARTITION BY {bucket} ORDER BY p.ts DESC, p.seq DESC) AS r {where})"
                " WHERE r = 1 ORDER BY b"
            )
        elif function == "count":
            sql = f"SELECT {bucket} AS b, count(*) {where} GROUP BY b ORDER BY b"
        else:
            sql = (
                f"SELECT {bucket} AS b, {function}(p.num) {where}"
                " GROUP BY b HAVING count(p.num) > 0 ORDER BY b"
            )
        rows = await self._reader.fetchall(sql, (start, interval, product_id, name, key, end))
        return [(start + r[0] * interval, common.bucket_value(function, r[1])) for r in rows]

    async def delete_before(self, product_id: str, before: int, limit: int) -> int:
        deleted = 0
        while deleted < limit:
            room = min(limit - deleted, common.DELETE_CHUNK)
            count = await self._db.transaction(partial(_delete_before, product_id, before, room))
            deleted += count
            if count < room:
                break
        return deleted


class SqliteAttributes:
    def __init__(self, reader: Db, writer: GroupCommit) -> None:
        self._reader = reader
        self._writer = writer

    async def upsert(
        self, product_id: str, name: str, values: Mapping[str, object], ts: int
    ) -> None:
        await self._writer.submit(common.attributes_write(product_id, name, values, ts))

    async def get(self, product_id: str, name: str) -> dict[str, object]:
        rows = await self._reader.fetchall(
            f"SELECT a.key, a.value FROM attributes a {_DEVICE.format(t='a')}",
            (product_id, name),
        )
        return {r[0]: common.decode_value(r[1]) for r in rows}


class SqliteEvents:
    def __init__(self, reader: Db, writer: GroupCommit) -> None:
        self._reader = reader
        self._writer = writer

    async def append(self, product_id: str, name: str, events: Sequence[DeviceEvent]) -> None:
        await self._writer.submit(common.events_write(product_id, name, events))

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
        sql = (
            f"SELECT e.ts, e.seq, e.method, e.params FROM events e {_DEVICE.format(t='e')}"
            " WHERE e.ts >= ? AND e.ts < ?"
        )
        first = start if after is None else max(start, after[0])
        params: builtins.list[Any] = [product_id, name, first, end]
        if after is not None:
            sql += " AND (e.ts > ? OR e.seq > ?)"
            params += [after[0], after[1]]
        sql += " ORDER BY e.ts, e.seq LIMIT ?"
        params.append(limit)
        rows = await self._reader.fetchall(sql, params)
        return [(r[0], r[1], DeviceEvent(r[0], r[2], common.decode_value(r[3]))) for r in rows]
