"""What devices reported: `/telemetry/latest`, `/telemetry`, `/attributes`, `/events`.

Times are Unix ms; `start` inclusive, `end` exclusive; results ascending. A
device with no data answers 200 with empty results.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from thingshub.api.schemas import ERRORS
from thingshub.services.history import HistoryService

router = APIRouter(
    prefix="/api/v1/products/{pid}/devices/{name}", tags=["telemetry"], responses=ERRORS
)

Ms = Annotated[int | None, Query(description="Unix milliseconds.")]


def _history(request: Request) -> HistoryService:
    service: HistoryService = request.app.state.ctx.history
    return service


@router.get("/telemetry/latest")
async def latest(pid: str, name: str, request: Request) -> dict[str, Any]:
    """`{"key": {"ts": <ms>, "value": v}, ...}`: the newest value of every key."""
    return await _history(request).latest(pid, name)


@router.get("/telemetry")
async def telemetry(
    pid: str,
    name: str,
    request: Request,
    key: Annotated[str | None, Query(description="The telemetry key.")] = None,
    start: Ms = None,
    end: Ms = None,
    interval: Annotated[int | None, Query(description="Bucket width in ms.")] = None,
    agg: Annotated[str | None, Query(description="avg, min, max, sum, count or last.")] = None,
    limit: Annotated[int | None, Query(description="Points a page (raw history).")] = None,
    cursor: str | None = None,
) -> dict[str, Any]:
    """`{"key", "points": [[ts, value], ...], "next"}`: the raw points of `key` in
    [start, end), paged; or, with `interval` and `agg`, one point per non-empty
    bucket [start + k*interval, start + (k+1)*interval), stamped with its start."""
    return await _history(request).telemetry(
        pid, name, key, start, end, limit=limit, cursor=cursor, interval=interval, agg=agg
    )


@router.get("/attributes")
async def attributes(pid: str, name: str, request: Request) -> dict[str, Any]:
    """`{"key": value, ...}` as last reported by the device."""
    return await _history(request).attribute_values(pid, name)


@router.get("/events")
async def events(
    pid: str,
    name: str,
    request: Request,
    start: Ms = None,
    end: Ms = None,
    limit: Annotated[int | None, Query(description="Events at most (default 1,000).")] = None,
    cursor: str | None = None,
) -> JSONResponse:
    """`[{"ts", "method", "params"}, ...]` ascending. When there are more than `limit`,
    the `X-Next-Cursor` header carries the cursor of the next page."""
    items, next_cursor = await _history(request).event_list(pid, name, start, end, limit, cursor)
    headers = {"X-Next-Cursor": next_cursor} if next_cursor else None
    body = [{"ts": e.ts, "method": e.method, "params": e.params} for e in items]
    return JSONResponse(body, headers=headers)
