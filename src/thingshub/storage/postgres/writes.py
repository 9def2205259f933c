"""PostgreSQL images and command records: reads on the pool, writes
group-committed (batch.py) on one connection of the writer's own.

Rules:
- The writer holds one pooled connection for its whole life (taken at
  `open()`, given back at `close()`; a broken one is replaced before the
  next batch). A batch is one transaction on it.
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
- `WRITE_HANDLERS` maps each kind of common.py to its handler; a new kind is
  a handler here (or in a module of its own such as postgres/series.py),
  its twin for SQLite, and a repository method.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from thingshub.core.model import CommandRecord, StoredImage
from thingshub.storage import common
from thingshub.storage.batch import GroupCommit, Write, plan
from thingshub.storage.postgres import ota, series

Rows = list[tuple[Any, ...]]
Handler = Callable[[Any, Rows], Awaitable[list[object]]]
Pool = Callable[[], Any]  # the open pool, or Unavailable


def _columns(rows: Rows, width: int) -> list[list[Any]]:
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


async def _command_add(conn: Any, rows: Rows) -> list[object]:
    returned = await conn.fetch(
        f"INSERT INTO commands ({common.COMMAND_COLUMNS})"
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


WRITE_HANDLERS: dict[str, Handler] = {
    common.IMAGE_CREATE: _image_create,
    common.IMAGE_UPDATE: _image_update,
    common.COMMAND_ADD: _command_add,
    common.COMMAND_FINISH: _command_finish,
    **series.WRITE_HANDLERS,
    **ota.WRITE_HANDLERS,
}


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
            self.conn = await self._pool().acquire()

    async def release(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            await self._pool().release(conn)

    async def __call__(self, writes: list[Write]) -> list[object]:
        await self.connect()
        conn = self.conn
        outcomes: list[object] = [None] * len(writes)
        async with conn.transaction():
            for kind, indexes in plan(writes):
                results = await WRITE_HANDLERS[kind](conn, [writes[i].args for i in indexes])
                for index, outcome in zip(indexes, results, strict=True):
                    outcomes[index] = outcome
        return outcomes


class PostgresImages:
    def __init__(self, pool: Pool, writer: GroupCommit) -> None:
        self._pool = pool
        self._writer = writer

    async def get(self, product_id: str, name: str) -> StoredImage | None:
        row = await self._pool().fetchrow(
            "SELECT document, version FROM images WHERE product_id = $1 AND name = $2",
            product_id,
            name,
        )
        return StoredImage(common.load_document(row[0]), row[1]) if row is not None else None

    async def save(
        self, product_id: str, name: str, image: StoredImage, expected_version: int
    ) -> None:
        await self._writer.submit(common.image_write(product_id, name, image, expected_version))


class PostgresCommands:
    def __init__(self, pool: Pool, writer: GroupCommit) -> None:
        self._pool = pool
        self._writer = writer

    async def add(self, record: CommandRecord) -> None:
        await self._writer.submit(common.command_add_write(record))

    async def finish(
        self,
        cmd_id: str,
        status: str,
        answered_at: int | None,
        response: bytes | None,
        detail: str | None = None,
    ) -> bool:
        write = common.command_finish_write(cmd_id, status, answered_at, response, detail)
        return bool(await self._writer.submit(write))

    async def get(self, cmd_id: str) -> CommandRecord | None:
        row = await self._pool().fetchrow(
            f"SELECT {common.COMMAND_COLUMNS} FROM commands WHERE cmd_id = $1", cmd_id
        )
        return common.command_record(row) if row is not None else None

    async def list(
        self, product_id: str, name: str, limit: int, before: tuple[int, str] | None = None
    ) -> builtins.list[CommandRecord]:
        if limit <= 0:
            return []
        sql = f"SELECT {common.COMMAND_COLUMNS} FROM commands WHERE product_id = $1 AND name = $2"
        params: builtins.list[Any] = [product_id, name]
        if before is not None:
            sql += " AND (created_at, cmd_id) < ($3::bigint, $4::text)"
            params += [before[0], before[1]]
        params.append(limit)
        sql += f" ORDER BY created_at DESC, cmd_id DESC LIMIT ${len(params)}"
        return [common.command_record(r) for r in await self._pool().fetch(sql, *params)]

    async def fail_unfinished(self, now_ms: int) -> int:
        status = await self._pool().execute(
            "UPDATE commands SET status = 'failed', answered_at = $1, detail = $2"
            " WHERE status = 'sent'",
            now_ms,
            common.SERVER_RESTARTED,
        )
        return int(status.rsplit(" ", 1)[-1])
