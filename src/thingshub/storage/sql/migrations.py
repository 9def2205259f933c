"""The steps of an SQL schema, which of them a database still needs, and applying them.

Rules:
- Migrations are numbered 1, 2, 3... without gaps; a database with a
  version newer than the code knows is refused, never downgraded.
- `migrate` applies every missing step and records it in
  `schema_migrations`, in the caller's transaction: all land, or none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from thingshub.core.errors import Unavailable
from thingshub.storage.sql.connection import Connection, Query, sql

log = logging.getLogger("thingshub.storage")

_VERSIONS = sql("SELECT version FROM schema_migrations")
_APPLIED = sql("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of a backend's schema: statements run in order, in one transaction."""

    version: int
    description: str
    statements: tuple[str, ...]


def check_migrations(migrations: Sequence[Migration]) -> Sequence[Migration]:
    """Return `migrations` if numbered 1..N in order, else raise ValueError."""
    for index, migration in enumerate(migrations, start=1):
        if migration.version != index:
            raise ValueError(
                f"migration {migration.description!r} has version {migration.version}, "
                f"expected {index}: versions run 1, 2, 3... without gaps"
            )
        if not migration.statements:
            raise ValueError(f"migration {index} has no statements")
    return migrations


def pending(
    migrations: Sequence[Migration], applied: Collection[int], backend: str
) -> list[Migration]:
    """The migrations still to apply, in order; refuses a schema newer than the code."""
    known = migrations[-1].version if migrations else 0
    newest = max(applied, default=0)
    if newest > known:
        raise Unavailable(
            f"the {backend} database has schema version {newest}, but this ThingsHub "
            f"knows versions up to {known}; upgrade ThingsHub to use this database"
        )
    return [m for m in migrations if m.version not in applied]


async def migrate(
    conn: Connection, migrations: Sequence[Migration], backend: str
) -> list[Migration]:
    """Apply the migrations the database lacks; those applied."""
    todo = pending(migrations, {int(r[0]) for r in await conn.fetch(_VERSIONS)}, backend)
    applied_at = int(time.time() * 1000)
    for migration in todo:
        for statement in migration.statements:
            await conn.execute(Query(statement, statement))  # already the database's own text
        await conn.execute(_APPLIED, migration.version, applied_at)
    return todo


def log_migrated(todo: Sequence[Migration], backend: str) -> None:
    for m in todo:
        log.info("%s schema migrated to version %d: %s", backend, m.version, m.description)
