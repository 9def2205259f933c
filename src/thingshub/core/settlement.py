"""Settlement: the outcomes of many messages decided at once (one commit).

Rules:
- A settlement gathers members (`join`, numbered from 0 in the order they
  joined) until whoever decides them settles it once (`settle`): every member
  gets the code 0, except those named in `failures`, which get their
  exception; or, when the whole settlement failed, every member gets `error`.
- Waiters (`wait`) are callables without arguments, one per party that holds
  members (the MQTT server registers one per connection, not one per
  message); `settle` hands them back, in the order they came, for the settler
  to call: this module calls nothing and knows no loop, clock or log.
- `missing` are members settled with 0 that changed nothing (a report of a
  device deleted meanwhile): their outcome is 0, but nothing of theirs is
  to be counted as done (`done`).
- `values` are what members' writes gave besides 0, once settled (a write of
  many devices' rows tells which of them do not exist): `value` reads a
  member's, None for the others. A settlement of members that give nothing
  keeps no dict.
- `last` is the member that joined most recently: the message whose write just
  joined reads its own number there, without a per-message object.
- Settled once: a second `settle` is a bug (`RuntimeError`); a waiter that
  comes after it is refused the same way (nobody would call it).
"""

from __future__ import annotations

from collections.abc import Callable


class Settlement:
    """Many members' outcomes, settled together (see the module's rules)."""

    __slots__ = (
        "_waiters",
        "error",
        "failures",
        "last",
        "missing",
        "settled",
        "size",
        "values",
    )

    def __init__(self) -> None:
        self.size = 0  # members joined so far
        self.last = -1  # the newest member's number
        self.settled = False
        #: member -> its failure, once settled (None: none failed alone).
        self.failures: dict[int, BaseException] | None = None
        #: The failure of every member, once settled so (None: it committed).
        self.error: BaseException | None = None
        #: Members settled with 0 that changed nothing, once settled (None: none).
        self.missing: set[int] | None = None
        #: member -> what its write gave besides 0, once settled (None: nothing).
        self.values: dict[int, object] | None = None
        self._waiters: list[Callable[[], None]] = []

    def join(self) -> int:
        """A new member: its number (also `last` until the next one joins)."""
        self.last = number = self.size
        self.size = number + 1
        return number

    def wait(self, waiter: Callable[[], None]) -> None:
        """Have `waiter` called (by the settler) once the settlement is decided."""
        if self.settled:
            raise RuntimeError("waiting for a settlement already settled")
        self._waiters.append(waiter)

    @property
    def clean(self) -> bool:
        """Settled, every member with 0 (none failed)."""
        return self.settled and self.error is None and self.failures is None

    def done(self, member: int) -> bool:
        """Whether a settled member's change was made (0, and not missing)."""
        if self.outcome(member) != 0:
            return False
        return self.missing is None or member not in self.missing

    def outcome(self, member: int) -> int | BaseException:
        """A settled member's outcome: 0, or the exception of its failure."""
        if self.error is not None:
            return self.error
        failures = self.failures
        if failures is None:
            return 0
        return failures.get(member, 0)

    def value(self, member: int) -> object:
        """What a settled member's write gave besides its 0 (None: nothing)."""
        values = self.values
        return None if values is None else values.get(member)

    def settle(
        self,
        failures: dict[int, BaseException] | None = None,
        error: BaseException | None = None,
        missing: set[int] | None = None,
        values: dict[int, object] | None = None,
    ) -> list[Callable[[], None]]:
        """Decide every member; the waiters to call now, in the order they came."""
        if self.settled:
            raise RuntimeError("a settlement is settled once")
        self.settled = True
        self.failures = failures or None
        self.error = error
        self.missing = missing or None
        self.values = values or None
        waiters = self._waiters
        self._waiters = []
        return waiters
