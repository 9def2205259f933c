"""A thing model's property checks, compiled once per model: thingmodel.check, made fast
for the values devices send every second.

Why: a device posting 10 properties has each value checked by `thingmodel.check`,
which works out from the data type's name, for every value, which rule applies
(a chain of tests and helper calls). The model does not change between posts,
so that work is done once here: each property gets a function that takes the
values a well-behaved device sends (a JSON number, bool or string of the right
type, within its bounds) in a test or two, and hands anything else to
`thingmodel.check` itself.

Rules:
- A compiled check returns exactly what `thingmodel.check(data_type, value,
  where)` returns, and raises exactly what it raises: the fast path only ever
  takes values that `check` returns unchanged, and leaves everything else
  (conversions, refusals, struct and array values) to `check`.
- The fast path tests exact types (`type(v) is int`): a bool is not an int
  here, as in `check`.
- `values_check`, a model's checks of a post's values at once, returns what
  each compiled check returns (None once one refuses, or for an identifier not
  in the model): a value its row takes (of the row's type, within its bounds) is
  one the compiled check returns unchanged; anything else is the check's.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping

from thingshub.core.thingmodel import (
    MAX_STRING_LENGTH,
    DataType,
    ThingModel,
    ValueRefused,
    check,
)

#: A compiled check: (value, where) -> the value as stored, or ValueRefused naming `where`.
Check = Callable[[object, str], object]
#: A model's checks of a post's values at once: the values as stored, or None when one
#: is refused or names no property of the model.
ValuesCheck = Callable[[Mapping[str, object]], dict[str, object] | None]
#: A property's row in `values_check`: the value's exact type taken without a call,
#: its bounds (a string's: its length) and the compiled check for anything else.
Row = tuple[type, float, float, Check]
_FLOAT_MAX = sys.float_info.max


class _Never:
    """No value is of this type: a row that always calls its check."""


class _Text:
    """A string's row: the value's length is within the bounds."""


def property_checks(model: ThingModel) -> dict[str, Check]:
    """One compiled check per property of `model`, by identifier."""
    return {identifier: compile_check(p.data_type) for identifier, p in model.properties.items()}


def compile_check(data_type: DataType) -> Check:
    """`thingmodel.check` of `data_type`, with a fast path for the usual values."""
    kind = data_type.type
    low = -math.inf if data_type.min is None else data_type.min
    high = math.inf if data_type.max is None else data_type.max
    isfinite = math.isfinite

    if kind in ("int32", "int64"):

        def integer(value: object, where: str) -> object:
            if type(value) is int and low <= value <= high:
                return value
            return check(data_type, value, where)

        return integer
    if kind in ("float", "double"):

        def real(value: object, where: str) -> object:
            if type(value) is float:
                if low <= value <= high and isfinite(value):
                    return value
            elif type(value) is int and low <= value <= high:
                return value
            return check(data_type, value, where)

        return real
    if kind == "enum":
        keys = frozenset(data_type.enum)

        def enum(value: object, where: str) -> object:
            if type(value) is int and value in keys:
                return value
            return check(data_type, value, where)

        return enum
    if kind == "bool":

        def boolean(value: object, where: str) -> object:
            if type(value) is bool:
                return value
            return check(data_type, value, where)

        return boolean
    if kind == "string":
        limit = data_type.length or MAX_STRING_LENGTH

        def string(value: object, where: str) -> object:
            if type(value) is str and len(value) <= limit:
                return value
            return check(data_type, value, where)

        return string
    if kind == "date":

        def date(value: object, where: str) -> object:
            if type(value) is int and value >= 0:
                return value
            return check(data_type, value, where)

        return date
    if kind == "bitMap":
        size = 2 ** (data_type.length or 32)

        def bitmap(value: object, where: str) -> object:
            if type(value) is int and 0 <= value < size:
                return value
            return check(data_type, value, where)

        return bitmap

    def composite(value: object, where: str) -> object:
        return check(data_type, value, where)

    return composite  # struct, array: each member is checked by `check` anyway


def values_check(model: ThingModel, checks: Mapping[str, Check]) -> ValuesCheck:
    """The checks of `model` (`checks`: its `property_checks`) as one function over a
    post's values.

    Why: a post of ten values called ten compiled checks, a Python call each; here a
    value of the usual type within its bounds is taken by one test in the loop, and
    only anything else calls its check."""
    table = {name: row(p.data_type, checks[name]) for name, p in model.properties.items()}
    get = table.get

    def checked(posted: Mapping[str, object]) -> dict[str, object] | None:
        out: dict[str, object] = {}
        try:
            for name, value in posted.items():
                kind, low, high, slow = get(name, _UNKNOWN)
                t = type(value)
                if (t is kind and low <= value <= high) or (  # type: ignore[operator]
                    t is str and kind is _Text and len(value) <= high  # type: ignore[arg-type]
                ):
                    out[name] = value
                else:
                    out[name] = slow(value, name)
        except ValueRefused:
            return None
        return out

    return checked


def row(data_type: DataType, compiled: Check) -> Row:
    """What `values_check` takes of `data_type` without calling `compiled` (its check):
    only values the check returns unchanged."""
    kind = data_type.type
    low = -math.inf if data_type.min is None else data_type.min
    high = math.inf if data_type.max is None else data_type.max
    if kind in ("int32", "int64"):
        return (int, low, high, compiled)
    if kind in ("float", "double"):  # finite: +-inf and NaN fall outside
        return (float, max(low, -_FLOAT_MAX), min(high, _FLOAT_MAX), compiled)
    if kind == "bool":
        return (bool, 0, 1, compiled)
    if kind == "string":
        return (_Text, 0, data_type.length or MAX_STRING_LENGTH, compiled)
    if kind == "date":
        return (int, 0, math.inf, compiled)
    if kind == "bitMap":
        return (int, 0, 2 ** (data_type.length or 32) - 1, compiled)
    if kind == "enum":
        keys = sorted(data_type.enum)
        if keys == list(range(keys[0], keys[-1] + 1)):  # 0, 1, 2: a range
            return (int, keys[0], keys[-1], compiled)
    return (_Never, 0, 0, compiled)  # a sparse enum, struct, array: the check


def _unknown(value: object, where: str) -> object:
    raise ValueRefused(f"{where}: not a property of the model")


_UNKNOWN: Row = (_Never, 0, 0, _unknown)
