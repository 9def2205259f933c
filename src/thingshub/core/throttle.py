"""Slowing down failed logins: penalties from past failures, lanes for attempts in flight.

Rules:
- `FailureThrottle` counts failures per key in a fixed window of `window_ms`
  starting at the key's first failure; the window restarts when it has
  passed. The first `free` failures cost nothing; after that each attempt on
  that key waits `base_delay * 2**(n - free)` seconds, at most `max_delay`.
- A login attempt names an address (where it comes from) and an identity
  (who it claims to be: a user name, or a product id and device name).
  `LoginThrottle` counts failures per (address, identity) pair and per
  identity, never per address alone: devices behind one NAT share an
  address, and one device's attacker must not slow the others down. (Many
  identities tried from one address are bounded by `per_address`, not
  penalized: issued passwords and 256-bit device keys are not guessed by
  spraying, and an address-wide penalty is what would hit the neighbours.)
- Lanes bound the attempts in flight. An attempt enters, in order, the lane
  of its pair (one at a time), of its identity (`per_identity` at a time)
  and of its address (`per_address` at a time). It waits out its pair's
  penalty holding the pair's lane, the identity's penalty (what exceeds the
  pair's) holding the identity's lane, and holds the address's lane only
  while it is checked. So parallel attempts at one identity are answered one
  penalty after another, at the pace of one, however many are sent; and an
  attempt at another identity from the same address waits at most for a
  place among `per_address` checks, never for anyone's penalty.
- Trust: an identity that logged in from an address within `trust_ms` skips
  its identity's lane and penalty, and the address's lane, from there (its
  pair's lane and penalty still apply). Who knows a device's name (it is in
  its topics) can slow down its logins from elsewhere, but never lock it out
  of the addresses it uses.
- Timing tells nothing: every penalty is decided by past failures and
  successes, before the attempt is checked, so a correct password waits
  exactly as long as a wrong one would in its place (a penalty paid only by
  failures would let an attacker stop waiting once it is due, and know).
  Failures are not forgiven by a success.
- Memory is bounded: failure windows and trusted pairs are tables of at most
  `max_keys` keys, kept in the order of their time, so expired and oldest
  keys are dropped from the front, in time independent of their size
  (trusted pairs in passes, amortized over the logins between them);
  identities are cut to `MAX_IDENTITY` characters; a lane exists only while
  attempts hold or wait for it.
- Time is passed in; nothing here sleeps or waits (gateway/admission.py does).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

W = TypeVar("W")


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


# ---------------------------------------------------------------- logins


#: Identities longer than this are cut (a valid one is far shorter): an
#: attacker's 64 KiB user names must not make the tables big.
MAX_IDENTITY = 200


@dataclass(frozen=True, slots=True)
class Lane:
    """One limit an attempt passes: at most `limit` attempts hold `key` at once."""

    key: str
    limit: int
    #: What holding it costs: "pair" (its failures' penalty), "identity" (the
    #: identity's penalty beyond the pair's) or "check" (nothing but the check).
    kind: str


class _Lane(Generic[W]):
    __slots__ = ("held", "waiting")

    def __init__(self) -> None:
        self.held = 0
        self.waiting: deque[W] = deque()


class Lanes(Generic[W]):
    """Per key, at most `limit` holders; the others wait in arrival order.

    Pure bookkeeping: a waiter is whatever the caller waits on; `leave` says
    which waiter holds the place now. A key exists only while someone holds
    or waits for it.
    """

    def __init__(self) -> None:
        self._lanes: dict[str, _Lane[W]] = {}

    def free(self, key: str, limit: int) -> bool:
        """Whether an attempt would enter at once (a free place, nobody waiting)."""
        lane = self._lanes.get(key)
        return lane is None or (lane.held < limit and not lane.waiting)

    def try_enter(self, key: str, limit: int) -> bool:
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        elif lane.held >= limit or lane.waiting:
            return False
        lane.held += 1
        return True

    def wait(self, key: str, waiter: W) -> None:
        """Queue `waiter` for `key` (after `try_enter` said no)."""
        self._lanes[key].waiting.append(waiter)

    def leave(self, key: str) -> W | None:
        """A holder leaves; the waiter that holds its place now, if any."""
        lane = self._lanes[key]
        if lane.waiting:
            return lane.waiting.popleft()
        lane.held -= 1
        if not lane.held:
            del self._lanes[key]
        return None

    def withdraw(self, key: str, waiter: W) -> None:
        """A waiter gives up before its turn (nothing happens if it had it)."""
        lane = self._lanes.get(key)
        if lane is not None and waiter in lane.waiting:
            lane.waiting.remove(waiter)

    def __len__(self) -> int:
        return len(self._lanes)


class LoginThrottle:
    """The rules for logins (module docstring); gateway/admission.py waits them out."""

    def __init__(
        self,
        free: int = 5,
        window_ms: int = 60_000,
        base_delay: float = 0.25,
        max_delay: float = 5.0,
        max_keys: int = 100_000,
        per_identity: int = 1,
        per_address: int = 8,
        trust_ms: int = 7 * 86_400_000,
    ) -> None:
        self.free = free
        self.window_ms = window_ms
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.per_identity = per_identity
        self.per_address = per_address
        self.trust_ms = trust_ms
        self.max_keys = max_keys
        self.pairs = FailureThrottle(free, window_ms, base_delay, max_delay, max_keys)
        self.identities = FailureThrottle(free, window_ms, base_delay, max_delay, max_keys)
        self.lanes: Lanes[Any] = Lanes()
        # pair -> time of its last login, oldest first (a login moves its pair
        # to the end). Every device that logged in keeps its pair a week, so
        # what a pair costs counts: a plain dict, not an OrderedDict (~45 B
        # less a pair), cleared in passes over its front (`_prune`); and times
        # rounded down to `_grain` (a second for a week's trust: a pair's
        # trust ends up to a second early, never late), the logins of one
        # grain sharing one int object (32 B less).
        self._trusted: dict[str, int] = {}
        self._grain = max(1, min(1000, trust_ms // 1000))
        self._at = -1
        self._due = 0  # logins until the next pass over the front

    @staticmethod
    def pair(address: str, identity: str) -> str:
        return f"{address} {identity[:MAX_IDENTITY]}"

    def trusted(self, address: str, identity: str, now_ms: int) -> bool:
        """Whether `identity` logged in from `address` within `trust_ms`."""
        at = self._trusted.get(self.pair(address, identity))
        return at is not None and now_ms - at < self.trust_ms

    def plan(self, address: str, identity: str, now_ms: int) -> list[Lane]:
        """The lanes an attempt passes, in the order it must enter them."""
        lanes = [Lane(self.pair(address, identity), 1, "pair")]
        if not self.trusted(address, identity, now_ms):
            lanes.append(Lane("i " + identity[:MAX_IDENTITY], self.per_identity, "identity"))
            lanes.append(Lane("a " + address, self.per_address, "check"))
        return lanes

    def penalty(self, lane: Lane, address: str, identity: str, served: float, now_ms: int) -> float:
        """Seconds to wait holding `lane`, given what the attempt has already waited
        (`served`) for penalties; decided by past failures only, never by this
        attempt's outcome."""
        if lane.kind == "pair":
            return self.pairs.delay(lane.key, now_ms)
        if lane.kind == "identity":
            return max(0.0, self.identities.delay(lane.key, now_ms) - served)
        return 0.0

    def at_once(self, address: str, identity: str, now_ms: int) -> bool:
        """Whether an attempt may be judged now, without waiting or holding lanes:
        no penalty and every lane of its `plan` free. Written out lane by lane,
        in the plan's order, without building the plan: every login asks."""
        lanes = self.lanes
        pair = self.pair(address, identity)
        if not lanes.free(pair, 1) or self.pairs.delay(pair, now_ms):
            return False
        at = self._trusted.get(pair)
        if at is not None and now_ms - at < self.trust_ms:
            return True
        ident = "i " + identity[:MAX_IDENTITY]
        return (
            lanes.free(ident, self.per_identity)
            and self.identities.delay(ident, now_ms) <= 0
            and lanes.free("a " + address, self.per_address)
        )

    def failed(self, address: str, identity: str, now_ms: int) -> None:
        self.pairs.failed(self.pair(address, identity), now_ms)
        self.identities.failed("i " + identity[:MAX_IDENTITY], now_ms)

    def succeeded(self, address: str, identity: str, now_ms: int) -> None:
        """A login went through: the pair is trusted from now on (failures are
        not forgiven: an attacker at a device's address gains nothing from the
        device's own logins)."""
        key = self.pair(address, identity)
        trusted = self._trusted
        trusted.pop(key, None)
        at = now_ms - now_ms % self._grain
        if at != self._at:
            self._at = at
        trusted[key] = self._at
        self._due -= 1
        if len(trusted) > self.max_keys or self._due <= 0:
            self._prune(now_ms)

    def _prune(self, now_ms: int) -> None:
        """Drop the expired pairs at the front and, beyond the bound, the
        oldest down to 7/8 of it. One walk over the front at most every 1/8
        of the table's logins, not one on every login: a dict's iterator
        steps over the slots of the keys deleted at its front until the dict
        is compacted, so looking at the front each time would cost a login
        as many steps as pairs dropped since."""
        trusted = self._trusted
        bound = self.max_keys
        excess = len(trusted) - (bound - bound // 8 if len(trusted) > bound else bound)
        drop: list[str] = []
        for key, at in trusted.items():
            if len(drop) >= excess and now_ms - at < self.trust_ms:
                break
            drop.append(key)
        for key in drop:
            del trusted[key]
        self._due = max(64, len(trusted) // 8)
