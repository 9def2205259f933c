"""Backpressure between clients: a publisher waits for a subscriber that cannot keep up.

Rules:
- A client we cannot write to fast enough (its socket buffer above the
  high-water mark, or a window's worth of QoS 1/2 messages queued in its
  session) holds up whoever publishes to it: reading from the publisher stops
  until the slow client has drained, instead of buffering without bound.
- A hold lasts at most `max_hold` seconds. A slow client that has not drained
  `max_hold` seconds after it first held someone up is `stuck`: everyone it
  holds goes on, and it holds nobody up again until it drains, so one dead
  subscriber cannot stop a publisher for good. That is one timer per slow
  client that holds someone up, not one per held publisher (a timer is made
  and closed for each: under a window-1 fan-in, holds come and go every few
  messages).
- A publisher's silence while it is held is ours: its keepalive restarts
  when it is released.
- A hold stops reading from the publisher: what it has sent and we have read
  waits unparsed, and the socket's reading pauses when more comes; a release
  resumes it, and handles what waited.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from thingshub.mqtt.protocol.machine import CONNECTED

if TYPE_CHECKING:
    from thingshub.mqtt.codec.parser import Reader
    from thingshub.mqtt.protocol.machine import Machine
    from thingshub.mqtt.server.inbound import InboundHost
    from thingshub.mqtt.server.ports import Link


class Blocked(list["Backpressure"]):
    """The publishers a slow client holds up, and the timer that gives up on it."""

    __slots__ = ("timer",)

    timer: asyncio.TimerHandle


class Backpressure:
    """Who holds up whom (a base of `Connection`, which has the attributes and
    the reading declared here)."""

    __slots__ = ("_blocked", "_held", "stuck", "write_paused")

    broker: InboundHost
    machine: Machine
    reader: Reader
    transport: asyncio.Transport | None
    _paused: bool  # reading paused for the connection's own reasons (connection.py)

    if TYPE_CHECKING:

        def _process(self) -> None: ...

    def __init__(self) -> None:
        #: The client holding us up, if one is.
        self._held: Backpressure | None = None
        #: Publishers held up because of us.
        self._blocked: Blocked | None = None
        self.write_paused = False  # our socket buffer is above the high-water mark
        self.stuck = False  # we held a publisher up for `max_hold` and did not drain

    # asyncio's flow control of our socket
    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.stuck = False  # we drained: hold publishers up again next time we fall behind
        if self._blocked is not None:
            self._release_blocked()

    def queue_drained(self) -> None:
        """The session's queue emptied: the publishers it held may go on, unless
        the socket itself is still full."""
        if not self.write_paused:
            self.stuck = False
            if self._blocked is not None:
                self._release_blocked()

    def _release_blocked(self) -> None:
        blocked = self._blocked
        if blocked is None:
            return
        self._blocked = None
        blocked.timer.cancel()
        loop = self.broker.loop
        now = loop.time()
        for publisher in blocked:  # each one's release, written out
            if publisher._held is None:
                continue
            publisher._held = None
            transport = publisher.transport
            machine = publisher.machine
            if not publisher._paused and transport is not None and machine.state is CONNECTED:
                machine.last_rx = now  # its silence while held was ours
                transport.resume_reading()  # nothing to do unless bytes came while held
                if publisher.reader.buf:
                    loop.call_soon(publisher._process)

    def hold(self, slow: Link) -> None:
        """Stop reading from this (publishing) client until `slow`, a client we
        deliver to, has drained its socket buffer or its queue of QoS 1/2
        messages. A `slow` that has not drained `max_hold` seconds after it
        first held someone up is `stuck`: it holds nobody up again until it drains.

        The socket's reading pauses only when bytes come while we are held
        (connection.py's `data_received`): under a window-1 fan-in most holds end
        before the publisher sends again, without a pause and a resume."""
        if self._held is not None or self.transport is None or self.machine.state is not CONNECTED:
            return  # held already, or not connected: nothing to hold
        assert isinstance(slow, Backpressure)
        blocked = slow._blocked
        if blocked is None:
            blocked = slow._blocked = Blocked()
            broker = slow.broker
            blocked.timer = broker.loop.call_later(broker.config.max_hold, slow.hold_expired)
        blocked.append(self)
        self._held = slow

    def hold_expired(self) -> None:
        """`max_hold` has passed since we first held someone up, and we have not
        drained (draining cancels the timer): let them all go, hold nobody again
        until we drain."""
        self.stuck = True
        self._release_blocked()
