"""`open_storage`: which backend a database URL selects, and where a SQLite file goes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from thingshub.core.ports import Storage
from thingshub.storage import open_storage
from thingshub.storage.memory import MemoryStorage
from thingshub.storage.postgres import PostgresStorage
from thingshub.storage.sqlite import SqliteStorage

DATA = Path("/srv/thingshub-data")


@pytest.mark.parametrize(
    ("url", "path"),
    [
        (None, DATA / "thingshub.db"),
        ("", DATA / "thingshub.db"),
        ("  ", DATA / "thingshub.db"),
        ("sqlite://", DATA / "thingshub.db"),
        ("sqlite:///", DATA / "thingshub.db"),
        ("sqlite:///other.db", DATA / "other.db"),
        ("sqlite:///sub/dir/x.db", DATA / "sub/dir/x.db"),
        ("SQLite:///x.db", DATA / "x.db"),
        ("sqlite:////var/lib/th/x.db", Path("/var/lib/th/x.db")),
        ("sqlite:///my%20db.db", DATA / "my db.db"),
        ("/abs/path/x.db", Path("/abs/path/x.db")),
        ("relative/x.db", DATA / "relative/x.db"),
        ("x.db", DATA / "x.db"),
    ],
)
def test_sqlite_urls(url: str | None, path: Path) -> None:
    storage = open_storage(url, DATA)
    assert isinstance(storage, SqliteStorage)
    assert storage.path == path


def test_bare_path_expands_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    storage = open_storage("~/th.db", DATA)
    assert isinstance(storage, SqliteStorage)
    assert storage.path == Path("/home/someone/th.db")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:5432/things",
        "postgres://user:pw@db.example/things?search_path=th",
        "PostgreSQL://db/things",
    ],
)
def test_postgres_urls(url: str) -> None:
    storage = open_storage(url, DATA)
    assert isinstance(storage, PostgresStorage)
    assert storage.url == url  # passed to asyncpg as given
    assert storage.max_size == 10


def test_memory_url() -> None:
    assert isinstance(open_storage("memory://", DATA), MemoryStorage)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://root:hunter2@db/things", "unknown database URL scheme 'mysql'"),
        ("postgresql+asyncpg://u:hunter2@db/x", "unknown database URL scheme 'postgresql+asyncpg'"),
        ("sqlite://hunter2/x.db", "has no host"),
        ("u:hunter2@db://x", "not a URL or a path"),
    ],
)
def test_bad_urls_are_refused_without_echoing_secrets(url: str, says: str) -> None:
    with pytest.raises(ValueError, match="memory://") as info:
        open_storage(url, DATA)
    assert says in str(info.value)
    assert "hunter2" not in str(info.value)


def test_constructs_without_io(tmp_path: Path) -> None:
    data_dir = tmp_path / "not-yet"
    open_storage(None, data_dir)
    open_storage("postgresql://127.0.0.1:1/nothing-listens-here", data_dir)
    assert not data_dir.exists()


def test_default_is_a_working_sqlite_file(tmp_path: Path) -> None:
    async def main(storage: Storage) -> str:
        await storage.open()
        try:
            return await storage.settings.set_if_absent("k", "v")
        finally:
            await storage.close()

    data_dir = tmp_path / "data"
    assert asyncio.run(main(open_storage(None, data_dir))) == "v"
    assert (data_dir / "thingshub.db").is_file()
    assert asyncio.run(main(open_storage(str(data_dir / "thingshub.db"), tmp_path))) == "v"
