"""Backends for the storage contract suite.

- `backend`: each test runs against memory, SQLite (a file in tmp_path) and
  PostgreSQL; `durable_backend` only against the two that persist.
- PostgreSQL comes from the `pg_url` fixture of tests/conftest.py: a fresh
  schema per test in a database made for the session.
- Tests are plain functions; `Backend.run` drives the async part with
  `asyncio.run`, opening a new storage object and closing it afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.storage.support import Backend
from thingshub.storage.memory import MemoryStorage
from thingshub.storage.postgres import PostgresStorage
from thingshub.storage.sqlite import SqliteStorage


def _backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if kind == "memory":
        shared = MemoryStorage()
        return Backend(kind, lambda: shared, "memory://")
    if kind == "sqlite":
        path = tmp_path / "data" / "thingshub.db"
        return Backend(kind, lambda: SqliteStorage(path), str(path))
    url: str = request.getfixturevalue("pg_url")
    return Backend(kind, lambda: PostgresStorage(url), url)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return _backend(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", "postgres"])
def durable_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return _backend(request.param, request, tmp_path)
