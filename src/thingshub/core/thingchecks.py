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
"""

from __future__ import annotations

import math
from collections.abc import Callable

from thingshub.core.thingmodel import MAX_STRING_LENGTH, DataType, ThingModel, check

#: A compiled check: (value, where) -> the value as stored, or ValueRefused naming `where`.
Check = Callable[[object, str], object]


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
