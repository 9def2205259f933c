"""OneNET device image (device shadow): parse, check, merge, delta, metadata.

Rules (protocols.md section 2):
- An image is desired + reported state, metadata mirroring both (each leaf
  replaced by `{"timestamp": t}` of its last write), `version` and
  `timestamp` (Unix seconds, passed in: nothing here reads a clock).
- Merge: objects merge key by key, recursively; a scalar or an array replaces
  what was there; `null` deletes the key and its metadata; `"desired": null`
  clears all of desired (likewise reported). No empty object is ever left in
  state: one emptied by deletions is removed, and an empty object sent
  explicitly is merged like any object (it adds nothing where an object is,
  deletes a scalar or array it replaces, creates nothing where nothing is).
- Every accepted update makes a NEW image, version + 1 (1 for the first),
  timestamp = now; inputs are never mutated. An optional `version` in the
  update must equal the current version (0 when there is no image): 165.
- Delta: every desired leaf absent from reported or different from it, in
  desired's nested shape. Arrays compare as whole values; numbers compare by
  value (1 == 1.0); a bool never equals a number.
- Depth: desired/reported themselves are level 0, an object under them level
  1; the seed's `one.two.three.four.key` (four objects) is the deepest valid
  shape. Arrays do not add a level, objects inside arrays do. Independently,
  no path under desired/reported may cross more than MAX_NESTING containers
  (objects + arrays), so nothing here recurses without bound.
- An array is one value: kept as sent (nulls and objects inside it too),
  replaced whole. Numbers written with a fraction or exponent are floats, not
  bound by MAX_INT but required to be finite.
- Sizes: payload bytes as received; the stored document as compact JSON
  (`(",", ":")` separators) in UTF-8, non-ASCII not escaped.
- A payload nested past the interpreter's stack is parsed without recursion,
  so it is judged by the same rules in the same order as any other.

Check order of `parse_update` (the first rule broken gives the code):
  160  not UTF-8, not JSON (NaN/Infinity included), or top level not an object
  161  payload longer than MAX_PAYLOAD bytes
  163  `state` missing or not an object
  164  `state` holds neither `desired` nor `reported`
  162  an object under desired/reported deeper than MAX_DEPTH, or a path
       through more than MAX_NESTING containers (only object-valued
       desired/reported are looked into)
  165  desired/reported neither object nor null; a key of `state` other than
       desired/reported; a key (anywhere under desired/reported, arrays
       included) not 1-30 of [A-Za-z0-9_]; a string over MAX_STRING UTF-8
       bytes or holding an unpaired surrogate; an integer outside
       ±MAX_INT; a float that is not finite (1e400); `version` present and
       not a positive integer (bools are not integers; null is not absent);
       `id` present and not a string or an integer within ±MAX_INT.
  Other top-level keys are ignored; of duplicate keys the last wins (as in
  json.loads). An error raised once the payload is known to be an object
  carries the request's `id` when that id is valid.
`apply_update` then: 165 version conflict, 161 stored document too large.

`update_from_patch` (HTTP PATCH): 164 (no desired), 162, 165 (as above, plus
values of a type JSON does not have), 161 (the desired part longer than
MAX_PAYLOAD as compact JSON); a `version` of None means absent.

`parse_get` is lenient: the image/get topic has no error for a malformed
query, so an empty payload, bad JSON, a non-object or an invalid `id` all
mean "no id".
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

from thingshub.core import jsontext
from thingshub.core.errors import InvalidRequest, Unavailable

ERR_MSG: Final[dict[int, str]] = {
    128: "unspecified error",
    160: "illegal json",
    161: "json out of bound",
    162: "json depth out of bound",
    163: "state key not found",
    164: "desired or reported key not found",
    165: "invalid parameters",
    166: "device image existed",
    167: "device image not exists",
}

MAX_PAYLOAD: Final = 4096
MAX_DOCUMENT: Final = 4096
MAX_DEPTH: Final = 4
MAX_KEY: Final = 30
MAX_STRING: Final = 512
MAX_INT: Final = 2**52
MAX_NESTING: Final = 32  # containers (objects + arrays) on one path under desired/reported

JsonObject = dict[str, Any]
RequestId = str | int | None

_KEY = re.compile(r"[A-Za-z0-9_]{1,30}")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_STATE_KEYS = ("desired", "reported")


class ImageError(InvalidRequest):
    """A rule of the device image is broken; `err_code`/`err_msg` are OneNET's.

    `id` is the request's id when it is known and valid, for the rejected reply.
    """

    def __init__(self, err_code: int, detail: str | None = None, *, id: RequestId = None) -> None:
        if err_code not in ERR_MSG:
            raise ValueError(f"unknown device image err_code {err_code}")
        err_msg = ERR_MSG[err_code]
        super().__init__(detail or err_msg, err_code=err_code)
        self.err_code: int = err_code
        self.err_msg: str = err_msg
        self.detail = detail
        self.id = id


class _Missing(enum.Enum):
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing.MISSING
"""A part of an update that was not sent (distinct from None: "clear all")."""

Part = JsonObject | None | _Missing


# ---------------------------------------------------------------- values


def _copy(value: Any) -> Any:
    """A deep copy of a JSON value (dicts and lists; scalars are immutable)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _same(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value, a bool never equals a number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float):
        return isinstance(b, int | float) and a == b
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(_same(v, b[k]) for k, v in a.items())
        )
    return type(a) is type(b) and a == b


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _leaf_metadata(value: Any, now_s: int) -> Any:
    """Metadata mirroring `value`: every non-object value becomes {"timestamp": now_s}."""
    if isinstance(value, dict):
        return {k: _leaf_metadata(v, now_s) for k, v in value.items()}
    return {"timestamp": now_s}


def _delta(desired: JsonObject, reported: JsonObject) -> JsonObject:
    out: JsonObject = {}
    for key, want in desired.items():
        have = reported.get(key, MISSING)
        if isinstance(want, dict):
            sub = _delta(want, have if isinstance(have, dict) else {})
            if sub:
                out[key] = sub
        elif have is MISSING or not _same(want, have):
            out[key] = _copy(want)
    return out


def _pick_metadata(meta: JsonObject, shape: JsonObject) -> JsonObject:
    """The part of `meta` at the leaves of `shape` (a sub-tree of the state `meta` mirrors)."""
    out: JsonObject = {}
    for key, value in shape.items():
        if isinstance(value, dict):
            out[key] = _pick_metadata(meta[key], value)
        else:
            out[key] = _copy(meta[key])
    return out


def _mirrors(state: Any, meta: Any) -> bool:
    if not isinstance(state, dict) or not isinstance(meta, dict) or state.keys() != meta.keys():
        return False
    for key, value in state.items():
        if isinstance(value, dict):
            if not value or not _mirrors(value, meta[key]):
                return False
        else:
            leaf = meta[key]
            if not isinstance(leaf, dict) or not _is_int(leaf.get("timestamp")):
                return False
    return True


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


# ---------------------------------------------------------------- the image


@dataclass(frozen=True, slots=True)
class Image:
    """One device image. Treat the dicts as read-only: every change makes a new Image."""

    desired: JsonObject
    reported: JsonObject
    meta_desired: JsonObject
    meta_reported: JsonObject
    version: int
    timestamp: int  # Unix seconds

    def delta(self) -> JsonObject:
        return _delta(self.desired, self.reported)

    def properties(self) -> JsonObject:
        """The `properties` object of the image document (fresh copies)."""
        doc = self.stored()
        delta = self.delta()
        if delta:
            doc["state"]["delta"] = delta
        return doc

    def stored(self) -> JsonObject:
        """What is persisted: `properties()` without the derived delta (fresh copies)."""
        return {
            "state": {"desired": _copy(self.desired), "reported": _copy(self.reported)},
            "metadata": {
                "desired": _copy(self.meta_desired),
                "reported": _copy(self.meta_reported),
            },
            "version": self.version,
            "timestamp": self.timestamp,
        }

    @classmethod
    def from_stored(cls, doc: Any) -> Image:
        """Rebuild an image from `stored()` (or a `properties()` object: delta is ignored).

        A document breaking the image's rules is a fault of the platform, not of
        the request: Unavailable with err_code 128.
        """
        try:
            state = doc["state"]
            meta = doc["metadata"]
            desired, reported = state["desired"], state["reported"]
            meta_desired, meta_reported = meta["desired"], meta["reported"]
            version, timestamp = doc["version"], doc["timestamp"]
        except (KeyError, TypeError, IndexError) as exc:
            raise Unavailable(f"stored device image is corrupt: {exc!r}", err_code=128) from exc
        if not (_mirrors(desired, meta_desired) and _mirrors(reported, meta_reported)):
            raise Unavailable(
                "stored device image is corrupt: metadata does not mirror state", err_code=128
            )
        if not (_is_int(version) and version >= 1 and _is_int(timestamp)):
            raise Unavailable(
                "stored device image is corrupt: bad version or timestamp", err_code=128
            )
        copies = (_copy(desired), _copy(reported), _copy(meta_desired), _copy(meta_reported))
        return cls(*copies, version, timestamp)

    def size(self) -> int:
        """Bytes of the compact JSON of `stored()`."""
        return len(
            _compact(
                {
                    "state": {"desired": self.desired, "reported": self.reported},
                    "metadata": {"desired": self.meta_desired, "reported": self.meta_reported},
                    "version": self.version,
                    "timestamp": self.timestamp,
                }
            )
        )


def empty_image(now_s: int) -> Image:
    """The image an explicit creation (HTTP POST) makes: empty state, version 1."""
    return Image({}, {}, {}, {}, 1, now_s)


# ---------------------------------------------------------------- updates


@dataclass(frozen=True, slots=True)
class Update:
    """A checked update. `desired`/`reported`: an object to merge, None to clear
    all, MISSING when not sent. `version`: the optimistic lock, if sent."""

    desired: Part = MISSING
    reported: Part = MISSING
    version: int | None = None
    id: RequestId = None

    @property
    def has_desired(self) -> bool:
        return self.desired is not MISSING

    @property
    def has_reported(self) -> bool:
        return self.reported is not MISSING


def _load(payload: bytes) -> Any:
    """Parse UTF-8 JSON; ImageError 160 on anything else."""
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ImageError(160, "the payload is not valid UTF-8") from exc
    try:
        return jsontext.loads(text)
    except jsontext.JsonError as exc:
        raise ImageError(160, f"the payload is not valid JSON: {exc}") from exc


def _valid_id(value: object) -> bool:
    if isinstance(value, str):
        return _SURROGATE.search(value) is None
    return isinstance(value, int) and not isinstance(value, bool) and -MAX_INT <= value <= MAX_INT


def _check_depth(value: Any, objects: int, containers: int) -> str | None:
    """A description of the first path too deep, or None (recursion bounded by the limits)."""
    children: Iterable[Any]
    if isinstance(value, dict):
        objects, containers = objects + 1, containers + 1
        children = value.values()
    elif isinstance(value, list):
        containers += 1
        children = value
    else:
        return None
    if objects > MAX_DEPTH:
        return f"objects are nested more than {MAX_DEPTH} levels deep"
    if containers > MAX_NESTING:
        return f"objects and arrays are nested more than {MAX_NESTING} levels deep"
    for child in children:
        problem = _check_depth(child, objects, containers)
        if problem:
            return problem
    return None


def _check_value(value: Any) -> tuple[str, str] | None:
    """(path below `value`, what is wrong) for the first broken value rule, or None.

    The path is built only on failure; recursion is bounded by the 162 check."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if -MAX_INT <= value <= MAX_INT else ("", f"integers must be within ±{MAX_INT}")
    if isinstance(value, float):
        return None if math.isfinite(value) else ("", "numbers must be finite")
    if isinstance(value, str):
        if _SURROGATE.search(value):
            return "", "the string holds an unpaired surrogate"
        if len(value) > MAX_STRING // 4 and len(value.encode("utf-8")) > MAX_STRING:
            return "", f"strings may be at most {MAX_STRING} bytes (UTF-8)"
        return None
    if isinstance(value, list):
        for index, item in enumerate(value):
            problem = _check_value(item)
            if problem:
                return f"[{index}]{problem[0]}", problem[1]
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not _KEY.fullmatch(key):
                return "", f"key {key!r} must be 1-{MAX_KEY} characters of letters, digits, '_'"
            problem = _check_value(item)
            if problem:
                return f".{key}{problem[0]}", problem[1]
        return None
    return "", f"{type(value).__name__} is not a JSON value"


def _check_parts(parts: dict[str, Any], id: RequestId) -> None:
    """162 then the 165 rules of desired/reported, in the documented order."""
    for name, part in parts.items():
        if isinstance(part, dict):
            problem = _check_depth(part, -1, -1)  # desired/reported itself is level 0
            if problem:
                raise ImageError(162, f"{name}: {problem}", id=id)
    for name, part in parts.items():
        if part is not None and not isinstance(part, dict):
            raise ImageError(165, f"{name} must be an object or null", id=id)
    for name, part in parts.items():
        broken = _check_value(part)
        if broken:
            raise ImageError(165, f"{name}{broken[0]}: {broken[1]}", id=id)


def parse_update(payload: bytes) -> Update:
    """Check an `image/update` payload from a device (order in the module header)."""
    doc = _load(payload)
    if not isinstance(doc, dict):
        raise ImageError(160, "the payload must be a JSON object")
    raw_id = doc.get("id")
    id = raw_id if _valid_id(raw_id) else None
    if len(payload) > MAX_PAYLOAD:
        raise ImageError(
            161, f"the payload is {len(payload)} bytes, more than {MAX_PAYLOAD}", id=id
        )
    state = doc.get("state")
    if not isinstance(state, dict):
        raise ImageError(163, "the payload needs a 'state' object", id=id)
    parts = {name: state[name] for name in _STATE_KEYS if name in state}
    if not parts:
        raise ImageError(164, "'state' needs 'desired' or 'reported'", id=id)
    _check_parts(parts, id)
    for key in state:
        if key not in _STATE_KEYS:
            raise ImageError(165, f"'state' may hold only desired and reported, not {key!r}", id=id)
    version = doc.get("version")
    if "version" in doc and not _positive_int(version):
        raise ImageError(165, "version must be a positive integer", id=id)
    if "id" in doc and id is None:
        raise ImageError(165, f"id must be a string or an integer within ±{MAX_INT}")
    return Update(
        desired=parts.get("desired", MISSING),
        reported=parts.get("reported", MISSING),
        version=version,
        id=id,
    )


def update_from_patch(desired: object = MISSING, version: object = None) -> Update:
    """Check an application's PATCH of desired (values already parsed from JSON).

    `desired`: MISSING when the body had none (164); None clears all of desired.
    `version`: None or MISSING when absent, else a positive integer (165).
    """
    if desired is MISSING:
        raise ImageError(164, "the update needs 'desired'")
    _check_parts({"desired": desired}, None)
    if version is MISSING or version is None:
        checked_version = None
    elif _positive_int(version):
        checked_version = version
    else:
        raise ImageError(165, "version must be a positive integer")
    if not (desired is None or isinstance(desired, dict)):  # already refused by _check_parts
        raise ImageError(165, "desired must be an object or null")
    size = len(_compact(desired))
    if size > MAX_PAYLOAD:
        raise ImageError(161, f"desired is {size} bytes as JSON, more than {MAX_PAYLOAD}")
    return Update(desired=desired, version=checked_version)


def parse_get(payload: bytes) -> RequestId:
    """The id of an `image/get` request, or None (lenient: see the module header)."""
    if not payload.strip():
        return None
    try:
        doc = _load(payload)
    except ImageError:
        return None
    if not isinstance(doc, dict):
        return None
    value = doc.get("id")
    return value if _valid_id(value) else None


# ---------------------------------------------------------------- applying


@dataclass(frozen=True, slots=True)
class Applied:
    """The new image, the `image/update/accepted` payload, and the delta payload
    to publish (None when the new image has no delta)."""

    image: Image
    accepted: JsonObject
    delta: JsonObject | None


def _merged(
    state: JsonObject, meta: JsonObject, patch: JsonObject, now_s: int
) -> tuple[JsonObject, JsonObject]:
    """`patch` merged into `state`/`meta`, as new dicts.

    Only the objects on the paths the patch touches are copied; the rest is
    shared with the old image, which is safe since images are never mutated."""
    state, meta = dict(state), dict(meta)
    for key, value in patch.items():
        if value is None:
            state.pop(key, None)
            meta.pop(key, None)
        elif isinstance(value, dict):
            sub, sub_meta = state.get(key), meta.get(key)
            if not isinstance(sub, dict) or not isinstance(sub_meta, dict):
                sub, sub_meta = {}, {}
            sub, sub_meta = _merged(sub, sub_meta, value, now_s)
            if sub:
                state[key], meta[key] = sub, sub_meta
            else:
                state.pop(key, None)
                meta.pop(key, None)
        else:
            state[key] = _copy(value)
            meta[key] = {"timestamp": now_s}
    return state, meta


def _apply_part(
    state: JsonObject, meta: JsonObject, part: Part, now_s: int
) -> tuple[JsonObject, JsonObject]:
    if part is MISSING:
        return state, meta
    if part is None:
        return {}, {}
    return _merged(state, meta, part, now_s)


def apply_update(current: Image | None, update: Update, now_s: int) -> Applied:
    """Merge a checked update into the current image (None: no image yet)."""
    if not (update.has_desired or update.has_reported):
        raise ImageError(164, "the update needs 'desired' or 'reported'", id=update.id)
    current_version = current.version if current else 0
    if update.version is not None and update.version != current_version:
        raise ImageError(
            165,
            f"version conflict: the update is for version {update.version}, "
            f"the image is at version {current_version}",
            id=update.id,
        )
    base = current or Image({}, {}, {}, {}, 0, now_s)
    desired, meta_desired = _apply_part(base.desired, base.meta_desired, update.desired, now_s)
    reported, meta_reported = _apply_part(base.reported, base.meta_reported, update.reported, now_s)
    image = Image(desired, reported, meta_desired, meta_reported, current_version + 1, now_s)
    size = image.size()
    if size > MAX_DOCUMENT:
        raise ImageError(
            161,
            f"the image would be {size} bytes as JSON, more than {MAX_DOCUMENT}",
            id=update.id,
        )
    sent_state: JsonObject = {}
    sent_meta: JsonObject = {}
    for name, part in (("desired", update.desired), ("reported", update.reported)):
        if part is not MISSING:
            sent_state[name] = _copy(part)
            sent_meta[name] = _leaf_metadata(part, now_s)
    accepted: JsonObject = {
        "state": sent_state,
        "metadata": sent_meta,
        "version": image.version,
        "timestamp": now_s,
    }
    if update.id is not None:
        accepted["id"] = update.id
    return Applied(image, accepted, delta_message(image))


def delta_message(image: Image) -> JsonObject | None:
    """The `image/update/delta` payload of an image, or None when there is no delta."""
    delta = image.delta()
    if not delta:
        return None
    return {
        "state": delta,
        "metadata": _pick_metadata(image.meta_desired, delta),
        "version": image.version,
        "timestamp": image.timestamp,
    }


def get_accepted(image: Image, id: RequestId) -> JsonObject:
    """The `image/get/accepted` payload: the image's properties, plus the id when sent."""
    out = image.properties()
    if id is not None:
        out["id"] = id
    return out


def rejected(err_code: int, id: RequestId, detail: str | None = None) -> JsonObject:
    """An `.../rejected` payload. A code outside ERR_MSG is reported as 128."""
    if err_code not in ERR_MSG:
        err_code = 128
    out: JsonObject = {"err_code": err_code, "err_msg": ERR_MSG[err_code]}
    if id is not None:
        out["id"] = id
    if detail:
        out["detail"] = detail
    return out
