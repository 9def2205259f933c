"""Reading what devices reported: latest values, history, aggregates, attributes, events.

Rules (the README's HTTP API):
- Times are Unix ms; `start` is inclusive, `end` exclusive; results ascending.
- History pages with a cursor (the last point's (ts, seq), core/cursors.py); at most
  `limit` points a page (default 1,000, at most 10,000).
- `start >= end` is an empty range (empty results, not an error).
- Aggregates (`interval` and/or `agg`; `agg` defaults to avg, `interval` to
  the whole range) are computed in the database: bucket k covers
  [start + k*interval, start + (k+1)*interval), is stamped with its start, and
  empty buckets are omitted. At most 10,000 buckets a query.
- A device with no data answers empty results, never 404 (an unknown device
  or product is 404).
"""

from __future__ import annotations

from typing import Any

from thingshub.core import cursors
from thingshub.core.errors import InvalidRequest
from thingshub.core.model import DeviceEvent
from thingshub.core.ports import AttributeRepo, EventRepo, TelemetryRepo
from thingshub.services.devices import DeviceService

AGGREGATES = ("avg", "min", "max", "sum", "count", "last")
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
MAX_BUCKETS = 10_000


def _cursor(ts: int, seq: int) -> str:
    return cursors.point(ts, seq)


def _after(cursor: str | None) -> tuple[int, int] | None:
    return cursors.after_point(cursor)


def _range(start: int | None, end: int | None) -> tuple[int, int]:
    if start is None or end is None:
        raise InvalidRequest("start and end (Unix ms) are required")
    return start, end  # start >= end is an empty range: empty results


def _limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}")
    return limit


class HistoryService:
    def __init__(
        self,
        devices: DeviceService,
        points: TelemetryRepo,
        attributes: AttributeRepo,
        events: EventRepo,
    ) -> None:
        self.devices = devices
        self.points = points
        self.attributes = attributes
        self.events = events

    async def latest(self, product_id: str, name: str) -> dict[str, dict[str, Any]]:
        await self.devices.get_device(product_id, name)
        latest = await self.points.latest(product_id, name)
        return {key: {"ts": ts, "value": value} for key, (ts, value) in latest.items()}

    async def telemetry(
        self,
        product_id: str,
        name: str,
        key: str | None,
        start: int | None,
        end: int | None,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        interval: int | None = None,
        agg: str | None = None,
    ) -> dict[str, Any]:
        if not key:
            raise InvalidRequest("key is required")
        start, end = _range(start, end)
        await self.devices.get_device(product_id, name)
        if interval is None and agg is None:
            size = _limit(limit)
            rows = await self.points.history(
                product_id, name, key, start, end, size + 1, _after(cursor)
            )
            more = len(rows) > size
            rows = rows[:size]
            next_cursor = _cursor(rows[-1][0], rows[-1][1]) if more else None
            return {
                "key": key,
                "points": [[ts, value] for ts, _, value in rows],
                "next": next_cursor,
            }
        if agg is None:
            agg = "avg"
        if interval is None:
            interval = max(end - start, 1)  # one bucket: the whole range
        if agg not in AGGREGATES:
            raise InvalidRequest(f"agg must be one of {', '.join(AGGREGATES)}")
        if interval <= 0:
            raise InvalidRequest("interval must be a positive number of milliseconds")
        if (end - start) // interval > MAX_BUCKETS:
            raise InvalidRequest(f"at most {MAX_BUCKETS} buckets: widen the interval")
        buckets = await self.points.aggregate(product_id, name, key, start, end, interval, agg)
        return {"key": key, "points": [[ts, value] for ts, value in buckets], "next": None}

    async def attribute_values(self, product_id: str, name: str) -> dict[str, Any]:
        await self.devices.get_device(product_id, name)
        return await self.attributes.get(product_id, name)

    async def event_list(
        self,
        product_id: str,
        name: str,
        start: int | None,
        end: int | None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> tuple[list[DeviceEvent], str | None]:
        start, end = _range(start, end)
        await self.devices.get_device(product_id, name)
        size = _limit(limit)
        rows = await self.events.list(product_id, name, start, end, size + 1, _after(cursor))
        more = len(rows) > size
        rows = rows[:size]
        return [e for _, _, e in rows], (_cursor(rows[-1][0], rows[-1][1]) if more else None)
