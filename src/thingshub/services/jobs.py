"""Cluster-wide jobs: periodic work that one node of a cluster does at a time
(the OTA rollout pace and timeouts, retention, the presence sweep).

Rules:
- A job runs its rounds only while this node holds the database lock
  `job:<name>` (ports.Locks). A node that does not hold it tries to take it
  every `lease / 3` seconds: a holder that dies loses its lock with its
  PostgreSQL connection (the server frees it), so another node takes the
  job over within the lease.
- The holder asks `still_held` before each round and stops working at once
  when the answer is no (its lock connection was lost, and with it the
  lock); it tries to take the job again only a lease later, so the other
  nodes, trying every lease/3, take it first (its own connection is the
  one that failed), then like any other node.
  `on_take` runs each time the job is taken, before its first round (a job
  whose state lives in memory reads it again there).
- `start` tries once at once, so a job free to take is held when `start`
  returns; the first round follows right away, then one every `every`
  seconds. A round that fails is logged; the next one comes at its time.
- `stop` cancels the job (a round under way included) and releases the lock,
  which another node takes at its next try.
- One process alone (ProcessLocks) always gets the lock: the same code runs
  its jobs as before, one round every `every` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from thingshub.core.ports import Locks
from thingshub.services.background import Retries, cancel

log = logging.getLogger("thingshub.jobs")

Round = Callable[[], Awaitable[None]]


class Job:
    def __init__(
        self,
        locks: Locks,
        name: str,
        round: Round,
        *,
        every: float,
        retry: float,
        on_take: Round | None = None,
        scope: str = "",
    ) -> None:
        self.locks = locks
        #: Prefixed to the lock's name: one cluster's jobs apart from another's.
        self.scope = scope
        self.name = name
        self.round = round
        self.every = every
        self.retry = retry
        self.on_take = on_take
        #: Whether this node holds the job now (as far as it last checked).
        self.holding = False
        #: Rounds run here, and how many times the job was taken here.
        self.rounds = 0
        self._retries = Retries(log, f"job {name}")
        self.taken = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def lock_name(self) -> str:
        return f"{self.scope}job:{self.name}"

    async def start(self) -> None:
        await self._take()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
        if self.holding:
            self.holding = False
            try:
                await self.locks.release(self.lock_name)
            except Exception:  # the connection is gone: so is the lock
                log.warning("releasing job %s failed", self.name, exc_info=True)

    async def _take(self) -> bool:
        try:
            self.holding = await self.locks.try_hold(self.lock_name)
        except Exception:
            log.warning("could not try to take job %s", self.name, exc_info=True)
            self.holding = False
        if self.holding:
            self.taken += 1
            log.info("job %s runs on this node now", self.name)
            if self.on_take is not None:
                await self._guarded(self.on_take)
        return self.holding

    async def _still_held(self) -> bool:
        try:
            held = await self.locks.still_held(self.lock_name)
        except Exception:
            held = False
        if not held:
            self.holding = False
            log.warning("job %s lost its lock; another node may run it now", self.name)
        return held

    async def _run(self) -> None:
        while True:
            if not self.holding and not await self._take():
                await asyncio.sleep(self.retry)
                continue
            if not await self._still_held():
                await asyncio.sleep(self.retry * 3)
                continue
            await self._guarded(self.round)
            self.rounds += 1
            await asyncio.sleep(self.every)

    async def _guarded(self, work: Round) -> None:
        try:
            await work()
        except Exception as exc:
            self._retries.failed(exc)
        else:
            self._retries.succeeded()


class Jobs:
    """Makes this node's jobs: one set of locks, one lease (`node_lease`)."""

    def __init__(self, locks: Locks, lease: float = 15.0, scope: str = "") -> None:
        self.locks = locks
        self.lease = lease
        self.scope = scope

    def job(self, name: str, round: Round, *, every: float, on_take: Round | None = None) -> Job:
        return Job(
            self.locks,
            name,
            round,
            every=every,
            retry=self.lease / 3,
            on_take=on_take,
            scope=self.scope,
        )
