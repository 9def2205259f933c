"""Routing and delivery: from one PUBLISH to the sessions that receive it.

Rules:
- A message goes once to each session, however many of its subscriptions
  match: at the highest QoS granted among them, with all their subscription
  identifiers ([MQTT-3.3.4-3..5]).
- Delivered QoS is the lower of the message's and the subscription's.
- No-local subscriptions skip the publisher's own messages; the retain flag
  is kept only for retain-as-published subscriptions (always cleared for
  3.1.1, [MQTT-3.3.1-9]).
- A client we cannot write to fast enough, or one with a window's worth of
  QoS 1/2 messages queued behind its in-flight window, holds up, for a
  moment, whoever publishes to it (its reading pauses) until it catches up;
  only past `max_outgoing_buffer` are QoS 0 messages to it dropped, and only
  past its queue bounds QoS 1/2 ones.
- QoS 0 to an offline session is dropped; QoS 1/2 to an offline session, or
  beyond the in-flight window, is queued (bounded, see session.py).
- Expired messages are dropped when they would be sent.
- Every drop is counted in `BrokerStats`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from thingshub.mqtt.hooks import Message
from thingshub.mqtt.server.retained import RetainedMessage, RetainedStore
from thingshub.mqtt.server.router import Router, Subscription
from thingshub.mqtt.server.session import NONE_YET, OutMessage, Session

if TYPE_CHECKING:
    import asyncio

    from thingshub.mqtt.server.config import BrokerConfig
    from thingshub.mqtt.server.ports import Link


@dataclass(slots=True)
class BrokerStats:
    connections: int = 0
    connections_total: int = 0
    connects_refused: int = 0
    connects_refused_per_address: int = 0  # also in connects_refused
    protocol_errors: int = 0
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    denied_publish: int = 0
    denied_subscribe: int = 0
    dropped_offline_qos0: int = 0
    dropped_slow_consumer: int = 0
    dropped_queue_full: int = 0
    dropped_too_large: int = 0
    dropped_expired: int = 0
    dropped_retained_full: int = 0
    hook_errors: int = 0


#: An object without its __init__ (`deliver` sets every slot itself).
_new = object.__new__


class Delivery:
    __slots__ = ("config", "current", "loop", "retained", "router", "stats")

    def __init__(
        self, config: BrokerConfig, stats: BrokerStats, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.config = config
        self.stats = stats
        self.loop = loop
        self.router = Router()
        self.retained = RetainedStore()
        #: The connection whose packets are being handled now, if any.
        self.current: Link | None = None

    def retain(self, message: Message) -> None:
        if not message.payload:
            self.retained.delete(message.topic)
            return
        if (
            len(self.retained) >= self.config.max_retained
            and self.retained.get(message.topic) is None
        ):
            self.stats.dropped_retained_full += 1
            return
        self.retained.set(
            RetainedMessage(
                message.topic, message.payload, message.qos, message.properties, message.expires_at
            )
        )

    def route(self, message: Message, sender: str | None) -> int:
        """Deliver to every matching session; the number of sessions reached."""
        router = self.router
        subs = router.cache.get(message.topic)  # what match gives, without its call
        if subs is None:
            subs = router.match(message.topic)
        if not subs:
            return 0
        if len(subs) == 1:
            sub = subs[0]
            if sub.no_local and sub.session.client_id == sender:
                return 0
            one: tuple[int, ...] = (sub.identifier,) if sub.identifier else ()
            qos = message.qos
            granted = sub.qos
            self.deliver(
                sub.session,
                message,
                qos if qos < granted else granted,  # min() costs 10 times as much
                message.retain and sub.retain_as_published,
                one,
            )
            return 1
        merged: dict[str, tuple[Session, int, bool, tuple[int, ...]]] = {}
        for sub in subs:
            session = sub.session
            if sub.no_local and session.client_id == sender:
                continue
            qos = min(message.qos, sub.qos)
            keep = message.retain and sub.retain_as_published
            ids: tuple[int, ...] = (sub.identifier,) if sub.identifier else ()
            prev = merged.get(session.client_id)
            if prev is not None:
                qos = max(qos, prev[1])
                keep = keep or prev[2]
                ids = prev[3] + ids
            merged[session.client_id] = (session, qos, keep, ids)
        for session, qos, keep, ids in merged.values():
            self.deliver(session, message, qos, keep, ids)
        return len(merged)

    def deliver(
        self,
        session: Session,
        message: Message | RetainedMessage,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
    ) -> None:
        conn = session.connection
        if not qos:
            if conn is None:
                self.stats.dropped_offline_qos0 += 1
                return
            if conn.write_paused:
                if conn.buffered_out() > self.config.max_outgoing_buffer:
                    self.stats.dropped_slow_consumer += 1
                    return
                if not conn.stuck:
                    self.backpressure(conn)
            conn.send_publish(message, 0, retain, sub_ids, None)
            return
        # Made without OutMessage's __init__ (a call through the type's slot,
        # dearer than the stores): every QoS 1/2 delivery makes one.
        out = _new(OutMessage)
        out.topic = message.topic
        out.payload = message.payload
        out.qos = qos
        out.retain = retain
        out.properties = message.properties
        out.expires_at = message.expires_at
        out.sub_ids = sub_ids
        out.released = False
        # The window and the queue read in place: every QoS 1/2 message's path.
        if conn is not None and not session.queue and len(session.inflight) < session.max_inflight:
            # Into the window (as pump does it): a window-1 publisher's every message
            # comes this way while the subscriber keeps up.
            if conn.write_paused and not conn.stuck:
                self.backpressure(conn)
            inflight = session.inflight
            pid = session.last_packet_id % 65535 + 1
            if pid in inflight:  # almost never: a message 65,535 ids old still in flight
                pid = session.next_packet_id()
            else:
                session.last_packet_id = pid
            out.packet_id = pid
            if conn.send_publish(out, qos, retain, sub_ids, pid):
                if inflight is NONE_YET:
                    inflight = session.inflight = {}
                inflight[pid] = out
            return
        out.packet_id = 0
        # session.enqueue written out.
        queue = session.queue
        if queue is None:
            queue = session.queue = deque()
        size = len(out.payload)
        if len(queue) >= session.max_queued or (
            session.queued_bytes + size > session.max_queued_bytes
        ):
            self.stats.dropped_queue_full += 1
            return
        queue.append(out)
        session.queued_bytes += size
        if conn is not None and not conn.stuck and len(queue) >= session.max_inflight:
            # A window's worth waits behind the window: the client acknowledges
            # slower than it is published to; slow the publisher down rather
            # than let the queue fill up and drop (backpressure, written out).
            publisher = self.current
            if publisher is not None and publisher is not conn:
                publisher.hold(conn)

    def backpressure(self, slow: Link) -> None:
        """`slow` cannot keep up: stop reading from whoever is publishing to it now."""
        publisher = self.current
        if publisher is not None and publisher is not slow:
            publisher.hold(slow)

    def pump(self, session: Session) -> None:
        """Move queued messages into the in-flight window while it has room; once
        the queue is empty, release the publishers it held up."""
        conn = session.connection
        if conn is None:
            return
        queue = session.queue
        inflight = session.inflight
        room = session.max_inflight
        while queue and len(inflight) < room:
            out = queue.popleft()
            if not queue:
                session.queue = queue = None
            session.queued_bytes -= len(out.payload)
            if out.expires_at is not None and out.expires_at <= self.loop.time():
                self.stats.dropped_expired += 1
                continue
            # Into the window, as deliver does it (written out: a subscriber's
            # every acknowledgement lets the next queued message go this way).
            if conn.write_paused and not conn.stuck:
                self.backpressure(conn)
            pid = session.last_packet_id % 65535 + 1
            if pid in inflight:  # almost never: a message 65,535 ids old still in flight
                pid = session.next_packet_id()
            else:
                session.last_packet_id = pid
            out.packet_id = pid
            if conn.send_publish(out, out.qos, out.retain, out.sub_ids, pid):
                # In flight until acknowledged (session.py: the shared empty mapping until then).
                if inflight is NONE_YET:
                    inflight = session.inflight = {}
                inflight[pid] = out
        if queue is None:
            conn.queue_drained()

    def resend(self, session: Session) -> None:
        """After a session resumes: resend what was in flight, in order ([MQTT-4.4.0-1])."""
        conn = session.connection
        assert conn is not None
        for pid, out in list(session.inflight.items()):
            if out.released:
                conn.send_pubrel(pid)
            elif not conn.send_publish(out, out.qos, out.retain, out.sub_ids, pid, dup=True):
                del session.inflight[pid]
        self.pump(session)

    def acked(self, session: Session, packet_id: int, qos: int) -> None:
        """PUBACK (qos 1) or PUBCOMP (qos 2) from the client."""
        out = session.inflight.get(packet_id)
        if out is None or out.qos != qos or (qos == 2 and not out.released):
            return  # unknown or out-of-order ack: nothing to do
        del session.inflight[packet_id]
        if session.queue:
            self.pump(session)

    def received(self, session: Session, packet_id: int, reason_code: int) -> bool:
        """PUBREC from the client; True if a PUBREL should be sent."""
        out = session.inflight.get(packet_id)
        if out is None or out.qos != 2:
            return False
        if reason_code >= 0x80:
            del session.inflight[packet_id]  # the client refused it: the flow ends here
            self.pump(session)
            return False
        out.released = True
        return True

    def send_retained(self, session: Session, sub: Subscription, topic_filter: str) -> None:
        for msg in self.retained.match(topic_filter, self.loop.time()):
            ids = (sub.identifier,) if sub.identifier else ()
            self.deliver(session, msg, min(msg.qos, sub.qos), True, ids)

    def forget(self, session: Session) -> None:
        """Remove a session's subscriptions from the index."""
        for sub in session.subscriptions.values():
            self.router.remove(plain_filter(sub), session.client_id, sub.group)
        session.subscriptions = NONE_YET


def plain_filter(sub: Subscription) -> str:
    """The filter the router indexes `sub` under: without `$share/{group}/`."""
    if sub.group is None:
        return sub.topic_filter
    return sub.topic_filter.split("/", 2)[2]
