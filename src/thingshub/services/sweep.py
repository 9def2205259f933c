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
- The sweep runs often (a tenth of the lease by default), and a node counts
  as dead once its heartbeat is `NodeService.dead_after` old (0.6 of the
  lease, three missed beats): a dead node's devices go offline within 0.7
  of the lease after its death, and within the lease even when the node
  that died held the sweep (the job is taken over within a third of it).
- A node that comes back with the same id cleans its own leftovers at start
  (PresenceService.start), whether or not the sweep got there first.
- It runs as a cluster-wide job (services/jobs.py), `presence-sweep`.
"""

from __future__ import annotations

import logging

from thingshub.services.jobs import Jobs
from thingshub.services.nodes import NodeService
from thingshub.services.presence import PresenceService

log = logging.getLogger("thingshub.sweep")

JOB = "presence-sweep"


class PresenceSweep:
    def __init__(
        self, nodes: NodeService, presence: PresenceService, jobs: Jobs, every: float | None = None
    ) -> None:
        self.nodes = nodes
        self.presence = presence
        self.job = jobs.job(JOB, self._round, every=every or nodes.lease / 10)

    async def start(self) -> None:
        await self.job.start()

    async def stop(self) -> None:
        await self.job.stop()

    async def _round(self) -> None:
        await self.sweep()

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
