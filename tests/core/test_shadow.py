"""The OneNET device image rules, case by case (docs/protocols.md section 2).

Golden cases come from OneNET's documentation (the example image, the depth example, the
update payload, the error table); the error codes are each reached with a
minimal payload, and the check ORDER is pinned with payloads that break
several rules at once, since devices see only the first code.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from thingshub.core.errors import InvalidRequest, Unavailable
from thingshub.core.shadow import (
    ERR_MSG,
    MAX_INT,
    MAX_NESTING,
    MAX_PAYLOAD,
    MISSING,
    Image,
    ImageError,
    Update,
    apply_update,
    empty_image,
    update_from_patch,
)
from thingshub.dialects.onenet.image import (
    accepted,
    delta_message,
    get_accepted,
    parse_get,
    parse_update,
    rejected,
)

T0 = 1469564492

# The `properties` object of OneNET's example image.
SEED_PROPERTIES: dict[str, Any] = {
    "state": {
        "desired": {"lights": {"color": "RED"}, "engine": "ON"},
        "reported": {"lights": {"color": "GREEN"}, "engine": "ON"},
        "delta": {"lights": {"color": "RED"}},
    },
    "metadata": {
        "desired": {
            "lights": {"color": {"timestamp": T0}},
            "engine": {"timestamp": T0},
        },
        "reported": {
            "lights": {"color": {"timestamp": T0}},
            "engine": {"timestamp": T0},
        },
    },
    "version": 10,
    "timestamp": T0,
}

# The seed's depth example: the deepest valid shape.
SEED_DEPTH = {"state": {"reported": {"one": {"two": {"three": {"four": {"key": "value"}}}}}}}


def raw(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def code_of(payload: bytes) -> int:
    with pytest.raises(ImageError) as info:
        parse_update(payload)
    return info.value.err_code


def state(desired: Any = MISSING, reported: Any = MISSING, **top: Any) -> bytes:
    """A payload {"state": {...}, **top} with the parts given."""
    parts = {}
    if desired is not MISSING:
        parts["desired"] = desired
    if reported is not MISSING:
        parts["reported"] = reported
    return raw({"state": parts, **top})


def update(current: Image | None, payload: Any, now: int = T0) -> Image:
    return apply_update(current, parse_update(raw(payload)), now).image


def padded(payload: dict[str, Any], size: int) -> bytes:
    """`payload` grown to exactly `size` bytes with an ignored top-level key."""
    base = len(raw({**payload, "pad": ""}))
    out = raw({**payload, "pad": "x" * (size - base)})
    assert len(out) == size
    return out


# ---------------------------------------------------------------- OneNET's examples


def test_onenets_example_image_round_trips_with_its_delta() -> None:
    """OneNET's example image reads back exactly, delta included."""
    image = Image.from_stored(SEED_PROPERTIES)
    assert image.properties() == SEED_PROPERTIES
    assert image.delta() == {"lights": {"color": "RED"}}
    assert image.version == 10 and image.timestamp == T0
    stored = image.stored()
    assert "delta" not in stored["state"]
    assert Image.from_stored(json.loads(json.dumps(stored))) == image
    assert image.size() == len(json.dumps(stored, separators=(",", ":")).encode())


def test_seed_image_delta_message_carries_the_desired_metadata_of_its_leaves() -> None:
    image = Image.from_stored(SEED_PROPERTIES)
    assert delta_message(image) == {
        "state": {"lights": {"color": "RED"}},
        "metadata": {"lights": {"color": {"timestamp": T0}}},
        "version": 10,
        "timestamp": T0,
    }


def test_from_stored_does_not_keep_the_callers_dicts() -> None:
    doc = copy.deepcopy(SEED_PROPERTIES)
    image = Image.from_stored(doc)
    doc["state"]["desired"]["engine"] = "OFF"
    doc["metadata"]["desired"]["engine"]["timestamp"] = 1
    assert image.desired["engine"] == "ON"
    assert image.meta_desired["engine"] == {"timestamp": T0}
    assert doc["state"]["delta"] == {"lights": {"color": "RED"}}  # input left as it was


def test_seed_topics_update_example_is_accepted_without_delta() -> None:
    """The payload of onenet-device-image-topics.md creates the image (version 1)."""
    payload = b'{"state": {"desired": {"color": "red"}, "reported": {"color": "red"}}}'
    applied = apply_update(None, parse_update(payload), 100)
    assert applied.image.version == 1
    assert applied.image.timestamp == 100
    assert delta_message(applied.image) is None
    assert accepted(applied) == {
        "state": {"desired": {"color": "red"}, "reported": {"color": "red"}},
        "metadata": {
            "desired": {"color": {"timestamp": 100}},
            "reported": {"color": {"timestamp": 100}},
        },
        "version": 1,
        "timestamp": 100,
    }
    assert "delta" not in applied.image.properties()["state"]


def test_seed_depth_example_is_valid_and_one_more_level_is_162() -> None:
    u = parse_update(raw(SEED_DEPTH))
    assert u.reported == SEED_DEPTH["state"]["reported"]
    image = apply_update(None, u, 5).image
    assert image.meta_reported == {"one": {"two": {"three": {"four": {"key": {"timestamp": 5}}}}}}
    deeper = {"state": {"reported": {"one": {"two": {"three": {"four": {"five": {"k": 1}}}}}}}}
    assert code_of(raw(deeper)) == 162
    assert code_of(raw({"state": {"desired": deeper["state"]["reported"]}})) == 162


def test_arrays_do_not_add_a_level_but_objects_inside_them_do() -> None:
    four = {"one": {"two": {"three": {"four": {"key": [1, [2, [3]], None]}}}}}
    parse_update(state(desired=four))  # an array of scalars at the deepest level is fine
    in_array = {"one": {"two": {"three": {"four": [{"five": 1}]}}}}
    parse_update(state(desired=in_array))  # the object in the array is level 4
    too_deep = {"one": {"two": {"three": {"four": {"key": [{"five": 1}]}}}}}
    assert code_of(state(desired=too_deep)) == 162  # the object in the array is level 5


def test_arrays_nest_at_most_max_nesting_containers() -> None:
    def nested(n: int) -> Any:
        value: Any = 1
        for _ in range(n):
            value = [value]
        return value

    parse_update(state(reported={"a": nested(MAX_NESTING)}))
    assert code_of(state(reported={"a": nested(MAX_NESTING + 1)})) == 162


def test_err_msg_is_the_seeds_table() -> None:
    assert ERR_MSG == {
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


# ---------------------------------------------------------------- each error code


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xff\xfe",
        b'{"state": {"desired": {"a": "\xc3"}}}',  # truncated UTF-8
        b"\xef\xbb\xbf{}",  # a BOM is not JSON
        b"{",
        b"{'state': {}}",
        b'{"state": {"desired": {"a": 1,}}}',
        b'{"state": {"desired": {"a": NaN}}}',
        b'{"state": {"desired": {"a": Infinity}}}',
        b'{"state": {"desired": {"a": -Infinity}}}',
        b'{"state": {}} x',
        b"[]",
        b'"state"',
        b"null",
        b"1",
    ],
)
def test_160_illegal_json(payload: bytes) -> None:
    assert code_of(payload) == 160


def test_161_payload_longer_than_4096_bytes() -> None:
    ok = {"state": {"reported": {"a": 1}}}
    parse_update(padded(ok, MAX_PAYLOAD))
    assert code_of(padded(ok, MAX_PAYLOAD + 1)) == 161


@pytest.mark.parametrize(
    "payload",
    [{}, {"desired": {"a": 1}}, {"state": None}, {"state": []}, {"state": "x"}, {"State": {}}],
)
def test_163_state_missing_or_not_an_object(payload: dict[str, Any]) -> None:
    assert code_of(raw(payload)) == 163


@pytest.mark.parametrize("parts", [{}, {"delta": {"a": 1}}, {"Desired": {"a": 1}}])
def test_164_neither_desired_nor_reported(parts: dict[str, Any]) -> None:
    assert code_of(raw({"state": parts})) == 164


@pytest.mark.parametrize(
    "payload",
    [
        state(desired={"a-b": 1}),
        state(desired={"": 1}),
        state(desired={"a" * 31: 1}),
        state(desired={"é": 1}),
        state(desired={"a": {"b c": 1}}),
        state(desired={"a": [{"b.c": 1}]}),  # keys inside arrays too
        state(desired={"s": "x" * 513}),
        state(desired={"s": "é" * 256 + "x"}),  # 513 bytes in UTF-8
        state(desired={"s": ["x" * 513]}),
        state(desired={"s": "\ud800"}),  # an unpaired surrogate
        state(desired={"n": MAX_INT + 1}),
        state(desired={"n": -MAX_INT - 1}),
        state(desired={"n": [10**40]}),
        b'{"state": {"desired": {"n": 1e400}}}',
        state(desired=[1]),
        state(desired="on"),
        state(reported=1),
        state(reported=True),
        raw({"state": {"desired": {"a": 1}, "delta": {"a": 1}}}),
        raw({"state": {"reported": {"a": 1}, "metadata": {}}}),
        state(reported={"a": 1}, version=0),
        state(reported={"a": 1}, version=-1),
        state(reported={"a": 1}, version=1.0),
        state(reported={"a": 1}, version=True),
        state(reported={"a": 1}, version=None),
        state(reported={"a": 1}, version="1"),
        state(reported={"a": 1}, id=None),
        state(reported={"a": 1}, id=True),
        state(reported={"a": 1}, id=1.5),
        state(reported={"a": 1}, id={"x": 1}),
        state(reported={"a": 1}, id=["x"]),
        state(reported={"a": 1}, id=MAX_INT + 1),
        state(reported={"a": 1}, id="\udc00"),
    ],
)
def test_165_invalid_parameters(payload: bytes) -> None:
    assert code_of(payload) == 165


@pytest.mark.parametrize(
    "payload",
    [
        state(desired={"a" * 30: 1}),
        state(desired={"A_z09": 1}),
        state(desired={"s": "x" * 512}),
        state(desired={"s": "é" * 256}),  # exactly 512 bytes
        state(desired={"n": MAX_INT, "m": -MAX_INT, "f": 1e300, "z": -0.0}),
        state(desired={"b": True, "l": [None, True, "x", {"k": None}], "e": []}),
        state(desired=None),
        state(desired=None, reported=None),
        state(desired={}),
        state(reported={"a": 1}, version=7, id="req-1", other=[1, {"x": None}]),
        state(reported={"a": 1}, id=MAX_INT),
        state(reported={"a": 1}, id=""),
    ],
)
def test_valid_payloads(payload: bytes) -> None:
    parse_update(payload)


def test_parse_update_result() -> None:
    u = parse_update(state(desired={"a": None}, version=3, id="q"))
    assert u == Update(desired={"a": None}, reported=MISSING, version=3, id="q")
    assert u.has_desired and not u.has_reported
    u = parse_update(state(reported=None, id=12))
    assert u.reported is None and u.desired is MISSING and u.id == 12 and u.version is None


def test_duplicate_keys_last_wins() -> None:
    u = parse_update(b'{"state": {"desired": {"a": 1, "a": 2}}, "state": {"reported": {"b": 1}}}')
    assert u.desired is MISSING and u.reported == {"b": 1}


def test_166_167_and_128_are_carried_by_image_error() -> None:
    for err_code in (128, 166, 167):
        error = ImageError(err_code)
        assert error.err_code == err_code
        assert error.err_msg == ERR_MSG[err_code]
        assert error.message == ERR_MSG[err_code]
        assert rejected(err_code, None) == {"err_code": err_code, "err_msg": ERR_MSG[err_code]}


def test_image_error_is_an_invalid_request_with_a_human_message() -> None:
    error = ImageError(165, "version conflict: ...", id="x")
    assert isinstance(error, InvalidRequest)
    assert error.message == "version conflict: ..." == str(error)
    assert error.err_msg == "invalid parameters"
    assert error.detail == "version conflict: ..."
    assert error.id == "x"
    with pytest.raises(ValueError):
        ImageError(999)


# ---------------------------------------------------------------- check order


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        # 160 before 161: too long AND not JSON
        (b'{"state": {"reported": {"a": 1}}' + b" " * MAX_PAYLOAD + b"]", 160),
        (b"[" + b"1," * 3000 + b"1]", 160),  # too long AND not an object
        # 161 before 163, 164, 162, 165
        (padded({"nostate": 1}, MAX_PAYLOAD + 1), 161),
        (padded({"state": {}}, MAX_PAYLOAD + 1), 161),
        (padded({"state": {"reported": {"a": {"b": {"c": {"d": {"e": {}}}}}}}}, 5000), 161),
        (padded({"state": {"reported": {"a-b": 1}}}, MAX_PAYLOAD + 1), 161),
        # 163 before 164 and 165
        (raw({"state": [], "version": 0, "id": True}), 163),
        # 164 before 162 and 165
        (raw({"state": {"delta": {"a": {"b": {"c": {"d": {"e": {}}}}}}}, "version": 0}), 164),
        # 162 before every 165 rule
        (state(desired={"a-b": {"b": {"c": {"d": {"e": {}}}}}}), 162),
        (
            state(desired={"ok": 1}, reported={"a": {"b": {"c": {"d": {"e": {"s": "x" * 600}}}}}}),
            162,
        ),
        (raw({"state": {"reported": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}, "x": 1}}), 162),
        (state(desired=[1], reported={"a": {"b": {"c": {"d": {"e": {}}}}}}), 162),
        (state(reported={"a": {"b": {"c": {"d": {"e": {}}}}}}, version=0, id=True), 162),
    ],
)
def test_check_order(payload: bytes, expected: int) -> None:
    assert code_of(payload) == expected


def test_errors_after_the_payload_is_an_object_carry_its_valid_id() -> None:
    cases = [
        (padded({"state": {}, "id": "r1"}, MAX_PAYLOAD + 1), 161),
        (raw({"id": "r1"}), 163),
        (raw({"state": {}, "id": "r1"}), 164),
        (state(reported={"a": {"b": {"c": {"d": {"e": {}}}}}}, id="r1"), 162),
        (state(reported={"a-b": 1}, id="r1"), 165),
    ]
    for payload, err_code in cases:
        with pytest.raises(ImageError) as info:
            parse_update(payload)
        assert (info.value.err_code, info.value.id) == (err_code, "r1")
    with pytest.raises(ImageError) as info:
        parse_update(state(reported={"a": 1}, id=True))
    assert info.value.id is None  # an invalid id is not echoed


def test_nesting_past_the_interpreter_stack_is_judged_by_the_same_rules() -> None:
    """json.loads gives up (RecursionError) around 1000 levels; 2000 fit in 4096 bytes."""
    deep = b"[" * 2000 + b"]" * 2000
    ignored = b'{"state": {"reported": {"a": 1}}, "x": ' + deep + b"}"
    assert len(ignored) <= MAX_PAYLOAD
    assert parse_update(ignored).reported == {"a": 1}
    assert code_of(b'{"state": {"reported": {"a": ' + deep + b"}}}") == 162
    assert code_of(b'{"state": {"reported": {"a": ' + deep + b"}}, x}") == 160
    assert code_of(deep) == 160
    assert code_of(b'{"x": ' + deep + b"}") == 163
    assert code_of(b'{"x": ' + deep + b', "state": {}}') == 164
    assert code_of(b'{"x": ' + b"[" * 3000 + b"]" * 3000 + b"}") == 161
    assert code_of(b'{"x": ' + b"[" * 3000 + b"]" * 2999 + b"}") == 160


def test_integers_with_too_many_digits_for_python_are_judged_normally() -> None:
    """Python refuses int() of more than 4300 digits; such a payload is simply too long."""
    assert code_of(b'{"state": {"reported": {"n": ' + b"9" * 5000 + b"}}}") == 161
    assert code_of(b'{"state": {"reported": {"n": -' + b"9" * 4000 + b"}}}") == 165


# ---------------------------------------------------------------- merge


def test_objects_merge_key_by_key_and_scalars_replace() -> None:
    image = update(None, {"state": {"desired": {"a": {"x": 1, "y": 2}, "b": [1, 2], "c": 1}}}, 1)
    image = update(image, {"state": {"desired": {"a": {"y": 3, "z": 4}, "b": [3]}}}, 2)
    assert image.desired == {"a": {"x": 1, "y": 3, "z": 4}, "b": [3], "c": 1}
    assert image.meta_desired == {
        "a": {"x": {"timestamp": 1}, "y": {"timestamp": 2}, "z": {"timestamp": 2}},
        "b": {"timestamp": 2},
        "c": {"timestamp": 1},
    }
    assert image.version == 2 and image.timestamp == 2


def test_a_scalar_replaces_an_object_and_an_object_a_scalar() -> None:
    image = update(None, {"state": {"reported": {"a": {"x": 1}, "b": 5}}}, 1)
    image = update(image, {"state": {"reported": {"a": "flat", "b": {"y": [1]}}}}, 2)
    assert image.reported == {"a": "flat", "b": {"y": [1]}}
    assert image.meta_reported == {"a": {"timestamp": 2}, "b": {"y": {"timestamp": 2}}}


def test_null_deletes_a_key_and_its_metadata_and_empty_parents() -> None:
    image = update(None, {"state": {"desired": {"a": {"b": {"c": 1}}, "d": 2}}}, 1)
    image = update(image, {"state": {"desired": {"a": {"b": {"c": None}}, "zz": None}}}, 2)
    assert image.desired == {"d": 2}
    assert image.meta_desired == {"d": {"timestamp": 1}}
    image = update(image, {"state": {"desired": {"d": None}}}, 3)
    assert image.desired == {} and image.meta_desired == {}
    assert image.version == 3


def test_null_part_clears_all_of_it() -> None:
    image = update(None, {"state": {"desired": {"a": 1, "b": {"c": 2}}, "reported": {"a": 1}}}, 1)
    image = update(image, {"state": {"desired": None}}, 2)
    assert image.desired == {} and image.meta_desired == {}
    assert image.reported == {"a": 1} and image.meta_reported == {"a": {"timestamp": 1}}


def test_explicit_empty_objects() -> None:
    """{} merges nothing: no-op on an object, deletes the scalar it replaces, creates nothing."""
    image = update(None, {"state": {"desired": {"o": {"x": 1}, "s": 1}}}, 1)
    image = update(image, {"state": {"desired": {"o": {}, "s": {}, "new": {}, "n": {"m": {}}}}}, 2)
    assert image.desired == {"o": {"x": 1}}
    assert image.meta_desired == {"o": {"x": {"timestamp": 1}}}
    image2 = update(image, {"state": {"desired": {}}}, 3)
    assert image2.desired == image.desired and image2.version == image.version + 1


def test_accepted_echoes_the_parts_as_sent_with_the_metadata_of_the_leaves_sent() -> None:
    image = update(None, {"state": {"desired": {"a": 1, "b": {"c": 2}}}}, 1)
    sent = {"state": {"desired": {"a": None, "b": {"d": [1]}, "e": {}}, "reported": None}}
    applied = apply_update(image, parse_update(raw({**sent, "id": "7"})), 9)
    assert accepted(applied) == {
        "state": sent["state"],
        "metadata": {
            "desired": {"a": {"timestamp": 9}, "b": {"d": {"timestamp": 9}}, "e": {}},
            "reported": {"timestamp": 9},
        },
        "version": 2,
        "timestamp": 9,
        "id": "7",
    }
    no_id = accepted(apply_update(image, parse_update(raw(sent)), 9))
    assert "id" not in no_id
    assert accepted(apply_update(image, Update(reported={"a": 1}, id=0), 9))["id"] == 0


def test_delta_follows_each_update() -> None:
    applied = apply_update(None, parse_update(state(desired={"a": {"b": 1}, "c": "on"})), 3)
    assert delta_message(applied.image) == {
        "state": {"a": {"b": 1}, "c": "on"},
        "metadata": {"a": {"b": {"timestamp": 3}}, "c": {"timestamp": 3}},
        "version": 1,
        "timestamp": 3,
    }
    applied = apply_update(applied.image, parse_update(state(reported={"a": {"b": 1}})), 4)
    assert delta_message(applied.image) == {
        "state": {"c": "on"},
        "metadata": {"c": {"timestamp": 3}},
        "version": 2,
        "timestamp": 4,
    }
    assert applied.image.properties()["state"]["delta"] == {"c": "on"}
    applied = apply_update(applied.image, parse_update(state(reported={"c": "on", "x": 1})), 5)
    assert delta_message(applied.image) is None
    assert delta_message(applied.image) is None
    assert "delta" not in applied.image.properties()["state"]


@pytest.mark.parametrize(
    ("want", "have", "differs"),
    [
        (True, 1, True),
        (1, True, True),
        (False, 0, True),
        (1, 1.0, False),
        (0, -0.0, False),
        ([1, 2], [2, 1], True),
        ([1, True], [1, 1], True),
        ([{"a": 1}], [{"a": 1.0}], False),
        ([{"a": 1}], [{"a": 1, "b": None}], True),
        ("1", 1, True),
        ([], {"x": 1}, True),
        ("x", MISSING, True),
    ],
)
def test_delta_equality(want: Any, have: Any, differs: bool) -> None:
    reported = {} if have is MISSING else {"k": have}
    image = Image({"k": want}, reported, {}, {}, 1, 0)
    assert image.delta() == ({"k": want} if differs else {})


def test_delta_of_a_desired_object_over_a_reported_scalar_is_the_whole_object() -> None:
    image = Image({"a": {"b": 1, "c": {"d": 2}}}, {"a": 7}, {}, {}, 1, 0)
    assert image.delta() == {"a": {"b": 1, "c": {"d": 2}}}


# ---------------------------------------------------------------- versions and limits


def test_versions_and_the_optimistic_lock() -> None:
    with pytest.raises(ImageError) as info:
        apply_update(None, Update(reported={"a": 1}, version=1), 1)  # no image: version 0
    assert info.value.err_code == 165 and "version conflict" in info.value.message
    image = update(None, {"state": {"reported": {"a": 1}}})
    assert image.version == 1
    image = update(image, {"state": {"reported": {"a": 2}}, "version": 1})
    assert image.version == 2
    with pytest.raises(ImageError) as info:
        apply_update(image, Update(reported={"a": 3}, version=1, id="r"), 1)
    assert (info.value.err_code, info.value.id) == (165, "r")
    assert "version conflict" in info.value.message


def test_empty_image_is_version_1_and_the_next_update_is_2() -> None:
    image = empty_image(50)
    assert image.properties() == {
        "state": {"desired": {}, "reported": {}},
        "metadata": {"desired": {}, "reported": {}},
        "version": 1,
        "timestamp": 50,
    }
    image = apply_update(image, Update(desired={"a": 1}, version=1), 60).image
    assert image.version == 2 and image.timestamp == 60


def test_161_when_the_stored_document_would_exceed_4096_bytes() -> None:
    image = None
    for i in range(9):
        image = update(image, {"state": {"reported": {f"k{i}": "x" * 400}}}, 1_000_000_000)
    assert image is not None and image.size() <= 4096
    before = image.stored()
    with pytest.raises(ImageError) as info:
        update(image, {"state": {"reported": {"k9": "x" * 400}}, "id": 3})
    assert (info.value.err_code, info.value.id) == (161, 3)
    assert image.stored() == before


def test_apply_update_without_any_part_is_164() -> None:
    with pytest.raises(ImageError) as info:
        apply_update(None, Update(), 1)
    assert info.value.err_code == 164


# ---------------------------------------------------------------- HTTP PATCH


def test_update_from_patch() -> None:
    assert update_from_patch({"a": 1}) == Update(desired={"a": 1})
    assert update_from_patch({"a": 1}, 4) == Update(desired={"a": 1}, version=4)
    assert update_from_patch(None, None) == Update(desired=None)
    assert update_from_patch({"a": 1}, MISSING).version is None


@pytest.mark.parametrize(
    ("desired", "version", "err_code"),
    [
        (MISSING, None, 164),
        (MISSING, 0, 164),
        ({"a": {"b": {"c": {"d": {"e": {"f-g": 1}}}}}}, 0, 162),
        ([1], None, 165),
        ("on", None, 165),
        ({"a-b": 1}, None, 165),
        ({"a": float("nan")}, None, 165),
        ({"a": float("inf")}, None, 165),
        ({"a": (1, 2)}, None, 165),
        ({1: 1}, None, 165),
        ({"a": 1}, 0, 165),
        ({"a": 1}, True, 165),
        ({"a": 1}, "2", 165),
        ({f"k{i}": "x" * 500 for i in range(9)}, None, 161),
        ({f"k{i}": None for i in range(500)}, None, 161),
    ],
)
def test_update_from_patch_errors(desired: Any, version: Any, err_code: int) -> None:
    with pytest.raises(ImageError) as info:
        update_from_patch(desired, version)
    assert info.value.err_code == err_code


# ---------------------------------------------------------------- get, rejected


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", None),
        (b"  \n", None),
        (b"{}", None),
        (b'{"id": "abc"}', "abc"),
        (b'{"id": 42, "other": [1]}', 42),
        (b'{"id": true}', None),
        (b'{"id": null}', None),
        (b'{"id": 1.5}', None),
        (b'{"id": "\\ud800"}', None),
        (b"not json", None),
        (b"\xff", None),
        (b'["id"]', None),
        (b'{"id": NaN}', None),
    ],
)
def test_parse_get_is_lenient(payload: bytes, expected: object) -> None:
    assert parse_get(payload) == expected


def test_get_accepted_is_the_properties_plus_the_id() -> None:
    image = Image.from_stored(SEED_PROPERTIES)
    assert get_accepted(image, None) == SEED_PROPERTIES
    assert get_accepted(image, "q1") == {**SEED_PROPERTIES, "id": "q1"}
    assert get_accepted(image, 0)["id"] == 0


def test_rejected_payloads() -> None:
    assert rejected(165, "r", "version conflict") == {
        "err_code": 165,
        "err_msg": "invalid parameters",
        "id": "r",
        "detail": "version conflict",
    }
    assert rejected(167, None) == {"err_code": 167, "err_msg": "device image not exists"}
    assert rejected(12345, 1) == {"err_code": 128, "err_msg": "unspecified error", "id": 1}


# ---------------------------------------------------------------- stored documents


@pytest.mark.parametrize(
    "doc",
    [
        None,
        [],
        {},
        {"state": {"desired": {}, "reported": {}}, "version": 1, "timestamp": 1},
        {**SEED_PROPERTIES, "version": 0},
        {**SEED_PROPERTIES, "version": True},
        {**SEED_PROPERTIES, "timestamp": "now"},
        {**SEED_PROPERTIES, "metadata": {"desired": {}, "reported": {}}},
        {
            "state": {"desired": {"a": {}}, "reported": {}},
            "metadata": {"desired": {"a": {}}, "reported": {}},
            "version": 1,
            "timestamp": 1,
        },
        {
            "state": {"desired": {"a": {"timestamp": 1}}, "reported": {}},
            "metadata": {"desired": {"a": {"timestamp": 1}}, "reported": {}},
            "version": 1,
            "timestamp": 1,
        },
    ],
)
def test_a_corrupt_stored_document_is_unavailable_128(doc: Any) -> None:
    with pytest.raises(Unavailable) as info:
        Image.from_stored(doc)
    assert info.value.err_code == 128


def test_a_state_key_named_timestamp_round_trips() -> None:
    image = update(None, {"state": {"desired": {"a": {"timestamp": 1}}}}, 8)
    assert image.meta_desired == {"a": {"timestamp": {"timestamp": 8}}}
    assert Image.from_stored(image.stored()) == image
