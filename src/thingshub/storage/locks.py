"""Named locks of a database that only one process uses (memory, SQLite).

Rules:
- The process is the only one that could hold a lock, so a lock is free
  unless this same process took it; `still_held` is true until released.
- PostgreSQL's locks, shared by every process on the database, are
  storage/postgres/locks.py.
"""

from __future__ import annotations


class ProcessLocks:
    def __init__(self) -> None:
        self._held: set[str] = set()

    async def try_hold(self, name: str) -> bool:
        if name in self._held:
            return False
        self._held.add(name)
        return True

    async def release(self, name: str) -> None:
        self._held.discard(name)

    async def still_held(self, name: str) -> bool:
        return name in self._held
