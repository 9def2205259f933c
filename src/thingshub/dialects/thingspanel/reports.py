"""ThingsPanel device reports: telemetry, attributes, events, OTA progress, answers.

Rules:
- A report is judged whole: it parses to values, or raises ReportError with
  the errcode of the first rule broken and a sentence naming the record,
  key or field. Nothing is ever returned in part. Time comes from the
  caller (`now_ms`); nothing here reads a clock.
- Check order: size (`max_payload` bytes, counted before anything is
  decoded: PAYLOAD_TOO_LARGE), UTF-8 then JSON (INVALID_JSON; NaN,
  Infinity and a byte order mark included), then shape and values
  (INVALID_PARAM) in document order, records/keys one after another. Too
  many points, attributes or events is PAYLOAD_TOO_LARGE, raised where the
  count passes the limit. JSON nested past the interpreter's stack is judged
  without recursion: INVALID_JSON if broken, else INVALID_PARAM (nesting).
- Telemetry: a root object is real time, every key a point at `now_ms`
  (an object holding `ts` and `values` too: ThingsPanel's protocol recognises the format
  by the root alone); a root array is historical, records
  {"ts": Unix SECONDS, "values": {...}} whose points get ts * 1000 (a
  fraction of a second is kept, rounded to the millisecond). A record holds
  nothing but `ts` and `values`: any other field is refused, since a value
  put there would be lost. At most MAX_POINTS points per message.
- Timestamps, names (keys, event methods, OTA modules) and values follow
  the rules every dialect shares (core/values.py); a broken one is
  INVALID_PARAM. An empty report (`{}`, `[]`, a record with empty
  `values`) is refused: there is nothing to store.
- Attributes: a non-empty object of names to values, at most MAX_ATTRIBUTES.
- Events: a root object is one event: real time (no `ts`) at `now_ms`, or,
  when it carries `ts`, at that ts (milliseconds). A root array is
  historical: each element {"ts": Unix MILLISECONDS, "method", "params"?}.
  `method` is a name; `params` an object, absent or null meaning {}. Other
  fields are ignored. At most MAX_EVENTS per message. The reply echoes the
  method only for a root object (`is_historical` False).
- OTA progress: `step` "1".."100" or "-1".."-4" as a string (canonical
  digits, no sign on positives, no leading zero) or as a JSON integer;
  `module` a name (required); `desc` a string (absent or null: ""). Other
  fields are ignored.
- Answers (to commands and attribute sets) are kept as the device sent
  them, but must be a JSON object with `result` 0 or 1 (an integer) and a
  string `message`, the fields the spec calls required; optional fields
  are not checked, except that every value must be one the platform can
  store and send on (integers within 64 bits, finite floats, no unpaired
  surrogates, bounded depth; no string length limit).
- Of duplicate keys in one object the last wins (as in json.loads).
- `response` builds the platform's response object; `message` defaults to
  "success" or to a sentence for the errcode.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from thingshub.core import jsontext, values
from thingshub.core.errors import InvalidRequest
from thingshub.core.model import DeviceEvent, Point, PointsAt
from thingshub.core.ota import Progress
from thingshub.core.values import MAX_NESTING, MAX_STRING
from thingshub.core.values import at as _at
from thingshub.core.values import json_problem as _json_problem
from thingshub.core.values import kind as _kind
from thingshub.core.values import name_problem as _name_problem
from thingshub.core.values import show as _show
from thingshub.core.values import shown as _shown
from thingshub.core.values import string_problem as _string_problem

MAX_PAYLOAD: Final = 64 * 1024  # bytes
MAX_POINTS: Final = 10_000  # points of one telemetry message
MAX_ATTRIBUTES: Final = 1_000  # attributes of one report
MAX_EVENTS: Final = 1_000  # events of one report

INVALID_JSON: Final = "INVALID_JSON"
INVALID_PARAM: Final = "INVALID_PARAM"
PAYLOAD_TOO_LARGE: Final = "PAYLOAD_TOO_LARGE"
INTERNAL: Final = "INTERNAL"
ERRCODES: Final = (INVALID_JSON, INVALID_PARAM, PAYLOAD_TOO_LARGE, INTERNAL)

DEFAULT_MESSAGES: Final[dict[str, str]] = {
    INVALID_JSON: "the payload is not valid JSON",
    INVALID_PARAM: "parameter validation failed",
    PAYLOAD_TOO_LARGE: "the payload is too large",
    INTERNAL: "internal error",
}

_STEP = re.compile(r"-?[1-9][0-9]{0,2}")
_RECORD_FIELDS = ("ts", "values")


class ReportError(InvalidRequest):
    """A device report breaks a rule. `errcode` is ThingsPanel's: INVALID_JSON,
    INVALID_PARAM or PAYLOAD_TOO_LARGE; `message` says what was wrong."""

    def __init__(self, errcode: str, message: str) -> None:
        if errcode not in (INVALID_JSON, INVALID_PARAM, PAYLOAD_TOO_LARGE):
            raise ValueError(f"not an errcode of a device report: {errcode!r}")
        super().__init__(message, err_code=errcode)
        self.errcode: str = errcode


def _param(message: str) -> ReportError:
    return ReportError(INVALID_PARAM, message)


def _too_large(message: str) -> ReportError:
    return ReportError(PAYLOAD_TOO_LARGE, message)


# ---------------------------------------------------------------- JSON


# Not jsontext.loads on bytes: given bytes, json.loads would also accept
# UTF-16/32; the payload is decoded as UTF-8 here, then parsed strictly.
_DECODER = jsontext.DECODER
_WS = jsontext.WHITESPACE


def _load(payload: bytes, max_payload: int) -> Any:
    size = len(payload)
    if size > max_payload:
        raise _too_large(f"the payload has {size} bytes; at most {max_payload} are accepted")
    try:
        text = str(payload, "utf-8")  # from a memoryview too, without copying it first
    except UnicodeDecodeError as exc:
        raise ReportError(
            INVALID_JSON,
            f"the payload is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
            f"{exc.start})",
        ) from None
    whole, body = jsontext.scan_whole(text)  # its bytes' digits looked at: no gain here
    if whole:
        return body
    try:
        return _DECODER.decode(text)
    except RecursionError:
        # Nested past the interpreter's stack: valid JSON is still refused (the
        # nesting limit), but the device is told which rule it broke.
        try:
            jsontext.loads(text)
        except jsontext.JsonError as exc:
            raise ReportError(INVALID_JSON, f"the payload is not valid JSON: {exc}") from None
        raise _param(f"objects and arrays are nested more than {MAX_NESTING} levels deep") from None
    except json.JSONDecodeError as exc:
        # Asked only of a payload that failed: neither parses, and these two
        # say better than the parser what is wrong with them.
        if not text.strip(_WS):
            raise ReportError(
                INVALID_JSON, "the payload is empty: a JSON value is expected"
            ) from None
        if text.startswith("\ufeff"):
            raise ReportError(
                INVALID_JSON, "the payload starts with a byte order mark; send bare JSON"
            ) from None
        raise ReportError(
            INVALID_JSON,
            f"the payload is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
        ) from None
    except ValueError as exc:
        raise ReportError(INVALID_JSON, f"the payload is not valid JSON: {exc}") from None


def check_entries(entries: dict[str, Any], where: str) -> None:
    """Raise INVALID_PARAM unless each key is a name and its value one it may
    hold (the first entry, in order, that is not)."""
    problem = values.entries_problem(entries)
    if problem:
        raise _param(f"{where}{problem}")


def _timestamp(value: object, now_ms: int, where: str, *, seconds: bool) -> int:
    """The ms timestamp of a report's `ts` (Unix seconds if `seconds`, else ms)."""
    try:
        return values.timestamp(value, now_ms, seconds=seconds)
    except values.Problem as exc:
        raise _param(f"{where}{exc}") from None


def timestamp(value: object, now_ms: int, where: str) -> int:
    """The ms timestamp of a `ts` in milliseconds (an event's)."""
    return _timestamp(value, now_ms, where, seconds=False)


# ---------------------------------------------------------------- telemetry


def parse_telemetry(
    payload: bytes, now_ms: int, max_payload: int = MAX_PAYLOAD
) -> PointsAt | list[Point]:
    """The points of a `devices/telemetry` payload, in the order sent: a real-time
    object's as its values at `now_ms` (`PointsAt`, no `Point` made per value)."""
    body = _load(payload, max_payload)
    if isinstance(body, dict):
        if not body:
            raise _param("the telemetry object is empty: there is nothing to store")
        if len(body) > MAX_POINTS:
            raise _too_large(
                f"the message carries {len(body)} points; at most {MAX_POINTS} are accepted"
            )
        problem = values.entries_problem(body)  # `check_entries`, one frame less
        if problem:
            raise _param(problem)
        return PointsAt(now_ms, body)
    if not isinstance(body, list):
        raise _param(
            "telemetry must be a JSON object of key-value pairs (real time) or an array of "
            f'{{"ts", "values"}} records (historical), not {_kind(body)}'
        )
    if not body:
        raise _param("the telemetry array is empty: there is nothing to store")
    if len(body) > MAX_POINTS:
        raise _too_large(
            f"the message carries {len(body)} records; at most {MAX_POINTS} points are accepted"
        )
    points: list[Point] = []
    for index, record in enumerate(body):
        where = f"record [{index}]: "
        if not isinstance(record, dict):
            raise _param(
                f'record [{index}] must be an object {{"ts": <Unix seconds>, "values": {{...}}}}, '
                f"not {_kind(record)}"
            )
        if "ts" not in record:
            raise _param(f"{where}ts is missing (Unix time in seconds)")
        ts = _timestamp(record["ts"], now_ms, where, seconds=True)
        if "values" not in record:
            raise _param(f"{where}values is missing")
        record_values = record["values"]
        if not isinstance(record_values, dict):
            raise _param(
                f"{where}values must be an object of key-value pairs, not {_kind(record_values)}"
            )
        if not record_values:
            raise _param(f"{where}values is empty: there is nothing to store")
        for field in record:
            if field not in _RECORD_FIELDS:
                raise _param(
                    f"{where}unknown field {_show(field)}: a record holds only ts and values"
                )
        if len(points) + len(record_values) > MAX_POINTS:
            raise _too_large(
                f"the message carries more than {MAX_POINTS} points (passed at record "
                f"[{index}]); at most {MAX_POINTS} are accepted"
            )
        check_entries(record_values, where)
        points += [Point(key, ts, value) for key, value in record_values.items()]
    return points


# ---------------------------------------------------------------- attributes


def parse_attributes(payload: bytes, max_payload: int = MAX_PAYLOAD) -> dict[str, object]:
    """The attributes of a `devices/attributes/{message_id}` payload."""
    body = _load(payload, max_payload)
    if not isinstance(body, dict):
        raise _param(f"attributes must be a JSON object of key-value pairs, not {_kind(body)}")
    if not body:
        raise _param("the attributes object is empty: there is nothing to store")
    if len(body) > MAX_ATTRIBUTES:
        raise _too_large(
            f"the message carries {len(body)} attributes; at most {MAX_ATTRIBUTES} are accepted"
        )
    check_entries(body, "")
    return body


# ---------------------------------------------------------------- events


def _event(record: dict[str, Any], ts: int, where: str) -> DeviceEvent:
    if "method" not in record:
        raise _param(f"{where}method is missing (the event's name)")
    method = record["method"]
    problem = _name_problem(method)
    if problem:
        raise _param(f"{where}method {problem}")
    params = record.get("params")
    if params is None:
        params = {}
    elif not isinstance(params, dict):
        raise _param(f"{where}params must be an object, not {_kind(params)}")
    else:
        broken = _json_problem(params, 0, MAX_STRING)
        if broken:
            raise _param(f"{where}params: {broken[1]}{_at(broken[0])}")
    return DeviceEvent(ts, method, params)


def parse_event(
    payload: bytes, now_ms: int, max_payload: int = MAX_PAYLOAD
) -> tuple[list[DeviceEvent], bool]:
    """(events, is_historical) of a `devices/event/{message_id}` payload.

    `is_historical` is True for a root array (its reply carries no method)."""
    body = _load(payload, max_payload)
    if isinstance(body, dict):
        ts = now_ms
        if "ts" in body:
            ts = _timestamp(body["ts"], now_ms, "", seconds=False)
        return [_event(body, ts, "")], False
    if not isinstance(body, list):
        raise _param(
            'an event must be a JSON object {"method", "params"} (real time) or an array of '
            f'{{"ts", "method", "params"}} (historical), not {_kind(body)}'
        )
    if not body:
        raise _param("the event array is empty: there is nothing to store")
    if len(body) > MAX_EVENTS:
        raise _too_large(
            f"the message carries {len(body)} events; at most {MAX_EVENTS} are accepted"
        )
    events: list[DeviceEvent] = []
    for index, record in enumerate(body):
        where = f"event [{index}]: "
        if not isinstance(record, dict):
            raise _param(
                f'event [{index}] must be an object {{"ts": <Unix milliseconds>, "method", '
                f'"params"}}, not {_kind(record)}'
            )
        if "ts" not in record:
            raise _param(f"{where}ts is missing (Unix time in milliseconds)")
        ts = _timestamp(record["ts"], now_ms, where, seconds=False)
        events.append(_event(record, ts, where))
    return events, True


def event_method(payload: bytes, max_payload: int = MAX_PAYLOAD) -> str | None:
    """The method of a one-event payload, to echo in the reply to it (even an
    error reply); None when the payload is too large, not JSON, not an object,
    or its method is not a valid name."""
    if len(payload) > max_payload:
        return None
    try:
        body = _DECODER.decode(bytes(payload).decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    method = body.get("method")
    if not isinstance(method, str) or _name_problem(method) is not None:
        return None
    return method


#: The rules the gateway grammar (gateway.py) applies to each of its nodes.
load = _load
event_record = _event


# ---------------------------------------------------------------- OTA progress


def _step(value: object) -> int | None:
    if isinstance(value, str):
        if not _STEP.fullmatch(value):
            return None
        step = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        step = value
    else:
        return None
    return step if 1 <= step <= 100 or -4 <= step <= -1 else None


def parse_progress(payload: bytes, max_payload: int = MAX_PAYLOAD) -> Progress:
    body = _load(payload, max_payload)
    if not isinstance(body, dict):
        raise _param(
            f'OTA progress must be a JSON object {{"step", "desc", "module"}}, not {_kind(body)}'
        )
    if "step" not in body:
        raise _param("step is missing")
    step = _step(body["step"])
    if step is None:
        raise _param(
            f'step must be "1".."100" (percent) or "-1".."-4" (failure), not {_shown(body["step"])}'
        )
    if "module" not in body:
        raise _param("module is missing")
    module = body["module"]
    problem = _name_problem(module)
    if problem:
        raise _param(f"module {problem}")
    desc = body.get("desc")
    if desc is None:
        desc = ""
    elif not isinstance(desc, str):
        raise _param(f"desc must be a string, not {_kind(desc)}")
    else:
        problem = _string_problem(desc, MAX_STRING)
        if problem:
            raise _param(f"desc: {problem}")
    return Progress(step, desc, module)


# ---------------------------------------------------------------- answers and replies


def parse_answer(payload: bytes, max_payload: int = MAX_PAYLOAD) -> dict[str, object]:
    """A device's response object to a command or attribute set, as sent."""
    body = _load(payload, max_payload)
    if not isinstance(body, dict):
        raise _param(
            f'a response must be a JSON object {{"result": 0|1, "message": ...}}, not {_kind(body)}'
        )
    if "result" not in body:
        raise _param("result is missing (0 for success, 1 for failure)")
    result = body["result"]
    if type(result) is not int or result not in (0, 1):
        raise _param(f"result must be 0 (success) or 1 (failure), not {_shown(result)}")
    if "message" not in body:
        raise _param("message is missing")
    if not isinstance(body["message"], str):
        raise _param(f"message must be a string, not {_kind(body['message'])}")
    broken = _json_problem(body, 0, None)
    if broken:
        raise _param(f"{broken[1]}{_at(broken[0])}")
    return body


def response(
    ok: bool,
    *,
    now_s: int,
    errcode: str | None = None,
    message: str | None = None,
    method: str | None = None,
) -> dict[str, object]:
    """The platform's response object: {"result": 0, "message": "success", "ts"}
    or {"result": 1, "errcode", "message", "ts"}, plus "method" when given."""
    body: dict[str, object]
    if ok:
        if errcode is not None:
            raise ValueError("a success carries no errcode")
        body = {"result": 0, "message": "success" if message is None else message, "ts": now_s}
    else:
        if errcode is None or errcode not in ERRCODES:
            raise ValueError(f"a failure needs one of the errcodes {ERRCODES}, not {errcode!r}")
        body = {
            "result": 1,
            "errcode": errcode,
            "message": DEFAULT_MESSAGES[errcode] if message is None else message,
            "ts": now_s,
        }
    if method is not None:
        body["method"] = method
    return body
