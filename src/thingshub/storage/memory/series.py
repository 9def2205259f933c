"""Telemetry, attributes and events in dicts (the memory storage's part of them).

Rules:
- Same semantics as the SQL backends, checked by the contract suite
  (tests/storage/test_series.py); nothing awaits between reading and
  writing, so each call is atomic, as a transaction is in SQL.
- Values, attributes and event params are kept as the JSON text the SQL
  backends store (common.py), so what comes back is a fresh object; points
  of a key are kept in (ts, seq) order, `seq` being one counter of the
  store, so it orders equal timestamps by arrival.
- Aggregates are computed as the databases do: doubles, numbers added in
  (ts, seq) order, buckets by integer division of (ts - start).
- A device's `Series` is made on its first report and dropped with the
  device (memory/storage.py).
"""

from __future__ import annotations

import asyncio
import builtins
from bisect import bisect_left, insort
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from thingshub.core.errors import NotFound
from thingshub.core.model import DeviceEvent, Point
from thingshub.storage import common

Key = tuple[str, str]
Stored = tuple[int, int, float | None, str]  # a point: (ts, seq, num, JSON text)


@dataclass
class Series:
    """What one device reported."""

    points: dict[str, list[Stored]] = field(default_factory=dict)  # key -> by (ts, seq)
    latest: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # key -> ts, seq, text
    attributes: dict[str, str] = field(default_factory=dict)  # name -> JSON text
    #: ts, seq, method, params, type
    events: list[tuple[int, int, str, str, str | None]] = field(default_factory=list)


@dataclass
class SeriesStore:
    devices: Mapping[Key, object]  # the store's devices: a series needs its device
    series: dict[Key, Series]
    seq: int = 0  # the last seq given to a point or an event


def _series(data: SeriesStore, product_id: str, name: str) -> Series:
    """The series of an existing device (made on first use); NotFound if there is none."""
    key = (product_id, name)
    if key not in data.devices:
        raise common.device_missing(product_id, name)
    series = data.series.get(key)
    if series is None:
        series = data.series[key] = Series()
    return series


class MemoryTelemetry:
    def __init__(self, data: SeriesStore) -> None:
        self._data = data

    async def append(self, product_id: str, name: str, points: Sequence[Point]) -> None:
        self._append(product_id, name, points)

    def _append(self, product_id: str, name: str, points: Sequence[Point]) -> None:
        rows = common.point_rows(points)
        series = _series(self._data, product_id, name)
        stored = []
        for key, ts, num, text in rows:
            self._data.seq += 1
            insort(series.points.setdefault(key, []), (ts, self._data.seq, num, text))
            stored.append((None, key, ts, self._data.seq, text))
        for (_, key), newest in common.newest_per_key(stored).items():
            current = series.latest.get(key)
            if current is None or newest[0] >= current[0]:
                series.latest[key] = newest

    def append_now(
        self,
        product_id: str,
        name: str,
        points: Sequence[Point],
        then: Callable[[], None] | None = None,
    ) -> asyncio.Future[int | None]:
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        try:
            self._append(product_id, name, points)
        except NotFound:
            future.set_result(0)
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(None)
            if then is not None:
                then()
        return future

    #: No writer to batch with: a settled future, as `append_now`.
    append_settled = append_now

    def append_devices_settled(
        self, devices: Sequence[tuple[str, str, Sequence[Point]]]
    ) -> asyncio.Future[tuple[object, ...] | None]:
        """Each device's points appended as `append_now` would (nothing awaits
        between them: one write), their outcomes in one future."""
        outcomes: list[object] = []
        for product_id, name, points in devices:
            try:
                self._append(product_id, name, points)
            except NotFound:
                outcomes.append(0)
            except Exception as exc:
                outcomes.append(exc)
            else:
                outcomes.append(None)
        future: asyncio.Future[tuple[object, ...] | None] = (
            asyncio.get_running_loop().create_future()
        )
        future.set_result(None if all(o is None for o in outcomes) else tuple(outcomes))
        return future

    async def latest(self, product_id: str, name: str) -> dict[str, tuple[int, object]]:
        series = self._data.series.get((product_id, name))
        if series is None:
            return {}
        return {k: (ts, common.decode_value(text)) for k, (ts, _, text) in series.latest.items()}

    def _range(self, product_id: str, name: str, key: str, start: int) -> list[Stored]:
        series = self._data.series.get((product_id, name))
        points = series.points.get(key, []) if series is not None else []
        return points[bisect_left(points, (start,)) :]

    async def history(
        self,
        product_id: str,
        name: str,
        key: str,
        start: int,
        end: int,
        limit: int,
        after: tuple[int, int] | None = None,
    ) -> builtins.list[tuple[int, int, object]]:
        out: builtins.list[tuple[int, int, object]] = []
        if limit <= 0:
            return out
        first = start if after is None else max(start, after[0])
        for ts, seq, _, text in self._range(product_id, name, key, first):
            if ts >= end or len(out) == limit:
                break
            if after is None or (ts, seq) > after:
                out.append((ts, seq, common.decode_value(text)))
        return out

    async def aggregate(
        self,
        product_id: str,
        name: str,
        key: str,
        start: int,
        end: int,
        interval: int,
        function: str,
    ) -> builtins.list[tuple[int, object]]:
        common.check_aggregate(start, end, interval, function)
        buckets: dict[int, builtins.list[Stored]] = {}
        for point in self._range(product_id, name, key, start):
            if point[0] >= end:
                break
            buckets.setdefault((point[0] - start) // interval, []).append(point)
        out: builtins.list[tuple[int, object]] = []
        for bucket, points in buckets.items():  # ascending, as the points are
            value = _aggregate(function, points)
            if value is not None:
                out.append((start + bucket * interval, value))
        return out

    async def delete_before(self, product_id: str, before: int, limit: int) -> int:
        """Points first, then events (as the SQL backends do)."""
        deleted = 0
        devices = [s for k, s in sorted(self._data.series.items()) if k[0] == product_id]
        for points in [p for series in devices for p in series.points.values()]:
            deleted += _drop_before(points, before, limit - deleted)
        for series in devices:
            deleted += _drop_before(series.events, before, limit - deleted)
        return deleted


def _drop_before(rows: builtins.list[Any], before: int, room: int) -> int:
    """Delete at most `room` of `rows` (sorted by ts first) older than `before`."""
    count = min(bisect_left(rows, (before,)), room)
    if count <= 0:
        return 0
    del rows[:count]
    return count


def _aggregate(function: str, points: builtins.list[Stored]) -> object | None:
    """The value of one bucket (points in (ts, seq) order); None: the bucket is omitted."""
    if function == "count":
        return len(points)
    if function == "last":
        return common.decode_value(points[-1][3])
    numbers = [p[2] for p in points if p[2] is not None]
    if not numbers:
        return None
    if function == "min":
        return common.aggregate_number(min(numbers))
    if function == "max":
        return common.aggregate_number(max(numbers))
    total = 0.0
    for number in numbers:  # in order, as the databases add them
        total += number
    return common.aggregate_number(total if function == "sum" else total / len(numbers))


class MemoryAttributes:
    def __init__(self, data: SeriesStore) -> None:
        self._data = data

    async def upsert(
        self, product_id: str, name: str, values: Mapping[str, object], ts: int
    ) -> None:
        rows = common.attribute_rows(values)
        common.check_ts(ts)
        _series(self._data, product_id, name).attributes.update(rows)

    async def get(self, product_id: str, name: str) -> dict[str, object]:
        series = self._data.series.get((product_id, name))
        if series is None:
            return {}
        return {k: common.decode_value(text) for k, text in series.attributes.items()}


class MemoryEvents:
    def __init__(self, data: SeriesStore) -> None:
        self._data = data

    async def append(self, product_id: str, name: str, events: Sequence[DeviceEvent]) -> None:
        rows = common.event_rows(events)
        series = _series(self._data, product_id, name)
        for ts, method, params, kind in rows:
            self._data.seq += 1
            insort(series.events, (ts, self._data.seq, method, params, kind))

    async def list(
        self,
        product_id: str,
        name: str,
        start: int,
        end: int,
        limit: int,
        after: tuple[int, int] | None = None,
    ) -> builtins.list[tuple[int, int, DeviceEvent]]:
        out: builtins.list[tuple[int, int, DeviceEvent]] = []
        series = self._data.series.get((product_id, name))
        if series is None or limit <= 0:
            return out
        first = start if after is None else max(start, after[0])
        for ts, seq, method, params, kind in series.events[bisect_left(series.events, (first,)) :]:
            if ts >= end or len(out) == limit:
                break
            if after is None or (ts, seq) > after:
                out.append((ts, seq, DeviceEvent(ts, method, common.decode_value(params), kind)))
        return out
