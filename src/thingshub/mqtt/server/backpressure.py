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
- The connection supplies the I/O (`_stop_reading`, `_start_reading`,
  `_hold_timer`); this class keeps only who holds up whom.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from thingshub.mqtt.server.ports import Link


class Blocked(list["Backpressure"]):
    """The publishers a slow client holds up, and the timer that gives up on it."""

    __slots__ = ("timer",)

    timer: asyncio.TimerHandle


class Backpressure:
    __slots__ = ("_blocked", "_held", "stuck", "write_paused")

    def __init__(self) -> None:
        #: The client holding us up, if one is.
        self._held: Backpressure | None = None
        #: Publishers held up because of us.
        self._blocked: Blocked | None = None
        self.write_paused = False  # our socket buffer is above the high-water mark
        self.stuck = False  # we held a publisher up for `max_hold` and did not drain

    # The connection's I/O.
    def _stop_reading(self) -> bool:
        """Stop reading for a hold; False (and nothing done) if this connection
        cannot be held (it is not connected): one call for both, as a hold comes
        every other message under a window-1 fan-in."""
        raise NotImplementedError  # unreachable in practice

    def _start_reading(self) -> None:
        raise NotImplementedError  # unreachable in practice

    def _hold_timer(self) -> asyncio.TimerHandle:
        """A timer that calls `hold_expired` of ours after `max_hold` seconds."""
        raise NotImplementedError  # unreachable in practice

    # asyncio's flow control of our socket
    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._caught_up()

    def queue_drained(self) -> None:
        """The session's queue emptied: the publishers it held may go on, unless
        the socket itself is still full."""
        if not self.write_paused:
            self._caught_up()

    def _caught_up(self) -> None:
        """We drained: release the publishers we held up, and hold them up again
        next time we fall behind."""
        self.stuck = False
        self._release_blocked()

    def _release_blocked(self) -> None:
        blocked = self._blocked
        if blocked is None:
            return
        self._blocked = None
        blocked.timer.cancel()
        for publisher in blocked:
            publisher.release()

    def hold(self, slow: Link) -> None:
        """Stop reading from this (publishing) client until `slow`, a client we
        deliver to, has drained its socket buffer or its queue of QoS 1/2
        messages. A `slow` that has not drained `max_hold` seconds after it
        first held someone up is `stuck`: it holds nobody up again until it drains."""
        if self._held is not None or not self._stop_reading():
            return
        assert isinstance(slow, Backpressure)
        blocked = slow._blocked
        if blocked is None:
            blocked = slow._blocked = Blocked()
            blocked.timer = slow._hold_timer()
        blocked.append(self)
        self._held = slow

    def hold_expired(self) -> None:
        """`max_hold` has passed since we first held someone up, and we have not
        drained (draining cancels the timer): let them all go, hold nobody again
        until we drain."""
        self.stuck = True
        self._release_blocked()

    def release(self) -> None:
        if self._held is None:
            return
        self._held = None
        self._start_reading()
