"""Backpressure between clients: a publisher waits for a subscriber that cannot keep up.

Rules:
- A client we cannot write to fast enough (its socket buffer above the
  high-water mark, or a window's worth of QoS 1/2 messages queued in its
  session) holds up whoever publishes to it: reading from the publisher stops
  until the slow client has drained, instead of buffering without bound.
- A hold lasts at most `max_hold` seconds. A slow client that has not drained
  by then is `stuck`: it holds nobody up again until it drains, so one dead
  subscriber cannot stop a publisher for good.
- A publisher's silence while it is held is ours: its keepalive restarts
  when it is released.
- The connection supplies the I/O (`_can_hold`, `_stop_reading`,
  `_start_reading`, `_hold_timer`); this class keeps only who holds up whom.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from thingshub.mqtt.server.ports import Link


class Backpressure:
    __slots__ = ("_blocked", "_held", "stuck", "write_paused")

    def __init__(self) -> None:
        #: The timer that gives up waiting for the client holding us up.
        self._held: asyncio.TimerHandle | None = None
        #: Publishers held up because of us.
        self._blocked: list[Backpressure] | None = None
        self.write_paused = False  # our socket buffer is above the high-water mark
        self.stuck = False  # we held a publisher up for `max_hold` and did not drain

    # The connection's I/O.
    def _can_hold(self) -> bool:
        raise NotImplementedError  # unreachable in practice

    def _stop_reading(self) -> None:
        raise NotImplementedError  # unreachable in practice

    def _start_reading(self) -> None:
        raise NotImplementedError  # unreachable in practice

    def _hold_timer(self, slow: Link) -> asyncio.TimerHandle:
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
        self._blocked = None
        for publisher in blocked or ():
            publisher.release()

    def hold(self, slow: Link) -> None:
        """Stop reading from this (publishing) client until `slow`, a client we
        deliver to, has drained its socket buffer or its queue of QoS 1/2
        messages. A `slow` that has not drained after `max_hold` seconds is
        `stuck`: it holds nobody up again until it drains."""
        if self._held is not None or not self._can_hold():
            return
        assert isinstance(slow, Backpressure)
        if slow._blocked is None:
            slow._blocked = []
        slow._blocked.append(self)
        self._stop_reading()
        self._held = self._hold_timer(slow)

    def hold_expired(self, slow: Link) -> None:
        """The timer of the current hold (a release cancels it): give up on `slow`."""
        assert isinstance(slow, Backpressure)
        if slow._blocked is not None and self in slow._blocked:
            slow.stuck = True
            slow._blocked.remove(self)
        self.release()

    def release(self) -> None:
        if self._held is None:
            return
        self._held.cancel()
        self._held = None
        self._start_reading()
