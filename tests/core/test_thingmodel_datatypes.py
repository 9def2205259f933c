"""The data types of the thing model (field-protocols.md §2.2): what a dataType's
`specs` may say, and which values each type admits, as golden tables and, for the
bounds of each type, hypothesis properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thingshub.core.thingmodel import (
    DataType,
    ModelError,
    ValueRefused,
    check,
    parse_model,
)


def data_type(spec: dict[str, Any]) -> DataType:
    """The checked dataType of a property holding `spec`."""
    model = parse_model({"properties": [{"identifier": "x", "name": "x", "dataType": spec}]})
    return model.properties["x"].data_type


def refusal(spec: dict[str, Any]) -> ModelError:
    with pytest.raises(ModelError) as refused:
        data_type(spec)
    return refused.value


# The dataType table of §2.2, a row per type: a spec, then values it admits (as
# stored) and values it refuses.
TABLE: list[tuple[dict[str, Any], list[tuple[Any, Any]], list[Any]]] = [
    (
        {"type": "int32", "specs": {"min": "0", "max": "100", "step": "1", "unit": "%"}},
        [(0, 0), (100, 100), ("42", 42), (7.0, 7), ("+5", 5)],
        [-1, 101, 1.5, "4.5", "x", True, None, [], {}],
    ),
    (
        {"type": "int64"},
        [(2**63 - 1, 2**63 - 1), (-(2**63), -(2**63)), ("1e3", 1000)],
        [2**63, -(2**63) - 1, "1e400"],
    ),
    (
        {"type": "float", "specs": {"min": -1.5, "max": "1.5"}},
        [(1.5, 1.5), (-1.5, -1.5), ("0.25", 0.25), (".5", 0.5), (1, 1)],
        [1.51, "nan", "inf", float("inf"), False, "1,5"],
    ),
    (
        {"type": "double", "specs": {"min": "", "max": None}},
        [(1e300, 1e300), ("-2E-3", -0.002)],
        [float("nan"), "abc"],
    ),
    (
        {"type": "enum", "specs": {"0": "off", "1": "on", " 2 ": "auto", "-1": "fault"}},
        [(0, 0), (2, 2), (-1, -1)],
        [3, True, "1", 1.0],
    ),
    (
        {"type": "bool", "specs": {"0": "off", "1": "on"}},
        [(True, True), (False, False), (1, True), (0, False)],
        [2, -1, "true", 1.0],
    ),
    (
        {"type": "string"},
        [("", ""), ("a" * 10240, "a" * 10240)],
        ["a" * 10241, 5, True],
    ),
    (
        {"type": "date", "specs": {}},
        [(0, 0), ("1700000000000", 1700000000000), (1700000000000, 1700000000000)],
        [-1, "-1", "17e11", 1.5, True, ""],
    ),
    (
        {"type": "bitMap", "specs": {"length": 32, "define": {"0": "door"}}},
        [(0, 0), (2**32 - 1, 2**32 - 1)],
        [2**32, -1, True, "1"],
    ),
    (
        {
            "type": "struct",
            "specs": [
                {"identifier": "lat", "name": "lat", "dataType": {"type": "double"}},
                {"identifier": "n", "name": "n", "dataType": {"type": "int32"}},
            ],
        },
        [({}, {}), ({"n": "3"}, {"n": 3}), ({"lat": 1.5, "n": 2}, {"lat": 1.5, "n": 2})],
        [{"alt": 1}, {"n": None}, [], "lat"],
    ),
    (
        {"type": "array", "specs": {"length": 2, "type": "string", "specs": {"length": 2}}},
        [([], []), (["ab", "c"], ["ab", "c"])],
        [["abc"], ["a", "b", "c"], "ab", {}],
    ),
    (
        {
            "type": "array",
            "specs": {
                "size": "2",
                "item": {
                    "type": "struct",
                    "specs": [{"identifier": "v", "name": "v", "dataType": {"type": "bool"}}],
                },
            },
        },
        [([{"v": 1}, {}], [{"v": True}, {}])],
        [[{"v": 2}], [{}, {}, {}], [1]],
    ),
]


@pytest.mark.parametrize(
    ("spec", "value", "stored"),
    [(spec, value, stored) for spec, good, _ in TABLE for value, stored in good],
)
def test_a_value_that_fits_is_stored_as_its_type_says(
    spec: dict[str, Any], value: Any, stored: Any
) -> None:
    checked = check(data_type(spec), value, "x")
    assert checked == stored
    assert type(checked) is type(stored)


@pytest.mark.parametrize(
    ("spec", "value"),
    [(spec, value) for spec, _, bad in TABLE for value in bad],
)
def test_a_value_that_does_not_fit_is_302(spec: dict[str, Any], value: Any) -> None:
    with pytest.raises(ValueRefused) as refused:
        check(data_type(spec), value, "x")
    assert refused.value.err_code == 302
    assert refused.value.message.startswith("x")


@pytest.mark.parametrize(
    ("spec", "value", "message"),
    [
        ({"type": "int32"}, {"a": 1}, "x: an object is not an integer (int32)"),
        ({"type": "float"}, [1], "x: an array is not a number (float)"),
        ({"type": "string"}, False, "x: false is not a string"),
        ({"type": "enum", "specs": {"1": "a"}}, "y" * 41, f"x: '{'y' * 40}...' is not one of 1"),
        ({"type": "array", "specs": {"length": 1, "type": "date"}}, 5, "x: 5 is not an array"),
        ({"type": "double", "specs": {"max": 0.5}}, 0.75, "x: 0.75 > max 0.5"),
    ],
)
def test_a_refusal_shows_the_value_briefly(spec: dict[str, Any], value: Any, message: str) -> None:
    with pytest.raises(ValueRefused) as refused:
        check(data_type(spec), value, "x")
    assert refused.value.message == message


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"type": "float", "specs": []}, "/specs"),
        ({"type": "int32", "specs": {"min": True}}, "/specs/min"),
        ({"type": "int32", "specs": {"max": "1e999"}}, "/specs/max"),
        ({"type": "double", "specs": {"min": float("nan")}}, "/specs/min"),
        ({"type": "int64", "specs": {"min": "5", "max": "4"}}, "/specs"),
        ({"type": "enum", "specs": {"a": "x"}}, "/specs/a"),
        ({"type": "enum", "specs": ["0"]}, "/specs"),
        ({"type": "bool", "specs": "on/off"}, "/specs"),
        ({"type": "string", "specs": {"length": 10241}}, "/specs/length"),
        ({"type": "string", "specs": {"length": 2.5}}, "/specs/length"),
        ({"type": "string", "specs": {"length": "many"}}, "/specs/length"),
        ({"type": "bitMap"}, "/specs/length"),
        ({"type": "bitMap", "specs": {"length": ""}}, "/specs/length"),
        ({"type": "struct", "specs": {"a": 1}}, "/specs"),
        (
            {
                "type": "struct",
                "specs": [
                    {
                        "identifier": "a",
                        "dataType": {"type": "array", "specs": {"length": 1, "type": "date"}},
                    }
                ],
            },
            "/specs/0/dataType",
        ),
        ({"type": "array", "specs": {"type": "int32"}}, "/specs/length"),
        ({"type": "array", "specs": {"length": 0, "type": "int32"}}, "/specs/length"),
        ({"type": "array", "specs": {"length": 2, "type": "bool"}}, "/specs/type"),
        ({"type": "array", "specs": {"size": 2}}, "/specs/item"),
        ({"type": "array", "specs": {"item": {"type": "date"}}}, "/specs/length"),
        ({"type": "array", "specs": {"size": 2, "item": {"type": "array"}}}, "/specs/type"),
        (
            {"type": "array", "specs": {"length": 2, "type": "int32", "specs": []}},
            "/specs/item/specs",
        ),
        (
            {
                "type": "array",
                "specs": {"length": 2, "type": "struct", "specs": [{"identifier": "s"}]},
            },
            "/specs/item/specs/0/dataType",
        ),
    ],
)
def test_a_broken_spec_is_refused_at_its_json_pointer(spec: dict[str, Any], path: str) -> None:
    assert refusal(spec).path == "/properties/0/dataType" + path


def test_optional_specs_take_their_defaults() -> None:
    assert data_type({"type": "string", "specs": None}).length is None
    assert data_type({"type": "string", "specs": {"length": "16"}}).length == 16
    assert data_type({"type": "bitMap", "specs": {"length": "8"}}).length == 8
    number = data_type({"type": "float", "specs": {"unit": "°C"}})
    assert (number.min, number.max, number.unit) == (None, None, "°C")
    assert data_type({"type": "double", "specs": {"unit": ""}}).unit is None
    bounded = data_type({"type": "int32", "specs": {"min": -(2**40), "max": 2**40}})
    assert (bounded.min, bounded.max) == (-(2**31), 2**31 - 1)  # clamped to the type's range
    assert data_type({"type": "struct"}).members == ()
    item = data_type({"type": "array", "specs": {"length": 3, "type": "int32"}}).item
    assert item is not None and (item.type, item.min) == ("int32", -(2**31))


# ---------------------------------------------------------------- properties


@given(st.integers(1, 32), st.integers(-(2**34), 2**34))
def test_a_bitmap_admits_exactly_the_integers_of_its_bits(length: int, value: int) -> None:
    bits = data_type({"type": "bitMap", "specs": {"length": length}})
    if 0 <= value < 2**length:
        assert check(bits, value, "x") == value
    else:
        with pytest.raises(ValueRefused, match=f"bitMap of {length} bits"):
            check(bits, value, "x")


@given(st.integers(1, 64), st.text(max_size=80))
def test_a_string_admits_exactly_its_length_in_code_points(length: int, value: str) -> None:
    text = data_type({"type": "string", "specs": {"length": str(length)}})
    if len(value) <= length:
        assert check(text, value, "x") == value
    else:
        with pytest.raises(ValueRefused, match=f"> length {length}"):
            check(text, value, "x")


@given(st.sets(st.integers(-100, 100), min_size=1, max_size=8), st.integers(-120, 120))
def test_an_enum_admits_exactly_its_keys(keys: set[int], value: int) -> None:
    enum = data_type({"type": "enum", "specs": {str(k): f"k{k}" for k in keys}})
    assert dict(enum.enum) == {k: f"k{k}" for k in keys}
    if value in keys:
        assert check(enum, value, "x") == value
    else:
        with pytest.raises(ValueRefused):
            check(enum, value, "x")


@given(st.integers(-(2**64), 2**64))
def test_int64_takes_its_range_as_numbers_and_as_strings(value: int) -> None:
    int64 = data_type({"type": "int64"})
    if -(2**63) <= value < 2**63:
        assert check(int64, value, "x") == value
        assert check(int64, str(value), "x") == value
    else:
        for sent in (value, str(value)):
            with pytest.raises(ValueRefused):
                check(int64, sent, "x")


@given(st.integers(-(10**15), 10**15))
def test_a_date_is_ms_since_the_epoch_as_a_number_or_digits(value: int) -> None:
    date = data_type({"type": "date"})
    if value >= 0:
        assert check(date, value, "x") == value
        assert check(date, str(value), "x") == value
    else:
        for sent in (value, str(value)):
            with pytest.raises(ValueRefused, match="not a date"):
                check(date, sent, "x")


@given(st.lists(st.integers(-5, 5), max_size=6), st.integers(1, 4))
def test_an_array_admits_at_most_its_length_of_valid_items(items: list[int], length: int) -> None:
    array = data_type(
        {"type": "array", "specs": {"length": length, "type": "int32", "specs": {"min": 0}}}
    )
    if len(items) <= length and all(i >= 0 for i in items):
        assert check(array, items, "x") == items
    else:
        with pytest.raises(ValueRefused):
            check(array, items, "x")
