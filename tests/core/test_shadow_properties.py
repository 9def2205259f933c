"""Properties of the device image rules, over generated states and updates.

The strategies make valid nested states (keys of the allowed alphabet, at
most four object levels, strings of at most 512 bytes, integers within
±2**52, finite floats, bools, arrays), and patches that may also hold nulls
and empty objects. Expectations are computed by independent little models
(flattened paths, a canonical form for JSON equality), not by the code under
test.
"""

from __future__ import annotations

import contextlib
import copy
import json
from functools import cache
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from thingshub.core import jsontext, shadow
from thingshub.core.shadow import (
    MAX_DOCUMENT,
    MAX_INT,
    MISSING,
    Image,
    ImageError,
    Update,
    apply_update,
)
from thingshub.dialects.onenet import image as wire
from thingshub.dialects.onenet.image import parse_update

NOW = st.integers(1_000_000_000, 1_999_999_999)  # one width: sizes do not move with time

KEYS = st.one_of(
    st.sampled_from(["a", "b", "c", "lights", "color", "x_1"]),
    st.from_regex(r"[A-Za-z0-9_]{1,30}", fullmatch=True),
)
STRINGS = st.one_of(
    st.text(max_size=8),
    st.text(alphabet="aé€𝄞", min_size=100, max_size=128),  # at most 512 bytes
)
SCALARS = st.one_of(
    st.booleans(),
    st.integers(-MAX_INT, MAX_INT),
    st.sampled_from([-MAX_INT, MAX_INT, 0, 1]),
    st.floats(allow_nan=False, allow_infinity=False),
    STRINGS,
)


@cache
def leaves(levels: int) -> st.SearchStrategy[Any]:
    """A non-object value; objects inside its arrays use at most `levels` levels."""
    in_array: st.SearchStrategy[Any] = st.one_of(SCALARS, st.none())
    if levels > 0:
        in_array |= st.dictionaries(KEYS, st.one_of(SCALARS, st.none()), max_size=2)
    arrays = st.lists(in_array, max_size=3)
    return st.one_of(SCALARS, arrays, st.lists(arrays, max_size=2))


@cache
def objects(levels: int, patch: bool) -> st.SearchStrategy[dict[str, Any]]:
    """An object using at most `levels` object levels (itself included).

    A state object is never empty; a patch may hold nulls and empty objects.
    """
    children: st.SearchStrategy[Any] = leaves(levels - 1)
    if levels > 1:
        children |= objects(levels - 1, patch)
    if patch:
        children |= st.none()
    return st.dictionaries(KEYS, children, min_size=0 if patch else 1, max_size=3)


def parts(patch: bool) -> st.SearchStrategy[dict[str, Any]]:
    """desired/reported themselves (level 0): their objects may use four levels."""
    return st.dictionaries(
        KEYS, st.one_of(leaves(4), objects(4, patch), *([st.none()] if patch else [])), max_size=4
    )


STATES = parts(patch=False)
PATCHES = parts(patch=True)
PART = st.one_of(st.just(MISSING), st.none(), PATCHES)
UPDATES = st.builds(Update, desired=PART, reported=PART).filter(
    lambda u: u.has_desired or u.has_reported
)


# ---------------------------------------------------------------- little models


def canonical(value: Any) -> Any:
    """A form in which JSON-equal values are ==: numbers by value, bools apart."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("num", float(value))  # exact within ±2**52
    if isinstance(value, list):
        return ("list", tuple(canonical(v) for v in value))
    if isinstance(value, dict):
        return ("obj", frozenset((k, canonical(v)) for k, v in value.items()))
    return (type(value).__name__, value)


def flat(state: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out: dict[tuple[str, ...], Any] = {}
    for key, value in state.items():
        if isinstance(value, dict):
            out.update(flat(value, (*prefix, key)))
        else:
            out[(*prefix, key)] = value
    return out


def model_merge(
    values: dict[tuple[str, ...], Any],
    stamps: dict[tuple[str, ...], int],
    patch: dict[str, Any],
    now: int,
    prefix: tuple[str, ...] = (),
) -> None:
    """The merge rule on flattened paths: an object sent over a value replaces it."""

    def drop(path: tuple[str, ...]) -> None:
        for p in [p for p in values if p[: len(path)] == path]:
            del values[p], stamps[p]

    for key, value in patch.items():
        path = (*prefix, key)
        if value is None:
            drop(path)
        elif isinstance(value, dict):
            if path in values:
                del values[path], stamps[path]
            model_merge(values, stamps, value, now, path)
        else:
            drop(path)
            values[path], stamps[path] = value, now


def mirrors(state: Any, meta: Any) -> bool:
    if not isinstance(meta, dict) or state.keys() != meta.keys():
        return False
    for key, value in state.items():
        if isinstance(value, dict):
            if not value or not mirrors(value, meta[key]):
                return False
        elif set(meta[key]) != {"timestamp"} or type(meta[key]["timestamp"]) is not int:
            return False
    return True


def image_of(desired: dict[str, Any], reported: dict[str, Any], now: int) -> Image | None:
    try:
        return apply_update(None, Update(desired=desired, reported=reported), now).image
    except ImageError as exc:
        assert exc.err_code == 161
        return None


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


# ---------------------------------------------------------------- properties


@given(STATES, STATES, NOW)
def test_delta_is_empty_iff_every_desired_leaf_equals_reported(
    desired: dict[str, Any], reported: dict[str, Any], now: int
) -> None:
    image = image_of(desired, reported, now)
    assume(image is not None)
    assert image is not None
    have = flat(image.reported)
    differing = {
        path: value
        for path, value in flat(image.desired).items()
        if path not in have or canonical(have[path]) != canonical(value)
    }
    delta = image.delta()
    assert flat(delta) == differing
    assert (delta == {}) == all(
        path in have and canonical(have[path]) == canonical(value)
        for path, value in flat(image.desired).items()
    )
    message = wire.delta_message(image)
    if delta:
        assert message is not None
        assert message["state"] == delta and "delta" in image.properties()["state"]
        meta = flat(image.meta_desired)
        assert flat(message["metadata"]) == {
            (*p, "timestamp"): meta[(*p, "timestamp")] for p in differing
        }
    else:
        assert message is None and "delta" not in image.properties()["state"]


@given(st.lists(st.tuples(UPDATES, NOW), min_size=1, max_size=6))
def test_merge_matches_the_path_model_and_versions_grow_by_one(
    steps: list[tuple[Update, int]],
) -> None:
    image: Image | None = None
    models: dict[str, tuple[dict[tuple[str, ...], Any], dict[tuple[str, ...], int]]] = {
        "desired": ({}, {}),
        "reported": ({}, {}),
    }
    for u, now in steps:
        try:
            applied = apply_update(image, u, now)
        except ImageError as exc:
            assert exc.err_code == 161
            continue
        assert applied.image.version == (image.version if image else 0) + 1
        assert applied.image.timestamp == now
        assert wire.accepted(applied)["version"] == applied.image.version
        image = applied.image
        for name in ("desired", "reported"):
            part = getattr(u, name)
            values, stamps = models[name]
            if part is None:
                values.clear()
                stamps.clear()
            elif part is not MISSING:
                model_merge(values, stamps, part, now)
        assert flat(image.desired) == models["desired"][0]
        assert flat(image.reported) == models["reported"][0]
        assert {p[:-1]: t for p, t in flat(image.meta_desired).items()} == models["desired"][1]
        assert {p[:-1]: t for p, t in flat(image.meta_reported).items()} == models["reported"][1]
        assert mirrors(image.desired, image.meta_desired)
        assert mirrors(image.reported, image.meta_reported)
        assert image.size() <= MAX_DOCUMENT
        assert image.size() == len(
            json.dumps(image.stored(), separators=(",", ":"), ensure_ascii=False).encode()
        )
        assert Image.from_stored(json.loads(json.dumps(image.stored()))) == image


@given(STATES, STATES, NOW, NOW)
def test_applying_the_own_state_again_changes_only_version_and_times(
    desired: dict[str, Any], reported: dict[str, Any], t1: int, t2: int
) -> None:
    image = image_of(desired, reported, t1)
    assume(image is not None and image.size() < MAX_DOCUMENT - 10)  # room for a longer version
    assert image is not None
    again = apply_update(image, Update(desired=image.desired, reported=image.reported), t2)
    new = again.image
    assert dumps(new.desired) == dumps(image.desired)
    assert dumps(new.reported) == dumps(image.reported)
    assert (new.version, new.timestamp) == (image.version + 1, t2)
    for meta in (new.meta_desired, new.meta_reported):
        assert set(flat(meta).values()) <= {t2}
    assert flat(new.meta_desired).keys() == flat(image.meta_desired).keys()
    assert dumps(new.delta()) == dumps(image.delta())


@given(STATES, st.data(), NOW)
def test_null_removes_a_key_and_its_metadata(
    desired: dict[str, Any], data: st.DataObject, now: int
) -> None:
    image = image_of(desired, {}, now)
    assume(image is not None and image.desired)
    assert image is not None
    # a key anywhere along a path of the state
    path = data.draw(st.sampled_from(sorted(flat(image.desired))))
    path = path[: data.draw(st.integers(1, len(path)))]
    patch: Any = None
    for key in reversed(path):
        patch = {key: patch}
    new = apply_update(image, Update(desired=patch), now + 1).image
    remaining = {p: v for p, v in flat(image.desired).items() if p[: len(path)] != path}
    assert flat(new.desired) == remaining
    assert {p[:-1] for p in flat(new.meta_desired)} == set(remaining)
    assert mirrors(new.desired, new.meta_desired)


@given(UPDATES, STATES, STATES, NOW)
def test_inputs_are_never_mutated_and_outputs_never_shared(
    u: Update, desired: dict[str, Any], reported: dict[str, Any], now: int
) -> None:
    image = image_of(desired, reported, now)
    before_image = copy.deepcopy(image)
    before_update = copy.deepcopy(u)
    try:
        applied = apply_update(image, u, now + 1)
    except ImageError:
        assert image == before_image and u == before_update
        return
    assert image == before_image
    assert u == before_update
    new_before = copy.deepcopy(applied.image)
    # scribbling over everything handed out changes neither the image nor the update
    for handed_out in (
        wire.accepted(applied),
        wire.delta_message(applied.image),
        applied.image.properties(),
        applied.image.stored(),
    ):
        scribble(handed_out)
    assert applied.image == new_before
    assert u == before_update
    scribble(u.desired)  # nor does changing the update afterwards
    scribble(u.reported)
    assert applied.image == new_before
    assert image == before_image


def scribble(value: Any) -> None:
    if isinstance(value, dict):
        for key in list(value):
            scribble(value[key])
            value[key] = "scribbled"
        value["new"] = 1
    elif isinstance(value, list):
        for item in value:
            scribble(item)
        value.append("scribbled")


@given(st.binary(max_size=300))
def test_parse_update_raises_only_image_error_on_any_bytes(payload: bytes) -> None:
    with contextlib.suppress(ImageError):
        parse_update(payload)


JSONISH = st.text(alphabet='{}[]":, 0123456789.-+eEtruefalsnNI\\uadxé\ud800', max_size=60)


@given(st.one_of(JSONISH, JSONISH.map(lambda s: '{"state": {"desired": ' + s)))
def test_parse_update_raises_only_image_error_on_json_like_text(text: str) -> None:
    with contextlib.suppress(ImageError):
        parse_update(text.encode("utf-8", "surrogatepass"))


JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**60), 2**60),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=6),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4) | KEYS, inner, max_size=3)
    ),
    max_leaves=20,
)


@given(JSON_VALUES, JSON_VALUES, JSON_VALUES, JSON_VALUES, NOW)
def test_any_json_update_is_accepted_or_refused_with_image_error(
    desired: Any, reported: Any, version: Any, id: Any, now: int
) -> None:
    """Arbitrary JSON in every field: only ImageError, and what passes can be applied."""
    payload = json.dumps(
        {"state": {"desired": desired, "reported": reported}, "version": version, "id": id}
    ).encode()
    try:
        u = parse_update(payload)
    except ImageError:
        return
    try:
        applied = apply_update(None, Update(u.desired, u.reported, None, u.id), now)
    except ImageError as exc:
        assert exc.err_code == 161
        return
    assert mirrors(applied.image.desired, applied.image.meta_desired)
    assert applied.image.size() <= MAX_DOCUMENT


@given(st.builds(Update, desired=PART, reported=PART), st.integers(1, 10**6), NOW)
@settings(suppress_health_check=[HealthCheck.filter_too_much])
def test_valid_updates_pass_parse_update_unchanged(u: Update, version: int, now: int) -> None:
    assume(u.has_desired or u.has_reported)
    sent: dict[str, Any] = {}
    if u.has_desired:
        sent["desired"] = u.desired
    if u.has_reported:
        sent["reported"] = u.reported
    payload = json.dumps({"state": sent, "version": version, "id": "r"}).encode()
    assume(len(payload) <= shadow.MAX_PAYLOAD)
    parsed = parse_update(payload)
    assert dumps(parsed.desired if parsed.has_desired else "-") == dumps(
        u.desired if u.has_desired else "-"
    )
    assert dumps(parsed.reported if parsed.has_reported else "-") == dumps(
        u.reported if u.has_reported else "-"
    )
    assert (parsed.version, parsed.id) == (version, "r")


def _outcome(parse: Any, text: str) -> str:
    try:
        return "ok " + repr(parse(text))
    except ValueError:
        return "error"


@given(
    st.one_of(JSON_VALUES.map(json.dumps), JSONISH, JSON_VALUES.map(lambda v: json.dumps(v)[:-1]))
)
def test_the_iterative_parser_agrees_with_json_loads(text: str) -> None:
    """The fallback for very deep documents reads every text exactly as json.loads does."""
    assert _outcome(jsontext._loads_iterative, text) == _outcome(jsontext.DECODER.decode, text)
