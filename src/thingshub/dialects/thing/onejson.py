"""OneJSON, the envelope of OneNET's thing model: requests, replies and their codes.

Rules:
- A request is {"id": "123", "version": "1.0", "params": ...}; a reply is
  {"id": "123", "code": 200, "msg": "success", "data"?: ...}.
- `id` is a string of 1-13 decimal digits; an integer 0..9999999999999
  counts as its decimal string. Replies always carry it as a string.
  Anything else is 312, echoing the id when it was a string or a number,
  else "".
- `version` is optional (default "1.0") and its value is not checked; one
  that is not a string is 313.
- Checks run in the order of the code table: 301 (not UTF-8 JSON, or not an
  object), 312 (the id), 313 (the shape, the limits, a payload larger than
  MAX_PAYLOAD); the first failure is the reply.
- Replies and platform requests are compact JSON, no spaces after `:` or
  `,`: device code in the field finds its answer by the literal text
  `"code":200`.
- A device's reply to a platform request is read leniently (its `id` as a
  string or a number, `msg` and `data` optional); a reply without an
  integer `code` is unusable (304 "resp error").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

from thingshub.core import jsontext, thingmodel
from thingshub.core.errors import InvalidRequest

VERSION: Final = "1.0"
MAX_PAYLOAD: Final = 256 * 1024  # bytes

_ID = re.compile(r"[0-9]{1,13}")
_SUCCESS = b'{"id":"%s","code":200,"msg":"success"}'
_MAX_ID = 9_999_999_999_999


class EnvelopeError(InvalidRequest):
    """A request breaks a rule of the envelope; `err_code` is OneJSON's, `id`
    the id to echo in the reply."""

    def __init__(self, code: int, message: str, id: str = "") -> None:
        super().__init__(message, err_code=code, err_msg=thingmodel.CODES[code])
        self.id = id


@dataclass(slots=True)
class Request:
    """A device's request, its envelope checked; made and read once by the dialect.
    Not frozen: its `__init__` sets the slots by the interpreter's fast path, half
    what a frozen one's setters cost a request."""

    id: str
    version: str
    params: Any
    has_params: bool


def parse_request(payload: bytes, max_payload: int = MAX_PAYLOAD) -> Request:
    """A device's request, its envelope checked (order in the module's rules)."""
    try:
        body = jsontext.loads(bytes(payload))  # its bytes: its digits looked at once
    except (UnicodeDecodeError, jsontext.JsonError, RecursionError):
        raise EnvelopeError(thingmodel.JSON_FORMAT_ERROR, "the payload is not UTF-8 JSON") from None
    if not isinstance(body, dict):
        raise EnvelopeError(thingmodel.JSON_FORMAT_ERROR, "the payload must be a JSON object")
    raw_id = body.get("id")
    request_id = request_id_of(raw_id)
    if request_id is None:
        raise EnvelopeError(
            thingmodel.INVALID_MSG_ID, "id must be a string of 1-13 decimal digits", _echo(raw_id)
        )
    version = body.get("version", VERSION)
    if not isinstance(version, str):
        raise EnvelopeError(thingmodel.BAD_REQUEST, "version must be a string", request_id)
    if len(payload) > max_payload:
        raise EnvelopeError(
            thingmodel.BAD_REQUEST,
            f"payload too large: {len(payload)} bytes, at most {max_payload}",
            request_id,
        )
    return Request(request_id, version, body.get("params"), "params" in body)


def request_id_of(value: object) -> str | None:
    """The id as a string, if `value` is a valid request id."""
    if isinstance(value, str):  # [0-9]{1,13}: ASCII digits, as `_ID`, without the regex
        return value if 0 < len(value) <= 13 and value.isascii() and value.isdigit() else None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_ID:
        return str(value)
    return None


def _echo(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return json.dumps(value)
    return ""


def reply(request_id: str, code: int, hint: str | None = None, data: Any = None) -> bytes:
    """A reply, compact: `msg` is the code's words, and ": hint" where there is one."""
    if code == thingmodel.SUCCESS and not hint and data is None and _ID.fullmatch(request_id):
        return _SUCCESS % request_id.encode()  # every stored post: the same bytes, no encoder
    msg = thingmodel.CODES.get(code, "error")
    if hint:
        msg = f"{msg}: {hint}"
    body: dict[str, Any] = {"id": request_id, "code": code, "msg": msg}
    if data is not None:
        body["data"] = data
    return compact(body)


def request(request_id: str, params: bytes) -> bytes:
    """A platform request around `params` (already compact JSON)."""
    return b'{"id":' + compact(request_id) + b',"version":"1.0","params":' + params + b"}"


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True, slots=True)
class Reply:
    """A device's reply to a platform request, as sent."""

    id: str
    code: int | None
    msg: str | None
    data: Any


def parse_reply(payload: bytes) -> Reply | None:
    """A device's reply; None when it is not one (no JSON object, no usable id)."""
    try:
        body = jsontext.loads(bytes(payload))
    except (UnicodeDecodeError, jsontext.JsonError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    request_id = request_id_of(body.get("id"))
    if request_id is None:
        return None
    code = body.get("code")
    msg = body.get("msg")
    return Reply(
        request_id,
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        msg if isinstance(msg, str) else None,
        body.get("data"),
    )
