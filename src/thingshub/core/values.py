"""What a device may report as a name, a value or a time, whatever its protocol.

Rules:
- Names (telemetry keys, attribute names, event methods, OTA modules) are
  non-empty strings of at most MAX_KEY characters, without control
  characters (C0, DEL, C1) or unpaired surrogates.
- Values are numbers (integers within signed 64 bits, finite floats),
  bools, strings (at most MAX_STRING UTF-8 bytes, no unpaired surrogate),
  or nested JSON (objects and arrays, stored as they are, at most
  MAX_NESTING containers deep; strings, numbers and keys inside obey the
  same rules, and a null inside them is kept). A null as a name's own value
  is not a value: a device leaves the name out when it has none.
- Times are Unix milliseconds from 2000-01-01 (MIN_TS_MS) to a day past the
  platform's clock (MAX_AHEAD_MS): a clock never set, or seconds mixed up
  with milliseconds, is refused instead of filling history with 1970 or
  the year 50,000. The clock is an argument; nothing here reads one.
- Checks answer with a sentence saying what is wrong (None: nothing is),
  never with a protocol's error code: each dialect wraps the sentence in
  its own error. `Problem` is raised where a value must also be converted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

MAX_KEY: Final = 128  # characters of a key, a method, a module
MAX_STRING: Final = 4096  # UTF-8 bytes of a string value
MAX_NESTING: Final = 32  # containers (objects + arrays) on one path inside a value
MIN_INT: Final = -(2**63)
MAX_INT: Final = 2**63 - 1
MIN_TS_MS: Final = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_AHEAD_MS: Final = 86_400_000  # how far past the platform's clock a ts may be

_BAD_NAME = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_isfinite = math.isfinite


class Problem(ValueError):
    """A value breaks a rule of this module; the message says which."""


def kind(value: object) -> str:
    """What a JSON value is, for a sentence ("a string", "null", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def shown(value: object) -> str:
    """A value for a message: numbers and strings as written, others by kind."""
    if isinstance(value, str):
        return show(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    return kind(value)


def show(name: str) -> str:
    """A name for a message: quoted, escaped, cut to a readable length."""
    return repr(name if len(name) <= 40 else name[:40] + "...")


def at(path: str) -> str:
    """ " (at <path>)" for a message, or "" for the value itself."""
    if len(path) > 80:
        path = path[:80] + "..."
    return f" (at {path})" if path else ""


def name_problem(value: object) -> str | None:
    """What keeps `value` from being a name (key, method, module), or None."""
    if not isinstance(value, str):
        return f"must be a string, not {kind(value)}"
    if not value:
        return "must not be empty"
    if len(value) > MAX_KEY:
        return f"has {len(value)} characters; at most {MAX_KEY} are allowed"
    if _BAD_NAME.search(value):
        return "must not hold control characters or unpaired surrogates"
    return None


def string_problem(value: str, max_string: int | None) -> str | None:
    if _SURROGATE.search(value):
        return "strings must not hold unpaired surrogates"
    if (
        max_string is not None
        and len(value) > max_string // 4
        and len(value.encode("utf-8")) > max_string
    ):
        return f"strings may have at most {max_string} bytes (UTF-8)"
    return None


def json_problem(value: Any, depth: int, max_string: int | None) -> tuple[str, str] | None:
    """(path below `value`, what is wrong) for the first broken value rule, or None.

    `depth` counts the containers above `value`; recursion stops at MAX_NESTING."""
    if isinstance(value, str):
        problem = string_problem(value, max_string)
        return ("", problem) if problem else None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        if MIN_INT <= value <= MAX_INT:
            return None
        return "", "integers must be within -2**63 .. 2**63-1"
    if isinstance(value, float):
        return None if math.isfinite(value) else ("", "numbers must be finite")
    if isinstance(value, list | dict):
        if depth >= MAX_NESTING:
            return "", f"objects and arrays are nested more than {MAX_NESTING} levels deep"
        if isinstance(value, list):
            for index, item in enumerate(value):
                broken = json_problem(item, depth + 1, max_string)
                if broken:
                    return f"[{index}]{broken[0]}", broken[1]
            return None
        for key, item in value.items():
            problem = string_problem(key, max_string)
            if problem:
                return f"[{show(key)}]", f"keys: {problem}"
            broken = json_problem(item, depth + 1, max_string)
            if broken:
                return f"[{show(key)}]{broken[0]}", broken[1]
        return None
    return "", f"{type(value).__name__} is not a JSON value"


def entry_problem(key: str, value: Any) -> str | None:
    """What keeps (`key`, `value`) from being a reported name and its value, or None."""
    problem = name_problem(key)
    if problem:
        return f"key {show(key)} {problem}"
    value_kind = type(value)
    if value_kind is bool:
        return None
    if value_kind is float:
        if math.isfinite(value):
            return None
    elif value_kind is int:
        if MIN_INT <= value <= MAX_INT:
            return None
    elif value is None:
        return f"key {show(key)}: null is not a value (leave the key out when there is none)"
    broken = json_problem(value, 0, MAX_STRING)
    if broken:
        return f"key {show(key)}: {broken[1]}{at(broken[0])}"
    return None


def entries_problem(entries: Mapping[str, Any]) -> str | None:
    """`entry_problem` of each entry in order: the first problem found, or None.

    The ingest path's every message: the entries devices send nearly always (a
    short name with a bool, a finite float or a 64-bit int) are checked inline,
    and their names' characters by one search over all of them, instead of
    three calls and a search per entry. Anything else, or a name the search
    finds fault with, goes through `entry_problem` entry by entry, so the
    problem reported is the same one, of the same (first) entry."""
    for key, value in entries.items():
        kind = type(value)
        if not (
            0 < len(key) <= MAX_KEY
            and (
                kind is bool
                or (kind is float and _isfinite(value))
                or (kind is int and MIN_INT <= value <= MAX_INT)
            )
        ):
            break
    else:
        if not _BAD_NAME.search("".join(entries)):
            return None
    for key, value in entries.items():
        problem = entry_problem(key, value)
        if problem:
            return problem
    return None


def all_entries_fine(bodies: Iterable[Mapping[str, Any]]) -> bool:
    """Whether `entries_problem` finds nothing in any of `bodies` by its inline
    checks (the entries devices nearly always send), their names' characters by
    one search over all of them: a gateway message's sub-devices at once, not a
    call and a search each. False says only that some body needs `entries_problem`."""
    names: list[str] = []
    for entries in bodies:
        for key, value in entries.items():
            kind = type(value)
            if not (
                0 < len(key) <= MAX_KEY
                and (
                    kind is bool
                    or (kind is float and _isfinite(value))
                    or (kind is int and MIN_INT <= value <= MAX_INT)
                )
            ):
                return False
        names += entries
    return _BAD_NAME.search("".join(names)) is None


def timestamp(value: object, now_ms: int, *, seconds: bool) -> int:
    """The ms timestamp of a reported time (Unix seconds if `seconds`, else ms).

    Raises Problem, with a sentence starting "ts ...", when it is not one."""
    unit = "seconds" if seconds else "milliseconds"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Problem(f"ts must be a number (Unix time in {unit}), not {kind(value)}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Problem(f"ts must be a finite number (Unix time in {unit})")
        if not seconds and not value.is_integer():
            raise Problem(f"ts must be a whole number of milliseconds, not {value!r}")
    # Compared before rounding: a float may be too large to round, and rounding
    # never carries a value across these integer bounds.
    ts: int | float = value * 1000 if seconds else value
    if ts < MIN_TS_MS:
        other = "" if seconds else " (not seconds)"
        raise Problem(f"ts {value!r} is before the year 2000; ts is Unix time in {unit}{other}")
    if ts > now_ms + MAX_AHEAD_MS:
        other = " (not milliseconds)" if seconds else ""
        raise Problem(
            f"ts {value!r} is more than a day ahead of the platform's clock; "
            f"ts is Unix time in {unit}{other}"
        )
    return round(ts)
