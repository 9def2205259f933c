"""The PostgreSQL group-commit writer: the handler of each kind of write
(sql/writes.py), on one connection of the writer's own.

Rules:
- The writer holds one pooled connection for its whole life (taken at
  `open()`, given back at `close()`; a broken one is replaced before the
  next batch). A batch is one transaction on it; reads never use it.
- Each group of `batch.plan` (one kind, no key twice) is ONE statement over
  `unnest($1::text[], ...)` arrays, with `RETURNING` the keys it changed:
  a round trip per group instead of per write (~25 us a write instead of
  ~0.2 ms). Keys are distinct inside a group, so what a statement returned
  says exactly which writes took effect.
- Handlers never rely on an SQL error: conditional writes report through
  what they returned (`UPDATE ... AND version = u.expected`, `INSERT ...
  WHERE EXISTS (device FOR KEY SHARE) ON CONFLICT DO NOTHING`), and only
  the writes that changed nothing cost one more query, to word their errors.
  `FOR KEY SHARE` holds the device row until the commit, so a device deleted
  meanwhile by another connection makes the insert skip the row instead of
  failing the foreign key. An SQL error is therefore a real failure and
  fails the batch (a deadlock with another process's batch included).
- Telemetry, attributes and events (keyless writes: a batch holds one group
  per kind with every device's writes in submission order) are a few
  statements a group whatever its size: one that finds and locks the
  group's devices (`FOR KEY SHARE`, by (product_id, name); a device deleted
  by another connection meanwhile waits for our commit, and its delete then
  sees our rows), then ONE statement over `unnest` arrays.
- Telemetry is one statement: the points are inserted in arrival order
  (`WITH ORDINALITY ... ORDER BY`, so `seq`, an identity, follows arrival)
  and the newest point of each (device, key) of the batch (DISTINCT ON, by
  ts then seq) is upserted into `latest` with `ON CONFLICT ... WHERE
  excluded.ts >= latest.ts`. Measured against `copy_records_to_table` (plus
  a statement to take the seqs and one for `latest`): for batches of 50 to
  3,000 points this single statement was as fast or faster (bench/
  storage_ingest.py), and it needs one round trip.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from thingshub.storage import common, ota_common
from thingshub.storage.batch import Write, plan
from thingshub.storage.postgres.pool import Pool
from thingshub.storage.sql import writes
from thingshub.storage.sql.rows import COMMAND_COLUMNS, OTA_DEVICE_COLUMNS, TASK_COLUMNS

Rows = list[tuple[Any, ...]]
Handler = Callable[[Any, Rows], Awaitable[list[object]]]

WRITE_HANDLERS: dict[str, Handler] = {}
handles = writes.registry(WRITE_HANDLERS)

# ------------------------------------------------------------------ images, commands


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """`rows` as `width` columns, for unnest()."""
    return [[row[i] for row in rows] for i in range(width)]


async def _image_failures(
    conn: Any, rows: Rows, done: set[tuple[str, str]], expected_at: int | None
) -> list[object]:
    """Outcomes of image writes: None for those in `done`, errors for the others
    (`expected_at` is the index of the expected version in a row; None: 0)."""
    failed = [(r[0], r[1]) for r in rows if (r[0], r[1]) not in done]
    stored: dict[tuple[str, str], int | None] = {}
    if failed:
        found = await conn.fetch(
            "SELECT d.product_id, d.name, i.version"
            " FROM unnest($1::text[], $2::text[]) AS k(product_id, name)"
            " JOIN devices d ON d.product_id = k.product_id AND d.name = k.name"
            " LEFT JOIN images i ON i.product_id = d.product_id AND i.name = d.name",
            [k[0] for k in failed],
            [k[1] for k in failed],
        )
        stored = {(r[0], r[1]): r[2] for r in found}
    out: list[object] = []
    for row in rows:
        key = (row[0], row[1])
        expected = 0 if expected_at is None else row[expected_at]
        if key in done:
            out.append(None)
        elif key not in stored:
            out.append(common.device_missing(*key))
        else:
            out.append(common.image_conflict(key[0], key[1], expected, stored[key]))
    return out


@handles(writes.IMAGE_CREATE)
async def _image_create(conn: Any, rows: Rows) -> list[object]:
    returned = await conn.fetch(
        "INSERT INTO images (product_id, name, version, document, updated_at)"
        " SELECT u.product_id, u.name, u.version, u.document, u.updated_at"
        " FROM unnest($1::text[], $2::text[], $3::bigint[], $4::json[], $5::bigint[])"
        " AS u(product_id, name, version, document, updated_at)"
        " WHERE EXISTS (SELECT 1 FROM devices d"
        " WHERE d.product_id = u.product_id AND d.name = u.name FOR KEY SHARE)"
        " ON CONFLICT (product_id, name) DO NOTHING"
        " RETURNING product_id, name",
        *_columns(rows, 5),
    )
    return await _image_failures(conn, rows, {(r[0], r[1]) for r in returned}, None)


@handles(writes.IMAGE_UPDATE)
async def _image_update(conn: Any, rows: Rows) -> list[object]:
    returned = await conn.fetch(
        "UPDATE images AS i"
        " SET version = u.version, document = u.document, updated_at = u.updated_at"
        " FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::json[],"
        " $6::bigint[]) AS u(product_id, name, expected, version, document, updated_at)"
        " WHERE i.product_id = u.product_id AND i.name = u.name AND i.version = u.expected"
        " RETURNING i.product_id, i.name",
        *_columns(rows, 6),
    )
    return await _image_failures(conn, rows, {(r[0], r[1]) for r in returned}, 2)


@handles(writes.COMMAND_ADD)
async def _command_add(conn: Any, rows: Rows) -> list[object]:
    returned = await conn.fetch(
        f"INSERT INTO commands ({COMMAND_COLUMNS})"
        " SELECT u.cmd_id, u.product_id, u.name, u.family, u.kind, u.request, u.status,"
        " u.created_at, u.sent_at, u.answered_at, u.response, u.detail"
        " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
        " $6::bytea[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bytea[],"
        " $12::text[]) AS u(cmd_id, product_id, name, family, kind, request, status,"
        " created_at, sent_at, answered_at, response, detail)"
        " WHERE EXISTS (SELECT 1 FROM devices d"
        " WHERE d.product_id = u.product_id AND d.name = u.name FOR KEY SHARE)"
        " ON CONFLICT (cmd_id) DO NOTHING"
        " RETURNING cmd_id",
        *_columns(rows, 12),
    )
    done = {r[0] for r in returned}
    failed = [row[0] for row in rows if row[0] not in done]
    taken: set[str] = set()
    if failed:
        found = await conn.fetch(
            "SELECT cmd_id FROM commands WHERE cmd_id = ANY($1::text[])", failed
        )
        taken = {r[0] for r in found}
    out: list[object] = []
    for row in rows:
        if row[0] in done:
            out.append(None)
        elif row[0] in taken:
            out.append(common.command_exists(row[0]))
        else:
            out.append(common.device_missing(row[1], row[2]))
    return out


@handles(writes.COMMAND_FINISH)
async def _command_finish(conn: Any, rows: Rows) -> list[object]:
    returned = await conn.fetch(
        "UPDATE commands AS c SET status = u.status, answered_at = u.answered_at,"
        " response = u.response, detail = u.detail"
        " FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bytea[], $5::text[])"
        " AS u(cmd_id, status, answered_at, response, detail)"
        " WHERE c.cmd_id = u.cmd_id"
        " RETURNING c.cmd_id",
        *_columns(rows, 5),
    )
    done = {r[0] for r in returned}
    return [row[0] in done for row in rows]


# ------------------------------------------------------------------ telemetry, attributes, events


async def _lock_devices(conn: Any, rows: Rows) -> dict[tuple[str, str], int]:
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


@handles(writes.TELEMETRY_APPEND)
async def _telemetry_append(conn: Any, rows: Rows) -> list[object]:
    out, found = writes.of_devices(rows, await _lock_devices(conn, rows))
    columns: tuple[list[Any], ...] = ([], [], [], [], [])
    device_ids, keys, times, nums, values = columns
    for device_id, (_, _, points) in found:
        for key, ts, num, value in points:
            device_ids.append(device_id)
            keys.append(key)
            times.append(ts)
            nums.append(num)
            values.append(value)
    if device_ids:
        await conn.execute(_APPEND_POINTS, *columns)
    return out


@handles(writes.ATTRIBUTES_UPSERT)
async def _attributes_upsert(conn: Any, rows: Rows) -> list[object]:
    out, found = writes.of_devices(rows, await _lock_devices(conn, rows))
    merged = {  # one row per key: the last wins
        (device_id, key): (value, ts)
        for device_id, (_, _, pairs, ts) in found
        for key, value in pairs
    }
    if merged:
        await conn.execute(
            "INSERT INTO attributes (device_id, key, value, ts)"
            " SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[])"
            " ON CONFLICT (device_id, key) DO UPDATE SET value = excluded.value, ts = excluded.ts",
            *_columns([(*key, *value) for key, value in merged.items()], 4),
        )
    return out


@handles(writes.EVENTS_APPEND)
async def _events_append(conn: Any, rows: Rows) -> list[object]:
    out, found = writes.of_devices(rows, await _lock_devices(conn, rows))
    events = [(device_id, *event) for device_id, (_, _, items) in found for event in items]
    if events:
        await conn.execute(
            "INSERT INTO events (device_id, ts, method, params)"
            " SELECT u.device_id, u.ts, u.method, u.params"
            " FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[])"
            " WITH ORDINALITY AS u(device_id, ts, method, params, n) ORDER BY u.n",
            *_columns(events, 4),
        )
    return out


# ------------------------------------------------------------------ OTA

_DEVICE_TYPES = (
    "$1::text[], $2::text[], $3::text[], $4::integer[], $5::text[], $6::text[],"
    " $7::bigint[], $8::bigint[], $9::bigint[]"
)


async def _update_devices(conn: Any, rows: Sequence[Sequence[Any]]) -> set[tuple[str, str]]:
    """Apply device rows (distinct keys) that are not final; the keys changed."""
    if not rows:
        return set()
    returned = await conn.fetch(
        "UPDATE ota_task_devices AS d SET state = u.state, step = u.step,"
        " description = u.description, detail = u.detail, informed_at = u.informed_at,"
        " updated_at = u.updated_at, finished_at = u.finished_at"
        f" FROM unnest({_DEVICE_TYPES}) AS u(task_id, name, state, step, description, detail,"
        " informed_at, updated_at, finished_at)"
        " WHERE d.task_id = u.task_id AND d.name = u.name"
        f" AND d.state NOT IN ({writes.FINAL_STATES})"
        " RETURNING d.task_id, d.name",
        *_columns(rows, 9),
    )
    return {(r[0], r[1]) for r in returned}


@handles(writes.OTA_TASK_ADD)
async def _task_add(conn: Any, rows: Rows) -> list[object]:
    out: list[object] = []
    for task, devices in rows:
        added = await conn.fetchval(
            f"INSERT INTO ota_tasks ({TASK_COLUMNS})"
            " SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text,"
            " $7::integer, $8::integer, $9::text, $10::bigint, $11::bigint"
            " WHERE EXISTS (SELECT 1 FROM firmware"
            " WHERE id = $3 AND product_id = $2 FOR KEY SHARE)"
            " ON CONFLICT (id) DO NOTHING RETURNING id",
            *task,
        )
        if added is not None:
            if devices:
                await conn.execute(
                    f"INSERT INTO ota_task_devices (position, {OTA_DEVICE_COLUMNS})"
                    " SELECT * FROM unnest($1::integer[], $2::text[], $3::text[], $4::text[],"
                    " $5::integer[], $6::text[], $7::text[], $8::bigint[], $9::bigint[],"
                    " $10::bigint[])",
                    *_columns(devices, 10),
                )
            out.append(None)
        elif await conn.fetchval("SELECT 1 FROM ota_tasks WHERE id = $1", task[0]):
            out.append(ota_common.task_exists(task[0]))
        else:
            out.append(ota_common.firmware_missing(task[1], task[2]))
    return out


@handles(writes.OTA_DEVICE_SAVE)
async def _device_save(conn: Any, rows: Rows) -> list[object]:
    changed = await _update_devices(conn, rows)
    return [(row[0], row[1]) in changed for row in rows]


@handles(writes.OTA_TASK_FINISH)
async def _task_finish(conn: Any, rows: Rows) -> list[object]:
    out: list[object] = []
    for task_id, status, finished_at, devices in rows:
        done = await conn.fetchval(
            "UPDATE ota_tasks SET status = $2, finished_at = $3"
            " WHERE id = $1 AND status = 'RUNNING' RETURNING id",
            task_id,
            status,
            finished_at,
        )
        if done is not None:
            await _update_devices(conn, devices)
        out.append(done is not None)
    return out


# ------------------------------------------------------------------ the batch


def _usable(conn: Any) -> bool:
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:  # the pool took it back when it was lost
        return False


class BatchRunner:
    """The writer's own connection, and the group-commit writer's `run` on it."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self.conn: Any = None

    async def connect(self) -> None:
        """Take the writer's connection from the pool (again, if it broke)."""
        if self.conn is not None and not _usable(self.conn):
            await self.release()  # a no-op for a connection the pool took back
        if self.conn is None:
            self.conn = await self._pool.raw().acquire()

    async def release(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            await self._pool.raw().release(conn)

    async def __call__(self, batch: list[Write]) -> list[object]:
        await self.connect()
        conn = self.conn
        outcomes: list[object] = [None] * len(batch)
        async with conn.transaction():
            for kind, indexes in plan(batch):
                results = await WRITE_HANDLERS[kind](conn, [batch[i].args for i in indexes])
                for index, outcome in zip(indexes, results, strict=True):
                    outcomes[index] = outcome
        return outcomes
