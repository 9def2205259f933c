"""Clocks: the system's, and one for tests that moves only when told.

Rules:
- `now_ms` is the wall clock (Unix milliseconds): what is recorded and shown
  (report times, `last_activity`, deadlines stored for other processes). It
  may jump, forward or back, when NTP or an operator sets it.
- `monotonic_ms` only moves forward, at the pace of real time, and means
  nothing outside this process: every duration measured in memory (login
  penalties and trust, publish rates, OTA paces and timeouts) is measured on
  it, so a jump of the wall clock neither expires them all at once nor
  stalls them (README, "Failure behaviour").
"""

from __future__ import annotations

import time


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000


class FakeClock:
    """Time passing (`advance`) moves both clocks; `jump` sets the wall clock
    alone, as NTP or an operator does."""

    def __init__(self, now_ms: int = 1_700_000_000_000) -> None:
        self.now = now_ms
        self.monotonic = 1_000_000

    def now_ms(self) -> int:
        return self.now

    def monotonic_ms(self) -> int:
        return self.monotonic

    def advance(self, ms: int) -> None:
        self.now += ms
        self.monotonic += ms

    def jump(self, ms: int) -> None:
        self.now += ms
