"""The SQLite group-commit writer: the handler of each kind of write (sql/writes.py).

Rules:
- A batch is one function on the writer's thread: `BEGIN IMMEDIATE`, every
  write in the order of `batch.plan`, `COMMIT`. One hop to the thread and
  one fsync for the whole batch.
- A handler takes the argument tuples of one group of writes of its kind and
  returns one outcome each: a value, or a ThingsHubError for that caller.
  Handlers never rely on an SQL error: conditional writes report through
  their row count (`UPDATE ... AND version = ?`, `INSERT ... SELECT ... WHERE
  EXISTS (device) ON CONFLICT DO NOTHING`), and only a write that changed
  nothing asks one more query to word its error. An SQL error is therefore
  a real failure, and fails the batch.
- Telemetry, attributes and events (keyless writes: a batch holds one group
  per kind with every device's writes in the order they were submitted) are
  ONE executemany per table. Their devices are found by id through the
  writer connection's cache ((product_id, name) -> id, thread.Connection),
  checked inside the batch's transaction: a device deleted through this
  connection leaves the cache in the deleting transaction (dialect.py), and
  `PRAGMA data_version` empties the cache whenever another connection
  (another process) committed anything since.
- `seq` of a point is given here as max(seq) + 1, + 2, ... in arrival order
  (the seq of points deleted while they were the newest may be given again;
  it still orders every point present by arrival); an event's seq is its
  rowid, given the same way. Latest values keep, per key, the newest point
  by ts, then by arrival: the batch's newest point per (device, key) is
  upserted with `ON CONFLICT ... WHERE excluded.ts >= latest.ts`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from functools import partial
from typing import Any

from thingshub.storage import common, ota_common
from thingshub.storage.batch import Write, plan
from thingshub.storage.sql import writes
from thingshub.storage.sql.rows import COMMAND_COLUMNS, OTA_DEVICE_COLUMNS, TASK_COLUMNS
from thingshub.storage.sqlite.thread import Connection, Db, in_transaction

Rows = list[tuple[Any, ...]]
Handler = Callable[[sqlite3.Connection, Rows], list[object]]

WRITE_HANDLERS: dict[str, Handler] = {}
handles = writes.registry(WRITE_HANDLERS)

# ------------------------------------------------------------------ images, commands


def _image_failure(conn: sqlite3.Connection, product_id: str, name: str, expected: int) -> object:
    row = conn.execute(
        "SELECT i.version FROM devices d"
        " LEFT JOIN images i ON i.product_id = d.product_id AND i.name = d.name"
        " WHERE d.product_id = ? AND d.name = ?",
        (product_id, name),
    ).fetchone()
    if row is None:
        return common.device_missing(product_id, name)
    return common.image_conflict(product_id, name, expected, row[0])


@handles(writes.IMAGE_CREATE)
def _image_create(conn: sqlite3.Connection, rows: Rows) -> list[object]:
    out: list[object] = []
    for product_id, name, version, document, updated_at in rows:
        changed = conn.execute(
            "INSERT INTO images (product_id, name, version, document, updated_at)"
            " SELECT ?1, ?2, ?3, ?4, ?5"
            " WHERE EXISTS (SELECT 1 FROM devices WHERE product_id = ?1 AND name = ?2)"
            " ON CONFLICT (product_id, name) DO NOTHING",
            (product_id, name, version, document, updated_at),
        ).rowcount
        out.append(None if changed else _image_failure(conn, product_id, name, 0))
    return out


@handles(writes.IMAGE_UPDATE)
def _image_update(conn: sqlite3.Connection, rows: Rows) -> list[object]:
    out: list[object] = []
    for product_id, name, expected, version, document, updated_at in rows:
        changed = conn.execute(
            "UPDATE images SET version = ?, document = ?, updated_at = ?"
            " WHERE product_id = ? AND name = ? AND version = ?",
            (version, document, updated_at, product_id, name, expected),
        ).rowcount
        out.append(None if changed else _image_failure(conn, product_id, name, expected))
    return out


_COMMAND_PARAMS = ", ".join(f"?{i}" for i in range(1, 13))


@handles(writes.COMMAND_ADD)
def _command_add(conn: sqlite3.Connection, rows: Rows) -> list[object]:
    out: list[object] = []
    for row in rows:
        changed = conn.execute(
            f"INSERT INTO commands ({COMMAND_COLUMNS}) SELECT {_COMMAND_PARAMS}"
            " WHERE EXISTS (SELECT 1 FROM devices WHERE product_id = ?2 AND name = ?3)"
            " ON CONFLICT (cmd_id) DO NOTHING",
            row,
        ).rowcount
        if changed:
            out.append(None)
        elif conn.execute("SELECT 1 FROM commands WHERE cmd_id = ?", (row[0],)).fetchone():
            out.append(common.command_exists(row[0]))
        else:
            out.append(common.device_missing(row[1], row[2]))
    return out


@handles(writes.COMMAND_FINISH)
def _command_finish(conn: sqlite3.Connection, rows: Rows) -> list[object]:
    out: list[object] = []
    for cmd_id, status, answered_at, response, detail in rows:
        changed = conn.execute(
            "UPDATE commands SET status = ?, answered_at = ?, response = ?, detail = ?"
            " WHERE cmd_id = ?",
            (status, answered_at, response, detail, cmd_id),
        ).rowcount
        out.append(changed > 0)
    return out


# ------------------------------------------------------------------ telemetry, attributes, events


def device_ids(conn: sqlite3.Connection, rows: Rows) -> dict[tuple[str, str], int]:
    """The ids of the devices that exist among those `rows` (product_id, name, ...)
    name, inside the writer's transaction."""
    assert isinstance(conn, Connection), "the writer's connection carries the id cache"
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
    if isinstance(conn, Connection):
        conn.device_ids.pop((product_id, name), None)


_UPSERT_LATEST = (
    "INSERT INTO latest (device_id, key, ts, seq, value) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (device_id, key) DO UPDATE"
    " SET ts = excluded.ts, seq = excluded.seq, value = excluded.value"
    " WHERE excluded.ts >= latest.ts"
)


@handles(writes.TELEMETRY_APPEND)
def _telemetry_append(conn: sqlite3.Connection, rows: Rows) -> list[object]:
    out, found = writes.of_devices(rows, device_ids(conn, rows))
    seq = conn.execute("SELECT max(seq) FROM points").fetchone()[0] or 0
    points: Rows = []
    newest: dict[tuple[int, str], tuple[int, str, int, int, str]] = {}  # of the batch
    for device_id, (_, _, values) in found:
        for key, ts, num, value in values:
            seq += 1
            points.append((seq, device_id, key, ts, num, value))
            current = newest.get((device_id, key))
            if current is None or ts >= current[2]:  # a later arrival wins a tie
                newest[(device_id, key)] = (device_id, key, ts, seq, value)
    conn.executemany(
        "INSERT INTO points (seq, device_id, key, ts, num, value) VALUES (?, ?, ?, ?, ?, ?)",
        points,
    )
    conn.executemany(_UPSERT_LATEST, newest.values())
    return out


@handles(writes.ATTRIBUTES_UPSERT)
def _attributes_upsert(conn: sqlite3.Connection, rows: Rows) -> list[object]:
    out, found = writes.of_devices(rows, device_ids(conn, rows))
    conn.executemany(
        "INSERT INTO attributes (device_id, key, value, ts) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (device_id, key) DO UPDATE SET value = excluded.value, ts = excluded.ts",
        [
            (device_id, key, value, ts)
            for device_id, (_, _, pairs, ts) in found
            for key, value in pairs
        ],
    )
    return out


@handles(writes.EVENTS_APPEND)
def _events_append(conn: sqlite3.Connection, rows: Rows) -> list[object]:
    out, found = writes.of_devices(rows, device_ids(conn, rows))
    # seq is the rowid: max + 1, + 2... in this order, which is arrival order.
    conn.executemany(
        "INSERT INTO events (device_id, ts, method, params) VALUES (?, ?, ?, ?)",
        [(device_id, *event) for device_id, (_, _, events) in found for event in events],
    )
    return out


# ------------------------------------------------------------------ OTA

_TASK_PARAMS = ", ".join(f"?{i}" for i in range(1, 12))
_OTA_DEVICE_INSERT = (
    f"INSERT INTO ota_task_devices (position, {OTA_DEVICE_COLUMNS})"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_OTA_DEVICE_UPDATE = (
    "UPDATE ota_task_devices SET state = ?3, step = ?4, description = ?5, detail = ?6,"
    " informed_at = ?7, updated_at = ?8, finished_at = ?9"
    f" WHERE task_id = ?1 AND name = ?2 AND state NOT IN ({writes.FINAL_STATES})"
)


@handles(writes.OTA_TASK_ADD)
def _task_add(conn: sqlite3.Connection, rows: Rows) -> list[object]:
    out: list[object] = []
    for task, devices in rows:
        changed = conn.execute(
            f"INSERT INTO ota_tasks ({TASK_COLUMNS}) SELECT {_TASK_PARAMS}"
            " WHERE EXISTS (SELECT 1 FROM firmware WHERE id = ?3 AND product_id = ?2)"
            " ON CONFLICT (id) DO NOTHING",
            task,
        ).rowcount
        if changed:
            conn.executemany(_OTA_DEVICE_INSERT, devices)
            out.append(None)
        elif conn.execute("SELECT 1 FROM ota_tasks WHERE id = ?", (task[0],)).fetchone():
            out.append(ota_common.task_exists(task[0]))
        else:
            out.append(ota_common.firmware_missing(task[1], task[2]))
    return out


@handles(writes.OTA_DEVICE_SAVE)
def _device_save(conn: sqlite3.Connection, rows: Rows) -> list[object]:
    return [conn.execute(_OTA_DEVICE_UPDATE, row).rowcount > 0 for row in rows]


@handles(writes.OTA_TASK_FINISH)
def _task_finish(conn: sqlite3.Connection, rows: Rows) -> list[object]:
    out: list[object] = []
    for task_id, status, finished_at, devices in rows:
        changed = conn.execute(
            "UPDATE ota_tasks SET status = ?, finished_at = ? WHERE id = ? AND status = 'RUNNING'",
            (status, finished_at, task_id),
        ).rowcount
        if changed:
            conn.executemany(_OTA_DEVICE_UPDATE, devices)
        out.append(changed > 0)
    return out


# ------------------------------------------------------------------ the batch


def _apply(batch: list[Write], conn: sqlite3.Connection) -> list[object]:
    outcomes: list[object] = [None] * len(batch)
    for kind, indexes in plan(batch):
        results = WRITE_HANDLERS[kind](conn, [batch[i].args for i in indexes])
        for index, outcome in zip(indexes, results, strict=True):
            outcomes[index] = outcome
    return outcomes


async def run_batch(db: Db, batch: list[Write]) -> list[object]:
    """The group-commit writer's `run`: all of `batch` in one transaction."""
    return await db.call(partial(in_transaction, partial(_apply, batch)))
