"""PostgreSQL storage, through an asyncpg connection pool.

Rules:
- A pool of 1 to `max_size` (10) connections; each method is one statement
  (autocommit) or one transaction on one pooled connection, except images,
  command records, telemetry, attributes and events, whose writes are
  group-committed (batch.py) on one connection the writer keeps for itself
  (postgres/writes.py, postgres/series.py).
- Deleting a device deletes its rows of every table but points and events
  at once; those are purged afterwards in chunks (purge.py).
- `open()` migrates (postgres/schema.py) in one transaction under a
  transaction-level advisory lock, so processes starting together apply each
  migration exactly once; a schema newer than the code is refused.
- Constraint violations become the errors of common.py: the database
  decides, Python only words the message.
- `set_presence` is one transaction (executemany) with its rows sorted by
  key, so concurrent batches lock rows in the same order and cannot deadlock.
- `close()` commits the writes queued before it closes the pool.
- A write is durable on return as far as the server's `synchronous_commit`
  (on by default) makes it.
- The URL goes to asyncpg as given: query parameters that are not
  connection options become server settings, e.g. `?search_path=thingshub`
  keeps the tables in that (existing) schema.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from thingshub.core.errors import Unavailable
from thingshub.core.model import Device, Presence, PresenceUpdate, Product
from thingshub.core.ports import (
    AttributeRepo,
    CommandRepo,
    DeviceRepo,
    EventRepo,
    FirmwareRepo,
    ImageRepo,
    OtaRepo,
    ProductRepo,
    SettingsRepo,
    TelemetryRepo,
)
from thingshub.storage import common
from thingshub.storage.batch import GroupCommit
from thingshub.storage.postgres import series
from thingshub.storage.postgres.ota import PostgresFirmware, PostgresOta
from thingshub.storage.postgres.schema import MIGRATIONS
from thingshub.storage.postgres.series import (
    PostgresAttributes,
    PostgresEvents,
    PostgresTelemetry,
)
from thingshub.storage.postgres.writes import BatchRunner, PostgresCommands, PostgresImages
from thingshub.storage.purge import Purger

log = logging.getLogger("thingshub.storage")

MIGRATION_LOCK = 0x7468696E67736875  # "thingshu": the advisory lock key of migrations
CONNECT_TIMEOUT = 10.0

_DEVICE_COLUMNS = (
    "product_id, name, device_number, key, username, password_hash, created_at, tags, status"
)
_CONSTRAINT_FIELDS = {
    "devices_device_number_key": "device_number",
    "devices_username_key": "username",
}


class _Pool:
    """The pool every repository goes through (set by `open()`)."""

    def __init__(self) -> None:
        self.pool: Any = None

    def __call__(self) -> Any:
        if self.pool is None:
            raise Unavailable("the PostgreSQL storage is not open")
        return self.pool


def _device(row: Any) -> Device:
    return Device(
        product_id=row[0],
        name=row[1],
        device_number=row[2],
        key=row[3],
        username=row[4],
        password_hash=row[5],
        created_at=row[6],
        tags=common.load_tags(row[7]),
        status=row[8],
    )


def _presence(online: Any, last_activity: Any, changed_at: Any) -> Presence:
    if online is None:  # a device without a presence row: never seen
        return Presence(False)
    return Presence(bool(online), last_activity, changed_at)


def _rowcount(status: str) -> int:
    """The row count of a command status such as "DELETE 1" or "UPDATE 12"."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresProducts:
    def __init__(self, pool: _Pool) -> None:
        self._pool = pool

    async def add(self, product: Product) -> None:
        try:
            await self._pool().execute(
                "INSERT INTO products (id, name, created_at) VALUES ($1, $2, $3)",
                product.id,
                product.name,
                product.created_at,
            )
        except asyncpg.UniqueViolationError:
            raise common.product_exists(product.id) from None

    async def get(self, product_id: str) -> Product | None:
        row = await self._pool().fetchrow(
            "SELECT id, name, created_at, retention_days FROM products WHERE id = $1", product_id
        )
        return Product(row[0], row[1], row[2], row[3]) if row is not None else None

    async def list(self, limit: int, after: str | None = None) -> builtins.list[Product]:
        if limit <= 0:
            return []
        columns = "id, name, created_at, retention_days"
        if after is None:
            rows = await self._pool().fetch(
                f"SELECT {columns} FROM products ORDER BY id LIMIT $1", limit
            )
        else:
            rows = await self._pool().fetch(
                f"SELECT {columns} FROM products WHERE id > $1 ORDER BY id LIMIT $2",
                after,
                limit,
            )
        return [Product(r[0], r[1], r[2], r[3]) for r in rows]

    async def delete(self, product_id: str) -> bool:
        try:
            status = await self._pool().execute("DELETE FROM products WHERE id = $1", product_id)
        except asyncpg.ForeignKeyViolationError:
            raise common.product_has_devices(product_id) from None
        return _rowcount(status) > 0

    async def set_retention(self, product_id: str, days: int | None) -> bool:
        status = await self._pool().execute(
            "UPDATE products SET retention_days = $2 WHERE id = $1", product_id, days
        )
        return _rowcount(status) > 0


class PostgresDevices:
    def __init__(self, pool: _Pool, purger: Purger) -> None:
        self._pool = pool
        self._purger = purger

    async def add(self, device: Device) -> None:
        async with self._pool().acquire() as conn:
            try:
                await conn.execute(
                    f"INSERT INTO devices ({_DEVICE_COLUMNS})"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    device.product_id,
                    device.name,
                    device.device_number,
                    device.key,
                    device.username,
                    device.password_hash,
                    device.created_at,
                    common.dump_tags(device.tags),
                    device.status,
                )
            except asyncpg.ForeignKeyViolationError:
                raise common.product_missing(device.product_id) from None
            except asyncpg.UniqueViolationError as exc:
                rows = await conn.fetch(
                    "SELECT product_id, name, device_number, username FROM devices"
                    " WHERE (product_id = $1 AND name = $2) OR device_number = $3"
                    " OR username = $4",
                    device.product_id,
                    device.name,
                    device.device_number,
                    device.username,
                )
                field = common.first_clash(device, [tuple(r) for r in rows])
                if field is None:  # the other row is gone already: trust the constraint
                    field = _CONSTRAINT_FIELDS.get(str(exc.constraint_name), "name")
                raise common.device_clash(device, field) from None

    async def get(self, product_id: str, name: str) -> Device | None:
        row = await self._pool().fetchrow(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE product_id = $1 AND name = $2",
            product_id,
            name,
        )
        return _device(row) if row is not None else None

    async def by_number(self, device_number: str) -> Device | None:
        row = await self._pool().fetchrow(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device_number = $1", device_number
        )
        return _device(row) if row is not None else None

    async def by_username(self, username: str) -> Device | None:
        row = await self._pool().fetchrow(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE username = $1", username
        )
        return _device(row) if row is not None else None

    async def count(self, product_id: str) -> int:
        value = await self._pool().fetchval(
            "SELECT count(*) FROM devices WHERE product_id = $1", product_id
        )
        return int(value)

    async def delete(self, product_id: str, name: str) -> bool:
        # Its presence, image and command records go with it (ON DELETE CASCADE),
        # its latest values and attributes at once, its points and events by the purge.
        deleted = await series.delete_device(self._pool, product_id, name, common.now_ms())
        if deleted:
            self._purger.kick()
        return deleted

    async def set_tags(self, product_id: str, name: str, tags: Mapping[str, str]) -> bool:
        status = await self._pool().execute(
            "UPDATE devices SET tags = $3::jsonb WHERE product_id = $1 AND name = $2",
            product_id,
            name,
            common.dump_tags(tags),
        )
        return _rowcount(status) > 0

    async def set_presence(self, updates: Sequence[PresenceUpdate]) -> None:
        if not updates:
            return
        rows = sorted(
            ((u.product_id, u.name, u.online, u.last_activity, u.changed_at) for u in updates),
            key=lambda r: (r[0], r[1]),  # stable: the last update of a device still wins
        )
        async with self._pool().acquire() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO device_presence (product_id, name, online, last_activity, changed_at)"
                " SELECT $1::text, $2::text, $3::boolean, $4::bigint, $5::bigint"
                " WHERE EXISTS (SELECT 1 FROM devices WHERE product_id = $1 AND name = $2)"
                " ON CONFLICT (product_id, name) DO UPDATE SET online = EXCLUDED.online,"
                " last_activity = EXCLUDED.last_activity, changed_at = EXCLUDED.changed_at",
                rows,
            )

    async def presence(self, product_id: str, name: str) -> Presence | None:
        row = await self._pool().fetchrow(
            "SELECT p.online, p.last_activity, p.changed_at FROM devices d"
            " LEFT JOIN device_presence p ON p.product_id = d.product_id AND p.name = d.name"
            " WHERE d.product_id = $1 AND d.name = $2",
            product_id,
            name,
        )
        return _presence(row[0], row[1], row[2]) if row is not None else None

    async def presence_many(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], Presence]:
        if not keys:
            return {}
        unique = builtins.list(dict.fromkeys(keys))
        rows = await self._pool().fetch(
            "SELECT d.product_id, d.name, p.online, p.last_activity, p.changed_at"
            " FROM unnest($1::text[], $2::text[]) AS k(product_id, name)"
            " JOIN devices d ON d.product_id = k.product_id AND d.name = k.name"
            " LEFT JOIN device_presence p ON p.product_id = d.product_id AND p.name = d.name",
            [k[0] for k in unique],
            [k[1] for k in unique],
        )
        return {(r[0], r[1]): _presence(r[2], r[3], r[4]) for r in rows}

    async def mark_all_offline(self, now_ms: int) -> int:
        status = await self._pool().execute(
            "UPDATE device_presence SET online = false, changed_at = $1 WHERE online", now_ms
        )
        return _rowcount(status)

    async def list(
        self, product_id: str, limit: int, after: str | None = None, search: str | None = None
    ) -> builtins.list[Device]:
        if limit <= 0:
            return []
        params: builtins.list[Any] = [product_id]
        where = "product_id = $1"
        if after is not None:
            params.append(after)
            where += f" AND name > ${len(params)}"
        if search:
            # strpos, not LIKE: the search text is a plain substring, '%' and '_' included.
            params.append(common.fold(search))
            n = len(params)
            where += (
                f" AND (strpos(lower(name), ${n}) > 0 OR strpos(lower(device_number), ${n}) > 0)"
            )
        params.append(limit)
        sql = f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE {where} ORDER BY name"
        rows = await self._pool().fetch(f"{sql} LIMIT ${len(params)}", *params)
        return [_device(r) for r in rows]


class PostgresSettings:
    def __init__(self, pool: _Pool) -> None:
        self._pool = pool

    async def get(self, key: str) -> str | None:
        value = await self._pool().fetchval("SELECT value FROM settings WHERE key = $1", key)
        return str(value) if value is not None else None

    async def set_if_absent(self, key: str, value: str) -> str:
        async with self._pool().acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                key,
                value,
            )
            stored = await conn.fetchval("SELECT value FROM settings WHERE key = $1", key)
        return str(stored)


class PostgresStorage:
    def __init__(self, url: str, *, max_size: int = 10) -> None:
        self.url = url
        self.max_size = max_size
        self._pool = _Pool()
        self._runner = BatchRunner(self._pool)
        self.writer = GroupCommit(self._runner, "PostgreSQL")
        self.purger = Purger(lambda: series.purge_step(self._pool), "PostgreSQL")
        self.products: ProductRepo = PostgresProducts(self._pool)
        self.devices: DeviceRepo = PostgresDevices(self._pool, self.purger)
        self.images: ImageRepo = PostgresImages(self._pool, self.writer)
        self.commands: CommandRepo = PostgresCommands(self._pool, self.writer)
        self.telemetry: TelemetryRepo = PostgresTelemetry(self._pool, self.writer)
        self.attributes: AttributeRepo = PostgresAttributes(self._pool, self.writer)
        self.events: EventRepo = PostgresEvents(self._pool, self.writer)
        self.settings: SettingsRepo = PostgresSettings(self._pool)
        self.firmware: FirmwareRepo = PostgresFirmware(self._pool)
        self.ota: OtaRepo = PostgresOta(self._pool, self.writer)

    async def open(self) -> None:
        if self._pool.pool is not None:
            return
        pool = await asyncpg.create_pool(
            self.url, min_size=1, max_size=self.max_size, timeout=CONNECT_TIMEOUT
        )
        try:
            async with pool.acquire() as conn:
                await _migrate(conn)
        except BaseException:
            await pool.close()
            raise
        self._pool.pool = pool
        try:
            await self._runner.connect()
        except BaseException:
            self._pool.pool = None
            await pool.close()
            raise
        self.writer.start()
        self.purger.start()  # resumes the purges a stop interrupted

    async def close(self) -> None:
        await self.purger.close()
        await self.writer.close()  # commits what is queued
        if self._pool.pool is None:
            return
        try:
            await self._runner.release()
        finally:
            pool, self._pool.pool = self._pool.pool, None
            await pool.close()

    async def purge(self) -> None:
        """Return once the points and events of deleted devices are all deleted."""
        await self.purger.drain()


async def _migrate(conn: Any) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
            await conn.execute(
                "CREATE TABLE schema_migrations ("
                " version integer NOT NULL PRIMARY KEY, applied_at bigint NOT NULL)"
            )
        rows = await conn.fetch("SELECT version FROM schema_migrations")
        todo = common.pending(MIGRATIONS, {int(r[0]) for r in rows}, "PostgreSQL")
        applied_at = int(time.time() * 1000)
        for migration in todo:
            for statement in migration.statements:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                migration.version,
                applied_at,
            )
    for migration in todo:
        log.info(
            "PostgreSQL schema migrated to version %d: %s", migration.version, migration.description
        )
