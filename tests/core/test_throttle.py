"""FailureThrottle: how failed logins under one key (an address and identity, or an
identity: see test_login_throttle.py) slow its next answers.

Time is an argument, so every case runs on a made-up millisecond clock.
The memory bound matters as much as the delays: the throttle sits in front
of every CONNECT, so an attacker rotating addresses must neither grow it
without bound nor make it slow.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thingshub.core.throttle import FailureThrottle

WINDOW = 60_000


def fail(throttle: FailureThrottle, key: str, times: int, now_ms: int = 0) -> None:
    for _ in range(times):
        throttle.failed(key, now_ms)


def test_unknown_key_has_no_delay() -> None:
    """An address that never failed is answered at once."""
    assert FailureThrottle().delay("10.0.0.1", 0) == 0.0


def test_free_failures_cost_nothing() -> None:
    """A user mistyping a password a few times must not be slowed down."""
    throttle = FailureThrottle(free=5)
    for n in range(5):
        assert throttle.delay("k", 1) == 0.0, n
        throttle.failed("k", 1)
    assert throttle.delay("k", 1) > 0.0


def test_delay_doubles_after_the_free_failures() -> None:
    """After `free` failures: base, 2·base, 4·base, ... per further failure."""
    throttle = FailureThrottle(free=3, base_delay=0.25, max_delay=100.0)
    fail(throttle, "k", 3)
    delays = []
    for _ in range(5):
        delays.append(throttle.delay("k", 10))
        throttle.failed("k", 10)
    assert delays == [0.25, 0.5, 1.0, 2.0, 4.0]


def test_delay_is_capped() -> None:
    """However many failures, an answer waits at most `max_delay`."""
    throttle = FailureThrottle(free=0, base_delay=0.25, max_delay=5.0)
    fail(throttle, "k", 5)  # 0.25 * 2**5 = 8 > 5
    assert throttle.delay("k", 1) == 5.0


def test_huge_failure_count_stays_capped() -> None:
    """Thousands of failures in one window (parallel connections) must not overflow.

    (Bug fixed: `base_delay * 2 ** n` raised OverflowError past n ≈ 1024,
    which made the login hook itself fail.)
    """
    throttle = FailureThrottle(free=5, max_delay=5.0)
    fail(throttle, "k", 5_000)
    assert throttle.delay("k", 1) == 5.0


def test_delay_is_a_float() -> None:
    """The caller passes it to asyncio.sleep and compares it; always a float."""
    throttle = FailureThrottle(free=0)
    fail(throttle, "k", 1)
    assert isinstance(throttle.delay("k", 1), float)
    assert isinstance(throttle.delay("other", 1), float)


def test_window_expiry_forgets_the_failures() -> None:
    """The window is fixed from the first failure; once it has passed, the slate is clean."""
    throttle = FailureThrottle(free=1, window_ms=WINDOW)
    fail(throttle, "k", 4, now_ms=1_000)
    fail(throttle, "k", 4, now_ms=30_000)  # later failures do not extend the window
    assert throttle.delay("k", 1_000 + WINDOW - 1) > 0.0
    assert throttle.delay("k", 1_000 + WINDOW) == 0.0


def test_failure_after_the_window_starts_a_new_count() -> None:
    """A failure after expiry counts as the first of a new window, not the ninth."""
    throttle = FailureThrottle(free=1, base_delay=1.0, max_delay=1_000.0, window_ms=WINDOW)
    fail(throttle, "k", 8, now_ms=0)
    assert throttle.delay("k", 1) == 2.0**7
    throttle.failed("k", WINDOW)  # without asking delay() first
    assert throttle.delay("k", WINDOW) == 1.0
    assert throttle.delay("k", 2 * WINDOW - 1) == 1.0  # the new window started at WINDOW


def test_keys_are_isolated() -> None:
    """One address failing must not slow down another."""
    throttle = FailureThrottle(free=2)
    fail(throttle, "10.0.0.1", 10)
    assert throttle.delay("10.0.0.1", 1) > 0.0
    assert throttle.delay("10.0.0.2", 1) == 0.0
    fail(throttle, "10.0.0.2", 2)
    assert throttle.delay("10.0.0.2", 1) == throttle.base_delay


def test_delay_drops_an_expired_key() -> None:
    """Asking about an expired key frees its memory."""
    throttle = FailureThrottle(window_ms=WINDOW)
    throttle.failed("k", 0)
    assert throttle.delay("k", WINDOW) == 0.0
    assert len(throttle._failures) == 0


def test_max_keys_bounds_memory() -> None:
    """However many addresses fail, at most `max_keys` are remembered, the newest ones."""
    throttle = FailureThrottle(max_keys=100, window_ms=WINDOW)
    for i in range(10_000):
        throttle.failed(f"k{i}", i)
        assert len(throttle._failures) <= 100
    assert set(throttle._failures) == {f"k{i}" for i in range(9_900, 10_000)}


def test_expired_keys_are_pruned_before_live_ones() -> None:
    """At the bound, every expired window goes first; live ones survive."""
    throttle = FailureThrottle(free=0, max_keys=3, window_ms=WINDOW)
    throttle.failed("old1", 0)
    throttle.failed("old2", 1)
    throttle.failed("live", WINDOW - 10)
    throttle.failed("new", WINDOW + 5)  # old1 and old2 have expired by now
    assert set(throttle._failures) == {"live", "new"}
    assert throttle.delay("live", WINDOW + 5) > 0.0


def test_oldest_live_window_goes_when_none_has_expired() -> None:
    """With nothing expired, the key whose window started first is dropped."""
    throttle = FailureThrottle(free=0, max_keys=2, window_ms=WINDOW)
    throttle.failed("a", 0)
    throttle.failed("b", 10)
    throttle.failed("c", 20)
    assert set(throttle._failures) == {"b", "c"}


def test_restarted_window_counts_as_young() -> None:
    """A key whose window restarted is as young as its new window, not its first failure.

    (Bug fixed: the table kept first-insertion order, so such a key was
    dropped as "oldest" before keys whose windows had started earlier.)
    """
    throttle = FailureThrottle(free=0, max_keys=2, window_ms=WINDOW)
    throttle.failed("a", 0)
    throttle.failed("b", 30_000)
    throttle.failed("a", WINDOW + 1)  # a new window for "a", younger than b's
    throttle.failed("c", WINDOW + 2)  # over the bound: b is the oldest window
    assert set(throttle._failures) == {"a", "c"}


def reference_after_failure(
    model: dict[str, tuple[int, int, int]], key: str, now: int, seq: int, max_keys: int
) -> None:
    """The documented rules, stated naively: key -> (count, window start, start sequence)."""
    count, start, started = model.get(key, (0, now, seq))
    if now - start >= 1_000:
        count, start, started = 0, now, seq
    model[key] = (count + 1, start, started)
    if len(model) > max_keys:
        for k in [k for k, (_, s, _) in model.items() if now - s >= 1_000]:
            del model[k]
        while len(model) > max_keys:
            del model[min(model, key=lambda k: (model[k][1], model[k][2]))]


@given(
    events=st.lists(
        st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 600)), min_size=1, max_size=60
    ),
    max_keys=st.integers(1, 4),
)
def test_throttle_agrees_with_the_naive_rules(events: list[tuple[str, int]], max_keys: int) -> None:
    """For any sequence of failures on a monotonic clock, the table is what the rules say.

    The implementation finds expired and oldest keys at the front of an
    ordered table instead of scanning it; this checks the shortcut.
    """
    throttle = FailureThrottle(free=0, max_keys=max_keys, window_ms=1_000)
    model: dict[str, tuple[int, int, int]] = {}
    now = 0
    for seq, (key, step) in enumerate(events):
        now += step
        throttle.failed(key, now)
        reference_after_failure(model, key, now, seq, max_keys)
        assert len(throttle._failures) <= max_keys
        assert dict(throttle._failures) == {k: (c, s) for k, (c, s, _) in model.items()}


@pytest.mark.parametrize("free", [0, 1, 5])
def test_delay_never_exceeds_the_cap(free: int) -> None:
    """Table over counts: 0 until `free` (and with no failure at all), then doubling, capped.

    Note that with free=0 the first delay is already 2·base: the exponent is
    n - free, counted from the first failure.
    """
    throttle = FailureThrottle(free=free, base_delay=0.25, max_delay=5.0)
    for n in range(40):
        expected = 0.0 if n == 0 or n < free else min(5.0, 0.25 * 2 ** (n - free))
        assert throttle.delay("k", 1) == expected, n
        throttle.failed("k", 1)
