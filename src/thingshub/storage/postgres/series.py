"""PostgreSQL telemetry, attributes and events: the ingest hot path.

Rules:
- Appends and attribute upserts are group-committed (batch.py) on the
  writer's connection: each call is one `Write` of key None, so a batch
  holds one group per kind with every device's writes in submission order,
  and each group is a few statements whatever its size: one that finds and
  locks the group's devices (`FOR KEY SHARE`, by (product_id, name); a
  device deleted by another connection meanwhile waits for our commit, and
  its delete then sees our rows), then ONE statement over `unnest` arrays.
  A call is atomic: its rows land with its batch, or none do (NotFound).
- Telemetry is one statement: the points are inserted in arrival order
  (`WITH ORDINALITY ... ORDER BY`, so `seq`, an identity, follows arrival)
  and the newest point of each (device, key) of the batch (DISTINCT ON, by
  ts then seq) is upserted into `latest` with `ON CONFLICT ... WHERE
  excluded.ts >= latest.ts`. Measured against `copy_records_to_table` (plus
  a statement to take the seqs and one for `latest`): for batches of 50 to
  3,000 points this single statement was as fast or faster (bench/
  storage_ingest.py), and it needs one round trip.
- Reads and retention run on the pool, never on the writer's connection;
  MVCC lets them run beside appends without waiting. Retention deletes at
  most common.DELETE_CHUNK rows a statement (by ctid), walking (device,
  key) pairs through `latest` so each is a range seek.
- Deleting a device is one transaction of separate statements (devices
  first, then latest and attributes: each statement sees what the writer
  committed while the first waited for its lock); its points and events
  are purged afterwards in chunks (purge.py).
- Aggregates are the SQL of sqlite/series.py: the same integer bucket
  arithmetic, HAVING count(num) > 0 for the numeric functions, and
  row_number() over (ts DESC, seq DESC) for last.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from thingshub.core.model import DeviceEvent, Point
from thingshub.storage import common
from thingshub.storage.batch import GroupCommit

Rows = list[tuple[Any, ...]]
Pool = Callable[[], Any]  # the open pool, or Unavailable


def rowcount(status: str) -> int:
    """The row count of a command status such as "DELETE 1" or "INSERT 0 12"."""
    return int(status.rsplit(" ", 1)[-1])


async def lock_devices(conn: Any, rows: Rows) -> dict[tuple[str, str], int]:
    """The ids of the devices named by `rows` (product_id, name, ...) that exist,
    locked against deletion until the batch commits."""
    keys = list({(r[0], r[1]) for r in rows})
    found = await conn.fetch(
        "SELECT d.product_id, d.name, d.id FROM devices d"
        " JOIN unnest($1::text[], $2::text[]) AS k(product_id, name)"
        " ON d.product_id = k.product_id AND d.name = k.name"
        " FOR KEY SHARE OF d",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    return {(r[0], r[1]): r[2] for r in found}


_APPEND_POINTS = """
WITH added AS (
    INSERT INTO points (device_id, key, ts, num, value)
    SELECT u.device_id, u.key, u.ts, u.num, u.value
    FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::float8[], $5::text[])
        WITH ORDINALITY AS u(device_id, key, ts, num, value, n)
    ORDER BY u.n
    RETURNING device_id, key, ts, seq, value
)
INSERT INTO latest AS l (device_id, key, ts, seq, value)
SELECT DISTINCT ON (device_id, key) device_id, key, ts, seq, value FROM added
ORDER BY device_id, key, ts DESC, seq DESC
ON CONFLICT (device_id, key) DO UPDATE
    SET ts = excluded.ts, seq = excluded.seq, value = excluded.value
    WHERE excluded.ts >= l.ts
"""


async def telemetry_append(conn: Any, rows: Rows) -> list[object]:
    ids = await lock_devices(conn, rows)
    columns: tuple[list[Any], ...] = ([], [], [], [], [])
    device_ids, keys, times, nums, values = columns
    out: list[object] = []
    for product_id, name, points in rows:
        device_id = ids.get((product_id, name))
        if device_id is None:
            out.append(common.device_missing(product_id, name))
            continue
        for key, ts, num, value in points:
            device_ids.append(device_id)
            keys.append(key)
            times.append(ts)
            nums.append(num)
            values.append(value)
        out.append(None)
    if device_ids:
        await conn.execute(_APPEND_POINTS, *columns)
    return out


async def attributes_upsert(conn: Any, rows: Rows) -> list[object]:
    ids = await lock_devices(conn, rows)
    merged: dict[tuple[int, str], tuple[str, int]] = {}  # one row per key: the last wins
    out: list[object] = []
    for product_id, name, pairs, ts in rows:
        device_id = ids.get((product_id, name))
        if device_id is None:
            out.append(common.device_missing(product_id, name))
            continue
        for key, value in pairs:
            merged[(device_id, key)] = (value, ts)
        out.append(None)
    if merged:
        await conn.execute(
            "INSERT INTO attributes (device_id, key, value, ts)"
            " SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[])"
            " ON CONFLICT (device_id, key) DO UPDATE SET value = excluded.value, ts = excluded.ts",
            [k[0] for k in merged],
            [k[1] for k in merged],
            [v[0] for v in merged.values()],
            [v[1] for v in merged.values()],
        )
    return out


async def events_append(conn: Any, rows: Rows) -> list[object]:
    ids = await lock_devices(conn, rows)
    columns: tuple[list[Any], ...] = ([], [], [], [])
    out: list[object] = []
    for product_id, name, events in rows:
        device_id = ids.get((product_id, name))
        if device_id is None:
            out.append(common.device_missing(product_id, name))
            continue
        for ts, method, params in events:
            for column, value in zip(columns, (device_id, ts, method, params), strict=True):
                column.append(value)
        out.append(None)
    if columns[0]:
        await conn.execute(
            "INSERT INTO events (device_id, ts, method, params)"
            " SELECT u.device_id, u.ts, u.method, u.params"
            " FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[])"
            " WITH ORDINALITY AS u(device_id, ts, method, params, n) ORDER BY u.n",
            *columns,
        )
    return out


WRITE_HANDLERS = {
    common.TELEMETRY_APPEND: telemetry_append,
    common.ATTRIBUTES_UPSERT: attributes_upsert,
    common.EVENTS_APPEND: events_append,
}


# ------------------------------------------------------------------ deleting


async def delete_device(pool: Pool, product_id: str, name: str, deleted_at: int) -> bool:
    async with pool().acquire() as conn, conn.transaction():
        device_id = await conn.fetchval(
            "DELETE FROM devices WHERE product_id = $1 AND name = $2 RETURNING id",
            product_id,
            name,
        )
        if device_id is None:
            return False
        await conn.execute("DELETE FROM latest WHERE device_id = $1", device_id)
        await conn.execute("DELETE FROM attributes WHERE device_id = $1", device_id)
        await conn.execute(
            "INSERT INTO device_purges (device_id, deleted_at) VALUES ($1, $2)"
            " ON CONFLICT (device_id) DO NOTHING",
            device_id,
            deleted_at,
        )
    return True


async def purge_step(pool: Pool) -> bool:
    """Delete one chunk of a deleted device's points and events; False when
    nothing is pending. The purge is marked done only when a fresh look finds
    no row left (another process may be deleting the same rows at once)."""
    async with pool().acquire() as conn:
        device_id = await conn.fetchval(
            "SELECT device_id FROM device_purges WHERE purged_at IS NULL LIMIT 1"
        )
        if device_id is None:
            return False
        room = common.DELETE_CHUNK
        for table in ("points", "events"):
            if room > 0:
                status = await conn.execute(
                    f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("
                    f"SELECT ctid FROM {table} WHERE device_id = $1 LIMIT $2))",
                    device_id,
                    room,
                )
                room -= rowcount(status)
        if room > 0:
            await conn.execute(
                "UPDATE device_purges SET purged_at = $2 WHERE device_id = $1"
                " AND NOT EXISTS (SELECT 1 FROM points WHERE device_id = $1)"
                " AND NOT EXISTS (SELECT 1 FROM events WHERE device_id = $1)",
                device_id,
                common.now_ms(),
            )
    return True


_RETENTION = {
    "points": (
        "DELETE FROM points WHERE ctid = ANY(ARRAY("
        " SELECT p.ctid FROM devices d"
        " JOIN latest l ON l.device_id = d.id"
        " JOIN points p ON p.device_id = l.device_id AND p.key = l.key AND p.ts < $2"
        " WHERE d.product_id = $1 LIMIT $3))"
    ),
    "events": (
        "DELETE FROM events WHERE ctid = ANY(ARRAY("
        " SELECT e.ctid FROM devices d"
        " JOIN events e ON e.device_id = d.id AND e.ts < $2"
        " WHERE d.product_id = $1 LIMIT $3))"
    ),
}


# ------------------------------------------------------------------ repositories

_DEVICE = "JOIN devices d ON d.id = {t}.device_id AND d.product_id = $1 AND d.name = $2"


class PostgresTelemetry:
    def __init__(self, pool: Pool, writer: GroupCommit) -> None:
        self._pool = pool
        self._writer = writer

    async def append(self, product_id: str, name: str, points: Sequence[Point]) -> None:
        await self._writer.submit(common.telemetry_write(product_id, name, points))

    async def latest(self, product_id: str, name: str) -> dict[str, tuple[int, object]]:
        rows = await self._pool().fetch(
            f"SELECT l.key, l.ts, l.value FROM latest l {_DEVICE.format(t='l')}",
            product_id,
            name,
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
            " WHERE p.key = $3 AND p.ts >= $4 AND p.ts < $5"
        )
        # After a cursor, the range starts at its ts: both bounds on ts agree.
        first = start if after is None else max(start, after[0])
        params: builtins.list[Any] = [product_id, name, key, first, end]
        if after is not None:
            sql += " AND (p.ts, p.seq) > ($6::bigint, $7::bigint)"
            params += [after[0], after[1]]
        params.append(limit)
        sql += f" ORDER BY p.ts, p.seq LIMIT ${len(params)}"
        rows = await self._pool().fetch(sql, *params)
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
        where = (
            "FROM points p JOIN devices d ON d.id = p.device_id AND d.product_id = $3"
            " AND d.name = $4 WHERE p.key = $5 AND p.ts >= $1 AND p.ts < $6"
        )
        bucket = "(p.ts - $1::bigint) / $2::bigint"
        if function == "last":
            sql = (
                f"SELECT b, value FROM (SELECT {bucket} AS b, p.value, row_number() OVER"
                f" (PARTITION BY {bucket} ORDER BY p.ts DESC, p.seq DESC) AS r {where}) AS s"
                " WHERE r = 1 ORDER BY b"
            )
        elif function == "count":
            sql = f"SELECT {bucket} AS b, count(*) {where} GROUP BY b ORDER BY b"
        else:
            sql = (
                f"SELECT {bucket} AS b, {function}(p.num) {where}"
                " GROUP BY b HAVING count(p.num) > 0 ORDER BY b"
            )
        rows = await self._pool().fetch(sql, start, interval, product_id, name, key, end)
        return [(start + r[0] * interval, common.bucket_value(function, r[1])) for r in rows]

    async def delete_before(self, product_id: str, before: int, limit: int) -> int:
        deleted = 0
        for table in ("points", "events"):
            while deleted < limit:
                room = min(limit - deleted, common.DELETE_CHUNK)
                status = await self._pool().execute(_RETENTION[table], product_id, before, room)
                count = rowcount(status)
                deleted += count
                if count < room:
                    break
        return deleted


class PostgresAttributes:
    def __init__(self, pool: Pool, writer: GroupCommit) -> None:
        self._pool = pool
        self._writer = writer

    async def upsert(
        self, product_id: str, name: str, values: Mapping[str, object], ts: int
    ) -> None:
        await self._writer.submit(common.attributes_write(product_id, name, values, ts))

    async def get(self, product_id: str, name: str) -> dict[str, object]:
        rows = await self._pool().fetch(
            f"SELECT a.key, a.value FROM attributes a {_DEVICE.format(t='a')}",
            product_id,
            name,
        )
        return {r[0]: common.decode_value(r[1]) for r in rows}


class PostgresEvents:
    def __init__(self, pool: Pool, writer: GroupCommit) -> None:
        self._pool = pool
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
            " WHERE e.ts >= $3 AND e.ts < $4"
        )
        first = start if after is None else max(start, after[0])
        params: builtins.list[Any] = [product_id, name, first, end]
        if after is not None:
            sql += " AND (e.ts, e.seq) > ($5::bigint, $6::bigint)"
            params += [after[0], after[1]]
        params.append(limit)
        sql += f" ORDER BY e.ts, e.seq LIMIT ${len(params)}"
        rows = await self._pool().fetch(sql, *params)
        return [(r[0], r[1], DeviceEvent(r[0], r[2], common.decode_value(r[3]))) for r in rows]
