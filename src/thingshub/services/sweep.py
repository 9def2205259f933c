"""The presence sweep: the devices of a dead node shown offline everywhere.

Rules:
- A node that dies cannot say its devices went offline; its rows in
  `device_presence` still name it. One node of the cluster at a time (the
  holder of the database lock `job:presence-sweep`, which frees itself when
  its holder dies) looks every `every` seconds for nodes whose heartbeat is
  older than the lease (`NodeService.dead`), records their devices offline
  (sub-devices reached through their gateways included: their rows name the
  same node), announces each as `PresenceChanged` (so every node's live
  stream sees it), and removes the dead node's row.
- The sweep runs often (a sixth of the lease by default): a dead node's
  devices go offline at most that long after its heartbeat turned older
  than the lease.
- A node that comes back with the same id cleans its own leftovers at start
  (PresenceService.start), whether or not the sweep got there first.
- `ClusterJob` is the smallest runner of such a job: try the lock, run while
  holding it, give it up at stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from thingshub.core.ports import Locks
from thingshub.services.background import cancel
from thingshub.services.nodes import NodeService
from thingshub.services.presence import PresenceService

log = logging.getLogger("thingshub.sweep")

JOB = "job:presence-sweep"


class ClusterJob:
    """Run `work` every `every` seconds on one node of the cluster at a time."""

    def __init__(
        self, locks: Locks, name: str, every: float, work: Callable[[], Awaitable[object]]
    ) -> None:
        self.locks = locks
        self.name = name
        self.every = every
        self.work = work
        self.holding = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
        if self.holding:
            self.holding = False
            await self.locks.release(self.name)

    async def tick(self) -> bool:
        """Run the work once if this node holds (or can take) the job; whether it did."""
        if not (self.holding and await self.locks.still_held(self.name)):
            self.holding = await self.locks.try_hold(self.name)
        if self.holding:
            await self.work()
        return self.holding

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.tick()
            except Exception:
                log.warning("cluster job %s failed; will retry", self.name, exc_info=True)


class PresenceSweep:
    def __init__(
        self, nodes: NodeService, presence: PresenceService, every: float | None = None
    ) -> None:
        self.nodes = nodes
        self.presence = presence
        self.job = ClusterJob(nodes.locks, JOB, every or nodes.lease / 6, self.sweep)

    async def start(self) -> None:
        await self.job.start()

    async def stop(self) -> None:
        await self.job.stop()

    async def sweep(self) -> list[str]:
        """Release the devices of every dead node and forget the node; those swept."""
        dead = await self.nodes.dead()
        for node in dead:
            released = await self.presence.release(node)
            await self.nodes.repo.remove(node)
            log.warning(
                "node %s stopped beating: %d device(s) it held are offline", node, len(released)
            )
        return dead
