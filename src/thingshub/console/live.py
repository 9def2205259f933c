"""Live updates for one browser page, from the event bus.

Rules:
- The bus calls handlers synchronously, on the hot path of whoever publishes
  (ingest, presence, commands), so a page's handler only filters and queues;
  the page applies what arrived in batches, at most every `interval` seconds,
  from a timer of its own client. A burst of telemetry costs the page one
  redraw, not one per message.
- The queue is bounded: a page that cannot keep up keeps the newest events.
- A feed subscribes when its page is built and unsubscribes when NiceGUI
  deletes the page's client (the tab closed, navigated away, or did not come
  back within the reconnect timeout), so open and closed pages never leave
  handlers on the bus.
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable

from nicegui import ui

from thingshub.core.errors import ThingsHubError
from thingshub.core.events import Event
from thingshub.core.ports import EventBus

log = logging.getLogger("thingshub.console")

#: Events a page may have waiting before the oldest are dropped.
QUEUE_LIMIT = 5000

Apply = Callable[[list[Event]], Awaitable[None] | None]


class LiveFeed:
    def __init__(
        self,
        bus: EventBus,
        kinds: Iterable[type],
        wanted: Callable[[Event], bool],
        apply: Apply,
        *,
        interval: float = 0.5,
    ) -> None:
        self._wanted = wanted
        self._apply = apply
        self._queue: deque[Event] = deque(maxlen=QUEUE_LIMIT)
        self._busy = False
        self._unsubscribe: Callable[[], None] | None = bus.subscribe(self._on_event, kinds)
        ui.timer(interval, self._flush)
        ui.context.client.on_delete(self.close)

    def _on_event(self, event: Event) -> None:
        if self._wanted(event):
            self._queue.append(event)

    async def _flush(self) -> None:
        if not self._queue or self._busy:
            return
        self._busy = True  # an apply that awaits must not overlap the next tick's
        try:
            events = list(self._queue)
            self._queue.clear()
            result = self._apply(events)
            if inspect.isawaitable(result):
                await result
        except ThingsHubError as exc:  # e.g. the device was deleted meanwhile
            log.info("a console page could not apply live updates: %s", exc.message)
        except Exception:
            log.exception("a console page failed to apply live updates")
        finally:
            self._busy = False

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._queue.clear()
