"""When a connection ends: its session's will and expiry, on the event loop's clock.

Rules:
- What happens and when is decided by `protocol.lifetimes.depart` (pure);
  this module only arms the timers at the times it returns, cancels them
  when the session resumes, and publishes wills and ends sessions when due.
- A will goes through the same path as any message from its client
  (authorized, handed to the application, routed), without its Will Delay
  Interval, with its Message Expiry Interval counting from publication.
- Ending a session publishes its pending will, drops its subscriptions,
  in-flight messages and queue, and frees its identity (takeover.py).
- `Hooks.on_disconnect` hears of every connection that was CONNECTED.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from thingshub.mqtt.codec.packets import Will
from thingshub.mqtt.codec.properties import EMPTY
from thingshub.mqtt.hooks import (
    ClientInfo,
    CloseReason,
    Hooks,
    Message,
    OpenHooks,
    PublishOutcome,
)
from thingshub.mqtt.logs import logger
from thingshub.mqtt.protocol.lifetimes import depart
from thingshub.mqtt.server.connection import Connection
from thingshub.mqtt.server.delivery import BrokerStats, Delivery
from thingshub.mqtt.server.session import NONE_YET, Session
from thingshub.mqtt.server.takeover import Takeover

log = logger("thingshub.mqtt")

_TAKEN_OVER = CloseReason.TAKEN_OVER

Incoming = Callable[[ClientInfo, Message, Session | None], PublishOutcome]


class Departures:
    __slots__ = ("delivery", "hooks", "incoming", "loop", "sessions", "stats", "takeover")

    def __init__(
        self,
        sessions: dict[str, Session],
        hooks: Hooks,
        stats: BrokerStats,
        delivery: Delivery,
        takeover: Takeover,
        incoming: Incoming,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.sessions = sessions
        self.hooks = hooks
        self.stats = stats
        self.delivery = delivery
        self.takeover = takeover
        #: How a message from a client enters the server (the broker's `incoming`).
        self.incoming = incoming
        self.loop = loop

    def detach(self, conn: Connection, reason: CloseReason, *, send_will: bool) -> None:
        """A connection that was CONNECTED has ended: will, session expiry, hook."""
        session = conn.session
        client = conn.client
        assert session is not None and client is not None
        if session.connection is conn:
            session.connection = None
            will = conn.will.will if (send_will and conn.will is not None) else None
            if will is None and not session.expiry_interval and reason is not _TAKEN_OVER:
                self.end(session)  # depart's plan (end now), without its call: most sessions
            else:
                self._depart(session, will, client, reason)
        hooks = self.hooks
        if type(hooks) is OpenHooks:  # whose on_disconnect does nothing
            return
        try:
            hooks.on_disconnect(client, reason)
        except Exception:
            self.stats.hook_errors += 1
            log.exception("on_disconnect hook failed for %s", client.client_id)

    def _depart(
        self, session: Session, will: Will | None, client: ClientInfo, reason: CloseReason
    ) -> None:
        """Carry out `depart`'s plan for a session whose connection ended."""
        plan = depart(
            self.loop.time(),
            expiry=session.expiry_interval,
            will_delay=None if will is None else (will.properties.will_delay_interval or 0),
            taken_over=reason is _TAKEN_OVER,
        )
        if will is not None:
            if plan.will_now:
                self.publish_will(will, client)
            elif plan.will_at is not None:
                session.pending_will = (will, client)
                session.will_handle = self.loop.call_at(plan.will_at, self._will_due, session)
        if plan.end_now:
            self.end(session)
        elif plan.expires_at is not None:
            session.expiry_handle = self.loop.call_at(plan.expires_at, self._expire, session)

    def _will_due(self, session: Session) -> None:
        session.will_handle = None
        pending = session.pending_will
        session.pending_will = None
        if pending is not None:
            self.publish_will(*pending)

    def publish_will(self, will: Will, client: ClientInfo) -> None:
        message = Message(will.topic, will.payload, will.qos, will.retain, will.properties)
        props = will.properties
        if props is not EMPTY:
            if props.will_delay_interval is not None:
                # A will-only property; it must not travel on with the message.
                message.properties = dataclasses.replace(props, will_delay_interval=None)
            if props.message_expiry_interval is not None:
                message.expires_at = self.loop.time() + props.message_expiry_interval
        self.incoming(client, message, None)

    def _expire(self, session: Session) -> None:
        session.expiry_handle = None
        if session.connection is None and self.sessions.get(session.client_id) is session:
            self.end(session)

    def end(self, session: Session) -> None:
        """End `session` now (its pending will goes out)."""
        pending = session.pending_will
        session.pending_will = None
        if session.will_handle is not None or session.expiry_handle is not None:
            session.cancel_timers()  # most sessions have neither: no call
        if pending is not None:
            self.publish_will(*pending)
        if session.subscriptions is not NONE_YET:  # most sessions never subscribe
            self.delivery.forget(session)
        session.inflight = NONE_YET
        session.queue = None  # clear_queue written out
        session.queued_bytes = 0
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
        if session.identity is not None:  # else it holds nothing in the takeover
            self.takeover.release(session)
