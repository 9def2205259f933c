"""PostgreSQL storage, through an asyncpg connection pool.

Rules:
- A pool of 1 to `max_size` (10) connections (pool.py); the group-commit
  writer keeps one for itself (writes.py). The repositories are the shared
  ones (sql/); PostgreSQL's own ways are in dialect.py.
- `open()` migrates in one transaction under a transaction-level advisory
  lock, so processes starting together apply each migration exactly once.
- A write is durable on return as far as the server's `synchronous_commit`
  (on by default) makes it.
- The URL goes to asyncpg as given: query parameters that are not
  connection options become server settings, e.g. `?search_path=thingshub`
  keeps the tables in that (existing) schema.
"""

from __future__ import annotations

import asyncpg

from thingshub.storage.postgres import dialect
from thingshub.storage.postgres.locks import PgLocks
from thingshub.storage.postgres.pool import PgConnection, Pool
from thingshub.storage.postgres.schema import MIGRATIONS
from thingshub.storage.postgres.writes import BatchRunner
from thingshub.storage.sql.connection import Connection, sql
from thingshub.storage.sql.migrations import Migration, log_migrated, migrate
from thingshub.storage.sql.storage import SqlStorage

MIGRATION_LOCK = 0x7468696E67736875  # "thingshu": the advisory lock key of migrations
CONNECT_TIMEOUT = 10.0

_LOCK = sql("SELECT pg_advisory_xact_lock($1)")
_HAS_MIGRATIONS = sql("SELECT to_regclass('schema_migrations')")
_MIGRATIONS_TABLE = sql(
    "CREATE TABLE schema_migrations ("
    " version integer NOT NULL PRIMARY KEY, applied_at bigint NOT NULL)"
)


class PostgresStorage(SqlStorage):
    def __init__(self, url: str, *, max_size: int = 10) -> None:
        self.url = url
        self.max_size = max_size
        self._pool = Pool()
        self._runner = BatchRunner(self._pool)
        super().__init__(self._pool, self._pool, dialect, self._runner)
        self.locks = self._pg_locks = PgLocks(url)

    async def _connect(self) -> bool:
        if self._pool.conn is not None:
            return False
        pool = await asyncpg.create_pool(
            self.url, min_size=1, max_size=self.max_size, timeout=CONNECT_TIMEOUT
        )
        try:
            async with pool.acquire() as conn, conn.transaction():
                todo = await _migrate(PgConnection(conn))
            log_migrated(todo, "PostgreSQL")
            self._pool.conn = pool
            await self._runner.connect()
        except BaseException:
            self._pool.conn = None
            await pool.close()
            raise
        return True

    async def _disconnect(self) -> None:
        await self._pg_locks.close()
        if self._pool.conn is None:
            return
        try:
            await self._runner.release()
        finally:
            pool, self._pool.conn = self._pool.conn, None
            await pool.close()


async def _migrate(conn: Connection) -> list[Migration]:
    await conn.execute(_LOCK, MIGRATION_LOCK)
    found = await conn.fetchone(_HAS_MIGRATIONS)
    if found is None or found[0] is None:
        await conn.execute(_MIGRATIONS_TABLE)
    return await migrate(conn, MIGRATIONS, "PostgreSQL")
