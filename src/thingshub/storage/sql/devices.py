"""Products, devices, presence and settings in SQL.

Rules:
- Each method is one statement (autocommitted) or one transaction.
- Constraint violations become the errors of common.py: the database
  decides, Python only words the message. Which fields of a device clashed
  is asked after the insert failed; if the other row is gone by then, the
  violated constraint names the field.
- `set_presence` is one transaction, its rows sorted by key, so concurrent
  batches lock rows in the same order and cannot deadlock.
- Search is a plain substring (`instr`/`strpos`, never LIKE: '%' and '_'
  are characters) of the ASCII-folded name or device number.
- Deleting a device is one transaction of separate statements: the device
  (presence, image and command records go by cascade), then its latest
  values and attributes (each statement sees what a writer committed while
  the first waited for its lock); its points and events are queued in
  `device_purges` for the purge (series.py).
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from functools import partial
from operator import itemgetter

from thingshub.core.model import PRODUCT_SETTINGS, Device, Presence, PresenceUpdate, Product
from thingshub.storage import common
from thingshub.storage.sql import rows
from thingshub.storage.sql.connection import (
    Connection,
    Database,
    ForeignKeyViolation,
    Query,
    UniqueViolation,
    one,
    page,
    pages,
    sql,
)
from thingshub.storage.sql.dialect import Dialect
from thingshub.storage.sql.purge import Purger

_PRODUCTS = f"SELECT {rows.PRODUCT_COLUMNS} FROM products"
ADD_PRODUCT = sql(
    f"INSERT INTO products ({rows.PRODUCT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
)
GET_PRODUCT = sql(f"{_PRODUCTS} WHERE id = $1")
LIST_PRODUCTS = (
    sql(f"{_PRODUCTS} ORDER BY id LIMIT $1"),
    sql(f"{_PRODUCTS} WHERE id > $2 ORDER BY id LIMIT $1"),
)
DELETE_PRODUCT = sql("DELETE FROM products WHERE id = $1")
#: One statement per setting: PATCH changes some of them, in one transaction.
SET_PRODUCT = {
    column: sql(f"UPDATE products SET {column} = $2 WHERE id = $1")
    for column in (*PRODUCT_SETTINGS, "access_key")
}
GET_VERSIONS = sql("SELECT f_version, s_version FROM devices WHERE product_id = $1 AND name = $2")
SET_VERSIONS = sql(
    "UPDATE devices SET f_version = coalesce($3, f_version), s_version = coalesce($4, s_version)"
    " WHERE product_id = $1 AND name = $2"
)

_DEVICES = f"SELECT {rows.DEVICE_COLUMNS} FROM devices"
DEVICE_CLASHES = sql(
    "SELECT product_id, name, device_number, username, access_token FROM devices"
    " WHERE (product_id = $1 AND name = $2) OR device_number = $3 OR username = $4"
    " OR access_token = $5"
)
GET_DEVICE = sql(f"{_DEVICES} WHERE product_id = $1 AND name = $2")
DEVICE_BY_NUMBER = sql(f"{_DEVICES} WHERE device_number = $1")
DEVICE_BY_USERNAME = sql(f"{_DEVICES} WHERE username = $1")
DEVICE_BY_TOKEN = sql(f"{_DEVICES} WHERE access_token = $1")
COUNT_DEVICES = sql("SELECT count(*) FROM devices WHERE product_id = $1")
LIST_DEVICES = pages(f"{_DEVICES} WHERE product_id = $1", "name > $3", "ORDER BY name LIMIT $2")
SET_TAGS = sql("UPDATE devices SET tags = $3::jsonb WHERE product_id = $1 AND name = $2")
DELETE_DEVICE = sql("DELETE FROM devices WHERE product_id = $1 AND name = $2 RETURNING id")
DELETE_LATEST = sql("DELETE FROM latest WHERE device_id = $1")
DELETE_ATTRIBUTES = sql("DELETE FROM attributes WHERE device_id = $1")
UNBIND_CHILDREN = sql(
    "UPDATE devices SET gateway_product_id = NULL, gateway_name = NULL, sub_address = NULL"
    " WHERE gateway_product_id = $1 AND gateway_name = $2"
)
SET_GATEWAY = sql(
    "UPDATE devices SET gateway_product_id = $3, gateway_name = $4, sub_address = $5"
    " WHERE product_id = $1 AND name = $2"
)
COUNT_CHILDREN = sql(
    "SELECT count(*) FROM devices WHERE gateway_product_id = $1 AND gateway_name = $2"
)
LIST_CHILDREN = pages(
    f"{_DEVICES} WHERE gateway_product_id = $1 AND gateway_name = $2",
    "(product_id > $4 OR (product_id = $4 AND name > $5))",
    "ORDER BY product_id, name LIMIT $3",
)
QUEUE_PURGE = sql(
    "INSERT INTO device_purges (device_id, deleted_at) VALUES ($1, $2)"
    " ON CONFLICT (device_id) DO NOTHING"
)

#: A presence row's key, (product id, name): in C, as every flush sorts every row by it.
_BY_KEY = itemgetter(0, 1)
#: An offline update of one node leaves a device that another node holds alone.
SET_PRESENCE = sql(
    "INSERT INTO device_presence (product_id, name, online, last_activity, changed_at, node)"
    " SELECT $1::text, $2::text, $3::boolean, $4::bigint, $5::bigint, $6::text"
    " WHERE EXISTS (SELECT 1 FROM devices WHERE product_id = $1 AND name = $2)"
    " ON CONFLICT (product_id, name) DO UPDATE SET online = excluded.online,"
    " last_activity = excluded.last_activity, changed_at = excluded.changed_at,"
    " node = excluded.node"
    " WHERE excluded.online OR NOT device_presence.online OR device_presence.node IS NULL"
    " OR excluded.node IS NULL OR device_presence.node = excluded.node"
)
HOLDER = sql(
    "SELECT node FROM device_presence WHERE product_id = $1 AND name = $2 AND online = true"
)
RELEASE_NODE = sql(
    "UPDATE device_presence SET online = false, changed_at = $2"
    " WHERE online = true AND node = $1 RETURNING product_id, name"
)
#: The query of `Dialect.presence_many`, given the relation k(product_id, name) of keys.
PRESENCE_OF_KEYS = (
    f"SELECT d.product_id, d.name, {rows.PRESENCE_COLUMNS} FROM {{}}"
    " JOIN devices d ON d.product_id = k.product_id AND d.name = k.name"
    " LEFT JOIN device_presence p ON p.product_id = d.product_id AND p.name = d.name"
)
PRESENCE = sql(
    f"SELECT {rows.PRESENCE_COLUMNS} FROM devices d"
    " LEFT JOIN device_presence p ON p.product_id = d.product_id AND p.name = d.name"
    " WHERE d.product_id = $1 AND d.name = $2"
)
MARK_ALL_OFFLINE = sql(
    "UPDATE device_presence SET online = false, changed_at = $1 WHERE online = true"
)

GET_SETTING = sql("SELECT value FROM settings WHERE key = $1")
ADD_SETTING = sql("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")


def search_queries(contains: str) -> tuple[Query, Query]:
    """`Dialect.device_search`, given the SQL of "{0} contains {1}"."""
    found = " OR ".join(contains.format(f"lower({c})", "$3") for c in ("name", "device_number"))
    where = f"{_DEVICES} WHERE product_id = $1 AND ({found})"
    return pages(where, "name > $4", "ORDER BY name LIMIT $2")


class SqlProducts:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, product: Product) -> None:
        try:
            await self._db.execute(
                ADD_PRODUCT,
                product.id,
                product.name,
                product.created_at,
                product.retention_days,
                product.gateway_auto_register,
                product.dynamic_registration,
                product.access_key,
            )
        except UniqueViolation:
            raise common.product_exists(product.id) from None

    async def get(self, product_id: str) -> Product | None:
        return await one(self._db, rows.product, GET_PRODUCT, product_id)

    async def list(self, limit: int, after: str | None = None) -> builtins.list[Product]:
        if limit <= 0:
            return []
        return [rows.product(r) for r in await page(self._db, LIST_PRODUCTS, after, limit)]

    async def delete(self, product_id: str) -> bool:
        try:
            return await self._db.execute(DELETE_PRODUCT, product_id) > 0
        except ForeignKeyViolation:
            raise common.product_has_devices(product_id) from None

    async def update(self, product_id: str, changes: Mapping[str, object]) -> bool:
        async def body(conn: Connection) -> bool:
            found = await conn.fetch(GET_PRODUCT, product_id)
            for column, value in changes.items():
                await conn.execute(SET_PRODUCT[column], product_id, value)
            return bool(found)

        return await self._db.transaction(body)


async def _delete_device(
    dialect: Dialect, product_id: str, name: str, deleted_at: int, conn: Connection
) -> bool:
    row = await conn.fetchone(DELETE_DEVICE, product_id, name)
    if row is None:
        return False
    dialect.forget_device(conn, product_id, name)
    await conn.execute(UNBIND_CHILDREN, product_id, name)
    await conn.execute(DELETE_LATEST, row[0])
    await conn.execute(DELETE_ATTRIBUTES, row[0])
    await conn.execute(QUEUE_PURGE, row[0], deleted_at)
    return True


class SqlDevices:
    def __init__(self, db: Database, dialect: Dialect, purger: Purger) -> None:
        self._db = db
        self._dialect = dialect
        self._purger = purger

    async def add(self, device: Device) -> None:
        try:
            await self._db.execute(self._dialect.insert_device, *rows.device_values(device))
        except ForeignKeyViolation:
            raise common.product_missing(device.product_id) from None
        except UniqueViolation as exc:
            keys = (
                device.product_id,
                device.name,
                device.device_number,
                device.username,
                device.access_token,
            )
            field = common.first_clash(device, await self._db.fetch(DEVICE_CLASHES, *keys))
            if field is None:  # the other row is gone already: trust the constraint
                fields = ("sub_address", "device_number", "username", "access_token")
                field = next((f for f in fields if f in str(exc)), "name")
            raise common.device_clash(device, field) from None

    async def get(self, product_id: str, name: str) -> Device | None:
        return await one(self._db, rows.device, GET_DEVICE, product_id, name)

    async def by_number(self, device_number: str) -> Device | None:
        return await one(self._db, rows.device, DEVICE_BY_NUMBER, device_number)

    async def by_username(self, username: str) -> Device | None:
        return await one(self._db, rows.device, DEVICE_BY_USERNAME, username)

    async def by_access_token(self, token: str) -> Device | None:
        return await one(self._db, rows.device, DEVICE_BY_TOKEN, token)

    async def count(self, product_id: str) -> int:
        return int((await self._db.fetch(COUNT_DEVICES, product_id))[0][0])

    async def delete(self, product_id: str, name: str) -> bool:
        body = partial(_delete_device, self._dialect, product_id, name, common.now_ms())
        deleted = await self._db.transaction(body)
        if deleted:
            self._purger.kick()
        return deleted

    async def set_tags(self, product_id: str, name: str, tags: Mapping[str, str]) -> bool:
        return await self._db.execute(SET_TAGS, product_id, name, common.dump_tags(tags)) > 0

    async def versions(self, product_id: str, name: str) -> tuple[str | None, str | None] | None:
        row = await self._db.fetchone(GET_VERSIONS, product_id, name)
        return None if row is None else (row[0], row[1])

    async def set_versions(
        self, product_id: str, name: str, f_version: str | None, s_version: str | None
    ) -> bool:
        return await self._db.execute(SET_VERSIONS, product_id, name, f_version, s_version) > 0

    async def set_gateway(
        self, product_id: str, name: str, gateway: tuple[str, str] | None, sub_address: str | None
    ) -> bool:
        gw = gateway or (None, None)
        try:
            changed = await self._db.execute(SET_GATEWAY, product_id, name, *gw, sub_address)
        except UniqueViolation:
            raise common.address_taken(gateway, sub_address) from None
        return changed > 0

    async def children(
        self, product_id: str, name: str, limit: int, after: tuple[str, str] | None = None
    ) -> builtins.list[Device]:
        if limit <= 0:
            return []
        query = LIST_CHILDREN[0] if after is None else LIST_CHILDREN[1]
        args = (product_id, name, limit) if after is None else (product_id, name, limit, *after)
        return [rows.device(r) for r in await self._db.fetch(query, *args)]

    async def count_children(self, product_id: str, name: str) -> int:
        return int((await self._db.fetch(COUNT_CHILDREN, product_id, name))[0][0])

    async def set_presence(self, updates: Sequence[PresenceUpdate]) -> None:
        if not updates:
            return
        presence = sorted(
            [
                (u.product_id, u.name, u.online, u.last_activity, u.changed_at, u.node)
                for u in updates
            ],
            key=_BY_KEY,  # stable: the last update of a device still wins
        )
        try:
            await self._db.transaction(lambda conn: conn.executemany(SET_PRESENCE, presence))
        except ForeignKeyViolation:
            # A device deleted between the query's EXISTS and its foreign key check
            # (PostgreSQL, another transaction): once more, the EXISTS skips it.
            await self._db.transaction(lambda conn: conn.executemany(SET_PRESENCE, presence))

    async def presence(self, product_id: str, name: str) -> Presence | None:
        return await one(self._db, rows.presence, PRESENCE, product_id, name)

    async def presence_many(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], Presence]:
        if not keys:
            return {}
        found = await self._dialect.presence_many(self._db, builtins.list(dict.fromkeys(keys)))
        return {(r[0], r[1]): rows.presence(r[2:]) for r in found}

    async def mark_all_offline(self, now_ms: int) -> int:
        return await self._db.execute(MARK_ALL_OFFLINE, now_ms)

    async def holder(self, product_id: str, name: str) -> str | None:
        row = await self._db.fetchone(HOLDER, product_id, name)
        return None if row is None or row[0] is None else str(row[0])

    async def release_node(self, node: str, now_ms: int) -> builtins.list[tuple[str, str]]:
        found = await self._db.transaction(lambda conn: conn.fetch(RELEASE_NODE, node, now_ms))
        return sorted((str(r[0]), str(r[1])) for r in found)

    async def list(
        self, product_id: str, limit: int, after: str | None = None, search: str | None = None
    ) -> builtins.list[Device]:
        if limit <= 0:
            return []
        if search:
            args = (product_id, limit, common.fold(search))
            found = await page(self._db, self._dialect.device_search, after, *args)
        else:
            found = await page(self._db, LIST_DEVICES, after, product_id, limit)
        return [rows.device(r) for r in found]


async def _set_if_absent(key: str, value: str, conn: Connection) -> str:
    await conn.execute(ADD_SETTING, key, value)
    row = await conn.fetchone(GET_SETTING, key)
    assert row is not None, "a setting just stored is there"
    return str(row[0])


class SqlSettings:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, key: str) -> str | None:
        return await one(self._db, lambda row: str(row[0]), GET_SETTING, key)

    async def set_if_absent(self, key: str, value: str) -> str:
        return await self._db.transaction(partial(_set_if_absent, key, value))
