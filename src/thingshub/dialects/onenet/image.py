"""OneNET's wire for the device image: the payloads of `$sys/{pid}/{name}/image/...`.

Rules:
- A device sends `image/update` (a JSON object with `state` holding
  `desired` and/or `reported`, an optional `version` and `id`) and
  `image/get` (an optional `id`). It is answered on `image/update/accepted`
  (the parts it sent, their metadata, the new version and timestamp),
  `image/update/rejected` and `image/get/rejected` ({"err_code", "err_msg",
  "detail"?}), and `image/get/accepted` (the image's properties); a
  non-empty delta is pushed on `image/update/delta`. Replies echo a valid
  `id`.
- The image's own rules (merge, delta, metadata, limits, the codes'
  meanings) are core/shadow.py's.

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

`parse_get` is lenient: the image/get topic has no error for a malformed
query, so an empty payload, bad JSON, a non-object or an invalid `id` all
mean "no id".
"""

from __future__ import annotations

import re
from typing import Any

from thingshub.core import jsontext, shadow
from thingshub.core.shadow import (
    ERR_MSG,
    MAX_INT,
    MAX_PAYLOAD,
    MISSING,
    Applied,
    Image,
    ImageError,
    JsonObject,
    RequestId,
    Update,
)

_SURROGATE = re.compile(r"[\ud800-\udfff]")
_STATE_KEYS = ("desired", "reported")


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
    shadow.check_parts(parts, id)
    for key in state:
        if key not in _STATE_KEYS:
            raise ImageError(165, f"'state' may hold only desired and reported, not {key!r}", id=id)
    version = doc.get("version")
    if "version" in doc and not shadow.positive_int(version):
        raise ImageError(165, "version must be a positive integer", id=id)
    if "id" in doc and id is None:
        raise ImageError(165, f"id must be a string or an integer within ±{MAX_INT}")
    return Update(
        desired=parts.get("desired", MISSING),
        reported=parts.get("reported", MISSING),
        version=version,
        id=id,
    )


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


def delta_message(image: Image) -> JsonObject | None:
    """The `image/update/delta` payload of an image, or None when there is no delta."""
    delta = image.delta()
    if not delta:
        return None
    return {
        "state": delta,
        "metadata": shadow.pick_metadata(image.meta_desired, delta),
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


def accepted(applied: Applied) -> JsonObject:
    """The `image/update/accepted` payload: the parts sent, their metadata, the new version."""
    update, image = applied.update, applied.image
    sent_state: JsonObject = {}
    sent_meta: JsonObject = {}
    for name, part in (("desired", update.desired), ("reported", update.reported)):
        if part is not MISSING:
            sent_state[name] = shadow.copy_value(part)
            sent_meta[name] = shadow.leaf_metadata(part, image.timestamp)
    out: JsonObject = {
        "state": sent_state,
        "metadata": sent_meta,
        "version": image.version,
        "timestamp": image.timestamp,
    }
    if update.id is not None:
        out["id"] = update.id
    return out
