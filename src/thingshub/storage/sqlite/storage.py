"""The default storage: one SQLite file, each connection on a thread of its own.

Rules:
- The writer's connection and its thread (thread.py) run every write and
  most reads, one after the other: nothing lands inside another's
  transaction and no lock is needed, and the loop stays free (a statement
  costs microseconds there, against ~0.1 ms through aiosqlite). Telemetry,
  attribute and event reads go to a second, read-only connection on a
  thread of its own: they never wait for the writer nor hold it up.
- WAL journal, `synchronous=FULL` (a write returns only once it is on disk),
  foreign keys on, and a busy timeout so that another process holding the
  write lock is waited for (on the thread) rather than failed. The page
  cache (CACHE_KIB) holds the index pages appends touch: the last leaf of
  every (device, key) series; the WAL is checkpointed every
  WAL_CHECKPOINT_PAGES pages rather than every 1,000. Opening takes an
  exclusive lock on `<db>.lock` around the switch to WAL and the migrations:
  that switch fails at once, without the busy timeout, when another process
  opens the file at the same moment.
- The database file is created mode 0600 (or has its group and other
  permissions taken away), before SQLite opens it: it holds every device key.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
import stat
from functools import partial
from pathlib import Path

from thingshub.storage.sql.connection import Connection, sql
from thingshub.storage.sql.migrations import Migration, log_migrated, migrate
from thingshub.storage.sql.storage import SqlStorage
from thingshub.storage.sqlite import dialect, memory
from thingshub.storage.sqlite import thread as sqlite_thread
from thingshub.storage.sqlite.schema import MIGRATIONS
from thingshub.storage.sqlite.thread import Db, run_body
from thingshub.storage.sqlite.writes import run_batch

log = logging.getLogger("thingshub.storage")

BUSY_TIMEOUT_MS = 10_000
CACHE_KIB = 64 * 1024  # the writer's page cache; the reader's is READER_CACHE_KIB
READER_CACHE_KIB = 16 * 1024
# A commit of a full batch of telemetry writes thousands of pages (one index leaf
# per series); checkpointing every ~40 MiB of WAL instead of SQLite's 4 MiB
# checkpoints once per several commits, writing each hot page once.
WAL_CHECKPOINT_PAGES = 10_000
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes the WAL file is cut back to after a checkpoint

_MIGRATIONS_TABLE = sql(
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER NOT NULL PRIMARY KEY, applied_at INTEGER NOT NULL)"
)


class SqliteStorage(SqlStorage):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = Db()
        self._reader = Db()
        super().__init__(self._db, self._reader, dialect, partial(run_batch, self._db))

    async def _connect(self) -> bool:
        if self._db.conn is not None:
            return False
        await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        await self._db.open(partial(_connect, self.path), "thingshub-sqlite")
        try:
            await self._reader.open(partial(_connect_reader, self.path), "thingshub-sqlite-reader")
        except BaseException:
            await self._db.close()
            raise
        return True

    async def _disconnect(self) -> None:
        await self._reader.close()
        await self._db.close()

    def memory_used(self) -> int | None:
        """SQLite's heap in this process (memory.py): the page caches, bounded by
        `cache_limit`, and what its statements hold."""
        return memory.memory_used()

    @property
    def cache_limit(self) -> int:
        """Bytes the page caches of both connections may grow to."""
        return (CACHE_KIB + READER_CACHE_KIB) * 1024

    async def pragmas(self) -> dict[str, object]:
        """The connection's settings that matter for durability (for tests and diagnostics)."""
        names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        return {name: (await self._db.fetch(sql(f"PRAGMA {name}")))[0][0] for name in names}


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
        path,
        timeout=BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,
        factory=sqlite_thread.Connection,
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
        todo = run_body(_migrate, conn)
    log_migrated(todo, "SQLite")


def _private(path: Path) -> None:
    """Create the database file 0600 before SQLite does, or take an existing
    one's group and other permissions away: it holds every device key. SQLite
    gives its WAL and shared-memory files the database file's mode."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    os.chmod(path, stat.S_IMODE(path.stat().st_mode) & 0o600)


async def _migrate(conn: Connection) -> list[Migration]:
    await conn.execute(_MIGRATIONS_TABLE)
    return await migrate(conn, MIGRATIONS, "SQLite")
