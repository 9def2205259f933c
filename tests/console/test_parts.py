"""The console's plain parts, without a browser: the meter, the bucket arithmetic of
the charts, the tags patch, the sign-in target, and the formatting."""

from __future__ import annotations

import pytest

from thingshub.console import fmt
from thingshub.console.auth import safe_target
from thingshub.console.device_image import tags_patch
from thingshub.console.device_telemetry import BUCKETS, RANGES, interval_for, window
from thingshub.console.meter import Meter
from thingshub.core.errors import InvalidRequest, NotFound
from thingshub.core.shadow import ImageError


def test_the_meter_totals_per_minute_and_rates_over_recent_samples() -> None:
    meter = Meter(minutes=3, window=10)
    meter.sample(600.0, {"points": 100})  # the first sample is the baseline only
    assert meter.per_minute("points", 600.0)[-1] == (600_000, 0)
    meter.sample(605.0, {"points": 150})
    meter.sample(610.0, {"points": 250})
    assert meter.per_minute("points", 610.0) == [(480_000, 0), (540_000, 0), (600_000, 150)]
    assert meter.rate("points") == pytest.approx(15.0)  # 150 points in 10 s
    meter.sample(665.0, {"points": 10})  # a restart of the counter counts from zero
    assert meter.per_minute("points", 665.0)[-1] == (660_000, 10)
    meter.sample(840.0, {"points": 20})
    assert [m for m, _ in meter.per_minute("points", 840.0)] == [720_000, 780_000, 840_000]
    assert meter.per_minute("points", 840.0)[-1] == (840_000, 10)  # older minutes fell off
    assert meter.rate("missing") == 0.0


@pytest.mark.parametrize("label", list(RANGES))
def test_chart_ranges_have_round_intervals_and_about_300_buckets(label: str) -> None:
    span = RANGES[label]
    interval = interval_for(span)
    assert span / interval <= BUCKETS
    assert span / interval > BUCKETS / 3
    start, end, got = window(span, now=1_700_000_123_456)
    assert got == interval
    assert start % interval == 0 and end % interval == 0  # buckets stay put as time passes
    assert start <= 1_700_000_123_456 - span and end > 1_700_000_123_456
    assert (end - start) // interval <= BUCKETS + 2


def test_the_tags_patch_turns_the_old_tags_into_the_new_ones() -> None:
    old = {"room": "3", "floor": "1", "keep": "x"}
    new = {"room": "4", "keep": "x", "zone": "north"}
    assert tags_patch(old, new) == {"floor": None, "room": "4", "zone": "north"}
    assert tags_patch(old, dict(old)) == {}


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/devices?product=p1", "/devices?product=p1"),
        ("/", "/"),
        (None, "/"),
        ("", "/"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
    ],
)
def test_only_console_paths_are_followed_after_signing_in(
    target: str | None, expected: str
) -> None:
    assert safe_target(target) == expected


def test_formatting() -> None:
    assert fmt.ago(None) == "never"
    assert fmt.ago(10_000, now=10_500) == "just now"
    assert fmt.ago(10_000, now=52_000) == "42 s ago"
    assert fmt.ago(0, now=5 * 60_000) == "5 min ago"
    assert fmt.ago(0, now=3 * 3_600_000) == "3 h ago"
    assert fmt.ago(0, now=2 * 86_400_000) == "2 d ago"
    assert fmt.value(21.5) == "21.5" and fmt.value(True) == "true" and fmt.value("on") == "on"
    assert fmt.value({"a": [1, 2]}) == '{"a": [1, 2]}'
    assert fmt.rate(0.5) == "0.50" and fmt.rate(12.34) == "12.3" and fmt.rate(1234.5) == "1,234"
    assert fmt.when(None) == "—"
    # The API's sentence, with the protocol's code where there is one.
    assert fmt.error(InvalidRequest("limit must be between 1 and 1000")) == (
        "limit must be between 1 and 1000"
    )
    assert fmt.error(ImageError(165, "version must be a positive integer")) == (
        f"version must be a positive integer (err_code 165: {ImageError(165).err_msg})"
    )
    assert fmt.error(NotFound("no such device")) == "no such device"
