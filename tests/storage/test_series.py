"""The storage contract for what devices report: telemetry (history, latest values,
aggregates, retention), attributes and events, on memory, SQLite and PostgreSQL.

The rules tested are those of core/ports.py and storage/common.py: history is
append-only (equal timestamps all kept, ordered by arrival), the latest value
of a key is the newest by ts then by arrival, ranges are [start, end) and
page by (ts, seq), aggregates are computed per bucket [start + k*interval,
start + (k+1)*interval) with empty buckets omitted, values keep their JSON
type, a call is atomic, and a device's data goes with it.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from typing import Any

import pytest

from tests.storage.support import Backend, device, product
from thingshub.core.errors import NotFound
from thingshub.core.model import DeviceEvent, Point, PointsAt
from thingshub.core.ports import Storage
from thingshub.storage import common

T0 = 1_700_000_000_000


async def setup(s: Storage, *names: str, pid: str = "p1") -> None:
    if await s.products.get(pid) is None:
        await s.products.add(product(pid))
    for name in names or ("d1",):
        await s.devices.add(device(pid, name))


async def everything(s: Storage, name: str, key: str, pid: str = "p1") -> list[Any]:
    """Every point of a key, as (ts, value)."""
    rows = await s.telemetry.history(pid, name, key, 0, 2**62, 100_000)
    return [(ts, value) for ts, _, value in rows]


def same(got: object, expected: object) -> bool:
    """Equal, and of the same JSON type at every level (1 is not 1.0, True is not 1)."""
    if type(got) is not type(expected):
        return False
    if isinstance(expected, dict):
        assert isinstance(got, dict)
        return list(got) == list(expected) and all(same(got[k], expected[k]) for k in expected)
    if isinstance(expected, list):
        assert isinstance(got, list)
        return len(got) == len(expected) and all(map(same, got, expected))
    return got == expected


# ------------------------------------------------------------------ values


VALUES: dict[str, object] = {
    "int": 1,
    "zero": 0,
    "negative": -5,
    "int64_max": 2**63 - 1,
    "int64_min": -(2**63),
    "float": 1.5,
    "whole_float": 1.0,
    "tenth": 0.1,
    "huge": 1e300,
    "tiny": -5e-324,
    "string_number": "1",
    "empty_string": "",
    "unicode": 'ünï 😀 "q" \\ \u0000',
    "true": True,
    "false": False,
    "object": {"z": [1, 2.5, None, {"b": "x", "a": False}], "a": {}},
    "array": [1, "2", [], 3.0],
    "empty_object": {},
}


def test_values_keep_their_json_type(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await setup(s)
        await s.telemetry.append("p1", "d1", [Point(k, T0, v) for k, v in VALUES.items()])
        latest = await s.telemetry.latest("p1", "d1")
        assert set(latest) == set(VALUES)
        for key, value in VALUES.items():
            ts, got = latest[key]
            assert ts == T0 and same(got, value), (key, got)
            [(ts, _, got)] = await s.telemetry.history("p1", "d1", key, T0, T0 + 1, 10)
            assert same(got, value), (key, got)
            [(_, last)] = await s.telemetry.aggregate("p1", "d1", key, T0, T0 + 1, 1, "last")
            assert same(last, value), (key, last)
        # What comes back is a copy.
        obj = latest["object"][1]
        assert isinstance(obj, dict)
        obj["z"] = "mutated"
        again = await s.telemetry.latest("p1", "d1")
        assert same(again["object"][1], VALUES["object"])

    backend.run(scenario)


def test_a_bad_value_stores_nothing_of_its_call(backend: Backend) -> None:
    bad: list[tuple[object, type[Exception]]] = [
        (2**63, ValueError),
        (-(2**63) - 1, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        (object(), TypeError),
        ({1: "non-string key"}, TypeError),
        ({"a": {1, 2}}, TypeError),
    ]

    async def scenario(s: Storage) -> None:
        await setup(s)
        for value, error in bad:
            with pytest.raises(error):
                await s.telemetry.append(
                    "p1", "d1", [Point("ok", T0, 1), Point("bad", T0, value), Point("ok", T0, 2)]
                )
        with pytest.raises(TypeError):
            await s.telemetry.append("p1", "d1", [Point("ok", True, 1)])  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await s.telemetry.append("p1", "d1", [Point(7, T0, 1)])  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await s.attributes.upsert("p1", "d1", {"ok": 1, "bad": object()}, T0)
        with pytest.raises(TypeError):
            await s.events.append("p1", "d1", [DeviceEvent(T0, "m"), DeviceEvent(T0, "n", {1})])
        assert await s.telemetry.latest("p1", "d1") == {}
        assert await everything(s, "d1", "ok") == []
        assert await s.attributes.get("p1", "d1") == {}
        assert await s.events.list("p1", "d1", 0, 2**62, 10) == []

    backend.run(scenario)


def test_values_at_one_time_store_as_their_points(backend: Backend) -> None:
    """`PointsAt` (a real-time report's values) is read from its values straight:
    stored as its points would be, refused as they would be (value, then key, then ts)."""
    bad: list[tuple[PointsAt, type[Exception]]] = [
        (PointsAt(T0, {"ok": 1, "bad": 2**63}), ValueError),
        (PointsAt(T0, {"ok": 1, "bad": math.nan}), ValueError),
        (PointsAt(T0, {"ok": 1, "bad": object()}), TypeError),
        (PointsAt(T0, {"ok": 1, 7: 2}), TypeError),  # type: ignore[dict-item]
        (PointsAt(2**63, {"ok": 1}), ValueError),
        (PointsAt(True, {"ok": 1}), TypeError),
    ]

    async def scenario(s: Storage) -> None:
        await setup(s, "d1", "d2")
        for values, error in bad:
            with pytest.raises(error):
                await s.telemetry.append("p1", "d1", values)
        assert await s.telemetry.latest("p1", "d1") == {}
        await s.telemetry.append("p1", "d1", PointsAt(T0, dict(VALUES)))
        await s.telemetry.append("p1", "d2", [Point(k, T0, v) for k, v in VALUES.items()])
        latest, expected = (
            await s.telemetry.latest("p1", "d1"),
            await s.telemetry.latest("p1", "d2"),
        )
        assert list(latest) == list(expected)
        assert all(same(latest[k], expected[k]) for k in expected)
        for key in VALUES:
            assert await everything(s, "d1", key) == await everything(s, "d2", key)

    backend.run(scenario)


# ------------------------------------------------------------------ history and latest


def test_equal_timestamps_are_all_kept_in_arrival_order(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await setup(s, "d1", "d2")
        await s.telemetry.append("p1", "d1", [Point("t", T0, "a"), Point("t", T0, "b")])
        await s.telemetry.append("p1", "d1", [Point("t", T0, "c")])
        # Submitted together: one batch, still in the order submitted.
        await asyncio.gather(
            *(s.telemetry.append("p1", "d1", [Point("t", T0, f"g{i}")]) for i in range(5)),
            s.telemetry.append("p1", "d2", [Point("t", T0, "other")]),
        )
        await s.telemetry.append("p1", "d1", [Point("t", T0 - 1, "earlier"), Point("t", T0, "z")])
        rows = await s.telemetry.history("p1", "d1", "t", T0 - 1, T0 + 1, 100)
        assert [v for _, _, v in rows] == [
            "earlier",
            "a",
            "b",
            "c",
            "g0",
            "g1",
            "g2",
            "g3",
            "g4",
            "z",
        ]
        seqs = [seq for ts, seq, _ in rows if ts == T0]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert (await s.telemetry.latest("p1", "d1"))["t"] == (T0, "z")
        assert await everything(s, "d2", "t") == [(T0, "other")]

    backend.run(scenario)


def test_latest_is_the_newest_by_ts_then_by_arrival(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await setup(s, "d1", "d2")
        latest = s.telemetry.latest
        await s.telemetry.append("p1", "d1", [Point("t", T0, 1), Point("h", T0, "x")])
        assert await latest("p1", "d1") == {"t": (T0, 1), "h": (T0, "x")}
        # An older (historical) point goes into history only.
        await s.telemetry.append("p1", "d1", [Point("t", T0 - 1000, 2)])
        assert (await latest("p1", "d1"))["t"] == (T0, 1)
        assert await everything(s, "d1", "t") == [(T0 - 1000, 2), (T0, 1)]
        # Equal ts: the later arrival wins.
        await s.telemetry.append("p1", "d1", [Point("t", T0, 3)])
        assert (await latest("p1", "d1"))["t"] == (T0, 3)
        # Within one call: the newest by ts, whatever the order sent.
        await s.telemetry.append(
            "p1", "d1", [Point("t", T0 + 20, "new"), Point("t", T0 + 10, "mid"), Point("t", T0, 4)]
        )
        assert (await latest("p1", "d1"))["t"] == (T0 + 20, "new")
        # Within one batch: the same, across calls and devices.
        await asyncio.gather(
            s.telemetry.append("p1", "d1", [Point("t", T0 + 30, "a")]),
            s.telemetry.append("p1", "d2", [Point("t", T0 + 5, "d2-first")]),
            s.telemetry.append("p1", "d1", [Point("t", T0 + 25, "older")]),
            s.telemetry.append("p1", "d1", [Point("t", T0 + 30, "b")]),
            s.telemetry.append("p1", "d2", [Point("t", T0 + 1, "d2-older")]),
        )
        assert await latest("p1", "d1") == {"t": (T0 + 30, "b"), "h": (T0, "x")}
        assert await latest("p1", "d2") == {"t": (T0 + 5, "d2-first")}
        assert await latest("p1", "ghost") == {}
        assert await latest("p9", "d1") == {}

    backend.run(scenario)


def test_history_ranges_and_pages(backend: Backend) -> None:
    # 30 points over 10 distinct timestamps (three at each), plus noise around them.
    stamps = [T0 + 10 * (i // 3) for i in range(30)]

    async def scenario(s: Storage) -> None:
        await setup(s, "d1", "d2")
        for i in range(0, 30, 4):  # messages of up to 4 points
            await s.telemetry.append(
                "p1", "d1", [Point("t", stamps[j], j) for j in range(i, min(i + 4, 30))]
            )
        await s.telemetry.append("p1", "d1", [Point("other", T0, "x")])
        await s.telemetry.append("p1", "d2", [Point("t", T0, "d2")])
        full = await s.telemetry.history("p1", "d1", "t", T0, T0 + 100, 1000)
        assert [(ts, v) for ts, _, v in full] == list(zip(stamps, range(30), strict=True))
        # start inclusive, end exclusive
        part = await s.telemetry.history("p1", "d1", "t", T0 + 10, T0 + 30, 1000)
        assert [v for _, _, v in part] == [3, 4, 5, 6, 7, 8]
        assert await s.telemetry.history("p1", "d1", "t", T0 + 1, T0 + 10, 1000) == []
        for size in (1, 2, 3, 7, 29, 30, 31):
            seen: list[Any] = []
            after: tuple[int, int] | None = None
            while True:
                page = await s.telemetry.history("p1", "d1", "t", T0, T0 + 100, size, after)
                assert len(page) <= size
                seen += page
                if len(page) < size:
                    break
                after = (page[-1][0], page[-1][1])
            assert seen == full, size
        # A cursor inside a run of equal timestamps resumes after it.
        ts, seq, _ = full[4]
        rest = await s.telemetry.history("p1", "d1", "t", T0, T0 + 100, 3, (ts, seq))
        assert rest == full[5:8]
        assert await s.telemetry.history("p1", "d1", "t", T0, T0 + 100, 0) == []
        assert await s.telemetry.history("p1", "d1", "nope", T0, T0 + 100, 10) == []
        assert await s.telemetry.history("p1", "ghost", "t", T0, T0 + 100, 10) == []
        assert await everything(s, "d2", "t") == [(T0, "d2")]

    backend.run(scenario)


def test_missing_device(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await setup(s)
        for pid, name in (("p1", "ghost"), ("p9", "d1")):
            match = f"device {name!r} does not exist in product {pid!r}"
            with pytest.raises(NotFound, match=match):
                await s.telemetry.append(pid, name, [Point("t", T0, 1)])
            with pytest.raises(NotFound, match=match):
                await s.attributes.upsert(pid, name, {"a": 1}, T0)
            with pytest.raises(NotFound, match=match):
                await s.events.append(pid, name, [DeviceEvent(T0, "m")])
            assert await s.telemetry.latest(pid, name) == {}
            assert await s.attributes.get(pid, name) == {}
            assert await s.events.list(pid, name, 0, 2**62, 10) == []
        # In one batch, the missing device fails its own caller only.
        results = await asyncio.gather(
            s.telemetry.append("p1", "d1", [Point("t", T0, 1)]),
            s.telemetry.append("p1", "ghost", [Point("t", T0, 2)]),
            s.telemetry.append("p1", "d1", [Point("t", T0, 3)]),
            return_exceptions=True,
        )
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], NotFound)
        assert await everything(s, "d1", "t") == [(T0, 1), (T0, 3)]

    backend.run(scenario)


def test_append_now_is_append_as_a_future(backend: Backend) -> None:
    """The ingest path's form: None once stored, 0 for a missing device, a bad
    value or a failure as the future's exception; the same rows as `append`."""

    async def scenario(s: Storage) -> None:
        await setup(s)
        results = await asyncio.gather(
            s.telemetry.append_now("p1", "d1", [Point("t", T0, 1)]),
            s.telemetry.append_now("p1", "ghost", [Point("t", T0, 2)]),
            s.telemetry.append_now("p1", "d1", [Point("t", T0, 3)]),
            s.telemetry.append_now("p1", "d1", [Point("t", T0, math.nan)]),
            return_exceptions=True,
        )
        assert results[:3] == [None, 0, None]
        assert isinstance(results[3], ValueError)
        assert await everything(s, "d1", "t") == [(T0, 1), (T0, 3)]
        # `then`: once a write is durable, never for a missing device or a refused value.
        told: list[str] = []
        results = await asyncio.gather(
            s.telemetry.append_now("p1", "d1", [Point("t", T0, 4)], lambda: told.append("d1")),
            s.telemetry.append_now("p1", "ghost", [Point("t", T0, 5)], lambda: told.append("x")),
            s.telemetry.append_now(
                "p1", "d1", [Point("t", T0, math.inf)], lambda: told.append("y")
            ),
            return_exceptions=True,
        )
        assert results[:2] == [None, 0] and isinstance(results[2], ValueError)
        assert told == ["d1"]

    backend.run(scenario)


def test_concurrent_devices_keep_their_own_order(backend: Backend) -> None:
    names = [f"d{i:02d}" for i in range(20)]

    async def scenario(s: Storage) -> None:
        await setup(s, *names)
        calls = [
            s.telemetry.append("p1", name, [Point("n", T0 + (i * 7) % 5, i), Point("c", T0, i)])
            for i in range(10)
            for name in names
        ]
        await asyncio.gather(*calls)
        for name in ("d00", "d13", "d19"):
            assert [v for _, v in await everything(s, name, "c")] == list(range(10))
            expected = sorted(((T0 + (i * 7) % 5, i) for i in range(10)), key=lambda p: p[0])
            assert await everything(s, name, "n") == expected  # ts, then arrival
            latest = await s.telemetry.latest("p1", name)
            assert latest == {"n": (T0 + 4, 7), "c": (T0, 9)}  # i = 2 and 7 share ts + 4

    backend.run(scenario)


# ------------------------------------------------------------------ aggregates

START = T0
# bucket 0 [T0, T0+100): numbers 1, 2.5, 4 and a string and a bool (not numbers)
# bucket 1 [T0+100, T0+200): empty
# bucket 2 [T0+200, T0+300): no number at all: "a", False, then {"x": 1} at an equal ts
# bucket 3 [T0+300, T0+400): -2 and 6 at the same ts
# bucket 4 [T0+400, T0+500): 0.25; 99 at T0+500 (the end) and 42 before the start
MIXED = [
    Point("t", T0 - 1, 42),
    Point("t", T0, 1),
    Point("t", T0 + 20, "str"),
    Point("t", T0 + 30, True),
    Point("t", T0 + 50, 2.5),
    Point("t", T0 + 99, 4),
    Point("t", T0 + 200, "a"),
    Point("t", T0 + 250, False),
    Point("t", T0 + 250, {"x": 1}),
    Point("t", T0 + 300, -2),
    Point("t", T0 + 300, 6),
    Point("t", T0 + 450, 0.25),
    Point("t", T0 + 500, 99),
]
EXPECTED: dict[str, list[tuple[int, object]]] = {
    "avg": [(T0, 2.5), (T0 + 300, 2), (T0 + 400, 0.25)],
    "min": [(T0, 1), (T0 + 300, -2), (T0 + 400, 0.25)],
    "max": [(T0, 4), (T0 + 300, 6), (T0 + 400, 0.25)],
    "sum": [(T0, 7.5), (T0 + 300, 4), (T0 + 400, 0.25)],
    "count": [(T0, 5), (T0 + 200, 3), (T0 + 300, 2), (T0 + 400, 1)],
    "last": [(T0, 4), (T0 + 200, {"x": 1}), (T0 + 300, 6), (T0 + 400, 0.25)],
}


def test_aggregates_by_hand(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await setup(s, "d1", "d2")
        # Sent in a shuffled order, over several calls: buckets follow ts, last follows seq.
        order = [5, 0, 12, 3, 1, 2, 4, 6, 7, 9, 10, 8, 11]
        shuffled = [MIXED[i] for i in order]
        await s.telemetry.append("p1", "d1", shuffled[:4])
        await s.telemetry.append("p1", "d1", shuffled[4:9])
        await s.telemetry.append("p1", "d1", shuffled[9:])
        await s.telemetry.append("p1", "d2", [Point("t", T0 + 10, 1000)])  # another device
        await s.telemetry.append("p1", "d1", [Point("u", T0 + 10, 1000)])  # another key
        for function, expected in EXPECTED.items():
            got = await s.telemetry.aggregate("p1", "d1", "t", START, T0 + 500, 100, function)
            assert got == expected, function
            assert all(same(g[1], e[1]) for g, e in zip(got, expected, strict=True)), (
                function,
                got,
            )

    backend.run(scenario)


def test_aggregate_buckets_follow_start(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await setup(s)
        await s.telemetry.append("p1", "d1", MIXED)
        agg = s.telemetry.aggregate
        # Buckets start at `start`, not at a multiple of the interval.
        assert await agg("p1", "d1", "t", T0 + 50, T0 + 350, 100, "avg") == [
            (T0 + 50, 3.25),  # 2.5, 4
            (T0 + 250, 2),  # -2, 6 (False and the object are not numbers)
        ]
        assert await agg("p1", "d1", "t", T0 + 50, T0 + 350, 100, "count") == [
            (T0 + 50, 2),
            (T0 + 150, 1),
            (T0 + 250, 4),
        ]
        # A last bucket cut short by `end`.
        assert await agg("p1", "d1", "t", T0, T0 + 451, 300, "sum") == [(T0, 7.5), (T0 + 300, 4.25)]
        assert await agg("p1", "d1", "t", T0, T0 + 450, 300, "count") == [(T0, 8), (T0 + 300, 2)]
        # One bucket over everything; an interval of 1 ms.
        assert await agg("p1", "d1", "t", 0, 2**62, 2**62, "count") == [(0, 13)]
        assert await agg("p1", "d1", "t", T0 + 250, T0 + 301, 1, "last") == [
            (T0 + 250, {"x": 1}),
            (T0 + 300, 6),
        ]
        assert await agg("p1", "d1", "t", T0 + 100, T0 + 200, 10, "count") == []
        assert await agg("p1", "d1", "nope", T0, T0 + 500, 10, "count") == []
        assert await agg("p1", "ghost", "t", T0, T0 + 500, 10, "avg") == []
        with pytest.raises(ValueError, match="unknown aggregate"):
            await agg("p1", "d1", "t", T0, T0 + 500, 10, "median")
        with pytest.raises(ValueError, match="must be positive"):
            await agg("p1", "d1", "t", T0, T0 + 500, 0, "avg")

    backend.run(scenario)


def test_aggregate_numbers(backend: Backend) -> None:
    """Numbers are aggregated as doubles; whole results come back as ints."""

    async def scenario(s: Storage) -> None:
        await setup(s)
        values = [2**62, 2**62, 0.5, 0.25, -1, 3]
        await s.telemetry.append("p1", "d1", [Point("big", T0, v) for v in values[:2]])
        await s.telemetry.append("p1", "d1", [Point("small", T0, v) for v in values[2:]])
        agg = s.telemetry.aggregate
        [(_, total)] = await agg("p1", "d1", "big", T0, T0 + 1, 1, "sum")
        assert total == 2.0**63 and isinstance(total, float)  # beyond 2**53: a float
        [(_, top)] = await agg("p1", "d1", "big", T0, T0 + 1, 1, "max")
        assert top == 2.0**62 and isinstance(top, float)
        [(_, mean)] = await agg("p1", "d1", "small", T0, T0 + 1, 1, "avg")
        assert mean == 0.6875 and isinstance(mean, float)
        [(_, total)] = await agg("p1", "d1", "small", T0, T0 + 1, 1, "sum")
        assert total == 2.75
        [(_, low)] = await agg("p1", "d1", "small", T0, T0 + 1, 1, "min")
        assert low == -1 and type(low) is int
        [(_, count)] = await agg("p1", "d1", "small", T0, T0 + 1, 1, "count")
        assert count == 4 and type(count) is int

    backend.run(scenario)


# ------------------------------------------------------------------ attributes


def test_attributes_upsert_merges(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await setup(s, "d1", "d2")
        assert await s.attributes.get("p1", "d1") == {}
        await s.attributes.upsert("p1", "d1", {"a": 1, "b": "x", "c": 1.5}, T0)
        await s.attributes.upsert("p1", "d1", {"b": True, "d": {"n": [1, None]}}, T0 + 1)
        await s.attributes.upsert("p1", "d2", {"a": "d2"}, T0)
        got = await s.attributes.get("p1", "d1")
        expected = {"a": 1, "b": True, "c": 1.5, "d": {"n": [1, None]}}
        assert got == expected
        assert all(same(got[k], v) for k, v in expected.items())
        # Upserts submitted together apply in order: the last one wins.
        await asyncio.gather(
            *(s.attributes.upsert("p1", "d1", {"a": i, f"k{i}": i}, T0 + 2) for i in range(5))
        )
        got = await s.attributes.get("p1", "d1")
        assert got["a"] == 4 and {k: got[k] for k in ("k0", "k4")} == {"k0": 0, "k4": 4}
        assert await s.attributes.get("p1", "d2") == {"a": "d2"}
        # The same key twice in one call cannot happen (a mapping); "1" stays a string.
        await s.attributes.upsert("p1", "d2", {"a": "1"}, T0 + 3)
        assert same(await s.attributes.get("p1", "d2"), {"a": "1"})

    backend.run(scenario)


# ------------------------------------------------------------------ events


def test_events_ranges_and_pages(backend: Backend) -> None:
    params: list[object] = [None, {}, {"x": [1, 2.5]}, {"s": "ünï"}, [1], "text", 3, True]

    async def scenario(s: Storage) -> None:
        await setup(s, "d1", "d2")
        events = [
            DeviceEvent(T0 + 10 * (i // 3), f"m{i}", params[i % len(params)]) for i in range(24)
        ]
        await s.events.append("p1", "d1", events[:5])
        await asyncio.gather(*(s.events.append("p1", "d1", [e]) for e in events[5:12]))
        await s.events.append("p1", "d1", list(reversed(events[12:])))  # later ts first
        await s.events.append("p1", "d2", [DeviceEvent(T0, "other")])
        expected = events[:12] + sorted(reversed(events[12:]), key=lambda e: e.ts)
        full = await s.events.list("p1", "d1", T0, T0 + 1000, 1000)
        assert [e for _, _, e in full] == expected
        assert all(ts == e.ts for ts, _, e in full)
        assert all(same(e.params, x.params) for (_, _, e), x in zip(full, expected, strict=True))
        part = await s.events.list("p1", "d1", T0 + 10, T0 + 20, 1000)
        assert [e.method for _, _, e in part] == ["m3", "m4", "m5"]
        for size in (1, 4, 5, 24, 25):
            seen: list[Any] = []
            after: tuple[int, int] | None = None
            while True:
                page = await s.events.list("p1", "d1", T0, T0 + 1000, size, after)
                seen += page
                if len(page) < size:
                    break
                after = (page[-1][0], page[-1][1])
            assert seen == full, size
        assert await s.events.list("p1", "d1", T0, T0 + 1000, 0) == []
        assert await s.events.list("p1", "d1", T0 + 1000, T0 + 2000, 10) == []
        assert [e for _, _, e in await s.events.list("p1", "d2", 0, 2**62, 10)] == [
            DeviceEvent(T0, "other")
        ]

    backend.run(scenario)


# ------------------------------------------------------------------ retention and deletion


def test_product_retention_setting(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.products.add(product("p2"))
        assert (await s.products.get("p1")) == product("p1")
        assert (await s.products.get("p1")).retention_days is None  # type: ignore[union-attr]
        assert await s.products.update("p1", {"retention_days": 30}) is True
        got = await s.products.get("p1")
        assert got is not None and got.retention_days == 30
        assert [p.retention_days for p in await s.products.list(10)] == [30, None]
        assert await s.products.update("p1", {"retention_days": None}) is True
        assert (await s.products.get("p1")) == product("p1")
        assert await s.products.update("ghost", {"retention_days": 5}) is False
        assert await s.products.get("ghost") is None

    backend.run(scenario)


def test_product_settings_change_together(backend: Backend) -> None:
    """A product made with auto-registration off keeps it off; PATCH's settings land
    together, and an empty change only says whether the product exists."""

    async def scenario(s: Storage) -> None:
        await s.products.add(replace(product("p1"), gateway_auto_register=False))
        assert (await s.products.get("p1")).gateway_auto_register is False  # type: ignore[union-attr]
        changes = {"name": "Meters", "gateway_auto_register": True, "retention_days": 9}
        assert await s.products.update("p1", changes) is True
        assert await s.products.get("p1") == replace(product("p1"), name="Meters", retention_days=9)
        assert await s.products.update("p1", {}) is True
        assert await s.products.update("ghost", {}) is False

    backend.run(scenario)


def test_delete_before_deletes_only_old_rows_of_the_product(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(common, "DELETE_CHUNK", 4)  # several transactions per call
    cutoff = T0 + 100

    async def fill(s: Storage, pid: str, name: str) -> None:
        await s.telemetry.append(
            pid, name, [Point(k, T0 + dt, dt) for dt in (0, 50, 99, 100, 150) for k in "ab"]
        )
        await s.events.append(pid, name, [DeviceEvent(T0 + dt, "e") for dt in (10, 99, 100)])

    async def scenario(s: Storage) -> None:
        await setup(s, "d1", "d2")
        await setup(s, "d1", pid="p2")
        for pid, name in (("p1", "d1"), ("p1", "d2"), ("p2", "d1")):
            await fill(s, pid, name)
        await s.telemetry.append("p1", "d1", [Point("old", T0, "only old")])
        old = 2 * (6 + 2) + 1  # per device: 3 old points of each of 2 keys, 2 old events
        counts = []
        while True:
            n = await s.telemetry.delete_before("p1", cutoff, 5)
            assert 0 <= n <= 5
            counts.append(n)
            if n < 5:
                break
        assert sum(counts) == old
        assert await s.telemetry.delete_before("p1", cutoff, 100) == 0
        for name in ("d1", "d2"):
            for key in "ab":
                assert await everything(s, name, key) == [(T0 + 100, 100), (T0 + 150, 150)]
            events = await s.events.list("p1", name, 0, 2**62, 10)
            assert [e.ts for _, _, e in events] == [T0 + 100]
        # Latest values stay, even when their point has expired.
        assert (await s.telemetry.latest("p1", "d1"))["old"] == (T0, "only old")
        assert await everything(s, "d1", "old") == []
        # The other product is untouched; then one call takes all of it.
        assert len(await everything(s, "d1", "a", pid="p2")) == 5
        assert await s.telemetry.delete_before("p2", cutoff, 1000) == 8
        assert len(await everything(s, "d1", "a", pid="p2")) == 2
        assert await s.telemetry.delete_before("ghost", cutoff, 1000) == 0
        assert await s.telemetry.delete_before("p2", 2**62, 0) == 0

    backend.run(scenario)


def test_device_data_goes_with_the_device(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await setup(s, "d1", "d2")
        for name in ("d1", "d2"):
            await s.telemetry.append("p1", name, [Point("t", T0, name), Point("u", T0, 1)])
            await s.attributes.upsert("p1", name, {"a": name}, T0)
            await s.events.append("p1", name, [DeviceEvent(T0, "boot", {"n": name})])
        assert await s.devices.delete("p1", "d1") is True
        for call in (
            s.telemetry.append("p1", "d1", [Point("t", T0, 1)]),
            s.attributes.upsert("p1", "d1", {"a": 1}, T0),
            s.events.append("p1", "d1", [DeviceEvent(T0, "m")]),
        ):
            with pytest.raises(NotFound):
                await call
        await s.devices.add(device("p1", "d1"))  # a new device of the same name starts empty
        assert await s.telemetry.latest("p1", "d1") == {}
        assert await everything(s, "d1", "t") == []
        assert await s.telemetry.aggregate("p1", "d1", "t", 0, 2**62, 2**62, "count") == []
        assert await s.attributes.get("p1", "d1") == {}
        assert await s.events.list("p1", "d1", 0, 2**62, 10) == []
        assert await s.telemetry.delete_before("p1", 2**62, 1000) == 3  # d2's rows only
        assert await s.telemetry.latest("p1", "d2") == {"t": (T0, "d2"), "u": (T0, 1)}
        assert await s.attributes.get("p1", "d2") == {"a": "d2"}
        await s.telemetry.append("p1", "d1", [Point("t", T0 + 1, "new")])
        assert await everything(s, "d1", "t") == [(T0 + 1, "new")]

    backend.run(scenario)
