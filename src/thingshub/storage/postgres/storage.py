"""PostgreSQL storage, through an asyncpg connection pool.

Rules:
- A pool of 1 to `max_size` (10) connections (pool.py); the group-commit
  writer keeps one for itself (writes.py). The repositories are the shared
  ones (sql/); PostgreSQL's own ways are in dialect.py.
- A connection goes back to the pool without asyncpg's reset query (advisory
  unlocks, CLOSE ALL, UNLISTEN, RESET ALL: one more round trip a statement,
  16% of a worker's samples in a connect storm): nothing leaves session
  state on a pool connection (no LISTEN, cursor or session lock: the locks
  of locks.py have their own connections; the group-commit writer's one SET
  is reset by the writer before it gives its connection back, writes.py).
  An open transaction is still rolled back (asyncpg does that before the
  reset hook).
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
            self.url,
            min_size=1,
            max_size=self.max_size,
            timeout=CONNECT_TIMEOUT,
            reset=_keep_session,
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


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """The pool's reset hook: nothing to undo (see the module's rules)."""


async def _migrate(conn: Connection) -> list[Migration]:
    await conn.execute(_LOCK, MIGRATION_LOCK)
    found = await conn.fetchone(_HAS_MIGRATIONS)
    if found is None or found[0] is None:
        await conn.execute(_MIGRATIONS_TABLE)
    return await migrate(conn, MIGRATIONS, "PostgreSQL")
