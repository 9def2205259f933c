"""The compiled property checks (core/thingchecks.py): for every data type, the same
result or the same refusal as `thingmodel.check`, on the values devices send and on
everything else, case by case and with hypothesis."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thingshub.core.thingchecks import compile_check, property_checks, values_check
from thingshub.core.thingmodel import DataType, ValueRefused, check, parse_model

#: One property per data type and bound shape.
TYPES: dict[str, dict[str, Any]] = {
    "i32": {"type": "int32", "specs": {"min": "-5", "max": "10"}},
    "i32_open": {"type": "int32"},
    "i64": {"type": "int64", "specs": {"min": 0}},
    "i64_half": {"type": "int64", "specs": {"min": "0.5", "max": "7.5"}},
    "f": {"type": "float", "specs": {"min": "-40", "max": "125"}},
    "f_open": {"type": "float"},
    "d_low": {"type": "double", "specs": {"min": 0}},
    "d_high": {"type": "double", "specs": {"max": 1e300}},
    "e": {"type": "enum", "specs": {"0": "off", "1": "on", "2": "auto"}},
    "e_neg": {"type": "enum", "specs": {"-1": "a", "7": "b"}},
    "b": {"type": "bool", "specs": {"0": "off", "1": "on"}},
    "s": {"type": "string", "specs": {"length": 4}},
    "s_open": {"type": "string"},
    "date": {"type": "date"},
    "bits": {"type": "bitMap", "specs": {"length": 8}},
    "bits32": {"type": "bitMap", "specs": {"length": 32}},
    "st": {
        "type": "struct",
        "specs": [{"identifier": "x", "name": "x", "dataType": {"type": "int32"}}],
    },
    "arr": {"type": "array", "specs": {"length": 3, "type": "float"}},
}
MODEL = parse_model(
    {
        "properties": [
            {"identifier": k, "name": k, "accessMode": "rw", "dataType": t}
            for k, t in TYPES.items()
        ]
    }
)


def data_type(identifier: str) -> DataType:
    return MODEL.property(identifier).data_type


def outcome(run: Any) -> tuple[Any, ...]:
    """What a check did: the value and its type, or the refusal's words and code."""
    try:
        value = run()
    except ValueRefused as exc:
        return ("refused", exc.message, exc.err_code)
    return ("ok", type(value), value)


CHECKS = property_checks(MODEL)
CHECK_VALUES = values_check(MODEL, CHECKS)


def same(identifier: str, value: object) -> tuple[Any, ...]:
    """The compiled check's outcome, `check`'s; and the model's `values_check`'s for
    this one value (None for a refusal)."""
    dt = data_type(identifier)
    compiled = outcome(lambda: compile_check(dt)(value, identifier))
    assert compiled == outcome(lambda: check(dt, value, identifier))
    at_once = CHECK_VALUES({identifier: value})
    if compiled[0] == "refused":
        assert at_once is None
    else:
        assert at_once is not None and list(at_once) == [identifier]
        assert ("ok", type(at_once[identifier]), at_once[identifier]) == compiled
    return compiled


def test_every_property_gets_its_check() -> None:
    checks = property_checks(MODEL)
    assert set(checks) == set(TYPES)
    assert checks["i32"](3, "i32") == 3


# (identifier, value, what check does): fast paths and the values they hand on.
CASES: list[tuple[str, object, str]] = [
    ("i32", 3, "ok"),
    ("i32", 11, "refused"),
    ("i32", -6, "refused"),
    ("i32", 3.0, "ok"),  # an integral float: converted, by check
    ("i32", "7", "ok"),
    ("i32", True, "refused"),
    ("i32", None, "refused"),
    ("i32_open", 2**31, "refused"),
    ("i64", 2**63 - 1, "ok"),
    ("i64", 10**33, "refused"),  # what jsontext reads an over-long integer as
    ("i64_half", 1, "ok"),
    ("i64_half", 0, "refused"),
    ("f", 21.5, "ok"),
    ("f", 130.0, "refused"),
    ("f", 12, "ok"),
    ("f", 126, "refused"),
    ("f", "30.5", "ok"),
    ("f", math.inf, "refused"),
    ("f", math.nan, "refused"),
    ("f", False, "refused"),
    ("f_open", math.inf, "refused"),
    ("f_open", -math.inf, "refused"),
    ("f_open", 1e308, "ok"),
    ("f_open", 10**33, "ok"),
    ("d_low", -0.5, "refused"),
    ("d_high", math.inf, "refused"),
    ("e", 2, "ok"),
    ("e", 3, "refused"),
    ("e", True, "refused"),
    ("e", 1.0, "refused"),
    ("e_neg", -1, "ok"),
    ("b", True, "ok"),
    ("b", 1, "ok"),  # stored as a boolean, by check
    ("b", 2, "refused"),
    ("b", "true", "refused"),
    ("s", "abcd", "ok"),
    ("s", "abcde", "refused"),
    ("s", 5, "refused"),
    ("s_open", "x" * 10240, "ok"),
    ("s_open", "x" * 10241, "refused"),
    ("date", 1_700_000_000_000, "ok"),
    ("date", "1700000000000", "ok"),
    ("date", -1, "refused"),
    ("date", False, "refused"),
    ("bits", 255, "ok"),
    ("bits", 256, "refused"),
    ("bits", -1, "refused"),
    ("bits", True, "refused"),
    ("bits32", 2**32 - 1, "ok"),
    ("bits32", 2**32, "refused"),
    ("st", {"x": 1}, "ok"),
    ("st", {"y": 1}, "refused"),
    ("arr", [1.5, 2], "ok"),
    ("arr", [1, 2, 3, 4], "refused"),
]


@pytest.mark.parametrize(("identifier", "value", "expected"), CASES)
def test_the_compiled_check_does_what_check_does(
    identifier: str, value: object, expected: str
) -> None:
    assert same(identifier, value)[0] == expected


def test_a_value_that_check_converts_is_converted_the_same() -> None:
    assert same("i32", 3.0) == ("ok", int, 3)
    assert same("b", 0) == ("ok", bool, False)
    assert same("date", "12") == ("ok", int, 12)
    assert same("f", "30.5") == ("ok", float, 30.5)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([10**33, -(10**33), 2**31, 2**63, 0, -0.0])
    | st.floats()
    | st.text(max_size=12)
    | st.from_regex(r"[+-]?[0-9]{1,5}(\.[0-9]{0,3})?", fullmatch=True),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["x", "y"]), inner, max_size=2)
    ),
    max_leaves=6,
)


@given(identifier=st.sampled_from(sorted(TYPES)), value=json_values)
def test_any_value_gets_what_check_gives_it(identifier: str, value: object) -> None:
    same(identifier, value)


def test_a_posts_values_are_checked_at_once_each_as_its_check_does() -> None:
    """`values_check`: the values as their checks return them, in the post's order;
    None once one is refused or names no property of the model."""
    posted = {"s": "ab", "f": 12, "b": 1, "i32": 3.0, "e": 2, "st": {"x": 1}, "date": "12"}
    assert CHECK_VALUES(posted) == {name: CHECKS[name](v, name) for name, v in posted.items()}
    assert list(CHECK_VALUES(posted) or ()) == list(posted)
    assert CHECK_VALUES({}) == {}
    assert CHECK_VALUES({**posted, "i32": 11}) is None
    assert CHECK_VALUES({**posted, "unknown": 1}) is None
    assert CHECK_VALUES({"e_neg": 7, "e": 0, "bits": 255}) == {"e_neg": 7, "e": 0, "bits": 255}
