"""How a batch of writes (writes.py) is applied, in one transaction, on both databases.

Rules:
- A handler takes the arguments of one group of `batch.plan` (one kind, no
  key twice) and returns one outcome each: a value, or a ThingsHubError for
  that caller only. A group is a few bulk statements whatever its size.
- Handlers never rely on an SQL error: conditional writes report what took
  effect (`UPDATE ... AND version = expected`, `INSERT ... WHERE EXISTS
  (device FOR KEY SHARE) ON CONFLICT DO NOTHING`), and only the writes that
  changed nothing cost one more query, to word their errors; an SQL error
  fails the batch. `FOR KEY SHARE` holds the device row to the commit, so a
  device deleted meanwhile by another connection skips the row instead of
  failing the foreign key.
- Telemetry, and finding the devices of telemetry, attributes and events,
  are each database's own (its writes.py), given to `table()`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any

from thingshub.storage import common, ota_common
from thingshub.storage.sql import writes
from thingshub.storage.sql.batch import Write, plan
from thingshub.storage.sql.connection import Connection, Rows, bulk, sql
from thingshub.storage.sql.rows import COMMAND_COLUMNS, OTA_DEVICE_COLUMNS, TASK_COLUMNS

Handler = Callable[[Connection, Rows], Awaitable[list[object]]]
#: The ids of the devices of writes (product_id, name, ...) that exist, for its transaction.
DeviceIds = Callable[[Connection, Rows], Awaitable[Mapping[tuple[str, str], int]]]


def _unnest(columns: str) -> str:
    """`unnest($1::type[], ...) AS u(name, ...)` of columns "name type, ...": a row a position."""
    pairs = [column.split() for column in columns.split(", ")]
    arrays = ", ".join(f"${i}::{kind}[]" for i, (_, kind) in enumerate(pairs, 1))
    return f"unnest({arrays}) AS u({', '.join(name for name, _ in pairs)})"


def _row(count: int) -> str:
    return ", ".join(f"${i}" for i in range(1, count + 1))


def _device_exists(product_id: str, name: str) -> str:
    return (
        "EXISTS (SELECT 1 FROM devices d"
        f" WHERE d.product_id = {product_id} AND d.name = {name} FOR KEY SHARE)"
    )


_DEVICE = "product_id text, name text"
_IMAGE = "version bigint, document json, updated_at bigint"
_COMMAND = (
    "cmd_id text, product_id text, name text, family text, kind text, request bytea, status text,"
    " created_at bigint, sent_at bigint, answered_at bigint, response bytea, detail text,"
    " target text, node text"
)
_OTA_DEVICE = (
    "task_id text, name text, state text, step integer, description text, detail text,"
    " informed_at bigint, updated_at bigint, finished_at bigint, tid bigint, protocol text"
)
_IN_ARRAYS = _device_exists("u.product_id", "u.name")

IMAGE_INSERT = bulk(
    f"INSERT INTO images (product_id, name, version, document, updated_at)"
    f" SELECT * FROM {_unnest(f'{_DEVICE}, {_IMAGE}')} WHERE {_IN_ARRAYS}"
    " ON CONFLICT (product_id, name) DO NOTHING RETURNING product_id, name",
    f"INSERT INTO images (product_id, name, version, document, updated_at) SELECT {_row(5)}"
    f" WHERE {_device_exists('$1', '$2')} ON CONFLICT (product_id, name) DO NOTHING",
)
IMAGE_UPDATE = bulk(
    "UPDATE images AS i SET version = u.version, document = u.document, updated_at = u.updated_at"
    f" FROM {_unnest(f'{_DEVICE}, expected bigint, {_IMAGE}')}"
    " WHERE i.product_id = u.product_id AND i.name = u.name AND i.version = u.expected"
    " RETURNING i.product_id, i.name",
    "UPDATE images SET version = $4, document = $5, updated_at = $6"
    " WHERE product_id = $1 AND name = $2 AND version = $3",
)
IMAGE_VERSIONS = bulk(
    f"SELECT d.product_id, d.name, i.version FROM {_unnest(_DEVICE)}"
    " JOIN devices d ON d.product_id = u.product_id AND d.name = u.name"
    " LEFT JOIN images i ON i.product_id = d.product_id AND i.name = d.name",
    "SELECT d.product_id, d.name, i.version FROM devices d"
    " LEFT JOIN images i ON i.product_id = d.product_id AND i.name = d.name"
    " WHERE d.product_id = $1 AND d.name = $2",
)
COMMAND_INSERT = bulk(
    f"INSERT INTO commands ({COMMAND_COLUMNS}) SELECT * FROM {_unnest(_COMMAND)}"
    f" WHERE {_IN_ARRAYS} ON CONFLICT (cmd_id) DO NOTHING RETURNING cmd_id",
    f"INSERT INTO commands ({COMMAND_COLUMNS}) SELECT {_row(14)}"
    f" WHERE {_device_exists('$2', '$3')} ON CONFLICT (cmd_id) DO NOTHING",
)
COMMANDS_TAKEN = bulk(
    "SELECT cmd_id FROM commands WHERE cmd_id = ANY($1::text[])",
    "SELECT cmd_id FROM commands WHERE cmd_id = $1",
)
COMMAND_FINISH = bulk(
    "UPDATE commands AS c SET status = u.status, answered_at = u.answered_at,"
    " response = u.response, detail = u.detail FROM"
    f" {_unnest('cmd_id text, status text, answered_at bigint, response bytea, detail text')}"
    " WHERE c.cmd_id = u.cmd_id RETURNING c.cmd_id",
    "UPDATE commands SET status = $2, answered_at = $3, response = $4, detail = $5"
    " WHERE cmd_id = $1",
)
ATTRIBUTES_UPSERT = bulk(
    "INSERT INTO attributes (device_id, key, value, ts)"
    f" SELECT * FROM {_unnest('device_id bigint, key text, value text, ts bigint')}"
    " ON CONFLICT (device_id, key) DO UPDATE SET value = excluded.value, ts = excluded.ts",
    "INSERT INTO attributes (device_id, key, value, ts) VALUES ($1, $2, $3, $4)"
    " ON CONFLICT (device_id, key) DO UPDATE SET value = excluded.value, ts = excluded.ts",
)
EVENTS_INSERT = bulk(  # seq follows arrival: PostgreSQL's identity, SQLite's rowid
    "INSERT INTO events (device_id, ts, method, params, type)"
    " SELECT u.device_id, u.ts, u.method, u.params, u.type"
    " FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[])"
    " WITH ORDINALITY AS u(device_id, ts, method, params, type, n) ORDER BY u.n",
    "INSERT INTO events (device_id, ts, method, params, type) VALUES ($1, $2, $3, $4, $5)",
)
TASK_INSERT = sql(
    f"INSERT INTO ota_tasks ({TASK_COLUMNS}) SELECT $1::text, $2::text, $3::text, $4::text,"
    " $5::text, $6::text, $7::integer, $8::integer, $9::text, $10::bigint, $11::bigint"
    " WHERE EXISTS (SELECT 1 FROM firmware WHERE id = $3 AND product_id = $2 FOR KEY SHARE)"
    " ON CONFLICT (id) DO NOTHING RETURNING id"
)
TASK_TAKEN = sql("SELECT 1 FROM ota_tasks WHERE id = $1")
TIDS_TAKE = sql("UPDATE ota_tids SET last = last + $1 WHERE id = 1 RETURNING last")
#: Where a device's tid is in the rows of OTA_DEVICES_INSERT (after `position`).
_TID = 1 + OTA_DEVICE_COLUMNS.split(", ").index("tid")
TASK_FINISH = sql(
    "UPDATE ota_tasks SET status = $2, finished_at = $3"
    " WHERE id = $1 AND status = 'RUNNING' RETURNING id"
)
OTA_DEVICES_INSERT = bulk(
    f"INSERT INTO ota_task_devices (position, {OTA_DEVICE_COLUMNS})"
    f" SELECT * FROM {_unnest('position integer, ' + _OTA_DEVICE)}",
    f"INSERT INTO ota_task_devices (position, {OTA_DEVICE_COLUMNS}) VALUES ({_row(12)})",
)
OTA_DEVICES_UPDATE = bulk(  # rows that are final are kept
    "UPDATE ota_task_devices AS d SET state = u.state, step = u.step,"
    " description = u.description, detail = u.detail, informed_at = u.informed_at,"
    f" updated_at = u.updated_at, finished_at = u.finished_at, protocol = u.protocol"
    f" FROM {_unnest(_OTA_DEVICE)}"
    " WHERE d.task_id = u.task_id AND d.name = u.name"
    f" AND d.state NOT IN ({writes.FINAL_STATES}) RETURNING d.task_id, d.name",
    "UPDATE ota_task_devices SET state = $3, step = $4, description = $5, detail = $6,"
    " informed_at = $7, updated_at = $8, finished_at = $9, protocol = $11"
    f" WHERE task_id = $1 AND name = $2 AND state NOT IN ({writes.FINAL_STATES})",
)


async def _image_outcomes(
    conn: Connection, rows: Rows, done: set[tuple[str, str]], expected_at: int | None
) -> list[object]:
    """None for the image writes in `done`, errors for the others (`expected_at`:
    the index of the expected version in a row; None: 0)."""
    failed = [(r[0], r[1]) for r in rows if (r[0], r[1]) not in done]
    found = await conn.bulk(IMAGE_VERSIONS, failed) if failed else []
    stored = {(r[0], r[1]): r[2] for r in found}
    out: list[object] = []
    for row in rows:
        key, expected = (row[0], row[1]), 0 if expected_at is None else row[expected_at]
        if key in done:
            out.append(None)
        elif key not in stored:
            out.append(common.device_missing(*key))
        else:
            out.append(common.image_conflict(key[0], key[1], expected, stored[key]))
    return out


async def image_create(conn: Connection, rows: Rows) -> list[object]:
    done = {(r[0], r[1]) for r in await conn.bulk(IMAGE_INSERT, rows)}
    return await _image_outcomes(conn, rows, done, None)


async def image_update(conn: Connection, rows: Rows) -> list[object]:
    done = {(r[0], r[1]) for r in await conn.bulk(IMAGE_UPDATE, rows)}
    return await _image_outcomes(conn, rows, done, 2)


async def command_add(conn: Connection, rows: Rows) -> list[object]:
    done = {r[0] for r in await conn.bulk(COMMAND_INSERT, rows)}
    failed = [(row[0],) for row in rows if row[0] not in done]
    taken = {r[0] for r in await conn.bulk(COMMANDS_TAKEN, failed)} if failed else set()
    out: list[object] = []
    for row in rows:
        if row[0] in done:
            out.append(None)
        elif row[0] in taken:
            out.append(common.command_exists(row[0]))
        else:
            out.append(common.device_missing(row[1], row[2]))
    return out


async def command_finish(conn: Connection, rows: Rows) -> list[object]:
    done = {r[0] for r in await conn.bulk(COMMAND_FINISH, rows)}
    return [row[0] in done for row in rows]


def of_devices(
    rows: Rows, ids: Mapping[tuple[str, str], int]
) -> tuple[list[object], list[tuple[int, Any]]]:
    """For writes (product_id, name, ...) of telemetry, attributes or events: the
    outcome of each (None, or NotFound for a device not among `ids`), and (device
    id, write) of those whose device is."""
    found = [(ids[(r[0], r[1])], r) for r in rows if (r[0], r[1]) in ids]
    out: list[object] = [
        None if (r[0], r[1]) in ids else common.device_missing(r[0], r[1]) for r in rows
    ]
    return out, found


async def attributes_upsert(device_ids: DeviceIds, conn: Connection, rows: Rows) -> list[object]:
    out, found = of_devices(rows, await device_ids(conn, rows))
    merged = {  # one row per key: the last wins
        (d, key): (value, ts) for d, (_, _, pairs, ts) in found for key, value in pairs
    }
    if merged:
        await conn.executemany(ATTRIBUTES_UPSERT, [(*k, *v) for k, v in merged.items()])
    return out


async def events_append(device_ids: DeviceIds, conn: Connection, rows: Rows) -> list[object]:
    out, found = of_devices(rows, await device_ids(conn, rows))
    events = [(d, *event) for d, (_, _, items) in found for event in items]
    if events:
        await conn.executemany(EVENTS_INSERT, events)
    return out


async def task_add(conn: Connection, rows: Rows) -> list[object]:
    """Each task's first tid (its devices numbered from it), or its error."""
    out: list[object] = []
    for task, devices in rows:
        if await conn.fetchone(TASK_INSERT, *task) is not None:
            # The counter's row stays locked to the commit: another process's
            # transaction taking tids waits for it, then counts on from here.
            taken = await conn.fetchone(TIDS_TAKE, len(devices))
            assert taken is not None  # the row migration 11 made
            first = int(taken[0]) - len(devices) + 1
            if devices:  # (position, task_id, ..., tid, protocol): tid = first + position
                numbered = [(*d[:_TID], first + d[0], *d[_TID + 1 :]) for d in devices]
                await conn.executemany(OTA_DEVICES_INSERT, numbered)
            out.append(first)
        elif await conn.fetchone(TASK_TAKEN, task[0]) is not None:
            out.append(ota_common.task_exists(task[0]))
        else:
            out.append(ota_common.firmware_missing(task[1], task[2]))
    return out


async def device_save(conn: Connection, rows: Rows) -> list[object]:
    changed = {(r[0], r[1]) for r in await conn.bulk(OTA_DEVICES_UPDATE, rows)}
    return [(row[0], row[1]) in changed for row in rows]


async def task_finish(conn: Connection, rows: Rows) -> list[object]:
    out: list[object] = []
    for task_id, status, finished_at, devices in rows:
        done = await conn.fetchone(TASK_FINISH, task_id, status, finished_at) is not None
        if done and devices:
            await conn.executemany(OTA_DEVICES_UPDATE, devices)
        out.append(done)
    return out


def devices_outcome(rows: Rows, missing: set[int]) -> list[object]:
    """The outcomes of TELEMETRY_APPEND_DEVICES writes, given the positions of
    their devices, counted over all of them in order, that do not exist: None
    for a write whose devices all do, else a tuple of one a device (None, or 0)."""
    if not missing:
        return [None] * len(rows)
    out: list[object] = []
    first = 0
    for devices in rows:
        end = first + len(devices)
        if missing.isdisjoint(range(first, end)):
            out.append(None)
        else:
            out.append(tuple(0 if i in missing else None for i in range(first, end)))
        first = end
    return out


def table(
    telemetry_append: Handler, telemetry_devices: Handler, device_ids: DeviceIds
) -> dict[str, Handler]:
    """A database's handler of each kind of write, given its own telemetry (a
    device's write, many devices' write) and device lookup."""
    return {
        writes.IMAGE_CREATE: image_create,
        writes.IMAGE_UPDATE: image_update,
        writes.COMMAND_ADD: command_add,
        writes.COMMAND_FINISH: command_finish,
        writes.TELEMETRY_APPEND: telemetry_append,
        writes.TELEMETRY_APPEND_DEVICES: telemetry_devices,
        writes.ATTRIBUTES_UPSERT: partial(attributes_upsert, device_ids),
        writes.EVENTS_APPEND: partial(events_append, device_ids),
        writes.OTA_TASK_ADD: task_add,
        writes.OTA_DEVICE_SAVE: device_save,
        writes.OTA_TASK_FINISH: task_finish,
    }


async def apply(
    handlers: Mapping[str, Handler], batch: Sequence[Write], conn: Connection
) -> list[object]:
    """The outcome of each write of `batch`, applied in the order of `batch.plan`."""
    groups = plan(batch)
    if len(groups) == 1:  # every write of one kind, no key twice: in the batch's order
        kind = groups[0][0]
        return list(await handlers[kind](conn, [write.args for write in batch]))
    outcomes: list[object] = [None] * len(batch)
    for kind, indexes in groups:
        results = await handlers[kind](conn, [batch[i].args for i in indexes])
        for index, outcome in zip(indexes, results, strict=True):
            outcomes[index] = outcome
    return outcomes
