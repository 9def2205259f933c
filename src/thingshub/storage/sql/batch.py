"""Group commit: many callers' writes, one transaction, one commit.

Rules:
- A caller submits a `Write` (data, not code: a `kind`, the `key` it
  touches, its `args`) and awaits its outcome. One writer task takes every
  write queued so far (at most `max_batch`), hands them to the backend's
  `run` which applies them all in ONE transaction and commits, and only then
  resolves each caller's future. So a write is durable when `submit`
  returns, and under load one fsync serves hundreds of writes.
- No timer and no busy waiting: the writer sleeps until a write arrives, and
  a lone write goes at once (latency at low load is one commit). Batches
  form by themselves from what queues up while the previous one commits.
- `run` returns one outcome per write, in order: a value, or a
  `ThingsHubError` *instance* (VersionConflict, NotFound...), which is raised
  to that caller only; its batch commits for everyone else. So a backend's
  writes report expected failures through row counts, never through SQL
  errors.
- Anything `run` raises (a genuine database error, a lost connection, a
  failed commit) fails the whole batch: the transaction is rolled back and
  every caller of the batch gets `Unavailable`, with the cause chained. The
  writer goes on with the next batch.
- A batch that fails because the database is away (`StorageUnreachable`:
  stopped, connection lost, disk full) is an outage, logged (a warning) once when
  it starts and once when it ends, and counted. The writes of `held` kinds (device reports,
  whose senders wait for an acknowledgement: backpressure, not loss) are
  kept and tried again, after 50 ms doubling to 1 s, until they commit;
  the others fail at once with that error, and so do new ones while held
  writes wait, so an API call is a quick 503, not a hang. Held
  writes are bounded by what devices may leave unacknowledged (the MQTT
  server's Receive Maximum and `max_waiting_acks`). `close()` during an
  outage makes one last try, then fails what is held.
- Writes with the same key are applied in the order they were submitted;
  `plan()` orders a batch into groups of one kind with distinct keys, which
  a backend may apply with one bulk statement each.
- `submit_now` is `submit` without a coroutine: it returns the write's
  future at once (already failed with `Unavailable` when the writer is not
  open), for callers on the ingest path that hand that future on rather
  than await it (one message: no task, no coroutine). With `missing=` a
  `NotFound` outcome resolves the future to that value instead of failing it.
  With `then=`, that callable runs in the writer as the write's future is
  resolved with a value (committed; not for `missing`), before any of its done
  callbacks: the caller's bookkeeping without a scheduled callback per write.
  What it raises is logged and changes nothing else.
- `join_now` is the ingest path's `submit_now` without a future: a write of
  a `held` kind with no key (an append) joins the open `Settlement` (at most
  `max_batch` members each), and that settlement is returned: one object and
  one decision a batch, not a future, a `_Pending` and a scheduled callback a
  write. The writer takes the oldest settlement whole with the other writes
  queued (at most `max_batch` of them) into one transaction, calls each
  committed member's `then`, settles it (a member whose outcome is NotFound
  gets 0, as `missing=0`, and is one of its `missing`; any other error that
  member's failure; a value other than None that member's `value`: a write of
  many devices' rows tells so which devices do not exist; a failed batch fails
  every member) and calls its waiters.
  Any other write, or one while the writer is not open, goes the
  `submit_now` way (missing=0).
- A caller cancelled before its write joins a batch drops that write; once
  the batch has begun the write is committed (or not) with its batch.
  Cancelling callers never breaks a batch.
- `close()` stops new writes (`Unavailable`), drains and commits every write
  already queued, then returns.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from thingshub.core.errors import NotFound, StorageUnreachable, ThingsHubError, Unavailable
from thingshub.core.model import slot_setters
from thingshub.core.settlement import Settlement

log = logging.getLogger("thingshub.storage")

# Writes a batch takes at most. Under load the writer commits one batch while
# the event loop answers the previous one and queues the next: with devices
# that wait for each acknowledgement, 500 keeps both busy where 1,000 made them
# take turns (bench/storage_ingest.py: about 15% more points/s on SQLite, the
# same on PostgreSQL), and a batch's commit costs little more per write.
MAX_BATCH = 500


@dataclass(frozen=True, slots=True, init=False)
class Write:
    """One write: `kind` names the backend's handler, `key` what it touches
    (None: nothing any other write reads, e.g. an append), `args` its values.

    One a message on the ingest path: its `__init__` sets the slots through
    their descriptors (the generated one calls `object.__setattr__` per
    field, most of the cost of making one)."""

    kind: str
    key: Hashable | None
    args: tuple[Any, ...]

    def __init__(self, kind: str, key: Hashable | None, args: tuple[Any, ...]) -> None:
        _SET_KIND(self, kind)
        _SET_KEY(self, key)
        _SET_ARGS(self, args)


_SET_KIND, _SET_KEY, _SET_ARGS = slot_setters(Write, "kind", "key", "args")


RunBatch = Callable[[list[Write]], Awaitable[Sequence[object]]]


@dataclass(slots=True)
class WriterStats:
    """Counters of a writer, for tests and metrics."""

    batches: int = 0  # transactions committed
    writes: int = 0  # writes in committed batches (an outcome error still counts)
    failed_batches: int = 0  # transactions that failed (rolled back)
    failed_writes: int = 0  # writes of failed batches
    largest_batch: int = 0
    dropped: int = 0  # writes whose caller was cancelled before their batch
    outages: int = 0  # times the database went away (StorageUnreachable)
    held: int = 0  # writes held now, waiting for the database to come back


def plan(writes: Sequence[Write]) -> list[tuple[str, list[int]]]:
    """The order in which to apply `writes`: groups of (kind, indexes), each of
    one kind and with no key twice; writes sharing a key keep their order."""
    rounds: list[dict[str, list[int]]] = []
    seen: dict[Hashable, int] = {}
    for index, write in enumerate(writes):
        if write.key is None:
            number = 0
        else:
            number = seen.get(write.key, -1) + 1
            seen[write.key] = number
        if number == len(rounds):
            rounds.append({})
        rounds[number].setdefault(write.kind, []).append(index)
    return [(kind, indexes) for groups in rounds for kind, indexes in groups.items()]


#: `missing` of a write whose NotFound is an error (the default).
_RAISE: Any = object()


@dataclass(slots=True)
class _Pending:
    write: Write
    future: asyncio.Future[Any]
    missing: Any = _RAISE
    then: Callable[[], None] | None = None


@dataclass(slots=True)
class _Group:
    """The writes of one settlement, in the order they joined (member numbers)."""

    settlement: Settlement
    writes: list[Write]
    thens: list[Callable[[], None] | None]


class GroupCommit:
    """The writer of one storage; `run` applies a batch in one transaction."""

    #: Seconds between tries of a held batch: the first, and the longest.
    RETRY_FIRST = 0.05
    RETRY_MAX = 1.0

    def __init__(
        self,
        run: RunBatch,
        backend: str,
        max_batch: int = MAX_BATCH,
        held: frozenset[str] = frozenset(),
    ) -> None:
        self.run = run
        self.backend = backend  # "SQLite", "PostgreSQL": for messages
        self.max_batch = max_batch
        self.held = held  # kinds of writes that wait out an outage
        #: The error of the outage going on (None: the database is there).
        self.outage: StorageUnreachable | None = None
        self._outage_since = 0.0
        self.stats = WriterStats()
        self._queue: deque[_Pending] = deque()
        self._groups: deque[_Group] = deque()  # the last one open while not full
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False

    @property
    def pending(self) -> int:
        """Writes waiting for a batch (not counting the batch being written)."""
        return len(self._queue) + sum(len(group.writes) for group in self._groups)

    def start(self) -> None:
        """Start the writer task on the running loop."""
        if self._task is not None and not self._task.done():
            return
        self._closing = False
        self._wakeup = asyncio.Event()
        self._loop = loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._serve(), name=f"{self.backend} group commit")

    async def submit(self, write: Write) -> object:
        """Queue `write` and return its outcome once its batch is committed."""
        return await self.submit_now(write)

    def submit_now(
        self, write: Write, missing: Any = _RAISE, then: Callable[[], None] | None = None
    ) -> asyncio.Future[Any]:
        """Queue `write`; its future resolves once its batch is committed (to
        `missing`, if given, where the outcome is NotFound); `then()` is called
        as it resolves to a value."""
        loop = self._loop
        if self._closing or self._task is None or self._task.done() or self._wakeup is None:
            future: asyncio.Future[Any] = (loop or asyncio.get_running_loop()).create_future()
            future.set_exception(Unavailable(f"the {self.backend} storage is not open"))
            return future
        assert loop is not None
        future = loop.create_future()
        if self.outage is not None and write.kind not in self.held:
            future.set_exception(StorageUnreachable(self.outage.message))
            return future
        self._queue.append(_Pending(write, future, missing, then))
        self._wakeup.set()
        return future

    def join_now(
        self, write: Write, then: Callable[[], None] | None = None
    ) -> Settlement | asyncio.Future[Any]:
        """Queue `write` as a member of the open settlement, and return that
        settlement (see the module's rules); `then()` is called once it is
        committed. A write that cannot join gets `submit_now(write, 0, then)`."""
        wakeup = self._wakeup
        task = self._task
        if (
            self._closing
            or wakeup is None
            or task is None
            or task.done()
            or write.key is not None
            or write.kind not in self.held
        ):
            return self.submit_now(write, 0, then)
        groups = self._groups
        if groups and len((group := groups[-1]).writes) < self.max_batch:
            # No wake-up: the writer, woken when this group was made, cannot sleep
            # while a group is queued (it clears the event only with none left).
            group.settlement.join()
            group.writes.append(write)
            group.thens.append(then)
            return group.settlement
        group = _Group(Settlement(), [write], [then])
        group.settlement.join()
        groups.append(group)
        wakeup.set()
        return group.settlement

    async def close(self) -> None:
        """Refuse new writes, commit those queued, stop the writer."""
        self._closing = True
        task = self._task
        if task is None:
            return
        if self._wakeup is not None:
            self._wakeup.set()
        if not task.done():
            await asyncio.shield(task)  # cancelling close() must not cancel the drain
        elif not task.cancelled() and task.exception() is not None:
            log.error("%s storage: the writer had died: %r", self.backend, task.exception())

    async def _serve(self) -> None:
        assert self._wakeup is not None
        try:
            while True:
                if not self._queue and not self._groups:
                    if self._closing:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                batch = self._take()
                group = self._groups.popleft() if self._groups else None
                if batch or group is not None:
                    await self._write(batch, group)
        finally:
            # Reached with writes left only when the task is cancelled (its
            # loop is going away): nobody will write them, so tell their callers.
            while self._queue:
                self._fail(self._queue.popleft(), None)
            while self._groups:
                self._fail_group(self._groups.popleft(), None)

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        queue = self._queue
        while queue and len(batch) < self.max_batch:
            item = queue.popleft()
            if item.future.done():  # its caller was cancelled: drop the write
                self.stats.dropped += 1
            else:
                batch.append(item)
        return batch

    async def _write(self, batch: list[_Pending], group: _Group | None) -> None:
        delay = self.RETRY_FIRST
        while True:
            try:
                outcomes = await self._try(batch, group)
            except StorageUnreachable as exc:
                batch, group = self._hold(batch, group, exc)
                if not batch and group is None:  # nothing held: the next write tries again
                    self.outage = None
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.RETRY_MAX)
                continue
            if outcomes is None:  # it failed, but the database answered: it is there
                if self.outage is not None:
                    self._back(0)
                return
            break
        size = len(outcomes)
        if self.outage is not None:
            self._back(size)
        self.stats.batches += 1
        self.stats.writes += size
        self.stats.largest_batch = max(self.stats.largest_batch, size)
        if group is not None:
            self._settle(group, outcomes[len(batch) :] if batch else outcomes)
        for item, outcome in zip(batch, outcomes, strict=False):
            if item.future.done():  # cancelled while its batch was written
                continue
            if isinstance(outcome, ThingsHubError):
                if item.missing is not _RAISE and isinstance(outcome, NotFound):
                    item.future.set_result(item.missing)
                else:
                    item.future.set_exception(outcome)
            else:
                item.future.set_result(outcome)
                then = item.then
                if then is not None:
                    try:
                        then()
                    except Exception:  # the caller's bookkeeping: it must not stop the writer
                        log.exception("%s storage: a write's follow-up failed", self.backend)

    def _settle(self, group: _Group, outcomes: Sequence[object]) -> None:
        """A committed group: its members' `then`s, its settlement, its waiters."""
        failures: dict[int, BaseException] | None = None
        missing: set[int] | None = None
        values: dict[int, object] | None = None
        thens = group.thens
        for member, outcome in enumerate(outcomes):
            if outcome is None:  # an append's: nothing to keep
                pass
            elif isinstance(outcome, ThingsHubError):
                if isinstance(outcome, NotFound):
                    if missing is None:
                        missing = set()
                    missing.add(member)
                else:
                    if failures is None:
                        failures = {}
                    failures[member] = outcome
                continue
            else:
                if values is None:
                    values = {}
                values[member] = outcome
            then = thens[member]
            if then is not None:
                try:
                    then()
                except Exception:  # the caller's bookkeeping: it must not stop the writer
                    log.exception("%s storage: a write's follow-up failed", self.backend)
        self._wake(group.settlement.settle(failures, missing=missing, values=values))

    def _wake(self, waiters: list[Callable[[], None]]) -> None:
        for waiter in waiters:
            try:
                waiter()
            except Exception:  # a waiter's failure is its own: the others still hear
                log.exception("%s storage: a settlement's waiter failed", self.backend)

    def _fail_group(self, group: _Group, cause: BaseException | None) -> None:
        if not group.settlement.settled:
            self._wake(group.settlement.settle(error=self._error(cause)))

    def _hold(
        self, batch: list[_Pending], group: _Group | None, exc: StorageUnreachable
    ) -> tuple[list[_Pending], _Group | None]:
        """An outage: fail the writes of `batch` that are not held (all of them
        when closing, after this last try, and the group too) and return those
        to try again (a group's writes are all held)."""
        size = len(batch) + (len(group.writes) if group is not None else 0)
        self.stats.failed_batches += 1
        self.stats.failed_writes += size
        if self.outage is None:
            self.stats.outages += 1
            self._outage_since = asyncio.get_running_loop().time()
            log.warning(
                "%s storage: %s; device reports wait for it (not acknowledged), other"
                " writes fail until it is back",
                self.backend,
                exc.message,
            )
        self.outage = exc
        kept = []
        for item in batch:
            if item.future.done():
                continue
            if self._closing or item.write.kind not in self.held:
                self._fail(item, exc)
            else:
                kept.append(item)
        if group is not None and self._closing:
            self._fail_group(group, exc)
            group = None
        self.stats.held = len(kept) + (len(group.writes) if group is not None else 0)
        return kept, group

    def _back(self, count: int) -> None:
        took = asyncio.get_running_loop().time() - self._outage_since
        self.outage = None
        self.stats.held = 0
        log.warning(
            "%s storage: the database is back after %.1f s; %d held writes committed",
            self.backend,
            took,
            count,
        )

    async def _try(self, batch: list[_Pending], group: _Group | None) -> Sequence[object] | None:
        """Run the batch (its writes, then the group's): their outcomes, or None
        once a failure was told to its callers; an outage is raised."""
        writes = [item.write for item in batch]
        if group is not None:
            writes = writes + group.writes if writes else group.writes
        try:
            outcomes = await self.run(writes)
            if len(outcomes) != len(writes):
                raise RuntimeError(f"{len(outcomes)} outcomes for {len(writes)} writes")
        except asyncio.CancelledError:
            for item in batch:
                self._fail(item, None)
            if group is not None:
                self._fail_group(group, None)
            raise
        except StorageUnreachable:
            raise
        except Exception as exc:
            self.stats.failed_batches += 1
            self.stats.failed_writes += len(writes)
            log.error(
                "%s storage: a batch of %d writes failed and was rolled back: %r",
                self.backend,
                len(writes),
                exc,
            )
            for item in batch:
                self._fail(item, exc)
            if group is not None:
                self._fail_group(group, exc)
            return None
        return outcomes

    def _fail(self, item: _Pending, cause: BaseException | None) -> None:
        if not item.future.done():
            item.future.set_exception(self._error(cause))

    def _error(self, cause: BaseException | None) -> BaseException:
        """What the callers of a write that failed with its batch get."""
        if isinstance(cause, StorageUnreachable):
            return cause
        if cause is None:
            error = Unavailable(
                f"the {self.backend} storage stopped while this write was pending;"
                " it may not have been stored"
            )
        else:
            error = Unavailable(
                f"the {self.backend} database failed while committing this write"
                f" ({type(cause).__name__}: {cause}); it may not have been stored"
            )
            error.__cause__ = cause
        return error
