"""The SQLite group-commit writer: a batch is one transaction on the writer's
thread (one hop, one fsync), with SQLite's own telemetry appends and device
lookups (the other handlers: sql/handlers.py).

Rules:
- Devices are found by id through the writer connection's cache
  ((product_id, name) -> id), checked inside the batch's transaction: a
  device deleted through this connection leaves it in the deleting
  transaction (dialect.py), and `PRAGMA data_version` empties it whenever
  another connection (another process) committed anything since.
- `seq` of a point is max(seq) + 1, + 2, ... in arrival order (the seq of
  points deleted while they were the newest may be given again; it still
  orders every point present by arrival). The batch's newest point per
  (device, key), by ts then arrival, is upserted into `latest` `WHERE
  excluded.ts >= latest.ts`. Points and latest values are ONE executemany
  each.
- A write of many devices' rows (a gateway's message) is the same pass over
  every device of its group: a device not found is that device's 0 in the
  write's outcome (handlers.devices_outcome), the others are stored.
"""

from __future__ import annotations

import sqlite3

from thingshub.storage import common
from thingshub.storage.sql import handlers
from thingshub.storage.sql.batch import Write
from thingshub.storage.sql.connection import Connection, Rows
from thingshub.storage.sqlite.thread import Connection as Writer
from thingshub.storage.sqlite.thread import Db, ThreadConnection

_INSERT_POINTS = (
    "INSERT INTO points (seq, device_id, key, ts, num, value) VALUES (?, ?, ?, ?, ?, ?)"
)
#: Its parameters are a row of `_INSERT_POINTS` as it is (seq, device_id, key, ts,
#: num, value; num unused): the newest row of a series is kept, not copied.
_UPSERT_LATEST = (
    "INSERT INTO latest (device_id, key, ts, seq, value) VALUES (?2, ?3, ?4, ?1, ?6)"
    " ON CONFLICT (device_id, key) DO UPDATE"
    " SET ts = excluded.ts, seq = excluded.seq, value = excluded.value"
    " WHERE excluded.ts >= latest.ts"
)


def _raw(conn: Connection) -> sqlite3.Connection:
    assert isinstance(conn, ThreadConnection), "a batch runs on the writer's thread"
    return conn.raw


def device_ids(conn: sqlite3.Connection, rows: Rows) -> dict[tuple[str, str], int]:
    """The ids of the devices of `rows` (product_id, name, ...) that exist."""
    assert isinstance(conn, Writer), "the writer's connection carries the id cache"
    cache = conn.device_ids
    version = conn.execute("PRAGMA data_version").fetchone()[0]
    if version != conn.data_version:  # another connection committed: trust nothing cached
        cache.clear()
        conn.data_version = version
    found: dict[tuple[str, str], int] = {}
    for key in {(r[0], r[1]) for r in rows}:
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
    if isinstance(conn, Writer):
        conn.device_ids.pop((product_id, name), None)


async def _device_ids(conn: Connection, rows: Rows) -> dict[tuple[str, str], int]:
    return device_ids(_raw(conn), rows)


def _append(raw: sqlite3.Connection, devices: Rows) -> list[int]:
    """Each device's rows (product_id, name, rows) inserted, the newest of each
    series upserted: the positions of the devices that do not exist (nothing
    of theirs stored)."""
    ids = device_ids(raw, devices)
    seq = raw.execute("SELECT max(seq) FROM points").fetchone()[0] or 0
    missing: list[int] = []
    points: list[tuple[int, int, str, int, float | None, str]] = []
    newest: dict[tuple[int, str], tuple[int, int, str, int, float | None, str]] = {}
    append = points.append
    get = newest.get
    position = -1
    for product_id, name, values in devices:
        position += 1
        device_id = ids.get((product_id, name))
        if device_id is None:
            missing.append(position)
            continue
        for key, ts, num, value in values:
            seq += 1
            row = (seq, device_id, key, ts, num, value)
            append(row)
            series = (device_id, key)
            current = get(series)
            if current is None or ts >= current[3]:  # a later arrival wins a tie
                newest[series] = row
    raw.executemany(_INSERT_POINTS, points)
    raw.executemany(_UPSERT_LATEST, newest.values())
    return missing


async def _telemetry_append(conn: Connection, rows: Rows) -> list[object]:
    missing = _append(_raw(conn), rows)
    out: list[object] = [None] * len(rows)  # `handlers.of_devices`'s outcomes
    for position in missing:
        out[position] = common.device_missing(*rows[position][:2])
    return out


async def _telemetry_devices(conn: Connection, rows: Rows) -> list[object]:
    """TELEMETRY_APPEND_DEVICES: every write's devices in the one pass of `_append`."""
    missing = _append(_raw(conn), [device for devices in rows for device in devices])
    return handlers.devices_outcome(rows, set(missing))


WRITE_HANDLERS = handlers.table(_telemetry_append, _telemetry_devices, _device_ids)


async def run_batch(db: Db, batch: list[Write]) -> list[object]:
    """The group-commit writer's `run`: all of `batch` in one transaction."""
    return await db.transaction(lambda conn: handlers.apply(WRITE_HANDLERS, batch, conn))
