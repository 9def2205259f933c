"""SQLite images and command records: reads on the connection's thread, writes
group-committed (batch.py).

Rules:
- A batch is one function on the connection's thread: `BEGIN IMMEDIATE`,
  every write in the order of `batch.plan`, `COMMIT`. One hop to the thread
  and one fsync for the whole batch.
- A handler takes the argument tuples of one group of writes of its kind and
  returns one outcome each: a value, or a ThingsHubError for that caller.
  Handlers never rely on an SQL error: conditional writes report through
  their row count (`UPDATE ... AND version = ?`, `INSERT ... SELECT ... WHERE
  EXISTS (device) ON CONFLICT DO NOTHING`), and only a write that changed
  nothing asks one more query to word its error. An SQL error is therefore
  a real failure, and fails the batch.
- `WRITE_HANDLERS` maps each kind of common.py to its handler; a new kind
  is a handler (here, or in a module of its own such as sqlite/series.py
  for telemetry, attributes and events), its twin for PostgreSQL, and a
  repository method that submits `Write`s of that kind.
"""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Callable
from functools import partial
from typing import Any

from thingshub.core.model import CommandRecord, StoredImage
from thingshub.storage import common
from thingshub.storage.batch import GroupCommit, Write, plan
from thingshub.storage.sqlite import ota, series
from thingshub.storage.sqlite.thread import Db, in_transaction

Rows = list[tuple[Any, ...]]
Handler = Callable[[sqlite3.Connection, Rows], list[object]]


def _device_image_version(
    conn: sqlite3.Connection, product_id: str, name: str
) -> tuple[bool, int | None]:
    """(device exists, version of its image or None)."""
    row = conn.execute(
        "SELECT i.version FROM devices d"
        " LEFT JOIN images i ON i.product_id = d.product_id AND i.name = d.name"
        " WHERE d.product_id = ? AND d.name = ?",
        (product_id, name),
    ).fetchone()
    if row is None:
        return False, None
    return True, row[0]


def _image_failure(conn: sqlite3.Connection, product_id: str, name: str, expected: int) -> object:
    exists, stored = _device_image_version(conn, product_id, name)
    if not exists:
        return common.device_missing(product_id, name)
    return common.image_conflict(product_id, name, expected, stored)


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


def _command_add(conn: sqlite3.Connection, rows: Rows) -> list[object]:
    out: list[object] = []
    for row in rows:
        changed = conn.execute(
            f"INSERT INTO commands ({common.COMMAND_COLUMNS}) SELECT {_COMMAND_PARAMS}"
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


WRITE_HANDLERS: dict[str, Handler] = {
    common.IMAGE_CREATE: _image_create,
    common.IMAGE_UPDATE: _image_update,
    common.COMMAND_ADD: _command_add,
    common.COMMAND_FINISH: _command_finish,
    **series.WRITE_HANDLERS,
    **ota.WRITE_HANDLERS,
}


def _apply(writes: list[Write], conn: sqlite3.Connection) -> list[object]:
    outcomes: list[object] = [None] * len(writes)
    for kind, indexes in plan(writes):
        results = WRITE_HANDLERS[kind](conn, [writes[i].args for i in indexes])
        for index, outcome in zip(indexes, results, strict=True):
            outcomes[index] = outcome
    return outcomes


async def run_batch(db: Db, writes: list[Write]) -> list[object]:
    """The group-commit writer's `run`: all of `writes` in one transaction."""
    return await db.call(partial(in_transaction, partial(_apply, writes)))


class SqliteImages:
    def __init__(self, db: Db, writer: GroupCommit) -> None:
        self._db = db
        self._writer = writer

    async def get(self, product_id: str, name: str) -> StoredImage | None:
        row = await self._db.fetchone(
            "SELECT document, version FROM images WHERE product_id = ? AND name = ?",
            (product_id, name),
        )
        return StoredImage(common.load_document(row[0]), row[1]) if row is not None else None

    async def save(
        self, product_id: str, name: str, image: StoredImage, expected_version: int
    ) -> None:
        await self._writer.submit(common.image_write(product_id, name, image, expected_version))


class SqliteCommands:
    def __init__(self, db: Db, writer: GroupCommit) -> None:
        self._db = db
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
        row = await self._db.fetchone(
            f"SELECT {common.COMMAND_COLUMNS} FROM commands WHERE cmd_id = ?", (cmd_id,)
        )
        return common.command_record(row) if row is not None else None

    async def list(
        self, product_id: str, name: str, limit: int, before: tuple[int, str] | None = None
    ) -> builtins.list[CommandRecord]:
        if limit <= 0:
            return []
        sql = f"SELECT {common.COMMAND_COLUMNS} FROM commands WHERE product_id = ? AND name = ?"
        params: builtins.list[Any] = [product_id, name]
        if before is not None:
            sql += " AND (created_at, cmd_id) < (?, ?)"
            params += [before[0], before[1]]
        sql += " ORDER BY created_at DESC, cmd_id DESC LIMIT ?"
        params.append(limit)
        return [common.command_record(r) for r in await self._db.fetchall(sql, params)]

    async def fail_unfinished(self, now_ms: int) -> int:
        return await self._db.execute(
            "UPDATE commands SET status = 'failed', answered_at = ?, detail = ?"
            " WHERE status = 'sent'",
            (now_ms, common.SERVER_RESTARTED),
        )
