"""What devices reported: `/telemetry/latest`, `/telemetry`, `/attributes`, `/events`.

Times are Unix ms; `start` inclusive, `end` exclusive; results ascending. A
device with no data answers 200 with empty results.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from thingshub.api.deps import History
from thingshub.api.params import ApiRoute, DeviceName, Ms, PointCursor, ProductId
from thingshub.api.schemas import ERRORS
from thingshub.core.jsontext import INT64_MAX
from thingshub.services.history import MAX_LIMIT

router = APIRouter(
    prefix="/api/v1/products/{pid}/devices/{name}",
    tags=["telemetry"],
    responses=ERRORS,
    route_class=ApiRoute,
)

Start = Annotated[Ms, Query(description="Unix ms, inclusive.")]
End = Annotated[Ms, Query(description="Unix ms, exclusive; after start.")]
HistoryLimit = Annotated[
    int | None, Query(ge=1, le=MAX_LIMIT, description="Items a page (default 1,000).")
]


@router.get("/telemetry/latest")
async def latest(pid: ProductId, name: DeviceName, history: History) -> dict[str, Any]:
    """`{"key": {"ts": <ms>, "value": v}, ...}`: the newest value of every key."""
    return await history.latest(pid, name)


@router.get("/telemetry")
async def telemetry(
    pid: ProductId,
    name: DeviceName,
    history: History,
    key: Annotated[str, Query(min_length=1, description="The telemetry key.")],
    start: Start,
    end: End,
    interval: Annotated[
        int | None,
        Query(ge=1, le=INT64_MAX, description="Bucket width in ms (default: the whole range)."),
    ] = None,
    agg: Annotated[
        Literal["avg", "min", "max", "sum", "count", "last"] | None,
        Query(description="The aggregate of each bucket (default avg, with interval)."),
    ] = None,
    limit: HistoryLimit = None,
    cursor: PointCursor = None,
) -> dict[str, Any]:
    """`{"key", "points": [[ts, value], ...], "next"}`: the raw points of `key` in
    [start, end), paged; or, with `interval` and/or `agg`, one point per non-empty
    bucket [start + k*interval, start + (k+1)*interval), stamped with its start.
    At most 10,000 buckets: (end - start) / interval over that is 400, a rule
    between parameters that OpenAPI cannot state."""
    return await history.telemetry(
        pid, name, key, start, end, limit=limit, cursor=cursor, interval=interval, agg=agg
    )


@router.get("/attributes")
async def attributes(pid: ProductId, name: DeviceName, history: History) -> dict[str, Any]:
    """`{"key": value, ...}` as last reported by the device."""
    return await history.attribute_values(pid, name)


@router.get("/events")
async def events(
    pid: ProductId,
    name: DeviceName,
    history: History,
    start: Start,
    end: End,
    limit: HistoryLimit = None,
    cursor: PointCursor = None,
) -> JSONResponse:
    """`[{"ts", "method", "params"}, ...]` ascending, with `type` (info, alert, error)
    where the product's thing model gives the event one. When there are more than
    `limit`, the `X-Next-Cursor` header carries the cursor of the next page."""
    items, next_cursor = await history.event_list(pid, name, start, end, limit, cursor)
    headers = {"X-Next-Cursor": next_cursor} if next_cursor else None
    body = [
        {"ts": e.ts, "method": e.method, "params": e.params}
        if e.type is None
        else {"ts": e.ts, "method": e.method, "params": e.params, "type": e.type}
        for e in items
    ]
    return JSONResponse(body, headers=headers)
