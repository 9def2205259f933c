"""Deleting old telemetry and events, per product, in the background.

Rules:
- A product with `retention_days` keeps points and events newer than that
  many days; older ones are deleted every `interval` seconds.
- Deletion goes in chunks of `chunk` rows, each its own short write, with a
  pause between chunks, so ingest never waits long behind it.
- A failure is logged and tried again on the next round; it never stops the
  service.
- It is a cluster-wide job (jobs.py, `retention`): one node of a cluster
  deletes at a time, another takes over if it dies.
"""

from __future__ import annotations

import asyncio
import logging

from thingshub.core.ports import Clock, ProductRepo, TelemetryRepo
from thingshub.services.jobs import Job, Jobs

log = logging.getLogger("thingshub.retention")

DAY_MS = 86_400_000


class RetentionService:
    def __init__(
        self,
        products: ProductRepo,
        points: TelemetryRepo,
        clock: Clock,
        jobs: Jobs,
        *,
        interval: float = 600.0,
        chunk: int = 10_000,
        pause: float = 0.05,
    ) -> None:
        self.products = products
        self.points = points
        self.clock = clock
        self.interval = interval
        self.chunk = chunk
        self.pause = pause
        self.deleted = 0
        self.job: Job = jobs.job("retention", self._round, every=interval)

    async def run_once(self) -> int:
        """One round over every product; returns how many rows were deleted."""
        total = 0
        after: str | None = None
        while True:
            products = await self.products.list(1000, after)
            for product in products:
                if product.retention_days is None:
                    continue
                cutoff = self.clock.now_ms() - product.retention_days * DAY_MS
                while True:
                    n = await self.points.delete_before(product.id, cutoff, self.chunk)
                    total += n
                    if n < self.chunk:
                        break
                    await asyncio.sleep(self.pause)
            if len(products) < 1000:
                break
            after = products[-1].id
        self.deleted += total
        return total

    async def start(self) -> None:
        await self.job.start()

    async def _round(self) -> None:
        deleted = await self.run_once()
        if deleted:
            log.info("retention deleted %d old rows", deleted)

    async def stop(self) -> None:
        await self.job.stop()
