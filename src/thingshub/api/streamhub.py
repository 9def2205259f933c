"""The live stream's hub: the platform's events, as messages, to each client's queue.

Rules: those of stream.py (the endpoint) on what a client gets, how its queue is
bounded and when it is dropped; this module owns the messages, the clients'
queues and the one subscription to the bus. Apart from the endpoint so that
what each request carries (served.py) can name the hub without an import cycle.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

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

log = logging.getLogger("thingshub.stream")

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


class Client:
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
        self.clients: set[Client] = set()
        #: Clients disconnected for not reading, by reason (for /metrics).
        self.too_slow: dict[str, int] = {"backlog": 0, "stalled": 0}
        self._unsubscribe: Callable[[], None] | None = None

    def join(self, client: Client) -> None:
        self.clients.add(client)
        if self._unsubscribe is None:
            self._unsubscribe = self.bus.subscribe(self._on_event, self.event_types)

    def leave(self, client: Client) -> None:
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
