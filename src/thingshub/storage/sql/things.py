"""Thing models and desired values in SQL (the tables of migration 5).

Rules:
- Both are rare writes of applications (and of devices deleting desired
  values), so they go straight to the database in a transaction of their
  own, not through the group-commit writer.
- A model's revision is the stored one plus one, in the same statement, so
  two writers never both get the same revision.
- A desired value's version: the stored one plus one, 1 when there was
  none (a deletion removes the row, so the next set starts again at 1).
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from functools import partial
from typing import Any

from thingshub.core.model import DesiredValue, StoredModel
from thingshub.storage import common
from thingshub.storage.sql.connection import (
    Connection,
    Database,
    ForeignKeyViolation,
    one,
    sql,
)

GET_MODEL = sql(
    "SELECT product_id, document, revision, updated_at FROM thing_models WHERE product_id = $1"
)
PUT_MODEL = sql(
    "INSERT INTO thing_models (product_id, document, revision, updated_at)"
    " VALUES ($1, $2, 1, $3) ON CONFLICT (product_id) DO UPDATE SET"
    " document = excluded.document, revision = thing_models.revision + 1,"
    " updated_at = excluded.updated_at"
)
DELETE_MODEL = sql("DELETE FROM thing_models WHERE product_id = $1")
PRODUCT_EXISTS = sql("SELECT 1 FROM products WHERE id = $1 FOR KEY SHARE")

GET_DESIRED = sql(
    "SELECT identifier, value, version, ts FROM desired_values"
    " WHERE product_id = $1 AND name = $2 ORDER BY identifier"
)
DEVICE_EXISTS = sql("SELECT 1 FROM devices WHERE product_id = $1 AND name = $2 FOR KEY SHARE")
SET_DESIRED = sql(
    "INSERT INTO desired_values (product_id, name, identifier, value, version, ts)"
    " VALUES ($1, $2, $3, $4, 1, $5) ON CONFLICT (product_id, name, identifier) DO UPDATE SET"
    " value = excluded.value, version = desired_values.version + 1, ts = excluded.ts"
)
VERSION_OF = sql(
    "SELECT version FROM desired_values WHERE product_id = $1 AND name = $2 AND identifier = $3"
)
DELETE_DESIRED = sql(
    "DELETE FROM desired_values WHERE product_id = $1 AND name = $2 AND identifier = $3"
)
DELETE_DESIRED_VERSION = sql(
    "DELETE FROM desired_values"
    " WHERE product_id = $1 AND name = $2 AND identifier = $3 AND version = $4"
)


def _model(row: Any) -> StoredModel:
    return StoredModel(row[0], common.load_document(row[1]), int(row[2]), int(row[3]))


class SqlThingModels:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, product_id: str) -> StoredModel | None:
        return await one(self._db, _model, GET_MODEL, product_id)

    async def put(self, product_id: str, document: Mapping[str, Any], now_ms: int) -> StoredModel:
        text = common.dump_json(dict(document))
        return await self._db.transaction(partial(_put_model, product_id, text, now_ms))

    async def delete(self, product_id: str) -> bool:
        return await self._db.execute(DELETE_MODEL, product_id) > 0


async def _put_model(product_id: str, text: str, now_ms: int, conn: Connection) -> StoredModel:
    if await conn.fetchone(PRODUCT_EXISTS, product_id) is None:
        raise common.product_missing(product_id)
    await conn.execute(PUT_MODEL, product_id, text, now_ms)
    found = await one(conn, _model, GET_MODEL, product_id)
    assert found is not None
    return found


class SqlDesired:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, product_id: str, name: str) -> dict[str, DesiredValue]:
        found = await self._db.fetch(GET_DESIRED, product_id, name)
        return {r[0]: DesiredValue(common.decode_value(r[1]), int(r[2]), int(r[3])) for r in found}

    async def change(
        self, product_id: str, name: str, changes: Mapping[str, object | None], now_ms: int
    ) -> dict[str, DesiredValue | None]:
        texts = {k: None if v is None else common.dump_json(v) for k, v in changes.items()}
        body = partial(_change, product_id, name, texts, now_ms)
        try:
            return await self._db.transaction(body)
        except ForeignKeyViolation:
            raise common.device_missing(product_id, name) from None

    async def delete_versions(
        self, product_id: str, name: str, versions: Mapping[str, int | None]
    ) -> builtins.list[str]:
        return await self._db.transaction(partial(_delete_versions, product_id, name, versions))


async def _change(
    product_id: str,
    name: str,
    texts: Mapping[str, str | None],
    now_ms: int,
    conn: Connection,
) -> dict[str, DesiredValue | None]:
    if await conn.fetchone(DEVICE_EXISTS, product_id, name) is None:
        raise common.device_missing(product_id, name)
    out: dict[str, DesiredValue | None] = {}
    for identifier, text in texts.items():
        if text is None:
            await conn.execute(DELETE_DESIRED, product_id, name, identifier)
            out[identifier] = None
            continue
        await conn.execute(SET_DESIRED, product_id, name, identifier, text, now_ms)
        row = await conn.fetchone(VERSION_OF, product_id, name, identifier)
        assert row is not None
        out[identifier] = DesiredValue(common.decode_value(text), int(row[0]), now_ms)
    return out


async def _delete_versions(
    product_id: str, name: str, versions: Mapping[str, int | None], conn: Connection
) -> builtins.list[str]:
    gone = []
    for identifier, version in versions.items():
        if version is None:
            n = await conn.execute(DELETE_DESIRED, product_id, name, identifier)
        else:
            n = await conn.execute(DELETE_DESIRED_VERSION, product_id, name, identifier, version)
        if n:
            gone.append(identifier)
    return gone
