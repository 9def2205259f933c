"""The in-process event bus.

Rules:
- `publish` calls every handler of the event's type synchronously, in
  subscription order, on the caller's thread (the event loop); a handler must
  not block. Handlers say which event types they want, so an event nobody
  wants (most telemetry) costs one dict lookup.
- A failing handler is logged and does not stop the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from thingshub.core.events import Event

log = logging.getLogger("thingshub.bus")


Handler = Callable[[Event], None]


class LocalBus:
    def __init__(self) -> None:
        self._handlers: dict[type, tuple[Handler, ...]] = {}

    def publish(self, event: Event) -> None:
        for handler in self._handlers.get(type(event), ()):
            try:
                handler(event)
            except Exception:
                log.exception("event handler failed for %s", event.kind)

    def subscribe(self, handler: Handler, kinds: Iterable[type]) -> Callable[[], None]:
        kinds = tuple(kinds)
        for kind in kinds:
            self._handlers[kind] = (*self._handlers.get(kind, ()), handler)

        def unsubscribe() -> None:
            for kind in kinds:
                self._handlers[kind] = tuple(
                    h for h in self._handlers.get(kind, ()) if h is not handler
                )

        return unsubscribe

    def wants(self, kind: type) -> bool:
        """Whether anyone listens for events of this type (skip building them if not)."""
        return bool(self._handlers.get(kind))

    def handler_count(self) -> int:
        """Subscriptions in force, counted per event type (a gauge for leak checks)."""
        return sum(len(handlers) for handlers in self._handlers.values())
