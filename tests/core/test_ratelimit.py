"""RateLimiter (core/ratelimit.py): per-key token buckets on a clock passed in.

A device may do something `burst` times at once and then `rate` times a
second; other keys are never affected; and the table of buckets stays within
`max_keys` however many keys pass through it.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thingshub.core.ratelimit import RateLimiter


def allowed(limiter: RateLimiter, key: object, times: int, now: float) -> int:
    return sum(limiter.allow(key, now) for _ in range(times))


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 5), (1, 0), (1, 0.5)])
def test_a_limiter_needs_a_positive_rate_and_a_burst_of_at_least_one(
    rate: float, burst: float
) -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        RateLimiter(rate, burst)


def test_a_new_key_may_act_burst_times_at_once_then_is_refused() -> None:
    limiter = RateLimiter(rate=10, burst=20)
    assert allowed(limiter, "d", 20, now=100.0) == 20
    assert limiter.allow("d", 100.0) is False


def test_tokens_come_back_at_the_rate() -> None:
    limiter = RateLimiter(rate=10, burst=20)
    allowed(limiter, "d", 20, now=0.0)
    assert allowed(limiter, "d", 5, now=0.3) == 3  # 0.3 s at 10/s: three tokens
    assert limiter.allow("d", 0.3) is False
    assert limiter.allow("d", 0.4) is True


def test_a_refused_action_costs_no_token() -> None:
    """Hammering while empty does not push the next allowed action further away."""
    limiter = RateLimiter(rate=1, burst=1)
    assert limiter.allow("d", 0.0)
    assert allowed(limiter, "d", 100, now=0.5) == 0
    assert limiter.allow("d", 1.0)


def test_tokens_never_exceed_the_burst() -> None:
    limiter = RateLimiter(rate=10, burst=3)
    assert limiter.allow("d", 0.0)
    assert allowed(limiter, "d", 10, now=3600.0) == 3  # an hour idle still gives only 3


def test_keys_do_not_share_buckets() -> None:
    limiter = RateLimiter(rate=1, burst=2)
    assert allowed(limiter, ("p", "d1"), 3, now=0.0) == 2
    assert allowed(limiter, ("p", "d2"), 3, now=0.0) == 2


@given(
    rate=st.floats(min_value=0.1, max_value=100),
    burst=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=200),
)
def test_never_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, gaps: list[float]
) -> None:
    """Over any run of attempts, what is allowed is bounded by the bucket's promise."""
    limiter = RateLimiter(rate, burst)
    now = 0.0
    count = 0
    for gap in gaps:
        now += gap
        count += limiter.allow("d", now)
    assert count <= burst + rate * now + 1e-6


def test_the_table_keeps_at_most_max_keys_forgetting_full_buckets_first() -> None:
    limiter = RateLimiter(rate=1, burst=2, max_keys=3)
    limiter.allow("a", 0.0)
    limiter.allow("a", 0.0)  # "a" empty at 0 s
    limiter.allow("b", 0.0)  # "b" half full at 0 s
    limiter.allow("c", 10.0)  # "c" half full at 10 s; "a" and "b" are full again by now
    limiter.allow("d", 10.0)  # a fourth key: the full buckets are forgotten
    assert len(limiter._buckets) <= 3
    # "c" was not full, so it was kept: it has one token left, not a fresh two.
    assert limiter.allow("c", 10.0) is True
    assert limiter.allow("c", 10.0) is False


def test_when_no_bucket_is_full_the_oldest_keys_go() -> None:
    """Memory stays bounded even when every key is busy; a forgotten key starts full."""
    limiter = RateLimiter(rate=1, burst=1, max_keys=2)
    for key in ("a", "b", "c"):
        assert limiter.allow(key, 0.0)
    assert len(limiter._buckets) == 2
    assert limiter.allow("b", 0.0) is False  # still remembered: empty
    assert limiter.allow("a", 0.0) is True  # forgotten: a fresh, full bucket


@given(st.lists(st.text(max_size=3), max_size=300), st.integers(min_value=1, max_value=20))
def test_memory_is_bounded(keys: list[str], max_keys: int) -> None:
    limiter = RateLimiter(rate=1, burst=1, max_keys=max_keys)
    for i, key in enumerate(keys):
        limiter.allow(key, i * 0.01)
        assert len(limiter._buckets) <= max_keys
