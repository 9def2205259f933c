"""Named locks shared by every process on one PostgreSQL database.

Rules:
- A lock is a session-level advisory lock, keyed by a 64-bit hash of its
  name (`hashtextextended`), taken on one connection of its own that lives
  as long as the storage is open. When the process dies, its connection
  closes and the server frees every lock it held: a dead node's locks need
  no lease of their own.
- That connection is opened at the first `try_hold`. If it is lost, every
  lock is lost with it: `still_held` turns False and the next `try_hold`
  opens a new one; a holder re-checks `still_held` before each round of work.
- Statements on the connection run one at a time (asyncpg allows no more).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg

CONNECT_TIMEOUT = 10.0

_TRY = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))"
_RELEASE = "SELECT pg_advisory_unlock(hashtextextended($1, 0))"


class PgLocks:
    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None
        self._held: set[str] = set()
        self._mutex = asyncio.Lock()

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            self._held.clear()  # the server freed them with the old connection
            self._conn = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT)
        return self._conn

    async def try_hold(self, name: str) -> bool:
        async with self._mutex:
            if name in self._held and not self._lost():
                return False
            conn = await self._connection()
            if await conn.fetchval(_TRY, name):
                self._held.add(name)
                return True
            return False

    async def release(self, name: str) -> None:
        async with self._mutex:
            if name not in self._held:
                return
            self._held.discard(name)
            if not self._lost():
                with contextlib.suppress(asyncpg.PostgresError, OSError):
                    await self._conn.fetchval(_RELEASE, name)

    async def still_held(self, name: str) -> bool:
        async with self._mutex:
            if name not in self._held or self._lost():
                return False
            try:
                await self._conn.fetchval("SELECT 1")
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                return False
            return True

    def _lost(self) -> bool:
        return self._conn is None or bool(self._conn.is_closed())

    async def close(self) -> None:
        """Free every lock at once (closing the connection frees them all)."""
        async with self._mutex:
            self._held.clear()
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await self._conn.close()
                self._conn = None
