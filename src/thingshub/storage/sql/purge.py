"""Deleting the telemetry and events of deleted devices, in the background.

Rules:
- Deleting a device removes the device, its latest values and attributes in
  one transaction, and records its id in `device_purges`; its points and
  events (possibly millions of rows) are deleted afterwards by `step()`, a
  short transaction of at most common.DELETE_CHUNK rows each, so the
  writer is never held for long. They are unreachable from the moment the
  device is gone: every read finds rows through the device's current id,
  and a device id is never given twice (`device_purges` keeps a row per
  deleted device, with `purged_at` set once its rows are gone).
- `kick()` starts the purge task (after a delete, and at `open()`, which
  resumes purges a stop interrupted); `drain()` purges everything pending
  before it returns; `close()` cancels the task between chunks (what is
  left is resumed at the next open).
- Steps of one storage run one at a time (a lock); steps of several
  processes may run together, so a step marks a purge done only when it
  finds no row of the device left, never from its own row counts.
- A failure is logged as a warning and retried on the next kick or open:
  it never loses data that should stay, only delays freeing the space.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("thingshub.storage")

Step = Callable[[], Awaitable[bool]]  # one chunk; True while more is pending


class Purger:
    def __init__(self, step: Step, backend: str) -> None:
        self._step = step
        self.backend = backend
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._closed = True
        self._lock = asyncio.Lock()

    def start(self) -> None:
        self._closed = False
        self.kick()

    def kick(self) -> None:
        """Purge what is pending, on the running loop (again, if purging now)."""
        if self._closed:
            return
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"{self.backend} purge of deleted devices"
        )

    async def drain(self) -> None:
        """Return once nothing is pending."""
        while await self.step():
            pass

    async def step(self) -> bool:
        async with self._lock:
            return await self._step()

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            self._again = False
            try:
                while True:
                    if not await self.step():
                        break
                    await asyncio.sleep(0)  # let the writer and the readers in
            except Exception as exc:
                log.warning(
                    "%s storage: deleting the data of deleted devices failed (%r);"
                    " it is tried again after the next delete or start",
                    self.backend,
                    exc,
                )
                return
            if not self._again:
                return
