"""What only the SQL backends promise: data survives a restart, a write is
committed before its caller hears back, and the schema is created and
migrated once, in a transaction, whoever starts first."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import thingshub.storage.postgres.storage
import thingshub.storage.sqlite.storage
from tests.storage.support import Backend, command, device, image, pg_fetch, product
from thingshub.core.errors import Unavailable
from thingshub.core.model import Point, Presence, PresenceUpdate, StoredImage
from thingshub.core.ports import Storage
from thingshub.storage.postgres import PostgresStorage
from thingshub.storage.postgres import schema as postgres_schema
from thingshub.storage.sql.migrations import Migration, check_migrations
from thingshub.storage.sqlite import SqliteStorage
from thingshub.storage.sqlite import schema as sqlite_schema


def migrations_table(backend: Backend) -> list[tuple[Any, ...]]:
    sql = "SELECT version, applied_at FROM schema_migrations ORDER BY version"
    if backend.kind == "postgres":
        return pg_fetch(backend.target, sql)
    with sqlite3.connect(backend.target) as conn:
        return list(conn.execute(sql))


def execute_raw(backend: Backend, sql: str) -> None:
    if backend.kind == "postgres":
        pg_fetch(backend.target, sql)
        return
    conn = sqlite3.connect(backend.target)
    try:
        with conn:
            conn.execute(sql)
    finally:
        conn.close()


def fetch_raw(backend: Backend, sql: str) -> list[tuple[Any, ...]]:
    """Rows of one query on a connection of its own, behind the storage's back."""
    if backend.kind == "postgres":
        return pg_fetch(backend.target, sql)
    conn = sqlite3.connect(backend.target)
    try:
        return list(conn.execute(sql))
    finally:
        conn.close()


def tables(backend: Backend) -> set[str]:
    if backend.kind == "postgres":
        rows = pg_fetch(
            backend.target,
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()",
        )
    else:
        with sqlite3.connect(backend.target) as conn:
            rows = list(conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    return {r[0] for r in rows}


def latest(backend: Backend) -> int:
    schema = postgres_schema if backend.kind == "postgres" else sqlite_schema
    return int(schema.MIGRATIONS[-1].version)


def test_reopen_keeps_everything(durable_backend: Backend) -> None:
    async def write(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.devices.add(device("p1", "d1", "n1", "u1", {"k": "v"}))
        await s.devices.add(device("p1", "d2"))
        await s.devices.set_presence([PresenceUpdate("p1", "d1", True, 100, 90)])
        await s.settings.set_if_absent("pepper", "secret")

    async def read(s: Storage) -> None:
        assert await s.products.get("p1") == product("p1")
        assert await s.devices.get("p1", "d1") == device("p1", "d1", "n1", "u1", {"k": "v"})
        assert await s.devices.by_username("u1") is not None
        assert await s.devices.count("p1") == 2
        assert await s.devices.presence("p1", "d1") == Presence(True, 100, 90)
        assert await s.settings.get("pepper") == "secret"
        assert await s.settings.set_if_absent("pepper", "other") == "secret"
        assert await s.devices.mark_all_offline(500) == 1

    async def read_again(s: Storage) -> None:
        assert await s.devices.presence("p1", "d1") == Presence(False, 100, 500)

    durable_backend.run(write)
    durable_backend.run(read)
    durable_backend.run(read_again)


def test_images_commands_and_tags_survive_a_restart(durable_backend: Backend) -> None:
    async def write(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.devices.add(device("p1", "d1"))
        await s.devices.add(device("p1", "d2"))
        await s.devices.set_tags("p1", "d1", {"building": "43"})
        await s.images.save("p1", "d1", image(1, t=1), 0)
        await s.images.save("p1", "d1", image(2, t=2), 1)
        await s.commands.add(command("c-1", created_at=1))
        await s.commands.add(command("c-2", created_at=2))
        await s.commands.add(command("c-3", name="d2", created_at=3))
        await s.commands.finish("c-1", "answered", 10, b"\x00done")
        # c-2 and c-3 are still waiting for their answers when the server stops.

    async def restart(s: Storage) -> None:
        got = await s.devices.get("p1", "d1")
        assert got is not None and dict(got.tags) == {"building": "43"}
        assert await s.images.get("p1", "d1") == image(2, t=2)
        assert await s.commands.fail_unfinished(500) == 2
        await s.images.save("p1", "d1", image(3, t=3), 2)

    async def read(s: Storage) -> None:
        assert await s.images.get("p1", "d1") == image(3, t=3)
        assert [r.cmd_id for r in await s.commands.list("p1", "d1", 10)] == ["c-2", "c-1"]
        answered = await s.commands.get("c-1")
        assert answered is not None and answered.response == b"\x00done"
        failed = await s.commands.get("c-3")
        assert failed is not None
        assert (failed.status, failed.answered_at, failed.detail) == (
            "failed",
            500,
            "server restarted",
        )
        assert await s.commands.fail_unfinished(600) == 0

    durable_backend.run(write)
    durable_backend.run(restart)
    durable_backend.run(read)


def test_a_write_is_committed_when_it_returns(durable_backend: Backend) -> None:
    """Another connection sees each group-committed write as soon as its caller
    is answered, while the storage is still open: nothing waits for close()."""
    document = {"z": 1, "a": {"ü": [1.5, None]}, "m": "😀"}

    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.devices.add(device("p1", "d1"))
        await s.images.save("p1", "d1", StoredImage(document, 4), 0)
        rows = await asyncio.to_thread(
            fetch_raw, durable_backend, "SELECT version, document FROM images"
        )
        # The document is kept as the compact JSON text it was written as.
        assert rows == [(4, '{"z":1,"a":{"ü":[1.5,null]},"m":"😀"}')]
        await s.commands.add(command("c-1"))
        await s.commands.finish("c-1", "answered", 9, b"\x00\xff")
        rows = await asyncio.to_thread(
            fetch_raw, durable_backend, "SELECT status, response, request FROM commands"
        )
        assert rows == [("answered", b"\x00\xff", b"\x00on\xff")]

    durable_backend.run(scenario)


def test_later_migrations_keep_the_data_of_version_1(
    durable_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    module: Any = (
        thingshub.storage.postgres.storage
        if durable_backend.kind == "postgres"
        else thingshub.storage.sqlite.storage
    )
    with monkeypatch.context() as patch:
        patch.setattr(module, "MIGRATIONS", module.MIGRATIONS[:1])

        async def old(s: Storage) -> None:
            pass  # migrates to version 1

        durable_backend.run(old)
        # Written as version 1 wrote them (today's code writes columns of later versions).
        execute_raw(
            durable_backend,
            "INSERT INTO products (id, name, created_at) VALUES ('p1', 'Product', 1700000000000)",
        )
        for name in ("d1", "d2"):
            execute_raw(
                durable_backend,
                "INSERT INTO devices (product_id, name, device_number, key, username,"
                f" password_hash, created_at, tags) VALUES ('p1', '{name}', 'p1.{name}',"
                f" '{'a2V5' * 11}', 'user-p1-{name}', '{'0' * 64}', 1700000000123,"
                """ '{"k":"v"}')""",
            )
        assert [v for v, _ in migrations_table(durable_backend)] == [1]
        assert not {"images", "commands", "points"} & tables(durable_backend)

    async def new(s: Storage) -> None:
        assert await s.products.get("p1") == product("p1")  # no retention, auto-register on
        assert await s.devices.get("p1", "d1") == device("p1", "d1", tags={"k": "v"})
        await s.images.save("p1", "d1", image(1), 0)
        await s.commands.add(command("c-1"))
        assert await s.images.get("p1", "d1") == image(1)
        assert await s.commands.get("c-1") == command("c-1")
        # The devices got ids: telemetry works for them, and new devices get new ids.
        await s.devices.add(device("p1", "d3"))
        for name in ("d1", "d2", "d3"):
            await s.telemetry.append("p1", name, [Point("t", 1, name)])
        for name in ("d1", "d2", "d3"):
            assert await s.telemetry.latest("p1", name) == {"t": (1, name)}

    durable_backend.run(new)
    assert [v for v, _ in migrations_table(durable_backend)] == list(
        range(1, latest(durable_backend) + 1)
    )
    ids = fetch_raw(durable_backend, "SELECT name, id FROM devices ORDER BY name")
    assert [name for name, _ in ids] == ["d1", "d2", "d3"]
    assert len({i for _, i in ids}) == 3 and ids[2][1] > max(ids[0][1], ids[1][1])


def test_migrations_are_idempotent(durable_backend: Backend) -> None:
    async def nothing(s: Storage) -> None:
        pass

    durable_backend.run(nothing)
    first = migrations_table(durable_backend)
    assert [v for v, _ in first] == list(range(1, latest(durable_backend) + 1))
    assert all(isinstance(at, int) and at > 1_600_000_000_000 for _, at in first)
    durable_backend.run(nothing)
    durable_backend.run(nothing)
    assert migrations_table(durable_backend) == first
    assert {
        "products",
        "devices",
        "device_presence",
        "settings",
        "images",
        "commands",
        "points",
        "latest",
        "attributes",
        "events",
        "device_purges",
    } <= tables(durable_backend)


def test_concurrent_first_starts_migrate_once(durable_backend: Backend) -> None:
    async def main() -> None:
        stores = [durable_backend.make() for _ in range(4)]
        await asyncio.gather(*(s.open() for s in stores))
        try:
            await stores[0].products.add(product("p1"))
            assert await stores[3].products.get("p1") == product("p1")
        finally:
            await asyncio.gather(*(s.close() for s in stores))

    asyncio.run(main())
    versions = [v for v, _ in migrations_table(durable_backend)]
    assert versions == list(range(1, latest(durable_backend) + 1))


def test_refuses_a_newer_schema(durable_backend: Backend) -> None:
    async def write(s: Storage) -> None:
        await s.products.add(product("p1"))

    durable_backend.run(write)
    newer = latest(durable_backend) + 1
    execute_raw(
        durable_backend,
        f"INSERT INTO schema_migrations (version, applied_at) VALUES ({newer}, 1)",
    )

    async def reopen() -> None:
        storage = durable_backend.make()
        with pytest.raises(Unavailable, match=f"schema version {newer}.*upgrade ThingsHub"):
            await storage.open()
        await storage.close()  # harmless after a failed open
        with pytest.raises(Unavailable, match="not open"):
            await storage.products.get("p1")

    asyncio.run(reopen())


def test_failed_migration_changes_nothing(
    durable_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def nothing(s: Storage) -> None:
        pass

    durable_backend.run(nothing)
    module: Any = (
        thingshub.storage.postgres.storage
        if durable_backend.kind == "postgres"
        else thingshub.storage.sqlite.storage
    )
    broken = Migration(
        latest(durable_backend) + 1,
        "broken",
        ("CREATE TABLE half_done (x integer)", "CREATE TABLE products (x integer)"),
    )
    good = Migration(latest(durable_backend) + 2, "never reached", ("CREATE TABLE later (x int)",))
    monkeypatch.setattr(module, "MIGRATIONS", check_migrations([*module.MIGRATIONS, broken, good]))

    async def reopen() -> None:
        storage = durable_backend.make()
        with pytest.raises(Exception, match="already exists"):
            await storage.open()

    asyncio.run(reopen())
    assert [v for v, _ in migrations_table(durable_backend)][-1] == latest(durable_backend)
    assert not {"half_done", "later"} & tables(durable_backend)


def test_sql_storage_must_be_open(durable_backend: Backend) -> None:
    async def main() -> None:
        storage = durable_backend.make()
        await storage.close()  # closing an unopened storage is harmless
        with pytest.raises(Unavailable, match="not open"):
            await storage.devices.count("p1")
        await storage.open()
        await storage.open()  # opening twice is harmless too
        await storage.close()
        await storage.close()

    asyncio.run(main())


def test_sqlite_connection_settings(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "things.db"  # parent directories are made

    async def main() -> dict[str, object]:
        storage = SqliteStorage(path)
        await storage.open()
        try:
            return await storage.pragmas()
        finally:
            await storage.close()

    pragmas = asyncio.run(main())
    assert pragmas == {
        "journal_mode": "wal",
        "synchronous": 2,  # FULL
        "foreign_keys": 1,
        "busy_timeout": thingshub.storage.sqlite.storage.BUSY_TIMEOUT_MS,
    }
    assert path.exists()


def test_postgres_keys_sort_as_bytes_whatever_the_locale(pg_url: str) -> None:
    asyncio.run(_open_close(PostgresStorage(pg_url)))
    rows = pg_fetch(
        pg_url,
        "SELECT table_name, column_name, collation_name FROM information_schema.columns"
        " WHERE table_schema = current_schema()",
    )
    collations = {(t, c): coll for t, c, coll in rows}
    keys = [
        ("products", "id"),
        ("devices", "product_id"),
        ("devices", "name"),
        ("devices", "device_number"),
        ("devices", "username"),
        ("device_presence", "product_id"),
        ("device_presence", "name"),
        ("images", "product_id"),
        ("images", "name"),
        ("commands", "cmd_id"),
        ("commands", "product_id"),
        ("commands", "name"),
        ("points", "key"),
        ("latest", "key"),
        ("attributes", "key"),
    ]
    assert {k: collations[k] for k in keys} == dict.fromkeys(keys, "C")


async def _open_close(storage: Storage) -> None:
    await storage.open()
    await storage.close()


@pytest.mark.parametrize("migrations", [sqlite_schema.MIGRATIONS, postgres_schema.MIGRATIONS])
def test_migration_lists_are_numbered(migrations: Sequence[Migration]) -> None:
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert len(sqlite_schema.MIGRATIONS) == len(postgres_schema.MIGRATIONS)  # twins


def test_check_migrations_refuses_gaps() -> None:
    with pytest.raises(ValueError, match="expected 2"):
        check_migrations([Migration(1, "a", ("x",)), Migration(3, "c", ("y",))])
    with pytest.raises(ValueError, match="no statements"):
        check_migrations([Migration(1, "a", ())])
