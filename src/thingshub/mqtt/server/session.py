"""A client's session: what survives between its connections.

Rules:
- A session holds subscriptions, the QoS 1/2 messages in flight to the client
  (in the order they were sent), the queue behind them, and the packet ids of
  QoS 2 messages received from the client and not yet released.
- In flight at most `max_inflight` messages; queued at most `max_queued`
  messages and `max_queued_bytes` bytes of payload. A message that does not fit
  is dropped and counted, never held without bound.
- Packet ids are 1..65535, skipping ids still in flight.
- Whether a session outlives its connection is decided by `expiry_interval`
  (seconds; 0 = ends with the connection; NEVER = never).
- A session's connection is a `Link` (ports.py): the session knows nothing of
  sockets.
- Its subscriptions and in-flight messages are the shared `NONE_YET` until
  the first one arrives (`subscribe`, delivery's `deliver` and `pump`): an empty dict is
  64 bytes, and 10,000 idle connections should cost little memory. Reading it
  is reading an empty mapping; writing to it is a bug, and raises.
- Delivery (delivery.py) puts messages in flight, queues them (within
  `max_queued` and `max_queued_bytes`) and takes them off the queue (`queue`
  None once empty, `queued_bytes` kept with it) and picks the next packet id,
  all in place: that runs for every QoS 1/2 message, and a call would cost
  more than what it does.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, NoReturn

from thingshub.mqtt.codec.packets import Will
from thingshub.mqtt.codec.properties import EMPTY, Properties
from thingshub.mqtt.hooks import ClientInfo

if TYPE_CHECKING:
    from thingshub.mqtt.server.ports import Link


class _NoneYet(dict[Any, Any]):
    """The empty mapping every session holds until it has an entry of its own."""

    __slots__ = ()

    def __setitem__(self, key: object, value: object) -> NoReturn:
        raise TypeError("a session's shared empty mapping is read-only")


NONE_YET: Final[dict[Any, Any]] = _NoneYet()


@dataclass(slots=True)
class OutMessage:
    """A QoS 1/2 message on its way to one client."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties = EMPTY
    expires_at: float | None = None
    sub_ids: tuple[int, ...] = ()
    packet_id: int = 0
    #: QoS 2: PUBREC received and PUBREL sent; only PUBCOMP is awaited.
    released: bool = False


@dataclass(slots=True)
class Subscription:
    """One subscription of a session, as the router indexes it."""

    session: Session
    topic_filter: str  # as the client sent it, `$share/...` included
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0
    identifier: int | None = None
    group: str | None = None


class Session:
    __slots__ = (
        "client_id",
        "connection",
        "expiry_handle",
        "expiry_interval",
        "identity",
        "inbound_qos2",
        "inflight",
        "last_packet_id",
        "max_inflight",
        "max_queued",
        "max_queued_bytes",
        "pending_will",
        "protocol_level",
        "queue",
        "queued_bytes",
        "subscriptions",
        "will_handle",
    )

    def __init__(
        self,
        client_id: str,
        protocol_level: int,
        max_inflight: int,
        max_queued: int,
        max_queued_bytes: int,
    ) -> None:
        self.client_id = client_id
        self.protocol_level = protocol_level
        self.connection: Link | None = None
        self.subscriptions: dict[str, Subscription] = NONE_YET
        self.inflight: dict[int, OutMessage] = NONE_YET
        # Made when first needed: an idle session should cost little memory.
        self.queue: deque[OutMessage] | None = None
        self.queued_bytes = 0
        self.inbound_qos2: set[int] | None = None
        self.expiry_interval = 0
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        self.max_queued_bytes = max_queued_bytes
        self.pending_will: tuple[Will, ClientInfo] | None = None
        self.will_handle: asyncio.TimerHandle | None = None
        self.expiry_handle: asyncio.TimerHandle | None = None
        #: The identity (`Accept.identity`) that holds this session, if any.
        self.identity: str | None = None
        #: The packet id last given to a message to the client (next_packet_id).
        self.last_packet_id = 0

    def subscribe(self, sub: Subscription) -> None:
        """Hold `sub` (replacing a subscription to the same filter)."""
        if self.subscriptions is NONE_YET:
            self.subscriptions = {}
        self.subscriptions[sub.topic_filter] = sub

    def send(self, packet_id: int, out: OutMessage) -> None:
        """`out` has gone to the client as `packet_id`: in flight until acknowledged
        (delivery's `deliver` and `pump` do the same in place)."""
        if self.inflight is NONE_YET:
            self.inflight = {}
        self.inflight[packet_id] = out

    def next_packet_id(self) -> int:
        inflight = self.inflight
        pid = self.last_packet_id
        # A countdown, not a range() object made per message: at most one pass
        # over the 65,535 ids, and almost always the first id tried is free.
        left = 65535
        while left:
            pid = pid % 65535 + 1
            if pid not in inflight:
                self.last_packet_id = pid
                return pid
            left -= 1
        raise RuntimeError("no free packet identifier")  # unreachable: inflight <= 65535

    def qos2_received(self, packet_id: int) -> bool:
        """Whether a QoS 2 message with this id was received and not yet released."""
        return self.inbound_qos2 is not None and packet_id in self.inbound_qos2

    def qos2_add(self, packet_id: int) -> None:
        if self.inbound_qos2 is None:
            self.inbound_qos2 = set()
        self.inbound_qos2.add(packet_id)

    def qos2_release(self, packet_id: int) -> bool:
        """Forget a received QoS 2 message; False if it was not there."""
        pending = self.inbound_qos2
        if pending is None or packet_id not in pending:
            return False
        pending.discard(packet_id)
        if not pending:
            self.inbound_qos2 = None
        return True

    def qos2_count(self) -> int:
        return len(self.inbound_qos2) if self.inbound_qos2 is not None else 0

    def clear_queue(self) -> None:
        self.queue = None
        self.queued_bytes = 0

    def cancel_timers(self) -> None:
        # Each written out: no tuple to build and walk on every session's end.
        if self.will_handle is not None:
            self.will_handle.cancel()
            self.will_handle = None
        if self.expiry_handle is not None:
            self.expiry_handle.cancel()
            self.expiry_handle = None
