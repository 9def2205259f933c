"""The platform's background loops (flushing presence and key uses, retention,
OTA rollouts, sampling counters), as their owners stop them.

Rules:
- A loop is stopped by cancelling its task and waiting for it, so nothing of
  it runs once `stop` has returned; its cancellation is not an error.
- A task that has already ended is only collected; no task is nothing to do.
- A loop that retries reports an outage of the database (`Retries`) as a
  warning when it starts and another when it ends, never an error per try:
  the platform rides such outages out by design (README "Failure behaviour").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from thingshub.core.errors import StorageUnreachable


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and wait until it has ended."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class Retries:
    """How a background loop that retries reports its failures.

    The database going away (`StorageUnreachable`) is an outage the platform
    rides out by design: a warning once when the loop first fails for it and
    once when the loop succeeds again, however many tries fail in between.
    Any other failure is an error, each time (it is a fault of ours)."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self.log = log
        self.what = what
        #: The database is away for this loop (its last try failed for that).
        self.away = False

    def failed(self, exc: BaseException) -> None:
        """A try failed with `exc` (call it in an `except` block)."""
        if not isinstance(exc, StorageUnreachable):
            self.log.exception("%s failed; will retry", self.what)
        elif not self.away:
            self.away = True
            self.log.warning("%s waits for the database: %s", self.what, exc.message)

    def succeeded(self) -> None:
        if self.away:
            self.away = False
            self.log.warning("%s goes on: the database is back", self.what)
