"""The data types of a thing model: what a dataType's `specs` may say, and which
values each type admits.

Rules:
- A dataType is {"type", "specs"?}. The model is refused (ModelError) when
  a type is unknown, a bound is not a number or min > max, an enum has no
  key or a key that is not an integer, a length is out of its range, or a
  struct holds a struct or an array; array items are one of ARRAY_ITEMS.
  Bounds of int32/int64 are clamped to the type's range. A param is
  {identifier, name, dataType}; its identifier matches
  `^$?[A-Za-z0-9_]{1,50}$` and is used once in its list.
- Values (`check`): int32/int64 integers in the type's range and [min,
  max]; float/double finite numbers in [min, max]; numeric types also take
  a string holding a decimal number (stored as a number) and integral
  floats for integer types; enum an integer among the keys; bool
  true/false or 0/1 (stored as a boolean); string at most `length` code
  points (10240 by default); date an integer of ms >= 0, or a string of
  digits (stored as a number); bitMap an integer 0 <= v < 2**length;
  struct an object of valid members (keys are member identifiers; members
  may be missing; an unknown one is refused); array at most `length`
  valid elements. `null` is never valid. `step` and `unit` are
  informational.
- A refused value raises ValueRefused naming the identifier and the rule.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from thingshub.core.thingmodel.codes import ModelError, ValueRefused

MAX_STRING_LENGTH: Final = 10240
INT_RANGES: Final = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
NUMERIC: Final = ("int32", "int64", "float", "double")
SCALARS: Final = (*NUMERIC, "enum", "bool", "string", "date", "bitMap")
ARRAY_ITEMS: Final = ("int32", "int64", "float", "double", "string", "date", "struct")
TYPES: Final = (*SCALARS, "struct", "array")

_IDENTIFIER = re.compile(r"\$?[A-Za-z0-9_]{1,50}")
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_DIGITS = re.compile(r"\d+")
_INTEGER = re.compile(r"[+-]?\d+")


@dataclass(frozen=True, slots=True)
class DataType:
    """A checked dataType: the type, its bounds, and its members or items."""

    type: str
    min: float | None = None
    max: float | None = None
    length: int | None = None
    enum: Mapping[int, str] = field(default_factory=dict)
    members: tuple[Param, ...] = ()
    item: DataType | None = None
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class Param:
    identifier: str
    name: str
    data_type: DataType


def object_at(raw: object, path: str) -> dict[str, Any]:
    """`raw` if it is an object; else ModelError at `path` (every part of a model is one)."""
    if not isinstance(raw, dict):
        raise ModelError(path, "must be an object")
    return raw


def identifier_of(item: Mapping[str, Any], path: str, seen: dict[str, str]) -> str:
    """The item's identifier, recorded in `seen` (identifier -> path): the document and
    each list of params keep their own `seen`, so a second use names the first."""
    identifier = item.get("identifier")
    if not isinstance(identifier, str) or not _IDENTIFIER.fullmatch(identifier):
        raise ModelError(
            f"{path}/identifier", "must be 1-50 letters, digits or '_', optionally after '$'"
        )
    if identifier in seen:
        raise ModelError(
            f"{path}/identifier", f"{identifier} is already used at {seen[identifier]}"
        )
    seen[identifier] = path
    return identifier


def name_of(item: Mapping[str, Any], identifier: str) -> str:
    """The item's name; its identifier when it has none (exports leave names empty)."""
    name = item.get("name")
    return name if isinstance(name, str) and name else identifier


def parse_params(raw: object, path: str) -> tuple[tuple[Param, ...], list[dict[str, Any]]]:
    """Checked params (event output, service input or output, struct members) and their
    documents; null is an empty list."""
    if raw is None:
        return (), []
    if not isinstance(raw, list):
        raise ModelError(path, "must be a list of params")
    seen: dict[str, str] = {}
    params: list[Param] = []
    docs: list[dict[str, Any]] = []
    for index, entry in enumerate(raw):
        where = f"{path}/{index}"
        item = object_at(entry, where)
        identifier = identifier_of(item, where, seen)
        data_type, type_doc = parse_data_type(item.get("dataType"), f"{where}/dataType")
        params.append(Param(identifier, name_of(item, identifier), data_type))
        docs.append({**item, "dataType": type_doc})
    return tuple(params), docs


def parse_data_type(raw: object, path: str) -> tuple[DataType, dict[str, Any]]:
    """A checked dataType and its document. Nothing nests deeper than one struct: a
    struct's members are checked here not to be structs or arrays, and an array's
    items are one of ARRAY_ITEMS (a struct among them, no array)."""
    spec = object_at(raw, path)
    kind = spec.get("type")
    if kind not in TYPES:
        raise ModelError(f"{path}/type", f"must be one of {', '.join(TYPES)}")
    specs = spec.get("specs")
    if specs is None:
        specs = {} if kind != "struct" else []
    where = f"{path}/specs"
    if kind in NUMERIC:
        low, high = _bound(specs, "min", where), _bound(specs, "max", where)
        if kind in INT_RANGES:
            floor, ceiling = INT_RANGES[kind]
            low = floor if low is None else max(low, floor)
            high = ceiling if high is None else min(high, ceiling)
        if low is not None and high is not None and low > high:
            raise ModelError(where, "min is greater than max")
        return DataType(kind, low, high, unit=_unit(object_at(specs, where))), dict(spec)
    if kind == "enum":
        labels = object_at(specs, where)
        if not labels:
            raise ModelError(where, "an enum needs at least one value")
        values: dict[int, str] = {}
        for key, label in labels.items():
            if not isinstance(key, str) or not re.fullmatch(r"-?\d+", key.strip()):
                raise ModelError(f"{where}/{key}", "enum keys are integers")
            values[int(key)] = str(label)
        return DataType(kind, enum=values), dict(spec)
    if kind == "bool":
        object_at(specs, where)
        return DataType(kind), dict(spec)
    if kind in ("string", "bitMap"):
        limits = (1, MAX_STRING_LENGTH) if kind == "string" else (1, 32)
        length = _length(object_at(specs, where), where, limits, required=kind == "bitMap")
        return DataType(kind, length=length), dict(spec)
    if kind == "date":
        return DataType(kind), dict(spec)
    if kind == "struct":
        members, docs = parse_params(specs, where)
        for index, member in enumerate(members):
            if member.data_type.type in ("struct", "array"):
                raise ModelError(f"{where}/{index}/dataType", "a struct member cannot be one")
        return DataType(kind, members=members), {**spec, "specs": docs}
    # array
    specs = object_at(specs, where)
    if "item" in specs or "size" in specs:  # {"size": n, "item": {"type", "specs"}}
        length = _length({"length": specs.get("size")}, where, (1, 10240), required=True)
        item_spec = object_at(specs.get("item"), f"{where}/item")
        item_raw = {"type": item_spec.get("type"), "specs": item_spec.get("specs")}
    else:  # {"length": n, "type": t, "specs": {...}}
        length = _length(specs, where, (1, 10240), required=True)
        item_raw = {"type": specs.get("type"), "specs": specs.get("specs")}
    if item_raw["type"] not in ARRAY_ITEMS:
        raise ModelError(f"{where}/type", f"array items are one of {', '.join(ARRAY_ITEMS)}")
    item_type, _ = parse_data_type(item_raw, f"{where}/item")
    return DataType(kind, length=length, item=item_type), dict(spec)


def _bound(specs: object, key: str, where: str) -> float | None:
    if not isinstance(specs, dict):
        raise ModelError(where, "must be an object")
    value = specs.get(key)
    if value is None or value == "":
        return None
    number = _number(value)
    if number is None:
        raise ModelError(f"{where}/{key}", "must be a number")
    return number


def _unit(specs: Mapping[str, Any]) -> str | None:
    unit = specs.get("unit")
    return unit if isinstance(unit, str) and unit else None


def _length(
    specs: Mapping[str, Any], where: str, limits: tuple[int, int], *, required: bool
) -> int | None:
    value = specs.get("length")
    if value is None or value == "":
        if required:
            raise ModelError(f"{where}/length", "is required")
        return None
    number = _number(value)
    low, high = limits
    if number is None or not float(number).is_integer() or not low <= number <= high:
        raise ModelError(f"{where}/length", f"must be an integer from {low} to {high}")
    return int(number)


def _number(value: object) -> int | float | None:
    """A number, or a string holding a decimal number; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        text = value.strip()
        if _INTEGER.fullmatch(text):
            return int(text)
        number = float(text)
        return number if math.isfinite(number) else None
    return None


# ---------------------------------------------------------------- values


def check(data_type: DataType, value: object, where: str) -> object:
    """The value as stored, if it fits `data_type`; else ValueRefused naming `where`."""
    kind = data_type.type
    if value is None:
        raise ValueRefused(f"{where}: null is not a value")
    if kind in INT_RANGES:
        number = _integer(value)
        if number is None:
            raise ValueRefused(f"{where}: {_shown(value)} is not an integer ({kind})")
        return _within(data_type, number, where)
    if kind in ("float", "double"):
        real = _number(value)
        if real is None:
            raise ValueRefused(f"{where}: {_shown(value)} is not a number ({kind})")
        return _within(data_type, real, where)
    if kind == "enum":
        if isinstance(value, bool) or not isinstance(value, int) or value not in data_type.enum:
            keys = ", ".join(str(k) for k in data_type.enum)
            raise ValueRefused(f"{where}: {_shown(value)} is not one of {keys}")
        return value
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueRefused(f"{where}: {_shown(value)} is not true, false, 0 or 1")
    if kind == "string":
        if not isinstance(value, str):
            raise ValueRefused(f"{where}: {_shown(value)} is not a string")
        limit = data_type.length or MAX_STRING_LENGTH
        if len(value) > limit:
            raise ValueRefused(f"{where}: {len(value)} characters > length {limit}")
        return value
    if kind == "date":
        if isinstance(value, str) and _DIGITS.fullmatch(value):
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        raise ValueRefused(f"{where}: {_shown(value)} is not a date (Unix ms)")
    if kind == "bitMap":
        length = data_type.length or 32
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**length:
            raise ValueRefused(f"{where}: {_shown(value)} is not a bitMap of {length} bits")
        return value
    if kind == "struct":
        if not isinstance(value, dict):
            raise ValueRefused(f"{where}: {_shown(value)} is not an object (struct)")
        return check_params(data_type.members, value, where)
    # array
    item = data_type.item
    assert item is not None
    if not isinstance(value, list):
        raise ValueRefused(f"{where}: {_shown(value)} is not an array")
    limit = data_type.length or 0
    if len(value) > limit:
        raise ValueRefused(f"{where}: {len(value)} elements > length {limit}")
    return [check(item, element, f"{where}[{index}]") for index, element in enumerate(value)]


def check_params(params: Iterable[Param], values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """An object of named values, each checked by its param; unknown names are refused."""
    by_id = {p.identifier: p for p in params}
    out: dict[str, Any] = {}
    for key, value in values.items():
        param = by_id.get(key)
        if param is None:
            raise ValueRefused(
                f"{where}.{key}: no such member" if where else f"{key}: no such member"
            )
        out[key] = check(param.data_type, value, f"{where}.{key}" if where else key)
    return out


def _integer(value: object) -> int | None:
    number = _number(value)
    if isinstance(number, float):
        return int(number) if number.is_integer() else None
    return number


def _within(data_type: DataType, number: float, where: str) -> float:
    if data_type.min is not None and number < data_type.min:
        raise ValueRefused(f"{where}: {_plain(number)} < min {_plain(data_type.min)}")
    if data_type.max is not None and number > data_type.max:
        raise ValueRefused(f"{where}: {_plain(number)} > max {_plain(data_type.max)}")
    return number


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else repr(number)


def _shown(value: object) -> str:
    """A JSON value (never null: refused first) as a refusal shows it."""
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "...")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return "an array" if isinstance(value, list) else "an object"
