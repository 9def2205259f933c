"""Page cursors: where the next page of a list starts.

Rules:
- A cursor names a position, not a saved query: every well-formed cursor is
  valid (a position past the end gives an empty page), so the cursor format
  is exactly its pattern, and the API can publish that pattern.
- Lists ordered by an identifier (products, devices, firmware, OTA tasks):
  the last identifier itself, 1-64 of `[A-Za-z0-9_.-]`; lists of devices
  of several products (a gateway's sub-devices): `{product id}:{name}`.
- Time series (telemetry points, events): `{ts}.{seq}` of the last point;
  command records: `{created_at}.{cmd_id}` of the last record (newest first).
  Numbers outside the signed 64-bit range are read as its ends, a position
  past every stored value.
- A malformed cursor is an `InvalidRequest`.
"""

from __future__ import annotations

import re

from thingshub.core.errors import InvalidRequest
from thingshub.core.jsontext import INT64_MAX, INT64_MIN

KEY_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
POINT_PATTERN = r"^-?[0-9]{1,19}\.[0-9]{1,19}$"
COMMAND_PATTERN = r"^-?[0-9]{1,19}\.[A-Za-z0-9_.-]{1,64}$"
PAIR_PATTERN = r"^[A-Za-z0-9_.-]{1,64}:[A-Za-z0-9_.-]{1,64}$"

_KEY = re.compile(KEY_PATTERN)
_POINT = re.compile(POINT_PATTERN)
_COMMAND = re.compile(COMMAND_PATTERN)
_PAIR = re.compile(PAIR_PATTERN)


def _malformed() -> InvalidRequest:
    return InvalidRequest("cursor is malformed: give the `next` of the previous page")


def _int64(digits: str) -> int:
    return max(INT64_MIN, min(INT64_MAX, int(digits)))


def key(last: str) -> str:
    return last


def after_key(cursor: str | None) -> str | None:
    if not cursor:
        return None
    if not _KEY.fullmatch(cursor):
        raise _malformed()
    return cursor


def point(ts: int, seq: int) -> str:
    return f"{ts}.{seq}"


def after_point(cursor: str | None) -> tuple[int, int] | None:
    if not cursor:
        return None
    if not _POINT.fullmatch(cursor):
        raise _malformed()
    ts, _, seq = cursor.partition(".")
    return _int64(ts), _int64(seq)


def command(created_at: int, cmd_id: str) -> str:
    return f"{created_at}.{cmd_id}"


def before_command(cursor: str | None) -> tuple[int, str] | None:
    if not cursor:
        return None
    if not _COMMAND.fullmatch(cursor):
        raise _malformed()
    created, _, cmd_id = cursor.partition(".")
    return _int64(created), cmd_id


def pair(product_id: str, name: str) -> str:
    return f"{product_id}:{name}"


def after_pair(cursor: str | None) -> tuple[str, str] | None:
    if not cursor:
        return None
    if not _PAIR.fullmatch(cursor):
        raise _malformed()
    product_id, _, name = cursor.partition(":")
    return product_id, name
