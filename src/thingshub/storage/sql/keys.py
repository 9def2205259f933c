"""API keys in SQL (the `api_keys` table of migration 9).

Rules:
- Keys are few and rarely written: each write is a statement (or, for
  `touch`, a transaction) of its own, not the group-commit writer's.
- `touch` only moves `last_used_at` forward, so two processes flushing
  their batches in any order keep the newest.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping
from functools import partial
from typing import Any

from thingshub.core.errors import AlreadyExists
from thingshub.core.model import ApiKey
from thingshub.storage.sql.connection import Connection, Database, UniqueViolation, sql

_COLUMNS = "id, name, role, products, secret_hash, created_at, last_used_at"
ADD_KEY = sql(f"INSERT INTO api_keys ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)")
LIST_KEYS = sql(f"SELECT {_COLUMNS} FROM api_keys ORDER BY id")
DELETE_KEY = sql("DELETE FROM api_keys WHERE id = $1")
TOUCH_KEY = sql(
    "UPDATE api_keys SET last_used_at = $2"
    " WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)"
)


def _key(row: Any) -> ApiKey:
    products = None if row[3] is None else tuple(json.loads(row[3]))
    last_used = None if row[6] is None else int(row[6])
    return ApiKey(row[0], row[1], row[2], products, row[4], int(row[5]), last_used)


class SqlApiKeys:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, key: ApiKey) -> None:
        products = None if key.products is None else json.dumps(list(key.products))
        values = (key.name, key.role, products, key.secret_hash, key.created_at)
        try:
            await self._db.execute(ADD_KEY, key.id, *values, key.last_used_at)
        except UniqueViolation:
            raise AlreadyExists(f"API key {key.id!r} already exists") from None

    async def list(self) -> builtins.list[ApiKey]:
        return [_key(r) for r in await self._db.fetch(LIST_KEYS)]

    async def delete(self, key_id: str) -> bool:
        return await self._db.execute(DELETE_KEY, key_id) > 0

    async def touch(self, used: Mapping[str, int]) -> None:
        if used:
            await self._db.transaction(partial(_touch, sorted(used.items())))


async def _touch(used: builtins.list[tuple[str, int]], conn: Connection) -> None:
    for key_id, ts in used:  # sorted: concurrent flushes lock rows in one order
        await conn.execute(TOUCH_KEY, key_id, ts)
