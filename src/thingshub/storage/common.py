"""What the three storage backends share: error messages, search, tags, documents,
telemetry/attribute/event values and their checks, aggregates.

Rules:
- The three backends behave identically; everything a backend could decide
  differently (which clash is reported first, how case is folded, how tags
  are encoded) is decided here, once.
- A clash is reported by priority: the device name in its product, then the
  device number, then the user name. SQL backends learn *that* an insert
  failed from the database's unique constraints (never check-then-insert),
  then ask which of the fields clashed only to word the message.
- Search folds ASCII letters only (A-Z to a-z), as SQLite's `lower()` and
  PostgreSQL's `lower()` under the "C" collation do, and matches a plain
  substring: no character of the search text is a wildcard.
- An image document is stored as compact JSON text made by orjson: keys keep
  their order, so what is read back is byte-identical to what was written
  (a non-finite float, which JSON cannot carry, would be written as null;
  the core's limits refuse such values before they get here).
- Images: the version stored only increases (`save` refuses a new version
  not above the expected one, as a programming error), so an expected
  version can never match twice and two writers can never both win.
- Telemetry values, attribute values and event params are stored as compact
  JSON text made by orjson (`encode_value`), so every JSON type reads back
  as it was written: the string "1" stays a string, true stays true, 1.5
  stays 1.5, 1 stays an int (within signed 64 bits; beyond it, or a float
  that is not finite, is refused before anything is written). Beside the
  text, a point whose value is a number (a bool is not) carries it as a
  double in `num`, the column aggregates read.
- Aggregates (see `AGGREGATES`) are computed by the database: bucket k of
  [start, end) is [start + k*interval, start + (k+1)*interval), found by
  the integer division (ts - start) / interval (ts >= start, so it floors),
  stamped with its start; empty buckets are omitted. avg, min, max and sum
  read `num` only (in double precision; a bucket without a number is
  omitted), count counts every point, last is the value of the newest
  point by (ts, seq). A whole-number result of avg/min/max/sum is returned
  as an int (`aggregate_number`), so the backends answer alike. (Sums of
  numbers a double cannot add exactly may differ in their last bits between
  backends, which add in their own order; SQLite 3.43+ also compensates.)
- Values are checked and encoded in the caller (`point_rows`,
  `attribute_rows`, `event_rows`), before anything is written, so a bad
  value fails its caller only.
"""

from __future__ import annotations

import json
import math
import string
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from thingshub.core.errors import AlreadyExists, Conflict, NotFound, VersionConflict
from thingshub.core.model import Device, DeviceEvent, Point, PointsAt, StoredImage

# ------------------------------------------------------------------ errors


def product_exists(product_id: str) -> AlreadyExists:
    return AlreadyExists(f"product {product_id!r} already exists")


def product_missing(product_id: str) -> NotFound:
    return NotFound(f"product {product_id!r} does not exist")


def product_has_devices(product_id: str) -> Conflict:
    return Conflict(f"product {product_id!r} still has devices")


def device_clash(device: Device, field: str) -> AlreadyExists:
    """The AlreadyExists for `device` clashing on `field` (name, device_number,
    username, access_token, sub_address)."""
    if field == "name":
        return AlreadyExists(
            f"device name {device.name!r} already exists in product {device.product_id!r}"
        )
    if field == "device_number":
        return AlreadyExists(f"device_number {device.device_number!r} already exists")
    if field == "access_token":
        return AlreadyExists("this access_token belongs to another device")
    if field == "sub_address":
        return address_taken(device.gateway, device.sub_address)
    return AlreadyExists(f"username {device.username!r} already exists")


def address_taken(gateway: tuple[str, str] | None, sub_address: str | None) -> AlreadyExists:
    """The AlreadyExists of a sub_address another child of the gateway has."""
    where = f" of gateway {gateway[1]!r} of product {gateway[0]!r}" if gateway else ""
    return AlreadyExists(f"sub_address {sub_address!r} belongs to another sub-device{where}")


def first_clash(device: Device, existing: Iterable[Sequence[object]]) -> str | None:
    """Which field of `device` clashes with rows (product_id, name, device_number,
    username, access_token) already stored, by priority; None if none does."""
    fields: set[str] = set()
    for product_id, name, number, username, token in existing:
        if product_id == device.product_id and name == device.name:
            fields.add("name")
        if number == device.device_number:
            fields.add("device_number")
        if username == device.username:
            fields.add("username")
        if token is not None and token == device.access_token:
            fields.add("access_token")
    for field in ("name", "device_number", "username", "access_token"):
        if field in fields:
            return field
    return None


def device_missing(product_id: str, name: str) -> NotFound:
    return NotFound(f"device {name!r} does not exist in product {product_id!r}")


def image_conflict(
    product_id: str, name: str, expected: int, stored: int | None
) -> VersionConflict:
    """The VersionConflict of a save expecting `expected` when `stored` is there."""
    where = f"device {name!r} of product {product_id!r}"
    if stored is None:
        return VersionConflict(f"{where} has no image (expected version {expected})")
    if expected == 0:
        return VersionConflict(f"{where} already has an image (version {stored})")
    return VersionConflict(f"the image of {where} is at version {stored}, not {expected}")


def command_exists(cmd_id: str) -> AlreadyExists:
    return AlreadyExists(f"command id {cmd_id!r} already exists")


# ------------------------------------------------------------------ images


def check_save(image: StoredImage, expected_version: int) -> None:
    """Refuse a save that would not move the version forward (a caller's bug)."""
    if expected_version < 0 or image.version <= expected_version:
        raise ValueError(
            f"an image save must increase the version: version {image.version}"
            f" after expected version {expected_version}"
        )


def _mapping(value: object) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dump_document(document: Mapping[str, object]) -> str:
    """Compact JSON of an image document, keys in their order (TypeError if not JSON-able)."""
    return orjson.dumps(document, default=_mapping).decode()


def load_document(text: str | bytes) -> dict[str, object]:
    value = orjson.loads(text)
    if not isinstance(value, dict):
        raise TypeError("a stored image document is not a JSON object")
    return value


def now_ms() -> int:
    """Wall-clock ms, only for `updated_at`-style columns that operators read."""
    return int(time.time() * 1000)


# ------------------------------------------------------------------ commands

# `fail_unfinished(now_ms)` marks `sent` records `failed` with this detail and
# `answered_at = now_ms` (the time the record was closed; a `sent` record has
# no answer time yet).
SERVER_RESTARTED = "server restarted"


# ------------------------------------------------------------------ telemetry, attributes, events

AGGREGATES = ("avg", "min", "max", "sum", "count", "last")
NUMERIC_AGGREGATES = ("avg", "min", "max", "sum")  # over `num`; buckets without a number omitted

MIN_INT64 = -(2**63)
MAX_INT64 = 2**63 - 1
_EXACT = 2**53  # doubles hold every integer up to this exactly

#: Rows a retention or purge transaction deletes at most, so that the writer
#: (SQLite: the one connection's thread) is never held for long.
DELETE_CHUNK = 5000


_isfinite = math.isfinite
_dumps = orjson.dumps


def encode_value(value: object) -> tuple[float | None, str]:
    """(num, JSON text) of a telemetry value: num is the value as a double when it is
    a number (a bool is not), else None. ValueError for an int outside signed 64 bits
    or a float that is not finite; TypeError for what JSON cannot hold."""
    if value is True:
        return None, "true"
    if value is False:
        return None, "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a JSON number")
        return value, orjson.dumps(value).decode()
    if isinstance(value, int):
        if not MIN_INT64 <= value <= MAX_INT64:
            raise ValueError(f"{value!r} is outside the signed 64-bit range")
        return float(value), str(int(value))
    return None, dump_json(value)


def dump_json(value: object) -> str:
    """Compact JSON text of any JSON value (orjson; keys keep their order)."""
    try:
        return orjson.dumps(value, default=_mapping).decode()
    except orjson.JSONEncodeError as exc:  # a subclass of TypeError: say what, keep the type
        raise TypeError(f"not a JSON value: {exc}") from None


def decode_value(text: str | bytes) -> object:
    return orjson.loads(text)


def _check_name(what: str, value: object) -> str:
    if type(value) is not str:
        raise TypeError(f"a {what} must be a str, not {type(value).__name__}")
    return value


def check_ts(value: object) -> int:
    if type(value) is not int:
        raise TypeError(f"a timestamp must be an int (Unix ms), not {type(value).__name__}")
    if not MIN_INT64 <= value <= MAX_INT64:
        raise ValueError(f"timestamp {value!r} is outside the signed 64-bit range")
    return value


def point_rows(points: Sequence[Point]) -> list[tuple[str, int, float | None, str]]:
    """(key, ts, num, JSON text) of each point, checked and encoded (in the caller).

    The values devices send nearly always (a finite float, an int within 64
    bits, a bool, under a str key at an int ts) are checked and encoded here
    inline, on the ingest path's every point: one branch each instead of four
    calls. Anything else goes through `encode_value` and the checks, which
    raise as they always did (the value first, then the key, then the ts).
    Values at one time (`PointsAt`) are read from its values straight, their
    time checked once (a bad one: point by point, as any sequence)."""
    rows: list[tuple[str, int, float | None, str]] = []
    append = rows.append
    if type(points) is PointsAt:  # one time, the values as sent: no `Point` each
        at = points.ts
        if type(at) is int and MIN_INT64 <= at <= MAX_INT64:
            for name, item in points.values.items():
                if type(item) is float and _isfinite(item):
                    append((name, at, item, _dumps(item).decode()))
                elif type(item) is int and MIN_INT64 <= item <= MAX_INT64:
                    append((name, at, float(item), str(item)))
                elif item is True:
                    append((name, at, None, "true"))
                elif item is False:
                    append((name, at, None, "false"))
                else:
                    append((name, at, *encode_value(item)))
                if type(name) is not str:
                    _check_name("telemetry key", name)
            return rows
    for p in points:
        key, ts, value = p.key, p.ts, p.value
        if type(value) is float and _isfinite(value):
            num: float | None = value
            text = _dumps(value).decode()
        elif type(value) is int and MIN_INT64 <= value <= MAX_INT64:
            num, text = float(value), str(value)
        elif value is True:
            num, text = None, "true"
        elif value is False:
            num, text = None, "false"
        else:
            num, text = encode_value(value)
        if type(key) is not str:
            _check_name("telemetry key", key)
        if type(ts) is not int or not MIN_INT64 <= ts <= MAX_INT64:
            check_ts(ts)
        append((key, ts, num, text))
    return rows


def attribute_rows(values: Mapping[str, object]) -> list[tuple[str, str]]:
    """(name, JSON text) of each attribute, checked and encoded."""
    return [(_check_name("attribute name", k), dump_json(v)) for k, v in values.items()]


def event_rows(events: Sequence[DeviceEvent]) -> list[tuple[int, str, str, str | None]]:
    """(ts, method, JSON text of the params, type) of each event, checked and encoded."""
    return [
        (check_ts(e.ts), _check_name("event method", e.method), dump_json(e.params), e.type)
        for e in events
    ]


def check_aggregate(start: int, end: int, interval: int, function: str) -> None:
    """Refuse what the services never ask for (a caller's bug)."""
    if function not in AGGREGATES:
        raise ValueError(f"unknown aggregate {function!r}; one of {', '.join(AGGREGATES)}")
    if interval <= 0:
        raise ValueError(f"an aggregate interval must be positive, not {interval}")


def aggregate_number(value: float | int) -> float | int:
    """A numeric aggregate as answered: whole numbers (exact in a double) as ints."""
    number = float(value)
    if number.is_integer() and -_EXACT <= number <= _EXACT:
        return int(number)
    return number


def bucket_value(function: str, raw: Any) -> object:
    """The value a database returned for a bucket, as answered."""
    if function == "count":
        return int(raw)
    if function == "last":
        return decode_value(raw)
    return aggregate_number(raw)


def newest_per_key(
    points: Iterable[tuple[Any, str, int, int, str]],
) -> dict[tuple[Any, str], tuple[int, int, str]]:
    """(device, key) -> (ts, seq, value) of the newest of `points` (device, key, ts,
    seq, value) given in arrival order: a later point wins a tie on ts."""
    newest: dict[tuple[Any, str], tuple[int, int, str]] = {}
    for device_id, key, ts, seq, value in points:
        series = (device_id, key)
        current = newest.get(series)
        if current is None or ts >= current[0]:
            newest[series] = (ts, seq, value)
    return newest


# ------------------------------------------------------------------ search and tags

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def fold(text: str) -> str:
    """Lower-case ASCII letters only, like SQL `lower()` in SQLite and in PostgreSQL's "C"."""
    return text.translate(_ASCII_LOWER)


def matches(search: str, device: Device) -> bool:
    needle = fold(search)
    return needle in fold(device.name) or needle in fold(device.device_number)


def dump_tags(tags: Mapping[str, str]) -> str:
    return json.dumps(dict(tags), ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def load_tags(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    value = json.loads(text)
    return {str(k): str(v) for k, v in value.items()}
