"""What only the SQL backends promise about reported data: it survives a restart,
it is committed before its caller hears back, many appends share few commits,
a failed batch stores none of its rows, a deleted device's rows are purged
(in chunks, resumed after a restart), and another connection deleting a
device never leaves rows behind."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from typing import Any

import pytest

from tests.storage.support import Backend, device, pg_fetch, product
from thingshub.core.errors import NotFound, Unavailable
from thingshub.core.model import DeviceEvent, Point
from thingshub.core.ports import Storage
from thingshub.storage import common
from thingshub.storage.postgres import PostgresStorage
from thingshub.storage.postgres import writes as postgres_writes
from thingshub.storage.sql import series as sql_series
from thingshub.storage.sql.batch import GroupCommit, Write
from thingshub.storage.sql.connection import sql
from thingshub.storage.sqlite import SqliteStorage
from thingshub.storage.sqlite import writes as sqlite_writes

T0 = 1_700_000_000_000


def raw(backend: Backend, sql: str) -> list[tuple[Any, ...]]:
    """Rows of one query on a connection of its own, behind the storage's back."""
    if backend.kind == "postgres":
        return pg_fetch(backend.target, sql)
    conn = sqlite3.connect(backend.target)
    try:
        return list(conn.execute(sql))
    finally:
        conn.close()


def sql_storage(s: Storage) -> SqliteStorage | PostgresStorage:
    assert isinstance(s, SqliteStorage | PostgresStorage)
    return s


def writer_of(s: Storage) -> GroupCommit:
    return sql_storage(s).writer


async def setup(s: Storage, *names: str) -> None:
    await s.products.add(product("p1"))
    for name in names:
        await s.devices.add(device("p1", name))


def device_id(backend: Backend, name: str) -> int:
    [(found,)] = raw(backend, f"SELECT id FROM devices WHERE name = '{name}'")
    return int(found)


def test_reports_survive_a_restart(durable_backend: Backend) -> None:
    async def write(s: Storage) -> None:
        await setup(s, "d1")
        await s.products.update("p1", {"retention_days": 7})
        await s.telemetry.append("p1", "d1", [Point("t", T0, 1.5), Point("s", T0, "1")])
        await s.telemetry.append("p1", "d1", [Point("t", T0, 2), Point("t", T0 - 5, 0)])
        await s.attributes.upsert("p1", "d1", {"fw": "1.2", "n": 3}, T0)
        await s.events.append("p1", "d1", [DeviceEvent(T0, "boot", {"why": "power"})])

    async def read(s: Storage) -> list[tuple[int, int, object]]:
        got = await s.products.get("p1")
        assert got is not None and got.retention_days == 7
        assert await s.telemetry.latest("p1", "d1") == {"t": (T0, 2), "s": (T0, "1")}
        rows = await s.telemetry.history("p1", "d1", "t", 0, 2**62, 10)
        assert [(ts, v) for ts, _, v in rows] == [(T0 - 5, 0), (T0, 1.5), (T0, 2)]
        assert await s.attributes.get("p1", "d1") == {"fw": "1.2", "n": 3}
        [(_, _, event)] = await s.events.list("p1", "d1", 0, 2**62, 10)
        assert event == DeviceEvent(T0, "boot", {"why": "power"})
        # Arrival keeps counting after a restart.
        await s.telemetry.append("p1", "d1", [Point("t", T0, "after")])
        return await s.telemetry.history("p1", "d1", "t", T0, T0 + 1, 10)

    durable_backend.run(write)
    rows = durable_backend.run(read)
    assert [v for _, _, v in rows] == [1.5, 2, "after"]
    assert rows[2][1] > rows[1][1]


def test_rows_are_committed_when_the_call_returns(durable_backend: Backend) -> None:
    """Another connection sees each write as soon as its caller is answered, with
    `num` the value as a double for numbers only and `value` its JSON text."""

    async def scenario(s: Storage) -> None:
        await setup(s, "d1")
        points = [Point("i", T0, 7), Point("f", T0, 0.5), Point("b", T0, True)]
        points += [Point("s", T0, "7"), Point("j", T0, {"a": [1, None]})]
        await s.telemetry.append("p1", "d1", points)
        rows = await asyncio.to_thread(
            raw, durable_backend, "SELECT key, num, value FROM points ORDER BY seq"
        )
        assert rows == [
            ("i", 7.0, "7"),
            ("f", 0.5, "0.5"),
            ("b", None, "true"),
            ("s", None, '"7"'),
            ("j", None, '{"a":[1,null]}'),
        ]
        latest = await asyncio.to_thread(
            raw, durable_backend, "SELECT key, ts, value FROM latest ORDER BY key"
        )
        assert latest == [(k, T0, v) for k, _, v in sorted(rows)]
        await s.attributes.upsert("p1", "d1", {"a": "x"}, T0)
        await s.events.append("p1", "d1", [DeviceEvent(T0, "m", {"p": 1})])
        assert await asyncio.to_thread(
            raw, durable_backend, "SELECT key, value, ts FROM attributes"
        ) == [("a", '"x"', T0)]
        assert await asyncio.to_thread(
            raw, durable_backend, "SELECT ts, method, params FROM events"
        ) == [(T0, "m", '{"p":1}')]

    durable_backend.run(scenario)


def test_many_appends_few_commits(durable_backend: Backend) -> None:
    """2,000 appends (10 messages of 3 points from each of 200 devices), 200 attribute
    reports and 200 events, all at once: every one lands, in a handful of commits."""
    names = [f"d{i:03d}" for i in range(200)]

    async def scenario(s: Storage) -> None:
        await setup(s, *names)
        writer = writer_of(s)
        before = writer.stats.batches
        calls = [
            s.telemetry.append("p1", n, [Point(k, T0 + i, i) for k in ("a", "b", "c")])
            for i in range(10)
            for n in names
        ]
        calls += [s.attributes.upsert("p1", n, {"fw": n}, T0) for n in names]
        calls += [s.events.append("p1", n, [DeviceEvent(T0, "boot")]) for n in names]
        assert await asyncio.gather(*calls) == [None] * len(calls)
        batches = writer.stats.batches - before
        assert batches <= len(calls) // 200, batches  # 2,400 writes: a few batches
        assert writer.stats.largest_batch == writer.max_batch
        assert writer.stats.failed_batches == 0
        for n in ("d000", "d123", "d199"):
            assert [v for _, _, v in await s.telemetry.history("p1", n, "b", 0, 2**62, 20)] == list(
                range(10)
            )
            assert await s.telemetry.latest("p1", n) == {k: (T0 + 9, 9) for k in "abc"}
            assert await s.attributes.get("p1", n) == {"fw": n}
        [(count,)] = await asyncio.to_thread(raw, durable_backend, "SELECT count(*) FROM points")
        assert count == 6000

    durable_backend.run(scenario)


_ORPHAN = (
    "INSERT INTO images (product_id, name, version, document, updated_at)"
    " VALUES ('p1', 'ghost', 1, '{}', 0)"
)


async def _orphan(conn: Any, rows: Any) -> list[object]:
    await conn.execute(sql(_ORPHAN))  # a foreign key violation: a genuine database error
    return [None] * len(rows)


def _install(backend: Backend, monkeypatch: pytest.MonkeyPatch, kind: str, *handlers: Any) -> None:
    if backend.kind == "sqlite":
        monkeypatch.setitem(sqlite_writes.WRITE_HANDLERS, kind, handlers[0])
    else:
        monkeypatch.setitem(postgres_writes.WRITE_HANDLERS, kind, handlers[1])


@pytest.mark.allow_logged_errors
def test_a_failed_batch_stores_none_of_its_rows(
    durable_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install(durable_backend, monkeypatch, "test.orphan", _orphan, _orphan)

    async def scenario(s: Storage) -> None:
        await setup(s, "d1", "d2")
        await s.telemetry.append("p1", "d1", [Point("t", T0, "before")])
        results = await asyncio.gather(
            s.telemetry.append("p1", "d1", [Point("t", T0 + 1, 1), Point("u", T0 + 1, 1)]),
            s.telemetry.append("p1", "d2", [Point("t", T0 + 1, 2)]),
            s.attributes.upsert("p1", "d2", {"a": 1}, T0),
            s.events.append("p1", "d2", [DeviceEvent(T0, "m")]),
            writer_of(s).submit(Write("test.orphan", None, ())),
            return_exceptions=True,
        )
        assert all(isinstance(r, Unavailable) for r in results), results
        assert await s.telemetry.latest("p1", "d1") == {"t": (T0, "before")}
        assert await s.telemetry.latest("p1", "d2") == {}
        assert len(await s.telemetry.history("p1", "d1", "t", 0, 2**62, 10)) == 1
        assert await s.attributes.get("p1", "d2") == {}
        assert await s.events.list("p1", "d2", 0, 2**62, 10) == []
        await s.telemetry.append("p1", "d2", [Point("t", T0 + 1, 2)])  # the next batch works
        assert await s.telemetry.latest("p1", "d2") == {"t": (T0 + 1, 2)}

    durable_backend.run(scenario)


async def _no_purge(dialect: Any, conn: Any) -> bool:
    return False


def test_deleted_devices_are_purged_in_chunks_even_after_a_restart(
    durable_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(common, "DELETE_CHUNK", 7)
    counts = (
        "SELECT (SELECT count(*) FROM points WHERE device_id = {0}),"
        " (SELECT count(*) FROM events WHERE device_id = {0}),"
        " (SELECT count(*) FROM latest WHERE device_id = {0}),"
        " (SELECT count(*) FROM attributes WHERE device_id = {0}),"
        " (SELECT count(*) FROM device_purges WHERE purged_at IS NULL)"
    )

    async def write(s: Storage) -> int:
        await setup(s, "d1", "d2")
        for name in ("d1", "d2"):
            for i in range(10):
                await s.telemetry.append("p1", name, [Point(k, T0 + i, i) for k in "abcd"])
            await s.events.append("p1", name, [DeviceEvent(T0 + i, "e") for i in range(10)])
            await s.attributes.upsert("p1", name, {"a": 1}, T0)
        old = await asyncio.to_thread(device_id, durable_backend, "d1")
        assert await s.devices.delete("p1", "d1") is True
        # Gone for every reader at once, though its rows are still on disk...
        await s.devices.add(device("p1", "d1"))
        assert await s.telemetry.history("p1", "d1", "a", 0, 2**62, 100) == []
        assert await s.events.list("p1", "d1", 0, 2**62, 100) == []
        [row] = await asyncio.to_thread(raw, durable_backend, counts.format(old))
        assert row == (40, 10, 0, 0, 1)
        # ...and its id is not given again while they are.
        new, d2 = [await asyncio.to_thread(device_id, durable_backend, n) for n in ("d1", "d2")]
        assert new > d2 > old
        await s.telemetry.append("p1", "d1", [Point("a", T0, "new")])
        return old

    # The purge is stopped before it starts; the next start resumes it.
    with monkeypatch.context() as patch:
        patch.setattr(sql_series, "purge_step", _no_purge)
        old = durable_backend.run(write)

    async def restart(s: Storage) -> None:
        await sql_storage(s).purge()
        assert await asyncio.to_thread(raw, durable_backend, counts.format(old)) == [
            (0, 0, 0, 0, 0)
        ]
        assert [v for _, _, v in await s.telemetry.history("p1", "d1", "a", 0, 2**62, 10)] == [
            "new"
        ]
        assert len(await s.telemetry.history("p1", "d2", "a", 0, 2**62, 100)) == 10
        assert len(await s.events.list("p1", "d2", 0, 2**62, 100)) == 10

    durable_backend.run(restart)


def test_a_device_deleted_through_another_connection(durable_backend: Backend) -> None:
    """Another process deletes a device while this one appends to it: no row of the
    old device remains, and appends reach the new device of that name."""

    async def main() -> None:
        ingest, admin = durable_backend.make(), durable_backend.make()
        await ingest.open()
        await admin.open()
        try:
            await setup(admin, "d1")
            await ingest.telemetry.append("p1", "d1", [Point("t", T0, "first")])
            old = await asyncio.to_thread(device_id, durable_backend, "d1")
            stored = 1
            busy = asyncio.Event()

            async def appends() -> None:
                nonlocal stored
                for i in range(1, 400):
                    try:
                        await ingest.telemetry.append("p1", "d1", [Point("t", T0 + i, i)])
                    except NotFound:
                        return
                    stored += 1
                    if stored == 20:
                        busy.set()
                    await asyncio.sleep(0)

            task = asyncio.create_task(appends())
            await busy.wait()
            assert await admin.devices.delete("p1", "d1") is True
            await task
            await admin.devices.add(device("p1", "d1"))
            await ingest.telemetry.append("p1", "d1", [Point("t", T0, "new device")])
            assert await admin.telemetry.latest("p1", "d1") == {"t": (T0, "new device")}
            await sql_storage(admin).purge()
            left = await asyncio.to_thread(
                raw,
                durable_backend,
                f"SELECT (SELECT count(*) FROM points WHERE device_id = {old}),"
                f" (SELECT count(*) FROM latest WHERE device_id = {old})",
            )
            assert left == [(0, 0)], stored
        finally:
            await ingest.close()
            await admin.close()

    asyncio.run(main())


def test_reads_do_not_wait_for_the_writer(
    durable_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside, release = threading.Event(), threading.Event()

    async def hold_sqlite(conn: Any, rows: Any) -> list[object]:
        inside.set()
        release.wait(10)  # on the writer's thread
        return [None] * len(rows)

    async def hold_postgres(conn: Any, rows: Any) -> list[object]:
        inside.set()
        await asyncio.to_thread(release.wait, 10)
        return [None] * len(rows)

    _install(durable_backend, monkeypatch, "test.hold", hold_sqlite, hold_postgres)

    async def scenario(s: Storage) -> None:
        await setup(s, "d1")
        await s.telemetry.append("p1", "d1", [Point("t", T0, 1)])
        await s.attributes.upsert("p1", "d1", {"a": 1}, T0)
        hold = asyncio.create_task(writer_of(s).submit(Write("test.hold", None, ())))
        try:
            assert await asyncio.to_thread(inside.wait, 10)  # the writer is busy
            queued = asyncio.create_task(s.telemetry.append("p1", "d1", [Point("t", T0, 2)]))
            reads = asyncio.gather(
                s.telemetry.latest("p1", "d1"),
                s.telemetry.history("p1", "d1", "t", 0, 2**62, 10),
                s.telemetry.aggregate("p1", "d1", "t", 0, 2**62, 2**62, "count"),
                s.attributes.get("p1", "d1"),
                s.events.list("p1", "d1", 0, 2**62, 10),
            )
            latest, history, count, attributes, events = await asyncio.wait_for(reads, 5)
            assert latest == {"t": (T0, 1)} and count == [(0, 1)]
            assert len(history) == 1 and attributes == {"a": 1} and events == []
            assert not queued.done()
        finally:
            release.set()
            with contextlib.suppress(Exception):
                await hold
        await queued
        assert (await s.telemetry.latest("p1", "d1"))["t"] == (T0, 2)

    durable_backend.run(scenario)
