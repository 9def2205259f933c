"""Device images and command records in SQL: reads on the database, writes
group-committed (batch.py; each database's handlers in its writes.py).

Rules:
- `save`, `add` and `finish` return once their batch is committed; what they
  report (VersionConflict, AlreadyExists, NotFound, whether a record was
  there) is the outcome the handler gave their write.
- Commands list newest first by (created_at, cmd_id), a page after another
  starting below the last (created_at, cmd_id) of the previous one.
"""

from __future__ import annotations

import builtins

from thingshub.core.model import CommandRecord, StoredImage
from thingshub.storage import common
from thingshub.storage.batch import GroupCommit
from thingshub.storage.sql import rows, writes
from thingshub.storage.sql.connection import Database, sql

GET_IMAGE = sql(f"SELECT {rows.IMAGE_COLUMNS} FROM images WHERE product_id = $1 AND name = $2")
GET_COMMAND = sql(f"SELECT {rows.COMMAND_COLUMNS} FROM commands WHERE cmd_id = $1")
_COMMANDS = f"SELECT {rows.COMMAND_COLUMNS} FROM commands WHERE product_id = $1 AND name = $2"
_NEWEST = "ORDER BY created_at DESC, cmd_id DESC LIMIT $3"
LIST_COMMANDS = sql(f"{_COMMANDS} {_NEWEST}")
LIST_COMMANDS_BEFORE = sql(
    f"{_COMMANDS} AND (created_at, cmd_id) < ($4::bigint, $5::text) {_NEWEST}"
)
FAIL_UNFINISHED = sql(
    "UPDATE commands SET status = 'failed', answered_at = $1, detail = $2 WHERE status = 'sent'"
)


class SqlImages:
    def __init__(self, db: Database, writer: GroupCommit) -> None:
        self._db = db
        self._writer = writer

    async def get(self, product_id: str, name: str) -> StoredImage | None:
        row = await self._db.fetchone(GET_IMAGE, product_id, name)
        return rows.image(row) if row is not None else None

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
        row = await self._db.fetchone(GET_COMMAND, cmd_id)
        return rows.command(row) if row is not None else None

    async def list(
        self, product_id: str, name: str, limit: int, before: tuple[int, str] | None = None
    ) -> builtins.list[CommandRecord]:
        if limit <= 0:
            return []
        if before is None:
            found = await self._db.fetch(LIST_COMMANDS, product_id, name, limit)
        else:
            found = await self._db.fetch(LIST_COMMANDS_BEFORE, product_id, name, limit, *before)
        return [rows.command(r) for r in found]

    async def fail_unfinished(self, now_ms: int) -> int:
        return await self._db.execute(FAIL_UNFINISHED, now_ms, common.SERVER_RESTARTED)
