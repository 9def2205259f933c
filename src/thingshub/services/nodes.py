"""This node's place in a cluster: its id held, its heartbeat, the others' lives.

Rules:
- A node id is held through a lock of the database (`node:<id>`, ports.Locks):
  on PostgreSQL the server frees it when the process holding it dies, so a
  second live node with the same id is refused at once, while a node that
  restarts after a crash gets its id back without waiting for any lease.
- The heartbeat writes the node's row every `lease / 5` seconds: when it
  started, now, its connections and messages in per second since the last
  beat. A node whose `last_seen` is older than `dead_after` (0.6 of the
  lease: three beats missed) is dead, so that its devices can be shown
  offline within the lease of its death (services/sweep.py); readers judge
  that, nobody deletes a dead node's row (its leftovers are cleaned by
  whoever holds the presence sweep, or by the node itself when it restarts).
- A node that stops cleanly removes its row and frees its id.
- One process alone (no cluster) runs the same: it holds its id, beats, and
  lists itself.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import Callable

from thingshub.core.model import NodeInfo
from thingshub.core.ports import Clock, Locks, NodeRepo
from thingshub.services.background import cancel

log = logging.getLogger("thingshub.nodes")

#: Heartbeats a lease, and the part of a lease without one that makes a node dead.
BEATS_PER_LEASE = 5
DEAD_AFTER = 0.6

#: This node's connections now and its messages received so far (counters).
Stats = Callable[[], tuple[int, int]]


class NodeIdInUse(Exception):
    """A live node holds the id this one was given."""


class NodeService:
    def __init__(
        self,
        repo: NodeRepo,
        locks: Locks,
        clock: Clock,
        node_id: str,
        *,
        lease: float = 15.0,
        stats: Stats = lambda: (0, 0),
        scope: str = "",
    ) -> None:
        self.repo = repo
        self.locks = locks
        #: Prefixed to the id's lock: one cluster's nodes apart from another's.
        self.scope = scope
        self.clock = clock
        self.node_id = node_id
        self.lease = lease
        self.stats = stats
        self.started_at = 0
        self._last = NodeInfo(node_id, 0, 0)
        self._counted = (0, 0)  # messages received at the last beat, and when (ms)
        self._task: asyncio.Task[None] | None = None

    @property
    def dead_after_ms(self) -> int:
        """How old a heartbeat is when its node counts as dead."""
        return int(self.lease * DEAD_AFTER * 1000)

    async def start(self) -> None:
        """Hold the id (or raise `NodeIdInUse`), beat once, and keep beating."""
        if not await self.locks.try_hold(self.lock_name):
            raise NodeIdInUse(f"a live node of this cluster already has the id {self.node_id!r}")
        self.started_at = self.clock.now_ms()
        self._counted = (self.stats()[1], self.started_at)
        await self.beat()
        self._task = asyncio.get_running_loop().create_task(self._beating())

    @property
    def lock_name(self) -> str:
        return f"{self.scope}node:{self.node_id}"

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
        try:
            await self.repo.remove(self.node_id)
        except Exception:
            log.warning("could not remove node %s from the cluster's table", self.node_id)
        await self.locks.release(self.lock_name)

    async def beat(self) -> None:
        now = self.clock.now_ms()
        connections, messages = self.stats()
        before, at = self._counted
        rate = (messages - before) * 1000 // (now - at) if now > at else 0
        self._counted = (messages, now)
        self._last = NodeInfo(self.node_id, self.started_at, now, connections, max(rate, 0))
        await self.repo.beat(self._last)

    async def _beating(self) -> None:
        while True:
            await asyncio.sleep(self.lease / BEATS_PER_LEASE)
            try:
                await self.beat()
            except Exception:
                log.warning("the heartbeat of node %s failed", self.node_id, exc_info=True)

    def is_live(self, node: NodeInfo, now: int | None = None) -> bool:
        now = self.clock.now_ms() if now is None else now
        return node.id == self.node_id or node.last_seen >= now - self.dead_after_ms

    async def nodes(self) -> builtins.list[NodeInfo]:
        """The live nodes, this one included (with its last beat's figures)."""
        now = self.clock.now_ms()
        found = {n.id: n for n in await self.repo.list() if self.is_live(n, now)}
        found[self.node_id] = self._last
        return [found[k] for k in sorted(found)]

    async def dead(self) -> builtins.list[str]:
        """Nodes with a row whose heartbeat is older than the lease."""
        now = self.clock.now_ms()
        return [n.id for n in await self.repo.list() if not self.is_live(n, now)]
