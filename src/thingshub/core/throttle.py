"""Slowing down repeated failures from one source (failed logins per address).

Rules:
- Each key has a count of failures in a fixed window of `window_ms` starting
  at its first failure; the window restarts when it has passed.
- The first `free` failures cost nothing; after that each answer to that key
  is delayed by `base_delay * 2**(n - free)` seconds, at most `max_delay`.
- Memory is bounded: beyond `max_keys` keys, expired windows are dropped
  first, then the oldest. Keys are kept in the order their windows started
  (a restarted window moves its key to the end), so both are found at the
  front of the table, in time independent of its size.
- Time is passed in; nothing here sleeps.
"""

from __future__ import annotations

from collections import OrderedDict


class FailureThrottle:
    def __init__(
        self,
        free: int = 5,
        window_ms: int = 60_000,
        base_delay: float = 0.25,
        max_delay: float = 5.0,
        max_keys: int = 100_000,
    ) -> None:
        self.free = free
        self.window_ms = window_ms
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_keys = max_keys
        # key -> (count, window start), oldest window first
        self._failures: OrderedDict[str, tuple[int, int]] = OrderedDict()

    def delay(self, key: str, now_ms: int) -> float:
        entry = self._failures.get(key)
        if entry is None:
            return 0.0
        count, start = entry
        if now_ms - start >= self.window_ms:
            del self._failures[key]
            return 0.0
        if count < self.free:
            return 0.0
        # The exponent is capped: 2**n past ~1024 no longer converts to a float.
        exponent = min(count - self.free, 1000)
        return float(min(self.max_delay, self.base_delay * 2.0**exponent))

    def failed(self, key: str, now_ms: int) -> None:
        count, start = self._failures.get(key, (0, now_ms))
        if now_ms - start >= self.window_ms:
            self._failures.pop(key, None)  # a new window: the key moves to the end
            count, start = 0, now_ms
        self._failures[key] = (count + 1, start)
        if len(self._failures) > self.max_keys:
            self._prune(now_ms)

    def _prune(self, now_ms: int) -> None:
        # Windows are in start order, so the expired ones come first: the cost
        # is the number of keys dropped, never a scan of the whole table.
        failures = self._failures
        while failures:
            oldest, (_, start) = next(iter(failures.items()))
            if now_ms - start < self.window_ms and len(failures) <= self.max_keys:
                break
            del failures[oldest]
