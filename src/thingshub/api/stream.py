"""The live stream: `GET /api/v1/stream` (WebSocket), what happens as it happens.

Rules (the README's HTTP API):
- The API key comes as `Authorization: Bearer <key>` or `?key=`; a missing,
  wrong or revoked key is refused at the handshake with HTTP 401 (a JSON
  body), never after accepting. Every role may watch; a key limited to
  products gets only their messages (asking for another product is a
  stream of nothing, as for a product that does not exist). Revoking a key
  closes its streams at once (close code 1008).
- Filters: `product`, `device` (a device name), `kinds` (comma list of
  telemetry, attributes, event, presence, image, command, ota, desired); unknown
  kinds are a 400 at the handshake.
- Each message is `{"kind", "product_id", "device", "ts", "data"}`; telemetry
  is one message per reported time, events one message per event.
- A client that reads too slowly loses messages, never the server's memory:
  each client has a bounded queue; when it overflows, the oldest messages
  are dropped and the client gets `{"kind": "dropped", "count": N}` before
  the next message it receives.
- A client that stops reading is disconnected (close code 1008), so that it
  holds neither memory nor a file descriptor (docs/operations.md, "Limits
  against hostile input"): when its unsent backlog passes `max_backlog`
  bytes (1 MiB; messages are counted by their encoded size, so 64 KB
  telemetry counts as such), or when a message has waited `stall_timeout`
  seconds (30) for the connection to take it. The close never waits on the
  peer (websocket.py aborts a connection that does not read).
- Each message is encoded once, whatever the number of clients.
- The hub listens to the bus only while at least one client is connected, so
  with nobody watching the platform builds no stream events at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.websockets import WebSocketDisconnect

from thingshub.api.security import presented_key
from thingshub.core.events import (
    AttributesReported,
    CommandFinished,
    DesiredChanged,
    Event,
    EventsReceived,
    ImageChanged,
    OtaProgressed,
    PresenceChanged,
    TelemetryReceived,
    TopologyChanged,
)
from thingshub.core.ports import EventBus
from thingshub.services.keys import KeyService

log = logging.getLogger("thingshub.stream")

router = APIRouter(tags=["stream"])

#: Messages a client may have waiting before the oldest are dropped.
QUEUE_LIMIT = 1000
#: Close code for a client dropped for not reading (RFC 6455: policy violation).
TOO_SLOW = 1008
#: Close code for a client whose key was revoked (policy violation too).
REVOKED = 1008

Message = dict[str, Any]


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """When a client that does not read is disconnected (see the module's rules)."""

    max_backlog: int = 1 << 20
    stall_timeout: float = 30.0


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
            data: dict[str, object] = {"method": e.method, "params": e.params}
            if e.type is not None:
                data["type"] = e.type
            yield {"kind": "event", **base, "ts": e.ts, "data": data}
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
    elif isinstance(event, DesiredChanged):
        yield {"kind": "desired", **base, "ts": event.ts, "data": event.values}
    elif isinstance(event, TopologyChanged):
        gateway = None
        if event.gateway is not None:
            gateway = {"product_id": event.gateway[0], "name": event.gateway[1]}
        yield {"kind": "topology", **base, "ts": event.ts, "data": {"gateway": gateway}}
    elif isinstance(event, OtaProgressed):
        yield {
            "kind": "ota",
            **base,
            "ts": event.ts,
            "data": {"task_id": event.task_id, "state": event.state, "step": event.step},
        }


class _Client:
    def __init__(
        self,
        product: str | None,
        device: str | None,
        kinds: set[str],
        max_backlog: int,
        products: frozenset[str] | None = None,
        key_id: str | None = None,
    ) -> None:
        self.product = product
        #: The stored key it came with (None: the serve key); set `revoked` when revoked.
        self.key_id = key_id
        self.revoked = False
        self.device = device
        #: The products its key sees (None: every one).
        self.products = products
        self.kinds = kinds
        self.max_backlog = max_backlog
        self.queue: deque[str] = deque()
        self.backlog = 0  # bytes in `queue`
        self.dropped = 0
        #: Set once the backlog passed its limit: the client is to be disconnected.
        self.overflowed = False
        self.wake = asyncio.Event()
        #: The deadline of the send in progress, if one is waiting.
        self.sending: asyncio.Timeout | None = None

    def wants(self, message: Message) -> bool:
        return (
            message["kind"] in self.kinds
            and (self.product is None or message["product_id"] == self.product)
            and (self.products is None or message["product_id"] in self.products)
            and (self.device is None or message["device"] == self.device)
        )

    def put(self, text: str) -> None:
        if self.overflowed:
            return
        if len(self.queue) >= QUEUE_LIMIT:
            self.backlog -= len(self.queue.popleft())
            self.dropped += 1
        self.queue.append(text)
        self.backlog += len(text)
        if self.backlog > self.max_backlog:
            self.overflowed = True
            self.queue.clear()
            self.backlog = 0
            if self.sending is not None:  # end the send it waits on now
                self.sending.reschedule(asyncio.get_running_loop().time())
        self.wake.set()

    def take(self) -> str:
        text = self.queue.popleft()
        self.backlog -= len(text)
        return text


class StreamHub:
    """Fans platform events out to WebSocket clients."""

    def __init__(
        self, bus: EventBus, event_types: Iterable[type], limits: StreamLimits | None = None
    ) -> None:
        self.bus = bus
        self.event_types = tuple(event_types)
        self.limits = limits or StreamLimits()
        self.clients: set[_Client] = set()
        #: Clients disconnected for not reading, by reason (for /metrics).
        self.too_slow: dict[str, int] = {"backlog": 0, "stalled": 0}
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

    def revoke(self, key_id: str) -> None:
        """Close the streams of a revoked key."""
        for client in self.clients:
            if client.key_id == key_id:
                client.revoked = True
                client.wake.set()

    def metrics(self) -> Iterable[Metric]:
        clients = GaugeMetricFamily("thingshub_stream_clients", "Live-stream clients connected.")
        clients.add_metric([], len(self.clients))
        dropped = CounterMetricFamily(
            "thingshub_stream_clients_dropped",
            "Live-stream clients disconnected for not reading, by reason.",
            labels=["reason"],
        )
        for reason, n in self.too_slow.items():
            dropped.add_metric([reason], n)
        return [clients, dropped]

    def _on_event(self, event: Event) -> None:
        for message in _messages(event):
            text: str | None = None
            for client in self.clients:
                if client.wants(message):
                    if text is None:
                        text = orjson.dumps(message).decode()
                    client.put(text)


#: The kinds a client may ask for.
KINDS = {
    "telemetry",
    "attributes",
    "event",
    "presence",
    "image",
    "command",
    "ota",
    "desired",
    "topology",
}
#: The platform events that feed them.
EVENT_TYPES: list[type] = [
    TelemetryReceived,
    EventsReceived,
    AttributesReported,
    PresenceChanged,
    ImageChanged,
    CommandFinished,
    OtaProgressed,
    DesiredChanged,
    TopologyChanged,
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
    keys: KeyService = app.state.keys
    caller = keys.authenticate(presented_key(websocket.headers.get("authorization"), key))
    if caller is None:
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
    client = _Client(
        product, device, wanted, hub.limits.max_backlog, caller.products, caller.key_id
    )
    await websocket.accept()
    hub.join(client)
    reader = asyncio.get_running_loop().create_task(_drain(websocket))
    try:
        reason = await _pump(websocket, client, reader, hub.limits.stall_timeout)
        if client.revoked:
            await websocket.close(REVOKED, "the API key was revoked")
        elif reason is not None:
            hub.too_slow[reason] += 1
            log.info("stream client %s dropped: it does not read (%s)", websocket.client, reason)
            await websocket.close(TOO_SLOW, "the client does not read its messages")
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the client went away
    finally:
        hub.leave(client)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader


async def _pump(
    websocket: WebSocket, client: _Client, reader: asyncio.Task[None], stall_timeout: float
) -> str | None:
    """Send the client's messages until it goes away (None) or must be dropped
    for not reading ("backlog" or "stalled")."""
    loop = asyncio.get_running_loop()
    while not reader.done():
        waiter = loop.create_task(client.wake.wait())
        done, _ = await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            return None
        client.wake.clear()
        if client.revoked:
            return None
        while client.queue or client.overflowed:
            if client.overflowed:
                return "backlog"
            if client.dropped:
                text = orjson.dumps({"kind": "dropped", "count": client.dropped}).decode()
                client.dropped = 0
            else:
                text = client.take()
            try:
                # While this waits, `put` ends it early once the backlog overflows.
                async with asyncio.timeout(stall_timeout) as client.sending:
                    await websocket.send_text(text)
            except TimeoutError:
                return "backlog" if client.overflowed else "stalled"
            finally:
                client.sending = None
    return None


async def _drain(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, to notice when it goes away."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            await websocket.receive_text()
