"""The group-commit writer's settlements (`GroupCommit.join_now`): alone with a
scripted `run`, then as the SQLite and PostgreSQL storages' writer under `append_settled`.

What is checked: the appends that join together share one settlement and one
transaction, capped at `max_batch`; each committed member's `then` runs before
the waiters, which are called once; NotFound is 0, another error its member's
own failure, another value its member's `value`, a failed batch every member's;
held through an outage and failed when closing during one; what cannot join gets
a future, as `submit_now`. Then many devices' points as one write, on every
storage: an outcome a device."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import pytest

from tests.storage.support import Backend
from tests.storage.test_group_commit import add_devices, writer_of
from thingshub.core.errors import NotFound, StorageUnreachable, Unavailable, VersionConflict
from thingshub.core.model import Point
from thingshub.core.ports import Storage
from thingshub.core.settlement import Settlement
from thingshub.storage.sql.batch import GroupCommit, Write


class Script:
    """A `run`: records batches, answers each write by its first arg; raises
    the errors queued in `fail` (one a batch) first."""

    def __init__(self) -> None:
        self.batches: list[list[Write]] = []
        self.fail: list[Exception] = []

    async def __call__(self, writes: list[Write]) -> Sequence[object]:
        self.batches.append(list(writes))
        await asyncio.sleep(0.001)  # the commit
        if self.fail:
            raise self.fail.pop(0)
        return [w.args[0] for w in writes]


def append(value: object) -> Write:
    return Write("append", None, (value,))


def run_writer(scenario: Callable[[GroupCommit, Script], Awaitable[None]]) -> None:
    async def main() -> None:
        script = Script()
        writer = GroupCommit(script, "Test", max_batch=300, held=frozenset({"append"}))
        writer.RETRY_FIRST = 0.001
        writer.start()
        try:
            await scenario(writer, script)
        finally:
            await writer.close()

    asyncio.run(main())


async def settled(settlement: Settlement | asyncio.Future[object]) -> Settlement:
    """Wait for a settlement as a connection would: one waiter."""
    assert isinstance(settlement, Settlement)
    done = asyncio.get_running_loop().create_future()
    settlement.wait(lambda: done.set_result(None))
    await done
    return settlement


def test_appends_that_join_together_share_a_settlement_and_a_batch() -> None:
    async def scenario(writer: GroupCommit, script: Script) -> None:
        seen: list[str] = []
        joined = [
            writer.join_now(append(i), lambda i=i: seen.append(f"then {i}")) for i in range(3)
        ]
        s = joined[0]
        assert isinstance(s, Settlement) and all(j is s for j in joined)
        assert (s.size, s.last) == (3, 2)
        plain = writer.submit_now(Write("other", "k", ("plain",)))  # shares the batch
        s.wait(lambda: seen.append("waiter"))
        assert writer.pending == 4
        await settled(s)
        assert await plain == "plain"
        assert seen == ["then 0", "then 1", "then 2", "waiter"]
        assert [s.outcome(i) for i in range(3)] == [0, 0, 0]
        assert [[w.args[0] for w in b] for b in script.batches] == [["plain", 0, 1, 2]]
        assert (writer.stats.batches, writer.stats.writes) == (1, 4)
        assert writer.join_now(append(9)) is not s  # a settled one takes nobody

    run_writer(scenario)


def test_a_settlement_holds_at_most_max_batch_members() -> None:
    async def scenario(writer: GroupCommit, script: Script) -> None:
        joined = {id(writer.join_now(append(i))): writer for i in range(700)}
        assert len(joined) == 3
        last = writer.join_now(append(700))
        await settled(last)
        assert [len(b) for b in script.batches] == [300, 300, 101]
        assert writer.pending == 0

    run_writer(scenario)


def test_not_found_is_0_and_another_error_its_members_own() -> None:
    async def scenario(writer: GroupCommit, script: Script) -> None:
        thens: list[int] = []
        stale = VersionConflict("stale")
        values = ["a", NotFound("gone"), stale, None]
        for i, value in enumerate(values):
            s = writer.join_now(append(value), lambda i=i: thens.append(i))
        await settled(s)
        assert [s.outcome(i) for i in range(4)] == [0, 0, stale, 0]
        assert s.missing == {1}
        assert s.values == {0: "a"}  # what a write gave besides None: its member's value
        assert [s.done(i) for i in range(4)] == [True, False, False, True]
        assert thens == [0, 3]  # only what was stored

    run_writer(scenario)


@pytest.mark.allow_logged_errors  # the failed batch, the raising then and waiter
def test_a_failed_batch_fails_every_member_and_broken_callbacks_stop_nothing() -> None:
    async def scenario(writer: GroupCommit, script: Script) -> None:
        script.fail.append(OSError("disk on fire"))
        s = await settled(writer.join_now(append("a")))
        error = s.outcome(0)
        assert isinstance(error, Unavailable) and "database failed" in error.message
        assert isinstance(error.__cause__, OSError)

        def broken() -> None:
            raise RuntimeError("bookkeeping bug")

        calls: list[str] = []
        s = writer.join_now(append("b"), broken)
        assert isinstance(s, Settlement)
        s.wait(broken)
        s.wait(lambda: calls.append("the next waiter"))
        await settled(s)
        assert calls == ["the next waiter"] and s.outcome(0) == 0

    run_writer(scenario)


def test_what_cannot_join_gets_a_future() -> None:
    async def scenario(writer: GroupCommit, script: Script) -> None:
        keyed = writer.join_now(Write("append", "k", ("keyed",)))
        other = writer.join_now(Write("other", None, (NotFound("gone"),)))
        assert isinstance(keyed, asyncio.Future) and isinstance(other, asyncio.Future)
        assert await keyed == "keyed" and await other == 0  # missing=0, as append_now
        await writer.close()
        closed = writer.join_now(append("late"))
        assert isinstance(closed, asyncio.Future)
        with pytest.raises(Unavailable, match="not open"):
            await closed

    run_writer(scenario)


def test_a_settlement_is_held_through_an_outage() -> None:
    async def scenario(writer: GroupCommit, script: Script) -> None:
        script.fail += [StorageUnreachable("the database is away")] * 2
        s = writer.join_now(append("a"))
        other = writer.submit_now(Write("other", None, ("api",)))
        with pytest.raises(StorageUnreachable):  # not held: fails at once
            await other
        await settled(s)
        assert s.outcome(0) == 0
        assert writer.outage is None and writer.stats.held == 0
        assert writer.stats.outages == 1 and writer.stats.failed_batches == 2
        assert [[w.args[0] for w in b] for b in script.batches] == [["api", "a"], ["a"], ["a"]]

    run_writer(scenario)


def test_closing_during_an_outage_fails_the_settlement() -> None:
    async def scenario(writer: GroupCommit, script: Script) -> None:
        script.fail += [StorageUnreachable("the database is away")] * 1000
        s = writer.join_now(append("a"))
        assert isinstance(s, Settlement)
        async with asyncio.timeout(10):
            while writer.outage is None:  # noqa: ASYNC110  # the writer has no event for it
                await asyncio.sleep(0.001)
        assert writer.stats.held == 1
        await writer.close()
        assert s.settled and isinstance(s.outcome(0), StorageUnreachable)

    run_writer(scenario)


def test_a_cancelled_writer_fails_its_settlements() -> None:
    async def scenario(writer: GroupCommit, script: Script) -> None:
        inside = writer.join_now(append("inside"))
        await asyncio.sleep(0)  # the writer takes it into a batch
        queued = writer.join_now(append("queued"))
        assert isinstance(inside, Settlement) and isinstance(queued, Settlement)
        assert inside is not queued
        task = writer._task
        assert task is not None
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for s in (inside, queued):
            error = s.outcome(0)
            assert isinstance(error, Unavailable) and "stopped" in error.message

    run_writer(scenario)


def test_the_storages_appends_settle_together(durable_backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await add_devices(s, 2)
        writer = writer_of(s)
        before = writer.stats.batches
        stored: list[str] = []
        joined = [
            s.telemetry.append_settled(
                "p1", name, [Point("t", 1, 1.5)], lambda n=name: stored.append(n)
            )
            for name in ("d000", "d001", "ghost")
        ]
        bad = s.telemetry.append_settled("p1", "d000", [Point("t", 1, float("nan"))])
        assert isinstance(bad, asyncio.Future)
        with pytest.raises(ValueError):
            await bad
        settlement = await settled(joined[0])
        assert all(j is settlement for j in joined)
        assert [settlement.outcome(i) for i in range(3)] == [0, 0, 0]  # ghost: NotFound is 0
        assert settlement.missing == {2}
        assert stored == ["d000", "d001"]
        assert writer.stats.batches == before + 1
        assert await s.telemetry.latest("p1", "d001") == {"t": (1, 1.5)}

    durable_backend.run(scenario)


Joined = tuple[Settlement | Awaitable[object], int]


def joined(stored: Settlement | Awaitable[object]) -> Joined:
    """What an append returned, with its member number read at once."""
    return stored, stored.last if isinstance(stored, Settlement) else -1


async def outcome_of(append: Joined) -> object:
    """An append's outcome: its member's value, or the future's."""
    stored, member = append
    if isinstance(stored, Settlement):
        if not stored.settled:
            await settled(stored)
        assert stored.outcome(member) == 0
        return stored.value(member)
    return await stored


def test_many_devices_points_are_one_write_with_an_outcome_a_device(backend: Backend) -> None:
    """A gateway's message: every device's points one write (one member of the
    settlement, with a device's own points beside it), None once all are
    stored, else one outcome a device: 0 for a device that does not exist (or
    was deleted), a refused value's exception, None for the others, stored."""

    async def scenario(s: Storage) -> None:
        await add_devices(s, 3)
        assert await s.devices.delete("p1", "d002")
        point = [Point("t", 1, 1.5)]
        alone = joined(s.telemetry.append_settled("p1", "d000", [Point("u", 1, 7)]))
        both = joined(
            s.telemetry.append_devices_settled([("p1", "d000", point), ("p1", "d001", point)])
        )
        some = joined(
            s.telemetry.append_devices_settled(
                [("p1", "d002", point), ("p1", "ghost", point), ("p1", "d001", [Point("v", 2, 3)])]
            )
        )
        if isinstance(alone[0], Settlement):  # SQL: the three joined one settlement
            assert both[0] is alone[0] and some[0] is alone[0] and alone[0].size == 3
        assert await outcome_of(both) is None
        assert await outcome_of(some) == (0, 0, None)
        assert await outcome_of(alone) is None
        assert await s.telemetry.latest("p1", "d000") == {"t": (1, 1.5), "u": (1, 7)}
        assert await s.telemetry.latest("p1", "d001") == {"t": (1, 1.5), "v": (2, 3)}
        bad = [Point("t", 1, float("nan"))]
        refused = s.telemetry.append_devices_settled(
            [("p1", "d000", [Point("w", 3, 1)]), ("p1", "d001", bad), ("p1", "ghost", point)]
        )
        first, second, third = await outcome_of(joined(refused))  # type: ignore[misc]
        assert (first, third) == (None, 0) and isinstance(second, ValueError)
        assert (await s.telemetry.latest("p1", "d000"))["w"] == (3, 1)
        alone_refused = s.telemetry.append_devices_settled([("p1", "d001", bad)])
        (only,) = await outcome_of(joined(alone_refused))  # type: ignore[misc]
        assert isinstance(only, ValueError)  # nothing else to write: no write at all

    backend.run(scenario)
