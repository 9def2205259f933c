"""The device image (device shadow): check, merge, delta, metadata.

OneNET's wire for it (the payloads of `image/...`, request ids, reply
bodies) is dialects/onenet/image.py; the rules here serve it and the HTTP
API alike, and their codes (160-167, OneNET's) are the errors' wire hints.

Rules:
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
  1; OneNET's documented `one.two.three.four.key` (four objects) is the deepest valid
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

The codes of a device's update are dialects/onenet/image.py's check order;
`apply_update` then: 165 version conflict, 161 stored document too large.

`update_from_patch` (HTTP PATCH): 164 (no desired), 162, 165 (as there, plus
values of a type JSON does not have), 161 (the desired part longer than
MAX_PAYLOAD as compact JSON); a `version` of None means absent.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

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


def copy_value(value: Any) -> Any:
    """A deep copy of a JSON value (dicts and lists; scalars are immutable)."""
    if isinstance(value, dict):
        return {k: copy_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_value(v) for v in value]
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


def leaf_metadata(value: Any, now_s: int) -> Any:
    """Metadata mirroring `value`: every non-object value becomes {"timestamp": now_s}."""
    if isinstance(value, dict):
        return {k: leaf_metadata(v, now_s) for k, v in value.items()}
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
            out[key] = copy_value(want)
    return out


def pick_metadata(meta: JsonObject, shape: JsonObject) -> JsonObject:
    """The part of `meta` at the leaves of `shape` (a sub-tree of the state `meta` mirrors)."""
    out: JsonObject = {}
    for key, value in shape.items():
        if isinstance(value, dict):
            out[key] = pick_metadata(meta[key], value)
        else:
            out[key] = copy_value(meta[key])
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


def positive_int(value: object) -> TypeGuard[int]:
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
            "state": {"desired": copy_value(self.desired), "reported": copy_value(self.reported)},
            "metadata": {
                "desired": copy_value(self.meta_desired),
                "reported": copy_value(self.meta_reported),
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
        copies = (
            copy_value(desired),
            copy_value(reported),
            copy_value(meta_desired),
            copy_value(meta_reported),
        )
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


def check_parts(parts: dict[str, Any], id: RequestId) -> None:
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


def update_from_patch(desired: object = MISSING, version: object = None) -> Update:
    """Check an application's PATCH of desired (values already parsed from JSON).

    `desired`: MISSING when the body had none (164); None clears all of desired.
    `version`: None or MISSING when absent, else a positive integer (165).
    """
    if desired is MISSING:
        raise ImageError(164, "the update needs 'desired'")
    check_parts({"desired": desired}, None)
    if version is MISSING or version is None:
        checked_version = None
    elif positive_int(version):
        checked_version = version
    else:
        raise ImageError(165, "version must be a positive integer")
    if not (desired is None or isinstance(desired, dict)):  # already refused by _check_parts
        raise ImageError(165, "desired must be an object or null")
    size = len(_compact(desired))
    if size > MAX_PAYLOAD:
        raise ImageError(161, f"desired is {size} bytes as JSON, more than {MAX_PAYLOAD}")
    return Update(desired=desired, version=checked_version)


# ---------------------------------------------------------------- applying


@dataclass(frozen=True, slots=True)
class Applied:
    """The new image and the update that made it (what an acceptance echoes)."""

    image: Image
    update: Update


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
            state[key] = copy_value(value)
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
    return Applied(image, update)
