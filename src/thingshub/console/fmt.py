"""How the console writes times, durations, values and errors (one place, so every
page reads the same).

Times are shown in the server's local time zone: the console renders on the
server, and operators of one fleet share its clock.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from thingshub.core.errors import ThingsHubError


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def when(ms: int | None) -> str:
    """A Unix time in ms as `2024-05-01 12:00:03` (or an em dash for none)."""
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def clock(ms: int | None) -> str:
    """The time of day (`12:00:03`) for today, else the date and time."""
    if ms is None:
        return "—"
    moment = datetime.fromtimestamp(ms / 1000)
    if moment.date() == datetime.now().date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M")


def ago(ms: int | None, now: int | None = None) -> str:
    """How long ago, coarsely: `just now`, `42 s ago`, `5 min ago`, `3 h ago`, `2 d ago`."""
    if ms is None:
        return "never"
    seconds = max(0, ((now if now is not None else now_ms()) - ms) // 1000)
    if seconds < 2:
        return "just now"
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


def value(v: Any) -> str:
    """A reported value as text: numbers and strings as they are, the rest as JSON."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, int | float):
        return f"{v:g}" if isinstance(v, float) else str(v)
    return json.dumps(v, ensure_ascii=False, separators=(", ", ": "))


def pretty(doc: Any) -> str:
    """JSON for reading (indented, keys in their order)."""
    return json.dumps(doc, indent=2, ensure_ascii=False)


def rate(per_second: float) -> str:
    if per_second >= 100:
        return f"{per_second:,.0f}"
    if per_second >= 10:
        return f"{per_second:.1f}"
    return f"{per_second:.2f}"


def error(exc: ThingsHubError) -> str:
    """The sentence the HTTP API would answer, with the protocol's code when there is one."""
    if exc.err_code is None:
        return exc.message
    err_msg = exc.err_msg or ""
    return f"{exc.message} (err_code {exc.err_code}{': ' + err_msg if err_msg else ''})"
