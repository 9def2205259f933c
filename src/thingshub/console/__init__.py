"""The web console: NiceGUI pages on the platform's HTTP app, at /console.

Rules:
- NiceGUI keeps process-wide state (its app, its pages, its clients), so the
  console is mounted at most once per process; `Settings.console` turns it
  off (the in-process test platforms run without it).
- NiceGUI starts and stops through the ASGI lifespan of the app it is mounted
  on, so app.py runs uvicorn with the lifespan on when the console is on.
- Every page but the login page requires a session (auth.py).
- Pages call the services directly: the console runs in the platform's
  process and event loop, so a page gets typed values and the services' own
  errors (whose sentences are the HTTP API's) without an HTTP hop and without
  the API key ever reaching the browser. OTA is the exception (ota.py): it
  uses the HTTP API's fixed contract (the README's HTTP API), called in-process.
- Live updates come from the event bus, per page, unsubscribed when the
  page's client goes away (live.py); fleet rates are sampled counters
  (meter.py), never database scans.
"""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import FastAPI

from thingshub.console.context import ConsoleContext
from thingshub.console.layout import MOUNT
from thingshub.services.background import cancel

__all__ = ["Console", "ConsoleContext", "mount_console"]

log = logging.getLogger("thingshub.console")

#: Seconds between two samples of the fleet counters.
SAMPLE_EVERY = 2.0

_mounted = False


class Console:
    """The mounted console and its one background task (sampling the counters)."""

    def __init__(self, ctx: ConsoleContext) -> None:
        self.ctx = ctx
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            try:
                self.ctx.meter.sample(time.time(), self.ctx.counters())
            except Exception:
                log.exception("sampling the fleet counters failed")
            await asyncio.sleep(SAMPLE_EVERY)

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None


def mount_console(app: FastAPI, ctx: ConsoleContext) -> Console:
    """Register the pages and mount NiceGUI on `app` at /console (once per process)."""
    global _mounted
    if _mounted:
        raise RuntimeError(
            "the console is already mounted in this process (NiceGUI keeps process-wide state)"
        )
    from nicegui import run, storage, ui

    from thingshub.console import pages

    # cpu_bound is not used; should anything use it, a forked child of this
    # threaded process would be unsafe.
    run.process_pool_start_method = "spawn"
    ctx.storage_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    storage.Storage.path = ctx.storage_dir
    ui.button.default_props("no-caps")
    ui.toggle.default_props("no-caps")
    pages.register(ctx)
    ui.run_with(
        app,
        mount_path=MOUNT,
        title="ThingsHub",
        favicon="🛰️",
        storage_secret=ctx.secret,
        show_welcome_message=False,
        reconnect_timeout=3.0,
    )
    _mounted = True
    console = Console(ctx)
    console.start()
    return console
