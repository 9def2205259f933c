"""What a device posts on its thing-model topics, read from OneJSON `params`.

Rules:
- `property/post`: {"<id>": {"value": v, "time": ms?}, ...}; `event/post`:
  {"<event>": {"value": {<output params>}, "time": ms?}, ...}. Each entry is
  an object holding `value`; empty `params` is refused.
- `time` is Unix ms: absent, null or 0 means when the platform received it;
  otherwise an integer >= 0 (an integral float too), stored as sent (no
  plausibility window). `history/post` requires it.
- `pack/post`: 1-10 entries [{"identity"?: {"productID", "deviceName"},
  "properties"?: {as property/post}, "events"?: {as event/post}}], each
  with at most 100 values; `event` is an alias of `events` (both: refused);
  an entry with neither is refused. `history/post`: the same, each
  identifier mapping to an array of at most 100 {"value", "time"}.
- `property/desired/get`: ["<id>", ...] ([] or absent: all);
  `property/desired/delete`: {"<id>": {"version": n?}, ...}.
- Identifiers are 1-128 characters (the model, when there is one, is
  checked by the service). Every refusal here is 313 "bad request" with a
  hint naming the entry.
"""

from __future__ import annotations

from typing import Any, Final

from thingshub.core import thingmodel
from thingshub.core.messages import ThingData, ThingValue
from thingshub.core.thingvalues import ValuesAt
from thingshub.dialects.thing.onejson import EnvelopeError

MAX_PACK: Final = 10
MAX_VALUES: Final = 100
MAX_HISTORY: Final = 100
MAX_IDENTIFIER: Final = 128
_UNSET: Final = object()


def _bad(message: str, request_id: str) -> EnvelopeError:
    return EnvelopeError(thingmodel.BAD_REQUEST, message, request_id)


def identifier(key: object, request_id: str, where: str) -> str:
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_IDENTIFIER:
        raise _bad(f"{where}identifiers are 1-{MAX_IDENTIFIER} characters", request_id)
    return key


def time_of(entry: dict[str, Any], request_id: str, where: str, *, required: bool) -> int | None:
    value = entry.get("time")
    if value is None or (value == 0 and not isinstance(value, bool)):
        if required:
            raise _bad(f"{where}time is required (Unix ms)", request_id)
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"{where}time must be Unix ms", request_id)
    if isinstance(value, float) and not value.is_integer():
        raise _bad(f"{where}time must be a whole number of ms", request_id)
    if value < 0:
        raise _bad(f"{where}time must not be negative", request_id)
    return int(value)


def properties(params: object, request_id: str) -> ValuesAt | tuple[ThingValue, ...]:
    """The entries of a property/post `params`: its values at one time (`ValuesAt`)
    when every entry is an object holding `value`, all carry the same Unix ms (over 1)
    or none, and every identifier is valid; else `values`' (which also refuses,
    naming the first entry at fault).

    Why: a post of ten values was a loop of ten turns with six tests each; here a
    comprehension takes the values (an entry that is no object holding `value`
    fails it) and a loop compares the times. Times are compared by equality: `true`
    equals 1, so a time of 1 or less is left to `values`; a float equal to the first
    entry's integer time is read by `values` as that integer, the same points."""
    if type(params) is not dict or not params:
        return values(params, request_id)  # refused there
    try:
        found = {key: entry["value"] for key, entry in params.items() if len(key) <= MAX_IDENTIFIER}
    except (TypeError, KeyError):
        return values(params, request_id)  # an entry not an object holding value
    if len(found) != len(params) or "" in params:
        return values(params, request_id)  # an identifier refused there
    at: object = _UNSET
    for entry in params.values():
        ts = entry.get("time")
        if ts != at:
            if at is not _UNSET:
                return values(params, request_id)  # times of their own
            at = ts
    if at is not None and (type(at) is not int or at <= 1):
        return values(params, request_id)  # 0, 1 (maybe `true`), a float, a refusal
    return ValuesAt(at, found)


def values(params: object, request_id: str, where: str = "") -> tuple[ThingValue, ...]:
    """The entries of a property/post or event/post `params`."""
    if not isinstance(params, dict):
        raise _bad(f"{where}params must be an object of identifiers", request_id)
    if not params:
        raise _bad(f"{where}params is empty", request_id)
    out = []
    for key, entry in params.items():
        name = identifier(key, request_id, where)
        if not isinstance(entry, dict) or "value" not in entry:
            raise _bad(f"{where}{name}: an entry is an object holding value", request_id)
        ts = entry.get("time")
        if type(ts) is not int or ts <= 0:  # the usual Unix ms is taken as it is
            ts = time_of(entry, request_id, f"{where}{name}: ", required=False)
        out.append(ThingValue(name, entry["value"], ts))
    return tuple(out)


def history(params: object, request_id: str, where: str) -> tuple[ThingValue, ...]:
    """The entries of a history/post section: identifiers mapping to arrays of values."""
    if not isinstance(params, dict):
        raise _bad(f"{where}must be an object of identifiers", request_id)
    out = []
    for key, entries in params.items():
        name = identifier(key, request_id, where)
        if not isinstance(entries, list) or not entries:
            raise _bad(f"{where}{name}: an array of {{value, time}} is expected", request_id)
        if len(entries) > MAX_HISTORY:
            raise _bad(f"{where}{name}: at most {MAX_HISTORY} items", request_id)
        for index, entry in enumerate(entries):
            at = f"{where}{name}[{index}]: "
            if not isinstance(entry, dict) or "value" not in entry:
                raise _bad(f"{at}an item is an object holding value and time", request_id)
            out.append(
                ThingValue(name, entry["value"], time_of(entry, request_id, at, required=True))
            )
    return tuple(out)


def pack(params: object, request_id: str, *, historical: bool) -> tuple[ThingData, ...]:
    """The entries of a pack/post or history/post `params`."""
    if not isinstance(params, list) or not params:
        raise _bad("params must be an array of 1 to 10 entries", request_id)
    if len(params) > MAX_PACK:
        raise _bad(f"{len(params)} entries; at most {MAX_PACK}", request_id)
    read = history if historical else _section
    out = []
    for index, entry in enumerate(params):
        where = f"[{index}] "
        if not isinstance(entry, dict):
            raise _bad(f"{where}an entry is an object", request_id)
        identity = _identity(entry.get("identity"), request_id, where)
        if "event" in entry and "events" in entry:
            raise _bad(f"{where}event and events are the same: send one", request_id)
        events_raw = entry.get("events", entry.get("event"))
        if "properties" not in entry and events_raw is None:
            raise _bad(f"{where}an entry holds properties or events", request_id)
        properties = read(entry.get("properties", {}), request_id, f"{where}properties.")
        events = read({} if events_raw is None else events_raw, request_id, f"{where}events.")
        identifiers = {v.identifier for v in properties} | {v.identifier for v in events}
        if len(identifiers) > MAX_VALUES:
            raise _bad(f"{where}at most {MAX_VALUES} values", request_id)
        out.append(ThingData(identity, properties, events))
    return tuple(out)


def _section(params: object, request_id: str, where: str) -> tuple[ThingValue, ...]:
    if params == {}:
        return ()
    return values(params, request_id, where)


def _identity(raw: object, request_id: str, where: str) -> tuple[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _bad(f"{where}identity is an object {{productID, deviceName}}", request_id)
    product, device = raw.get("productID"), raw.get("deviceName")
    if not isinstance(product, str) or not product or not isinstance(device, str) or not device:
        raise _bad(f"{where}identity needs productID and deviceName", request_id)
    return product, device


def desired_get(params: object, request_id: str) -> tuple[str, ...]:
    if params is None:
        return ()
    if not isinstance(params, list):
        raise _bad("params must be an array of identifiers", request_id)
    return tuple(identifier(key, request_id, "") for key in params)


def desired_delete(params: object, request_id: str) -> dict[str, int | None]:
    if not isinstance(params, dict) or not params:
        raise _bad("params must be an object of identifiers", request_id)
    out: dict[str, int | None] = {}
    for key, raw in params.items():
        name = identifier(key, request_id, "")
        entry = {} if raw is None else raw
        if not isinstance(entry, dict):
            raise _bad(f"{name}: an entry is an object {{version?}}", request_id)
        version = entry.get("version")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise _bad(f"{name}: version must be an integer", request_id)
        out[name] = version
    return out
