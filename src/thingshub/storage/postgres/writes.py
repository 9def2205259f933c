"""The PostgreSQL group-commit writer: a batch is one transaction on a connection
of the writer's own, with PostgreSQL's own telemetry appends and device
lookups (the other handlers: sql/handlers.py).

Rules:
- The writer holds one pooled connection for its whole life (taken at
  `open()`, given back at `close()`; a broken one is replaced before the
  next batch). Reads never use it.
- Its statements are planned afresh at each batch (`plan_cache_mode =
  force_custom_plan` on that connection, reset before it goes back to the
  pool, which resets no session state itself: storage.py): they join arrays whose length only
  the batch knows to tables that grow. A generic plan, which PostgreSQL
  settles on after five executions, keeps the statistics of that moment: on a
  new database the `commands` table was empty then, and finishing a call
  became a hash join over a sequential scan of every command ever recorded
  (at 500 calls/s, ~300 us of the database a call after 20 s, growing with
  the table until autovacuum's next ANALYZE). Planning a batch's few
  statements costs tens of microseconds, shared by its writes. (The setting
  is PostgreSQL 12's; older servers, long out of support, refuse it.)
- The devices of a group are found and locked by one statement (`FOR KEY
  SHARE`): a device deleted by another connection meanwhile waits for our
  commit, and its delete then sees our rows.
- Telemetry is one statement: the points are inserted in arrival order
  (`WITH ORDINALITY ... ORDER BY`, so `seq`, an identity, follows arrival)
  and the newest point of each (device, key) of the batch (DISTINCT ON, by
  ts then seq) is upserted into `latest` `WHERE excluded.ts >= l.ts`.
  Measured against `copy_records_to_table` (plus a statement to take the
  seqs and one for `latest`): for batches of 50 to 3,000 points this
  single statement was as fast or faster (bench/storage_ingest.py), and it
  needs one round trip. A write of many devices' rows (a gateway's
  message) joins the same statement: a device not found is that device's 0
  in the write's outcome (handlers.devices_outcome), the others are stored.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from thingshub.core.errors import StorageUnreachable
from thingshub.storage.postgres.pool import PgConnection, Pool, translated
from thingshub.storage.sql import handlers
from thingshub.storage.sql.batch import Write
from thingshub.storage.sql.connection import Connection, Rows, sql

_LOCK_DEVICES = sql(
    "SELECT d.product_id, d.name, d.id FROM devices d"
    " JOIN unnest($1::text[], $2::text[]) AS k(product_id, name)"
    " ON d.product_id = k.product_id AND d.name = k.name FOR KEY SHARE OF d"
)
_APPEND_POINTS = """WITH added AS (
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


async def _lock_devices(conn: Connection, rows: Rows) -> dict[tuple[str, str], int]:
    """The ids of the devices of `rows` (product_id, name, ...) that exist, locked
    against deletion until the batch commits."""
    keys = list({(r[0], r[1]) for r in rows})
    found = await conn.fetch(_LOCK_DEVICES, [k[0] for k in keys], [k[1] for k in keys])
    return {(r[0], r[1]): r[2] for r in found}


async def _append(conn: Connection, devices: Rows) -> list[object]:
    """Each device's rows (product_id, name, rows) appended in one statement:
    the outcome of each (None, or NotFound: nothing of its stored)."""
    out, found = handlers.of_devices(devices, await _lock_devices(conn, devices))
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
        assert isinstance(conn, PgConnection), "a batch runs on the writer's connection"
        await conn.raw().execute(_APPEND_POINTS, *columns)
    return out


async def _telemetry_devices(conn: Connection, rows: Rows) -> list[object]:
    """TELEMETRY_APPEND_DEVICES: every write's devices in the one statement of `_append`."""
    out = await _append(conn, [device for devices in rows for device in devices])
    return handlers.devices_outcome(rows, {i for i, o in enumerate(out) if o is not None})


WRITE_HANDLERS = handlers.table(_append, _telemetry_devices, _lock_devices)


def _usable(conn: Any) -> bool:
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:  # the pool took it back when it was lost
        return False


#: The writer's connection plans every statement for its own batch (the module's
#: rules); `PLAN_AS_DEFAULT` undoes it before the connection goes back to the pool.
PLAN_EACH_BATCH = "SET plan_cache_mode = force_custom_plan"
PLAN_AS_DEFAULT = "RESET plan_cache_mode"


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
            conn = await self._pool.raw().acquire()
            try:
                await conn.execute(PLAN_EACH_BATCH)
            except BaseException:
                await self._pool.raw().release(conn)
                raise
            self.conn = conn

    async def release(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            if _usable(conn):  # a lost one is closed by the pool
                await conn.execute(PLAN_AS_DEFAULT)
        finally:
            await self._pool.raw().release(conn)

    async def __call__(self, batch: list[Write]) -> list[object]:
        with translated():
            await self.connect()
            try:
                async with self.conn.transaction():
                    return await handlers.apply(WRITE_HANDLERS, batch, PgConnection(self.conn))
            except Exception as exc:
                # A connection lost mid-batch can surface as anything (the
                # rollback of a dead connection: "another operation is in progress").
                if isinstance(exc, StorageUnreachable) or _usable(self.conn):
                    raise
                raise StorageUnreachable(
                    f"the PostgreSQL database is unreachable (connection lost: {exc})"
                ) from exc
