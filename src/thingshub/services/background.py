"""The platform's background loops (flushing presence and key uses, retention,
OTA rollouts, sampling counters), as their owners stop them.

Rules:
- A loop is stopped by cancelling its task and waiting for it, so nothing of
  it runs once `stop` has returned; its cancellation is not an error.
- A task that has already ended is only collected; no task is nothing to do.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and wait until it has ended."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
