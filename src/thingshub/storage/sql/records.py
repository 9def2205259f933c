"""Device images and command records in SQL: reads on the database, writes
group-committed (handlers.py).

Rules:
- A write returns once its batch is committed, with the outcome its handler
  gave it (VersionConflict, AlreadyExists, NotFound, whether it was there).
- Commands list newest first by (created_at, cmd_id); a page starts below
  the last (created_at, cmd_id) of the previous one.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence

from thingshub.core.model import CommandRecord, StoredImage
from thingshub.storage import common
from thingshub.storage.sql import rows, writes
from thingshub.storage.sql.batch import GroupCommit
from thingshub.storage.sql.connection import Database, Query, one, page, pages, sql

GET_IMAGE = sql(f"SELECT {rows.IMAGE_COLUMNS} FROM images WHERE product_id = $1 AND name = $2")
GET_COMMAND = sql(f"SELECT {rows.COMMAND_COLUMNS} FROM commands WHERE cmd_id = $1")
_COMMANDS = f"SELECT {rows.COMMAND_COLUMNS} FROM commands WHERE product_id = $1 AND name = $2"
LIST_COMMANDS = pages(
    _COMMANDS,
    "(created_at, cmd_id) < ($4::bigint, $5::text)",
    "ORDER BY created_at DESC, cmd_id DESC LIMIT $3",
)
_FAIL = "UPDATE commands SET status = 'failed', answered_at = $1, detail = $2 WHERE status = 'sent'"
FAIL_UNFINISHED = sql(_FAIL)
#: Those of nodes other than the given ones: only a cluster keeps any, and a
#: cluster is on PostgreSQL (SQLite serves one process, which keeps none).
FAIL_UNFINISHED_BUT = Query(f"{_FAIL} AND (node IS NULL OR node <> ALL($3::text[]))", "")


class SqlImages:
    def __init__(self, db: Database, writer: GroupCommit) -> None:
        self._db = db
        self._writer = writer

    async def get(self, product_id: str, name: str) -> StoredImage | None:
        return await one(self._db, rows.image, GET_IMAGE, product_id, name)

    async def save(
        self, product_id: str, name: str, image: StoredImage, expected_version: int
    ) -> None:
        await self._writer.submit(writes.image(product_id, name, image, expected_version))


class SqlCommands:
    def __init__(self, db: Database, writer: GroupCommit) -> None:
        self._db = db
        self._writer = writer

    async def add(self, record: CommandRecord) -> None:
        await self._writer.submit(writes.command_add(record))

    async def finish(
        self,
        cmd_id: str,
        status: str,
        answered_at: int | None,
        response: bytes | None,
        detail: str | None = None,
    ) -> bool:
        write = writes.command_finish(cmd_id, status, answered_at, response, detail)
        return bool(await self._writer.submit(write))

    async def get(self, cmd_id: str) -> CommandRecord | None:
        return await one(self._db, rows.command, GET_COMMAND, cmd_id)

    async def list(
        self, product_id: str, name: str, limit: int, before: tuple[int, str] | None = None
    ) -> builtins.list[CommandRecord]:
        if limit <= 0:
            return []
        found = await page(self._db, LIST_COMMANDS, before, product_id, name, limit)
        return [rows.command(r) for r in found]

    async def fail_unfinished(self, now_ms: int, keep: Sequence[str] = ()) -> int:
        if not keep:
            return await self._db.execute(FAIL_UNFINISHED, now_ms, common.SERVER_RESTARTED)
        keep = list(keep)
        return await self._db.execute(FAIL_UNFINISHED_BUT, now_ms, common.SERVER_RESTARTED, keep)
