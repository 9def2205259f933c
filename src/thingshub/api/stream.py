"""The live stream: `GET /api/v1/stream` (WebSocket), what happens as it happens.

Rules (interfaces.md):
- The API key comes as `Authorization: Bearer <key>` or `?key=`; a missing or
  wrong key is refused at the handshake with HTTP 401 (a JSON body), never
  after accepting.
- Filters: `product`, `device` (a device name), `kinds` (comma list of
  telemetry, attributes, event, presence, image, command, ota); unknown
  kinds are a 400 at the handshake.
- Each message is `{"kind", "product_id", "device", "ts", "data"}`; telemetry
  is one message per reported time, events one message per event.
- A client that reads too slowly loses messages, never the server's memory:
  each client has a bounded queue; when it overflows, the oldest messages
  are dropped and the client gets `{"kind": "dropped", "count": N}` before
  the next message it receives.
- The hub listens to the bus only while at least one client is connected, so
  with nobody watching the platform builds no stream events at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect

from thingshub.api.security import key_matches, presented_key
from thingshub.core.events import (
    AttributesReported,
    CommandFinished,
    Event,
    EventsReceived,
    ImageChanged,
    OtaProgressed,
    PresenceChanged,
    TelemetryReceived,
)
from thingshub.core.ports import EventBus

log = logging.getLogger("thingshub.stream")

router = APIRouter(tags=["stream"])

#: Messages a client may have waiting before the oldest are dropped.
QUEUE_LIMIT = 1000

Message = dict[str, Any]


def _messages(event: Event) -> Iterable[Message]:
    """The stream messages of one platform event."""
    base = {"product_id": event.product_id, "device": event.name}
    if isinstance(event, TelemetryReceived):
        by_ts: dict[int, dict[str, object]] = defaultdict(dict)
        for p in event.points:
            by_ts[p.ts][p.key] = p.value
        for ts, values in sorted(by_ts.items()):
            yield {"kind": "telemetry", **base, "ts": ts, "data": {"ts": ts, "values": values}}
    elif isinstance(event, EventsReceived):
        for e in event.events:
            yield {
                "kind": "event",
                **base,
                "ts": e.ts,
                "data": {"method": e.method, "params": e.params},
            }
    elif isinstance(event, AttributesReported):
        yield {"kind": "attributes", **base, "ts": event.ts, "data": event.values}
    elif isinstance(event, PresenceChanged):
        state = "online" if event.online else "offline"
        yield {"kind": "presence", **base, "ts": event.ts, "data": {"connectionState": state}}
    elif isinstance(event, ImageChanged):
        yield {
            "kind": "image",
            **base,
            "ts": event.ts,
            "data": {"version": event.version, "state": event.state},
        }
    elif isinstance(event, CommandFinished):
        yield {
            "kind": "command",
            **base,
            "ts": event.ts,
            "data": {"cmd_id": event.cmd_id, "status": event.status, "family": event.family},
        }
    elif isinstance(event, OtaProgressed):
        yield {
            "kind": "ota",
            **base,
            "ts": event.ts,
            "data": {"task_id": event.task_id, "state": event.state, "step": event.step},
        }


class _Client:
    def __init__(self, product: str | None, device: str | None, kinds: set[str]) -> None:
        self.product = product
        self.device = device
        self.kinds = kinds
        self.queue: deque[Message] = deque()
        self.dropped = 0
        self.wake = asyncio.Event()

    def wants(self, message: Message) -> bool:
        return (
            message["kind"] in self.kinds
            and (self.product is None or message["product_id"] == self.product)
            and (self.device is None or message["device"] == self.device)
        )

    def put(self, message: Message) -> None:
        if len(self.queue) >= QUEUE_LIMIT:
            self.queue.popleft()
            self.dropped += 1
        self.queue.append(message)
        self.wake.set()


class StreamHub:
    """Fans platform events out to WebSocket clients."""

    def __init__(self, bus: EventBus, event_types: Iterable[type]) -> None:
        self.bus = bus
        self.event_types = tuple(event_types)
        self.clients: set[_Client] = set()
        self._unsubscribe: Callable[[], None] | None = None

    def join(self, client: _Client) -> None:
        self.clients.add(client)
        if self._unsubscribe is None:
            self._unsubscribe = self.bus.subscribe(self._on_event, self.event_types)

    def leave(self, client: _Client) -> None:
        self.clients.discard(client)
        if not self.clients and self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _on_event(self, event: Event) -> None:
        for message in _messages(event):
            for client in self.clients:
                if client.wants(message):
                    client.put(message)


#: The kinds a client may ask for.
KINDS = {"telemetry", "attributes", "event", "presence", "image", "command", "ota"}
#: The platform events that feed them.
EVENT_TYPES: list[type] = [
    TelemetryReceived,
    EventsReceived,
    AttributesReported,
    PresenceChanged,
    ImageChanged,
    CommandFinished,
    OtaProgressed,
]


@router.websocket("/api/v1/stream")
async def stream(
    websocket: WebSocket,
    product: str | None = None,
    device: str | None = None,
    kinds: str | None = None,
    key: str | None = None,
) -> None:
    """Live events as JSON messages (see the module's rules)."""
    app = websocket.app
    presented = presented_key(websocket.headers.get("authorization"), key)
    if not key_matches(app.state.api_key, presented):
        await websocket.send_denial_response(
            JSONResponse(
                {"error": "a valid API key is required (Authorization: Bearer <key> or ?key=)"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        )
        return
    wanted = set(KINDS) if not kinds else {k.strip() for k in kinds.split(",") if k.strip()}
    unknown = wanted - KINDS
    if unknown or not wanted:
        await websocket.send_denial_response(
            JSONResponse(
                {
                    "error": f"unknown kinds: {', '.join(sorted(unknown)) or '(none given)'}; "
                    f"known: {', '.join(sorted(KINDS))}"
                },
                status_code=400,
            )
        )
        return
    hub: StreamHub = app.state.stream
    client = _Client(product, device, wanted)
    await websocket.accept()
    hub.join(client)
    reader = asyncio.get_running_loop().create_task(_drain(websocket))
    try:
        while not reader.done():
            waiter = asyncio.get_running_loop().create_task(client.wake.wait())
            done, _ = await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if waiter not in done:
                waiter.cancel()
                break
            client.wake.clear()
            while client.queue:
                if client.dropped:
                    await websocket.send_json({"kind": "dropped", "count": client.dropped})
                    client.dropped = 0
                await websocket.send_json(client.queue.popleft())
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the client went away
    finally:
        hub.leave(client)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader


async def _drain(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, to notice when it goes away."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            await websocket.receive_text()
