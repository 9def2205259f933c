"""The group-commit writer (storage/sql/batch.py): alone with a scripted `run`, then
as the writer of the SQLite and PostgreSQL storages.

What is checked: a lone write goes at once; writes queued together share one
transaction; an outcome error (VersionConflict...) fails its own caller only;
a database error fails its batch only and the writer goes on; cancelled
callers never break a batch; `close()` commits what is queued. No test here
times anything: throughput is measured in bench/, not asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

from tests.storage.support import Backend, command, device, image, pg_fetch, product
from thingshub.core.errors import AlreadyExists, NotFound, Unavailable, VersionConflict
from thingshub.core.ports import Storage
from thingshub.storage.postgres import PostgresStorage
from thingshub.storage.postgres import writes as postgres_writes
from thingshub.storage.sql.batch import GroupCommit, Write, plan
from thingshub.storage.sql.connection import sql
from thingshub.storage.sqlite import SqliteStorage
from thingshub.storage.sqlite import writes as sqlite_writes

# ------------------------------------------------------------------ plan


def test_plan_groups_kinds_and_keeps_the_order_of_a_key() -> None:
    writes = [
        Write("save", "a", ()),  # 0
        Write("save", "b", ()),  # 1
        Write("add", "x", ()),  # 2
        Write("save", "a", ()),  # 3: after 0
        Write("append", None, ()),  # 4: keyless, never waits
        Write("finish", "x", ()),  # 5: after 2
        Write("save", "a", ()),  # 6: after 3
        Write("save", "c", ()),  # 7
        Write("append", None, ()),  # 8
    ]
    assert plan(writes) == [
        ("save", [0, 1, 7]),
        ("add", [2]),
        ("append", [4, 8]),
        ("save", [3]),
        ("finish", [5]),
        ("save", [6]),
    ]
    assert plan([]) == []


# ------------------------------------------------------------------ the writer alone


class Script:
    """A `run` for GroupCommit: records batches, answers by each write's args."""

    def __init__(self) -> None:
        self.batches: list[list[Write]] = []
        self.fail_next: Exception | None = None
        self.gate: asyncio.Event | None = None  # when set: wait for it inside a batch
        self.inside = asyncio.Event()

    async def __call__(self, writes: list[Write]) -> Sequence[object]:
        self.batches.append(writes)
        self.inside.set()
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0.001)  # the commit
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        return [w.args[0] for w in writes]


def w(value: object, key: str | None = None) -> Write:
    return Write("test", key, (value,))


def run_writer(scenario: Callable[[GroupCommit, Script], Awaitable[None]]) -> None:
    async def main() -> None:
        script = Script()
        writer = GroupCommit(script, "Test", max_batch=300)
        writer.start()
        try:
            await scenario(writer, script)
        finally:
            await writer.close()

    asyncio.run(main())


def test_a_lone_write_goes_at_once() -> None:
    async def scenario(writer: GroupCommit, script: Script) -> None:
        assert await writer.submit(w("one")) == "one"
        assert [len(b) for b in script.batches] == [1]
        assert await writer.submit(w("two")) == "two"
        assert (writer.stats.batches, writer.stats.writes, writer.stats.largest_batch) == (2, 2, 1)

    run_writer(scenario)


def test_writes_queued_together_share_a_batch() -> None:
    async def scenario(writer: GroupCommit, script: Script) -> None:
        results = await asyncio.gather(*(writer.submit(w(i)) for i in range(1000)))
        assert results == list(range(1000))
        assert [len(b) for b in script.batches] == [300, 300, 300, 100]  # capped
        assert writer.stats.batches == 4
        assert writer.stats.writes == 1000
        assert writer.stats.largest_batch == 300
        assert writer.pending == 0

    run_writer(scenario)


def test_an_outcome_error_fails_its_own_caller_only() -> None:
    async def scenario(writer: GroupCommit, script: Script) -> None:
        results = await asyncio.gather(
            writer.submit(w("a")),
            writer.submit(w(VersionConflict("stale"))),
            writer.submit(w("c")),
            return_exceptions=True,
        )
        assert results[0] == "a" and results[2] == "c"
        assert isinstance(results[1], VersionConflict) and results[1].message == "stale"
        assert len(script.batches) == 1
        assert writer.stats.failed_batches == 0

    run_writer(scenario)


def test_submit_now_hands_out_the_future_and_may_take_not_found_as_a_value() -> None:
    async def scenario(writer: GroupCommit, script: Script) -> None:
        plain = writer.submit_now(w("a"))
        missing_ok = writer.submit_now(w(NotFound("gone")), missing=0)
        missing = writer.submit_now(w(NotFound("gone")))
        other = writer.submit_now(w(VersionConflict("stale")), missing=0)
        assert not plain.done()  # nothing is written before the writer's turn
        assert await plain == "a" and await missing_ok == 0
        with pytest.raises(NotFound):
            await missing
        with pytest.raises(VersionConflict):  # only NotFound becomes the value
            await other
        assert len(script.batches) == 1

    run_writer(scenario)


@pytest.mark.allow_logged_errors  # the follow-up that raises is logged
def test_then_runs_as_a_write_resolves_to_a_value_before_its_done_callbacks() -> None:
    async def scenario(writer: GroupCommit, script: Script) -> None:
        seen: list[str] = []

        def then(label: str) -> Callable[[], None]:
            return lambda: seen.append(f"then {label}")

        def broken() -> None:
            raise RuntimeError("bookkeeping bug")

        plain = writer.submit_now(w("a"), then=then("a"))
        plain.add_done_callback(lambda _: seen.append("callback a"))
        missing = writer.submit_now(w(NotFound("gone")), missing=0, then=then("missing"))
        error = writer.submit_now(w(VersionConflict("stale")), then=then("error"))
        raising = writer.submit_now(w("b"), then=broken)
        after = writer.submit_now(w("c"), then=then("c"))
        assert seen == []  # nothing before the commit
        assert await plain == "a" and await missing == 0 and await raising == "b"
        assert await after == "c"
        with pytest.raises(VersionConflict):
            await error
        # Only the writes resolved to a value, each before its future's callbacks; a
        # follow-up that raises stops neither the others nor the writer.
        assert seen == ["then a", "then c", "callback a"]
        script.fail_next = OSError("disk on fire")
        failed = writer.submit_now(w("d"), then=then("d"))
        with pytest.raises(Unavailable):
            await failed
        assert await writer.submit(w("e")) == "e"
        assert seen == ["then a", "then c", "callback a"]

    run_writer(scenario)


def test_submit_now_on_a_closed_writer_is_a_failed_future() -> None:
    async def main() -> None:
        writer = GroupCommit(Script(), "Test")
        future = writer.submit_now(w(0))
        assert future.done()
        with pytest.raises(Unavailable, match="Test storage is not open"):
            await future

    asyncio.run(main())


@pytest.mark.allow_logged_errors
def test_a_failed_batch_fails_its_callers_and_the_writer_goes_on() -> None:
    async def scenario(writer: GroupCommit, script: Script) -> None:
        script.fail_next = OSError("disk on fire")
        results = await asyncio.gather(
            *(writer.submit(w(i)) for i in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, Unavailable) for r in results)
        first = results[0]
        assert isinstance(first, Unavailable)
        assert "Test database failed" in first.message and "disk on fire" in first.message
        assert isinstance(first.__cause__, OSError)
        assert len({id(r) for r in results}) == 5  # one exception each, not one shared
        assert await writer.submit(w("next")) == "next"
        stats = writer.stats
        assert (stats.batches, stats.failed_batches, stats.failed_writes) == (1, 1, 5)

    run_writer(scenario)


def test_cancelled_callers_do_not_break_a_batch() -> None:
    async def scenario(writer: GroupCommit, script: Script) -> None:
        script.gate = asyncio.Event()
        running = [asyncio.create_task(writer.submit(w(i))) for i in range(3)]
        await script.inside.wait()  # the batch of 0, 1, 2 is being written
        queued = [asyncio.create_task(writer.submit(w(i))) for i in (3, 4)]
        await asyncio.sleep(0)  # 3 and 4 wait for the next batch
        running[1].cancel()
        queued[0].cancel()
        script.gate.set()
        assert await running[0] == 0 and await running[2] == 2
        assert await queued[1] == 4
        for task in (running[1], queued[0]):
            with pytest.raises(asyncio.CancelledError):
                await task
        # 1 was written with its batch; 3 was dropped before its batch began.
        assert [[x.args[0] for x in b] for b in script.batches] == [[0, 1, 2], [4]]
        assert writer.stats.dropped == 1

    run_writer(scenario)


def test_close_commits_what_is_queued_and_refuses_the_rest() -> None:
    async def main() -> None:
        script = Script()
        writer = GroupCommit(script, "Test", max_batch=100)
        with pytest.raises(Unavailable, match="Test storage is not open"):
            await writer.submit(w(0))
        writer.start()
        tasks = [asyncio.create_task(writer.submit(w(i))) for i in range(250)]
        await asyncio.sleep(0)
        await writer.close()
        assert [t.result() for t in tasks] == list(range(250))
        assert sum(len(b) for b in script.batches) == 250
        with pytest.raises(Unavailable, match="not open"):
            await writer.submit(w("late"))
        await writer.close()  # twice is harmless
        writer.start()  # and it can start again
        assert await writer.submit(w("again")) == "again"
        await writer.close()

    asyncio.run(main())


def test_a_cancelled_close_still_drains() -> None:
    async def main() -> None:
        script = Script()
        script.gate = asyncio.Event()
        writer = GroupCommit(script, "Test")
        writer.start()
        task = asyncio.create_task(writer.submit(w("x")))
        await script.inside.wait()
        closing = asyncio.create_task(writer.close())
        await asyncio.sleep(0)
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        script.gate.set()
        assert await task == "x"
        await writer.close()

    asyncio.run(main())


# ------------------------------------------------------------------ the writer of a SQL storage


def writer_of(s: Storage) -> GroupCommit:
    assert isinstance(s, SqliteStorage | PostgresStorage)
    return s.writer


async def add_devices(s: Storage, count: int) -> None:
    await s.products.add(product("p1"))
    for i in range(count):
        await s.devices.add(device("p1", f"d{i:03d}"))


def test_many_writes_few_commits(durable_backend: Backend) -> None:
    """2,000 image saves (10 in a row on each of 200 devices) and 500 command
    records, all submitted at once: every one lands, in a handful of commits."""

    async def scenario(s: Storage) -> None:
        await add_devices(s, 200)
        writer = writer_of(s)
        await s.images.save("p1", "d000", image(1), 0)  # a lone write: a batch of its own
        assert (writer.stats.batches, writer.stats.largest_batch) == (1, 1)
        saves = [
            s.images.save("p1", f"d{d:03d}", image(v + 1, v=v), v)
            for v in range(10)
            for d in range(1, 200)
        ]
        adds = [
            s.commands.add(command(f"c{i:04d}", name=f"d{i % 200:03d}", created_at=i))
            for i in range(500)
        ]
        results = await asyncio.gather(*saves, *adds)
        assert results == [None] * len(results)
        stats = writer.stats
        writes = len(saves) + len(adds)
        assert stats.writes == writes + 1
        assert stats.batches - 1 <= writes // 100  # far fewer commits than writes
        assert stats.largest_batch == writer.max_batch
        assert stats.failed_batches == 0
        for d in (1, 57, 199):
            assert await s.images.get("p1", f"d{d:03d}") == image(10, v=9)
        assert len(await s.commands.list("p1", "d007", 10)) == 3
        assert await s.commands.get("c0499") == command("c0499", name="d099", created_at=499)

    durable_backend.run(scenario)


def test_outcome_errors_stay_with_their_callers(durable_backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await add_devices(s, 4)
        await s.images.save("p1", "d000", image(1), 0)
        await s.commands.add(command("dup", name="d000"))
        writer = writer_of(s)
        before = writer.stats.batches
        results = await asyncio.gather(
            s.images.save("p1", "d001", image(1, ok=1), 0),
            s.images.save("p1", "d000", image(6), 5),  # stale
            s.images.save("p1", "ghost", image(1), 0),  # no device
            s.commands.add(command("dup", name="d001")),  # taken id
            s.commands.add(command("c-ok", name="d002")),
            s.commands.add(command("c-ghost", name="ghost")),  # no device
            s.commands.finish("nope", "answered", 1, b""),
            s.images.save("p1", "d003", image(1, ok=3), 0),
            return_exceptions=True,
        )
        assert writer.stats.batches == before + 1  # all in one transaction
        assert results[0] is None and results[4] is None and results[7] is None
        assert isinstance(results[1], VersionConflict)
        assert isinstance(results[2], NotFound)
        assert isinstance(results[3], AlreadyExists)
        assert isinstance(results[5], NotFound)
        assert results[6] is False
        assert await s.images.get("p1", "d001") == image(1, ok=1)
        assert await s.images.get("p1", "d003") == image(1, ok=3)
        assert await s.images.get("p1", "d000") == image(1)
        assert await s.commands.get("c-ok") == command("c-ok", name="d002")
        assert await s.commands.get("dup") == command("dup", name="d000")
        assert await s.commands.get("c-ghost") is None

    durable_backend.run(scenario)


def _install(
    backend: Backend,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    on_sqlite: Callable[[Any, Any], Awaitable[list[object]]],
    on_postgres: Callable[[Any, Any], Awaitable[list[object]]],
) -> None:
    if backend.kind == "sqlite":
        monkeypatch.setitem(sqlite_writes.WRITE_HANDLERS, kind, on_sqlite)
    else:
        monkeypatch.setitem(postgres_writes.WRITE_HANDLERS, kind, on_postgres)


_ORPHAN = (
    "INSERT INTO images (product_id, name, version, document, updated_at)"
    " VALUES ('p1', 'ghost', 1, '{}', 0)"
)


async def _orphan(conn: Any, rows: Any) -> list[object]:
    await conn.execute(sql(_ORPHAN))  # a foreign key violation: a genuine database error
    return [None] * len(rows)


@pytest.mark.allow_logged_errors
def test_a_database_error_fails_its_batch_only(
    durable_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install(durable_backend, monkeypatch, "test.orphan", _orphan, _orphan)

    async def scenario(s: Storage) -> None:
        await add_devices(s, 3)
        writer = writer_of(s)
        results = await asyncio.gather(
            s.images.save("p1", "d000", image(1), 0),
            s.commands.add(command("c-1", name="d001")),
            writer.submit(Write("test.orphan", None, ())),
            s.images.save("p1", "d002", image(1), 0),
            return_exceptions=True,
        )
        assert all(isinstance(r, Unavailable) for r in results), results
        first = results[0]
        assert isinstance(first, Unavailable)
        assert "database failed while committing" in first.message
        assert writer.stats.failed_batches == 1
        assert writer.stats.failed_writes == 4
        # Nothing of the batch was kept...
        assert await s.images.get("p1", "d000") is None
        assert await s.commands.get("c-1") is None
        # ...and the next batch works, as do the other operations.
        await asyncio.gather(
            s.images.save("p1", "d000", image(1), 0),
            s.commands.add(command("c-1", name="d001")),
        )
        assert await s.images.get("p1", "d000") == image(1)
        assert await s.commands.get("c-1") == command("c-1", name="d001")
        await s.devices.add(device("p1", "later"))
        assert await s.devices.count("p1") == 4

    durable_backend.run(scenario)


def test_cancelled_waiters_do_not_break_a_batch(
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
        await add_devices(s, 5)
        writer = writer_of(s)
        hold = asyncio.create_task(writer.submit(Write("test.hold", None, ())))
        running = [
            asyncio.create_task(s.images.save("p1", f"d00{i}", image(1), 0)) for i in range(3)
        ]
        assert await asyncio.to_thread(inside.wait, 10)  # that batch is being written
        queued = asyncio.create_task(s.images.save("p1", "d003", image(1), 0))
        later = asyncio.create_task(s.images.save("p1", "d004", image(1), 0))
        await asyncio.sleep(0.01)
        running[1].cancel()  # its batch has begun: it is committed all the same
        queued.cancel()  # its batch has not: it is dropped
        release.set()
        await hold
        await running[0]
        await running[2]
        await later
        for task in (running[1], queued):
            with pytest.raises(asyncio.CancelledError):
                await task
        assert await s.images.get("p1", "d001") == image(1)
        assert await s.images.get("p1", "d003") is None
        assert await s.images.get("p1", "d004") == image(1)
        assert writer.stats.dropped == 1
        assert writer.stats.failed_batches == 0
        await s.images.save("p1", "d003", image(1), 0)

    durable_backend.run(scenario)


def test_close_commits_the_queued_writes(durable_backend: Backend) -> None:
    async def write(s: Storage) -> None:
        await add_devices(s, 50)
        tasks = [
            asyncio.create_task(s.images.save("p1", f"d{i:03d}", image(v + 1), v))
            for v in range(6)
            for i in range(50)
        ]
        await asyncio.sleep(0)  # all queued, none committed yet
        assert writer_of(s).stats.writes == 0
        await s.close()
        assert [t.result() for t in tasks] == [None] * 300
        with pytest.raises(Unavailable, match="not open"):
            await s.images.save("p1", "d000", image(7), 6)

    async def read(s: Storage) -> None:
        for i in (0, 49):
            assert await s.images.get("p1", f"d{i:03d}") == image(6)

    durable_backend.run(write)
    durable_backend.run(read)


@pytest.mark.allow_logged_errors  # the batch that meets the dead connection logs its failure
def test_postgres_writer_replaces_a_lost_connection(pg_url: str) -> None:
    backend = Backend("postgres", lambda: PostgresStorage(pg_url), pg_url)

    async def scenario(s: Storage) -> None:
        await add_devices(s, 2)
        await s.images.save("p1", "d000", image(1), 0)
        assert isinstance(s, PostgresStorage)
        pid = s._runner.conn.get_server_pid()
        await asyncio.to_thread(pg_fetch, pg_url, "SELECT pg_terminate_backend($1)", pid)
        # The batch that finds the connection gone fails (or it was noticed
        # before); either way the one after runs on a new connection.
        with contextlib.suppress(Unavailable):
            await s.images.save("p1", "d000", image(2), 1)
        stored = await s.images.get("p1", "d000")
        assert stored is not None
        await s.images.save("p1", "d000", image(stored.version + 1), stored.version)
        await s.images.save("p1", "d001", image(1), 0)
        assert s._runner.conn.get_server_pid() != pid
        assert await s._runner.conn.fetchval("SHOW plan_cache_mode") == "force_custom_plan"

    backend.run(scenario)


def test_postgres_writer_plans_each_batch_and_leaves_the_pool_as_it_was(pg_url: str) -> None:
    """The writer's connection plans each statement for its batch (a generic plan
    made while a table was empty would scan it whole forever after); the
    other connections of the pool, and the writer's once given back, keep the
    server's default."""
    backend = Backend("postgres", lambda: PostgresStorage(pg_url), pg_url)

    async def scenario(s: Storage) -> None:
        assert isinstance(s, PostgresStorage)
        await add_devices(s, 1)
        for i in range(8):  # past the five executions after which a plan may be kept
            await s.commands.add(command(f"c{i}", name="d000"))
            assert await s.commands.finish(f"c{i}", "answered", 1, b"ok")
        writer = s._runner.conn
        assert await writer.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
        pool = s._pool.raw()
        async with pool.acquire() as other:
            assert other is not writer
            assert await other.fetchval("SHOW plan_cache_mode") == "auto"
        await s._runner.release()
        async with pool.acquire() as back:
            assert await back.fetchval("SHOW plan_cache_mode") == "auto"
        await s._runner.connect()
        assert await s._runner.conn.fetchval("SHOW plan_cache_mode") == "force_custom_plan"

    backend.run(scenario)
