"""JSON as the device protocols carry it: compact, UTF-8, strict.

Rules:
- `dumps`: compact, UTF-8 (no escaping of non-ASCII), never NaN or Infinity.
- `loads`: strict JSON. NaN and Infinity are refused; an integer of more than
  32 digits is read as out of every range here (its sign kept), so Python's
  4,300-digit limit cannot turn a long number into "not JSON"; a document
  nested deeper than the interpreter's stack is read without recursion, with
  the same grammar and values. Every failure is a `JsonError` (a ValueError).
- `loads_unicode` also refuses a lone surrogate (`"\ud800"`, which JSON's
  escapes can spell but UTF-8 cannot carry), for documents stored or shown as
  they are (the HTTP API): no string it returns can fail later. The device
  protocols keep `loads` and their own error codes for such strings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
#: Where a lone surrogate may hide: an escape of one, or one in the text itself.
_MAYBE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class JsonError(ValueError):
    pass


def dumps(body: object) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _reject_constant(name: str) -> Any:
    raise JsonError(f"{name} is not a JSON number")


def _parse_int(digits: str) -> int:
    if len(digits) <= 32:
        return int(digits)
    return -(10**33) if digits.startswith("-") else 10**33


DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_int=_parse_int)
WHITESPACE = " \t\n\r"
#: The decoder's scanner, called straight on the ingest paths: a document with nothing
#: around it (what devices send) is read without `decode`'s two Python frames and its
#: two whitespace matches, about a third of a small document's parse.
SCAN: Callable[[str, int], tuple[Any, int]] = DECODER.scan_once  # type: ignore[attr-defined]


#: The same scanner without the integer hook (`int` itself, which the C scanner calls
#: without a Python frame): for a document with no run of 33 digits, where the hook
#: could only return `int(digits)` (no integer literal has more than 32 digits).
SCAN_PLAIN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder(
    parse_constant=_reject_constant
).scan_once  # type: ignore[attr-defined]
#: `bytes.translate` table: each ASCII digit to "0", every other byte to "x"; a
#: document's UTF-8 bytes have a digit run of 33 where the result holds `_LONG_RUN`.
_DIGITS = bytes(48 if 48 <= i <= 57 else 120 for i in range(256))
_LONG_RUN = b"0" * 33


def scan_whole(text: str, raw: bytes | None = None) -> tuple[bool, Any]:
    """`(True, value)` when `text` is one JSON document with nothing around it, read by
    the scanner straight; else `(False, None)`: whitespace around it, or not JSON, which
    the caller's `decode` then reads and says why (each caller in its own errors).

    `raw`, `text`'s UTF-8 bytes where the caller has them: one look at its digits
    (a C loop) says whether any integer may need the hook; the same values either
    way, the per-integer Python call saved (a thing post's times and values)."""
    scan = SCAN if raw is None or _LONG_RUN in raw.translate(_DIGITS) else SCAN_PLAIN
    try:
        value, end = scan(text, 0)
    except (StopIteration, ValueError, RecursionError):
        return False, None
    return (True, value) if end == len(text) else (False, None)


def has_lone_surrogate(value: Any) -> bool:
    """Whether a string anywhere in `value` (keys too) holds a lone surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _text(data: bytes | str) -> str:
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonError(
                f"not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
            ) from None
    return data


def loads_unicode(data: bytes | str) -> Any:
    """`loads`, refusing a lone surrogate in any string (keys too); raises JsonError."""
    text = _text(data)
    value = loads(text)
    if _MAYBE_SURROGATE.search(text) and has_lone_surrogate(value):
        raise JsonError("a string holds a lone surrogate (not valid Unicode)")
    return value


def loads(data: bytes | str) -> Any:
    """Parse strict JSON (bytes must be UTF-8); raises JsonError."""
    if type(data) is bytes:  # what devices send: read without `_text`'s frame and tests
        raw = data
        try:
            text = data.decode()
        except UnicodeDecodeError:
            text = _text(data)  # raises, saying where
    elif isinstance(data, str):
        raw, text = None, data
    else:
        raw = bytes(data)  # not a copy of bytes
        text = _text(raw)
    whole, value = scan_whole(text, raw)
    if whole:
        return value
    try:
        try:
            value = DECODER.decode(text)
        except RecursionError:
            value = _loads_iterative(text)
    except json.JSONDecodeError as exc:
        raise JsonError(f"{exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    return value


def _skip_ws(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in WHITESPACE:
        i += 1
    return i


def _loads_iterative(text: str) -> Any:
    """json.loads without recursion, for documents nested past the interpreter's stack.

    Same grammar and values as `DECODER.decode`: scalars are read by the
    decoder itself; only containers are tracked here, on an explicit stack.
    """
    n = len(text)
    stack: list[tuple[dict[str, Any] | list[Any], str]] = []
    i = _skip_ws(text, 0)

    def key_at(j: int) -> tuple[str, int]:
        if j >= n or text[j] != '"':
            raise JsonError("expecting a property name")
        key, j = DECODER.raw_decode(text, j)
        j = _skip_ws(text, j)
        if j >= n or text[j] != ":":
            raise JsonError("expecting ':'")
        return key, _skip_ws(text, j + 1)

    while True:
        value: Any
        c = text[i] if i < n else ""
        if c == "{":
            i = _skip_ws(text, i + 1)
            if i < n and text[i] == "}":
                value, i = {}, i + 1
            else:
                key, i = key_at(i)
                stack.append(({}, key))
                continue
        elif c == "[":
            i = _skip_ws(text, i + 1)
            if i < n and text[i] == "]":
                value, i = [], i + 1
            else:
                stack.append(([], ""))
                continue
        else:
            value, i = DECODER.raw_decode(text, i)  # a scalar: no recursion
        while True:  # attach the finished value, closing containers as they end
            if not stack:
                if _skip_ws(text, i) != n:
                    raise JsonError("extra data")
                return value
            container, key = stack[-1]
            if isinstance(container, dict):
                container[key] = value
            else:
                container.append(value)
            i = _skip_ws(text, i)
            c = text[i] if i < n else ""
            if c == ",":
                i = _skip_ws(text, i + 1)
                if isinstance(container, dict):
                    key, i = key_at(i)
                    stack[-1] = (container, key)
                break
            if c != ("}" if isinstance(container, dict) else "]"):
                raise JsonError("expecting ',' or the end of a container")
            i += 1
            stack.pop()
            value = container
