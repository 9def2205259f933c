"""How the console writes a thing model (data types, ranges, params) and reads what an
operator typed into a typed input. Plain functions: no page, no service.

Rules:
- Types read as the model says them (`int32`, `enum`, `struct`, ...); a range is
  `min … max unit`, or `≥ min` / `≤ max` when the model leaves a bound open
  (the int32/int64 limits the model did not set are not shown); an enum lists its `key: label`s, a
  string its length, an array its item type and length, a struct its members.
- Reading an input never judges a value against the model's rules: it only
  turns what a widget holds into the JSON value the type calls for (an
  integral number into an int for integer types, a JSON text for structs and
  arrays); the service checks it and its sentence (302, 309, 313) is what the
  operator sees.
- A TSL file is strict JSON in UTF-8 (a byte-order mark is allowed); a file that
  is not is refused here with the parser's words (line and column).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Final

from thingshub.console import fmt
from thingshub.core import jsontext
from thingshub.core.errors import InvalidRequest
from thingshub.core.thingmodel import INT_RANGES, DataType, Param

#: Badge colours of the event types (the theme's names).
EVENT_COLORS: Final = {"info": "info", "alert": "warning", "error": "negative"}
CALL_TYPES: Final = {"s": "sync", "a": "async"}
ACCESS: Final = {"r": "r (read only)", "rw": "rw (read, write)"}
#: Bounds beyond this are not given to the browser's number input (JS numbers are doubles).
JS_SAFE: Final = 2**53


def type_text(data_type: DataType) -> str:
    """The type's name; an array's with its item type (`array<float>`)."""
    if data_type.type == "array" and data_type.item is not None:
        return f"array<{data_type.item.type}>"
    return data_type.type


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def bounds(data_type: DataType) -> tuple[float | None, float | None]:
    """The bounds the model set (None where it left one open: the type's own limits
    of int32/int64 do not count)."""
    low, high = data_type.min, data_type.max
    limits = INT_RANGES.get(data_type.type)
    if limits is not None:
        low = None if low == limits[0] else low
        high = None if high == limits[1] else high
    return low, high


def range_text(data_type: DataType) -> str:
    """What the type admits, shortly: `-40 … 125 °C`, `0: off, 1: on`, `≤ 64 chars`."""
    kind = data_type.type
    unit = f" {data_type.unit}" if data_type.unit else ""
    if kind in ("int32", "int64", "float", "double"):
        low, high = bounds(data_type)
        if low is None and high is None:
            return unit.strip() or "—"
        if low is None:
            return f"≤ {_number(high or 0)}{unit}"
        if high is None:
            return f"≥ {_number(low)}{unit}"
        return f"{_number(low)} … {_number(high)}{unit}"
    if kind == "enum":
        return ", ".join(f"{k}: {v}" for k, v in data_type.enum.items())
    if kind == "bool":
        return "true / false"
    if kind == "string":
        return f"≤ {data_type.length} chars" if data_type.length else "text"
    if kind == "date":
        return "Unix time, ms"
    if kind == "bitMap":
        return f"{data_type.length} bits"
    if kind == "struct":
        return (
            "{"
            + ", ".join(f"{m.identifier}: {type_text(m.data_type)}" for m in data_type.members)
            + "}"
        )
    if kind == "array" and data_type.item is not None:
        inner = range_text(data_type.item)
        limit = f"≤ {data_type.length} items"
        return limit if inner in ("—", "text") else f"{limit}; {inner}"
    return "—"


def param_text(param: Param) -> str:
    """`level (Level): int32, 0 … 10`: a param's identifier, name, type and range."""
    named = "" if param.name == param.identifier else f" ({param.name})"
    shown = range_text(param.data_type)
    extra = "" if shown == "—" else f", {shown}"
    return f"{param.identifier}{named}: {type_text(param.data_type)}{extra}"


def params_text(params: Iterable[Param]) -> list[str]:
    return [param_text(p) for p in params]


def value_text(data_type: DataType | None, value: object) -> str:
    """A reported value with its enum label or unit, when the model gives one."""
    shown = fmt.value(value)
    if data_type is None:
        return shown
    if data_type.type == "enum" and isinstance(value, int) and value in data_type.enum:
        return f"{shown} ({data_type.enum[value]})"
    if data_type.unit and isinstance(value, int | float) and not isinstance(value, bool):
        return f"{shown} {data_type.unit}"
    return shown


def read_value(data_type: DataType, raw: object, where: str) -> object:
    """The JSON value for what a typed input holds (see the module's rules)."""
    kind = data_type.type
    if kind in ("struct", "array"):
        text = str(raw or "").strip()
        if not text:
            raise InvalidRequest(f"{where}: a value is needed (JSON)")
        try:
            return json.loads(text)
        except ValueError as exc:
            raise InvalidRequest(f"{where}: not JSON ({exc})") from None
    if kind == "bool":
        return bool(raw)
    if kind == "string":
        return "" if raw is None else str(raw)
    if raw is None or raw == "":
        raise InvalidRequest(f"{where}: a value is needed")
    if kind in ("int32", "int64", "enum", "date", "bitMap"):
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        return raw
    return raw


def read_model_file(data: bytes) -> object:
    """The JSON document of a TSL file, read as strictly as the HTTP API reads a body;
    InvalidRequest naming the fault (with its line and column where there is one)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidRequest("the file is not UTF-8 text (a TSL file is JSON)") from None
    try:
        return jsontext.loads_unicode(text)
    except jsontext.JsonError as exc:
        raise InvalidRequest(f"the file is not JSON: {exc}") from None
