"""The default storage: one SQLite file, on one thread of its own.

Rules:
- One `sqlite3` connection, made, used and closed on one worker thread (a
  single-thread executor), never on the event loop. Every operation is one
  function run there from start to end: a query, a statement, or a whole
  `BEGIN IMMEDIATE ... COMMIT` (rolled back if it raises). The thread runs
  them one after the other, in the order they were asked for, so nothing
  ever lands inside another's transaction and no read sees an uncommitted
  write; no lock is needed. One hop per operation also keeps the loop free:
  a statement costs microseconds there, against ~0.1 ms through aiosqlite.
- Cancellation cannot halve anything: an operation not yet started is
  dropped, one started runs to its end (committed or rolled back).
- Images, command records, telemetry, attributes and events are written
  through the group-commit writer (batch.py; the handlers are in
  sqlite/writes.py and sqlite/series.py): a batch is one function on the
  thread, so it is one transaction and one fsync for up to 500 writes (batch.py).
  The other writes (products, devices, presence, settings) are rare and go
  straight to the thread, which serializes them with the batches.
- Telemetry, attribute and event reads go to a second connection, read-only
  and on a thread of its own (see sqlite/series.py), so they never wait for
  the writer nor hold it up; every other read stays on the first thread.
- WAL journal, `synchronous=FULL` (a write returns only once it is on disk),
  foreign keys on, and a busy timeout so that another process holding the
  write lock is waited for (on the worker thread) rather than failed. The
  page cache (CACHE_KIB) holds the index pages appends touch: the last
  leaf of every (device, key) series; the WAL is checkpointed every
  WAL_CHECKPOINT_PAGES pages rather than every 1,000. Opening takes an
  exclusive lock on `<db>.lock` around the switch to WAL and the migrations:
  that switch fails at once, without the busy timeout, when another process
  opens the file at the same moment.
- Deleting a device deletes its rows of every table but points and events
  at once; those are purged afterwards in chunks (purge.py).
- Constraint violations become the errors of common.py: the database
  decides, Python only words the message.
- The database file is created mode 0600 (or has its group and other
  permissions taken away), before SQLite opens it: it holds every device key.
- `open()` creates or migrates the schema (sqlite/schema.py) in one
  transaction; `close()` commits the writes queued, waits for the
  operations in progress, and closes the connection.
"""

from __future__ import annotations

import asyncio
import builtins
import fcntl
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

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
from thingshub.storage.purge import Purger
from thingshub.storage.sqlite import series
from thingshub.storage.sqlite.ota import SqliteFirmware, SqliteOta
from thingshub.storage.sqlite.schema import MIGRATIONS
from thingshub.storage.sqlite.series import SqliteAttributes, SqliteEvents, SqliteTelemetry
from thingshub.storage.sqlite.thread import Connection, Db, in_transaction
from thingshub.storage.sqlite.writes import SqliteCommands, SqliteImages, run_batch

log = logging.getLogger("thingshub.storage")

BUSY_TIMEOUT_MS = 10_000
CACHE_KIB = 64 * 1024  # the writer's page cache; the reader's is READER_CACHE_KIB
READER_CACHE_KIB = 16 * 1024
# A commit of a full batch of telemetry writes thousands of pages (one index leaf
# per series); checkpointing every ~40 MiB of WAL instead of SQLite's 4 MiB
# checkpoints once per several commits, writing each hot page once.
WAL_CHECKPOINT_PAGES = 10_000
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes the WAL file is cut back to after a checkpoint
_KEYS_PER_QUERY = 400  # presence_many: 2 parameters a key, well under SQLite's limit

_DEVICE_COLUMNS = (
    "product_id, name, device_number, key, username, password_hash, created_at, tags, status"
)


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


class SqliteProducts:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def add(self, product: Product) -> None:
        try:
            await self._db.execute(
                "INSERT INTO products (id, name, created_at) VALUES (?, ?, ?)",
                (product.id, product.name, product.created_at),
            )
        except sqlite3.IntegrityError:
            raise common.product_exists(product.id) from None

    async def get(self, product_id: str) -> Product | None:
        row = await self._db.fetchone(
            "SELECT id, name, created_at, retention_days FROM products WHERE id = ?",
            (product_id,),
        )
        return Product(row[0], row[1], row[2], row[3]) if row is not None else None

    async def list(self, limit: int, after: str | None = None) -> builtins.list[Product]:
        if limit <= 0:
            return []
        columns = "id, name, created_at, retention_days"
        if after is None:
            rows = await self._db.fetchall(
                f"SELECT {columns} FROM products ORDER BY id LIMIT ?", (limit,)
            )
        else:
            rows = await self._db.fetchall(
                f"SELECT {columns} FROM products WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit),
            )
        return [Product(r[0], r[1], r[2], r[3]) for r in rows]

    async def delete(self, product_id: str) -> bool:
        try:
            count = await self._db.execute("DELETE FROM products WHERE id = ?", (product_id,))
        except sqlite3.IntegrityError:
            raise common.product_has_devices(product_id) from None
        return count > 0

    async def set_retention(self, product_id: str, days: int | None) -> bool:
        count = await self._db.execute(
            "UPDATE products SET retention_days = ? WHERE id = ?", (days, product_id)
        )
        return count > 0


def _add_device(device: Device, conn: sqlite3.Connection) -> str | None:
    """Insert `device`; None, or what clashed ("product" when it is missing)."""
    try:
        conn.execute(
            f"INSERT INTO devices (id, {_DEVICE_COLUMNS})"
            f" VALUES ({series.NEXT_DEVICE_ID}, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                device.product_id,
                device.name,
                device.device_number,
                device.key,
                device.username,
                device.password_hash,
                device.created_at,
                common.dump_tags(device.tags),
                device.status,
            ),
        )
    except sqlite3.IntegrityError as exc:
        if exc.sqlite_errorname == "SQLITE_CONSTRAINT_FOREIGNKEY":
            return "product"
        rows = conn.execute(
            "SELECT product_id, name, device_number, username FROM devices"
            " WHERE (product_id = ? AND name = ?) OR device_number = ? OR username = ?",
            (device.product_id, device.name, device.device_number, device.username),
        ).fetchall()
        field = common.first_clash(device, rows)
        if field is None:  # cannot happen on the one thread; word it from SQLite's message
            text = str(exc)
            field = next((f for f in ("device_number", "username") if f in text), "name")
        return field
    return None


def _set_presence(rows: list[tuple[Any, ...]], conn: sqlite3.Connection) -> None:
    conn.executemany(
        "INSERT INTO device_presence (product_id, name, online, last_activity, changed_at)"
        " SELECT ?1, ?2, ?3, ?4, ?5"
        " WHERE EXISTS (SELECT 1 FROM devices WHERE product_id = ?1 AND name = ?2)"
        " ON CONFLICT (product_id, name) DO UPDATE SET online = excluded.online,"
        " last_activity = excluded.last_activity, changed_at = excluded.changed_at",
        rows,
    )


class SqliteDevices:
    def __init__(self, db: Db, purger: Purger) -> None:
        self._db = db
        self._purger = purger

    async def add(self, device: Device) -> None:
        clash = await self._db.call(partial(_add_device, device))
        if clash == "product":
            raise common.product_missing(device.product_id)
        if clash is not None:
            raise common.device_clash(device, clash)

    async def get(self, product_id: str, name: str) -> Device | None:
        row = await self._db.fetchone(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE product_id = ? AND name = ?",
            (product_id, name),
        )
        return _device(row) if row is not None else None

    async def by_number(self, device_number: str) -> Device | None:
        row = await self._db.fetchone(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device_number = ?", (device_number,)
        )
        return _device(row) if row is not None else None

    async def by_username(self, username: str) -> Device | None:
        row = await self._db.fetchone(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE username = ?", (username,)
        )
        return _device(row) if row is not None else None

    async def count(self, product_id: str) -> int:
        row = await self._db.fetchone(
            "SELECT count(*) FROM devices WHERE product_id = ?", (product_id,)
        )
        return int(row[0])

    async def delete(self, product_id: str, name: str) -> bool:
        # Its presence, image and command records go with it (ON DELETE CASCADE),
        # its latest values and attributes at once, its points and events by the purge.
        deleted = await self._db.transaction(
            partial(series.delete_device, product_id, name, common.now_ms())
        )
        if deleted:
            self._purger.kick()
        return deleted

    async def set_tags(self, product_id: str, name: str, tags: Mapping[str, str]) -> bool:
        count = await self._db.execute(
            "UPDATE devices SET tags = ? WHERE product_id = ? AND name = ?",
            (common.dump_tags(tags), product_id, name),
        )
        return count > 0

    async def set_presence(self, updates: Sequence[PresenceUpdate]) -> None:
        if not updates:
            return
        rows = [
            (u.product_id, u.name, int(u.online), u.last_activity, u.changed_at) for u in updates
        ]
        await self._db.transaction(partial(_set_presence, rows))

    async def presence(self, product_id: str, name: str) -> Presence | None:
        row = await self._db.fetchone(
            "SELECT p.online, p.last_activity, p.changed_at FROM devices d"
            " LEFT JOIN device_presence p ON p.product_id = d.product_id AND p.name = d.name"
            " WHERE d.product_id = ? AND d.name = ?",
            (product_id, name),
        )
        return _presence(row[0], row[1], row[2]) if row is not None else None

    async def presence_many(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], Presence]:
        unique = builtins.list(dict.fromkeys(keys))
        out: dict[tuple[str, str], Presence] = {}
        for start in range(0, len(unique), _KEYS_PER_QUERY):
            chunk = unique[start : start + _KEYS_PER_QUERY]
            values = ", ".join(["(?, ?)"] * len(chunk))
            rows = await self._db.fetchall(
                f"WITH k(product_id, name) AS (VALUES {values})"
                " SELECT d.product_id, d.name, p.online, p.last_activity, p.changed_at FROM k"
                " JOIN devices d ON d.product_id = k.product_id AND d.name = k.name"
                " LEFT JOIN device_presence p ON p.product_id = d.product_id AND p.name = d.name",
                [part for key in chunk for part in key],
            )
            for r in rows:
                out[(r[0], r[1])] = _presence(r[2], r[3], r[4])
        return out

    async def mark_all_offline(self, now_ms: int) -> int:
        return await self._db.execute(
            "UPDATE device_presence SET online = 0, changed_at = ? WHERE online = 1", (now_ms,)
        )

    async def list(
        self, product_id: str, limit: int, after: str | None = None, search: str | None = None
    ) -> builtins.list[Device]:
        if limit <= 0:
            return []
        sql = f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE product_id = ?"
        params: builtins.list[Any] = [product_id]
        if after is not None:
            sql += " AND name > ?"
            params.append(after)
        if search:
            # instr, not LIKE: the search text is a plain substring, '%' and '_' included.
            sql += " AND (instr(lower(name), ?) > 0 OR instr(lower(device_number), ?) > 0)"
            params += [common.fold(search)] * 2
        sql += " ORDER BY name LIMIT ?"
        params.append(limit)
        return [_device(r) for r in await self._db.fetchall(sql, params)]


def _set_if_absent(key: str, value: str, conn: sqlite3.Connection) -> str:
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
        (key, value),
    )
    return str(conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()[0])


class SqliteSettings:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def get(self, key: str) -> str | None:
        row = await self._db.fetchone("SELECT value FROM settings WHERE key = ?", (key,))
        return str(row[0]) if row is not None else None

    async def set_if_absent(self, key: str, value: str) -> str:
        return await self._db.transaction(partial(_set_if_absent, key, value))


class SqliteStorage:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = Db()
        self._reader = Db()
        self.writer = GroupCommit(partial(run_batch, self._db), "SQLite")
        self.purger = Purger(partial(self._db.transaction, series.purge_step), "SQLite")
        self.products: ProductRepo = SqliteProducts(self._db)
        self.devices: DeviceRepo = SqliteDevices(self._db, self.purger)
        self.images: ImageRepo = SqliteImages(self._db, self.writer)
        self.commands: CommandRepo = SqliteCommands(self._db, self.writer)
        self.telemetry: TelemetryRepo = SqliteTelemetry(self._db, self._reader, self.writer)
        self.attributes: AttributeRepo = SqliteAttributes(self._reader, self.writer)
        self.events: EventRepo = SqliteEvents(self._reader, self.writer)
        self.settings: SettingsRepo = SqliteSettings(self._db)
        self.firmware: FirmwareRepo = SqliteFirmware(self._db)
        self.ota: OtaRepo = SqliteOta(self._db, self.writer)

    async def open(self) -> None:
        if self._db.conn is not None:
            return
        await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        await _open_on_thread(self._db, partial(_connect, self.path), "thingshub-sqlite")
        try:
            await _open_on_thread(
                self._reader, partial(_connect_reader, self.path), "thingshub-sqlite-reader"
            )
        except BaseException:
            await _close_db(self._db)
            raise
        self.writer.start()
        self.purger.start()  # resumes the purges a stop interrupted

    async def close(self) -> None:
        await self.purger.close()
        await self.writer.close()  # commits what is queued
        await _close_db(self._reader)
        await _close_db(self._db)

    async def purge(self) -> None:
        """Return once the points and events of deleted devices are all deleted."""
        await self.purger.drain()

    async def pragmas(self) -> dict[str, object]:
        """The connection's settings that matter for durability (for tests and diagnostics)."""
        out: dict[str, object] = {}
        for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout"):
            row = await self._db.fetchone(f"PRAGMA {name}")
            out[name] = row[0]
        return out


def _close_all(conns: list[sqlite3.Connection]) -> None:
    for conn in conns:
        conn.close()


async def _open_on_thread(
    db: Db, connect: Callable[[list[sqlite3.Connection]], None], name: str
) -> None:
    """Make `db`'s thread and run `connect` there, which puts its connection in a list."""
    thread = ThreadPoolExecutor(1, thread_name_prefix=name)
    opened: list[sqlite3.Connection] = []
    try:
        await asyncio.get_running_loop().run_in_executor(thread, connect, opened)
    except BaseException:
        # Even when cancelled: close what the thread opens, after it is done.
        thread.submit(_close_all, opened)
        thread.shutdown(wait=False)
        raise
    db.conn, db.thread = opened[0], thread


async def _close_db(db: Db) -> None:
    conn, thread = db.conn, db.thread
    db.conn = db.thread = None
    if conn is None or thread is None:
        return
    try:
        # Runs after every operation already asked for.
        await asyncio.get_running_loop().run_in_executor(thread, conn.close)
    finally:
        thread.shutdown(wait=False)


def _connect_reader(path: Path, opened: list[sqlite3.Connection]) -> None:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    opened.append(conn)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute(f"PRAGMA cache_size = -{READER_CACHE_KIB}")
    conn.execute("PRAGMA query_only = ON")


def _connect(path: Path, opened: list[sqlite3.Connection]) -> None:
    """On the connection's thread: connect, configure, migrate; the connection
    goes into `opened` first, so that a failure can close it."""
    _private(path)
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, factory=Connection
    )
    opened.append(conn)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
    conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
    # Switching to WAL answers SQLITE_BUSY at once, without the busy handler,
    # when another connection opens the same file at that moment: starts of
    # several processes (or stores) on one file take turns through a lock file.
    lock_path = path.with_name(path.name + ".lock")
    with os.fdopen(os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("SQLite file %s cannot use WAL (journal mode %s)", path, mode)
        todo = in_transaction(_migrate, conn)
    for migration in todo:
        log.info(
            "SQLite schema migrated to version %d: %s", migration.version, migration.description
        )


def _private(path: Path) -> None:
    """Create the database file 0600 before SQLite does, or take an existing
    one's group and other permissions away: it holds every device key. SQLite
    gives its WAL and shared-memory files the database file's mode."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    os.chmod(path, stat.S_IMODE(path.stat().st_mode) & 0o600)


def _migrate(conn: sqlite3.Connection) -> list[common.Migration]:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER NOT NULL PRIMARY KEY, applied_at INTEGER NOT NULL)"
    )
    rows = conn.execute("SELECT version FROM schema_migrations").fetchall()
    todo = common.pending(MIGRATIONS, {int(r[0]) for r in rows}, "SQLite")
    applied_at = int(time.time() * 1000)
    for migration in todo:
        for statement in migration.statements:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
            (migration.version, applied_at),
        )
    return todo
