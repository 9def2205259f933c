"""OneNET's legacy data points: `$sys/{pid}/{name}/dp/post/json`.

Rules:
- A post is {"id": 0..2**31-1, "dp": {"<stream>": [{"v": value, "t": Unix s?}, ...]}};
  each stream becomes a telemetry key (1-128 characters), each `v` a point
  at `t` (seconds; no `t`: when the platform received it). Id 0 is taken:
  OneNET's own device SDK (OneNET_AIO_c, its MQTT kit) numbers its posts
  from 0 and waits for the answer carrying that id.
- Values follow the rules every dialect shares (core/values.py).
- The answer is `dp/post/json/accepted` {"id"} once stored, or
  `dp/post/json/rejected` {"id": <the id, -1 when unreadable>, "err_code":
  98, "err_msg": "Illegal Data", "detail": <what is wrong>}: OneNET's only
  code for it.
"""

from __future__ import annotations

from typing import Any, Final

from thingshub.core import jsontext, values
from thingshub.core.errors import InvalidRequest
from thingshub.core.model import Point

ILLEGAL_DATA: Final = 98
ILLEGAL_DATA_MSG: Final = "Illegal Data"
MAX_ID: Final = 2**31 - 1
MAX_POINTS: Final = 10_000


class PointsError(InvalidRequest):
    """Data points broke a rule; `id` is the post's id (-1 when unreadable)."""

    def __init__(self, message: str, id: int = -1) -> None:
        super().__init__(message, err_code=ILLEGAL_DATA, err_msg=ILLEGAL_DATA_MSG)
        self.id = id


def parse(payload: bytes, now_ms: int) -> tuple[int, list[Point]]:
    """(id, points) of a post, or PointsError."""
    try:
        body = jsontext.loads(bytes(payload))
    except (UnicodeDecodeError, jsontext.JsonError, RecursionError):
        raise PointsError("the payload is not UTF-8 JSON") from None
    if not isinstance(body, dict):
        raise PointsError("the payload must be a JSON object {id, dp}")
    post_id = body.get("id")
    if isinstance(post_id, bool) or not isinstance(post_id, int) or not 0 <= post_id <= MAX_ID:
        raise PointsError(f"id must be an integer from 0 to {MAX_ID}")
    streams = body.get("dp")
    if not isinstance(streams, dict) or not streams:
        raise PointsError("dp must be an object of streams", post_id)
    points: list[Point] = []
    for stream, entries in streams.items():
        problem = values.name_problem(stream)
        if problem:
            raise PointsError(f"stream {values.show(stream)} {problem}", post_id)
        if not isinstance(entries, list) or not entries:
            raise PointsError(f"{stream}: an array of {{v, t?}} is expected", post_id)
        for index, entry in enumerate(entries):
            points.append(_point(stream, index, entry, now_ms, post_id))
            if len(points) > MAX_POINTS:
                raise PointsError(f"more than {MAX_POINTS} points", post_id)
    return post_id, points


def _point(stream: str, index: int, entry: Any, now_ms: int, post_id: int) -> Point:
    at = f"{stream}[{index}]"
    if not isinstance(entry, dict) or "v" not in entry:
        raise PointsError(f"{at}: a point is an object holding v", post_id)
    problem = values.entry_problem(stream, entry["v"])
    if problem:
        raise PointsError(f"{at}: {problem}", post_id)
    t = entry.get("t")
    if t is None:
        return Point(stream, now_ms, entry["v"])
    if isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t < 2**40:
        raise PointsError(f"{at}: t must be Unix seconds", post_id)
    return Point(stream, round(t * 1000), entry["v"])


def accepted(post_id: int) -> dict[str, Any]:
    return {"id": post_id}


def rejected(post_id: int, detail: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"id": post_id, "err_code": ILLEGAL_DATA, "err_msg": ILLEGAL_DATA_MSG}
    if detail:
        body["detail"] = detail
    return body
