"""Message rates and per-minute totals for the fleet overview, kept in memory.

Rules:
- Fed by sampling cumulative counters every few seconds (the MQTT server's
  and the ingest service's), never by scanning the database and never on the
  hot path: a sample costs a few dict operations however busy the fleet is.
- Per-minute totals cover the last `minutes` minutes; older minutes fall off.
  A counter that goes backwards (a restart of what it counts) restarts from
  the new value instead of producing a negative total.
- Rates are over the samples of the last `window` seconds.
- Time comes from the caller (seconds since the epoch).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping


class Meter:
    def __init__(self, minutes: int = 60, window: float = 10.0) -> None:
        self.minutes = minutes
        self.window = window
        self._last: dict[str, int] | None = None
        self._totals: dict[int, dict[str, int]] = {}  # by minute (epoch s // 60)
        self._recent: deque[tuple[float, dict[str, int]]] = deque()

    def sample(self, now_s: float, counters: Mapping[str, int]) -> None:
        current = dict(counters)
        minute = int(now_s // 60)
        if self._last is not None:
            bucket = self._totals.setdefault(minute, {})
            for name, value in current.items():
                before = self._last.get(name, 0)
                delta = value - before if value >= before else value
                bucket[name] = bucket.get(name, 0) + delta
        self._last = current
        for old in [m for m in self._totals if m <= minute - self.minutes]:
            del self._totals[old]
        self._recent.append((now_s, current))
        while len(self._recent) > 2 and self._recent[1][0] <= now_s - self.window:
            self._recent.popleft()

    def rate(self, name: str) -> float:
        """Per second, over the recent samples (0 until there are two)."""
        if len(self._recent) < 2:
            return 0.0
        (t0, first), (t1, last) = self._recent[0], self._recent[-1]
        if t1 <= t0:
            return 0.0
        delta = last.get(name, 0) - first.get(name, 0)
        return max(delta, 0) / (t1 - t0)

    def per_minute(self, name: str, now_s: float) -> list[tuple[int, int]]:
        """[(minute start in ms, total)] for each of the last `minutes` minutes, oldest
        first, zeros included (so a chart's time axis has no gaps)."""
        minute = int(now_s // 60)
        return [
            (m * 60_000, self._totals.get(m, {}).get(name, 0))
            for m in range(minute - self.minutes + 1, minute + 1)
        ]
