"""What a device may report as a name, a value or a time (core/values.py), whatever
its protocol, and how a refusal words what it saw: the sentences dialects wrap
in their own errors."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thingshub.core import values
from thingshub.core.values import MAX_AHEAD_MS, MAX_INT, MAX_KEY, MAX_NESTING, MIN_INT, MIN_TS_MS

NOW = 1_700_000_000_000


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (None, "null"),
        (True, "a boolean"),
        (1, "a number"),
        (1.5, "a number"),
        ("x", "a string"),
        ([1], "an array"),
        ({"a": 1}, "an object"),
        (b"x", "bytes"),
    ],
)
def test_a_value_is_named_by_its_json_kind(value: object, words: str) -> None:
    assert values.kind(value) == words


def test_numbers_and_strings_are_shown_as_written_others_by_kind() -> None:
    assert values.shown(42) == "42"
    assert values.shown(-0.5) == "-0.5"
    assert values.shown("on") == "'on'"
    assert values.shown(False) == "a boolean"
    assert values.shown([1]) == "an array"


def test_a_long_name_is_cut_and_a_long_path_too() -> None:
    assert values.show("x" * 41) == repr("x" * 40 + "...")
    assert values.at("") == ""
    assert values.at("[0]") == " (at [0])"
    assert values.at("a" * 81) == " (at " + "a" * 80 + "...)"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        (5, "must be a string, not a number"),
        ("", "must not be empty"),
        ("k" * (MAX_KEY + 1), f"has {MAX_KEY + 1} characters; at most {MAX_KEY}"),
        ("a\x00b", "control characters"),
        ("a\x9fb", "control characters"),
        ("a\ud800", "unpaired surrogates"),
    ],
)
def test_what_is_not_a_name(name: object, problem: str) -> None:
    found = values.name_problem(name)
    assert found is not None and problem in found


@given(st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "S"]), min_size=1))
def test_printable_text_of_up_to_max_key_characters_is_a_name(name: str) -> None:
    assert (values.name_problem(name) is None) is (len(name) <= MAX_KEY)


@pytest.mark.parametrize(
    ("value", "path", "problem"),
    [
        ({"a": [1, {"b": 2**63}]}, "['a'][1]['b']", "integers must be within -2**63 .. 2**63-1"),
        ([MIN_INT - 1], "[0]", "integers must be within -2**63 .. 2**63-1"),
        ({"x": float("nan")}, "['x']", "numbers must be finite"),
        ({"\ud800": 1}, "['\\ud800']", "keys: strings must not hold unpaired surrogates"),
        ({"s": {1, 2}}, "['s']", "set is not a JSON value"),
        ({"s": ["ok", "\udc00"]}, "['s'][1]", "strings must not hold unpaired surrogates"),
        ([b"raw"], "[0]", "bytes is not a JSON value"),
    ],
)
def test_the_first_broken_rule_inside_a_value_is_found_with_its_path(
    value: object, path: str, problem: str
) -> None:
    assert values.json_problem(value, 0, 4096) == (path, problem)


def test_json_values_have_no_problem() -> None:
    assert values.json_problem({"a": ["x", 1.5, None, True, {"b": {}}], "c": -1}, 0, 4096) is None
    assert values.json_problem("x" * 5000, 0, 4096) == (
        "",
        "strings may have at most 4096 bytes (UTF-8)",
    )


def test_nesting_is_bounded() -> None:
    fine: object = 1
    for _ in range(MAX_NESTING):
        fine = [fine]
    assert values.json_problem(fine, 0, 4096) is None
    assert values.json_problem([fine], 0, 4096) == (
        "[0]" * MAX_NESTING,
        f"objects and arrays are nested more than {MAX_NESTING} levels deep",
    )


def test_a_string_limit_counts_utf8_bytes_and_none_means_no_limit() -> None:
    assert values.string_problem("é" * 2048, 4096) is None  # 4096 bytes
    assert values.string_problem("é" * 2049, 4096) == "strings may have at most 4096 bytes (UTF-8)"
    assert values.string_problem("x" * 10**5, None) is None


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("t", True, None),
        ("t", 21.5, None),
        ("t", MAX_INT, None),
        ("t", {"nested": [1, None]}, None),
        ("t", float("inf"), "key 't': numbers must be finite"),
        ("t", MAX_INT + 1, "key 't': integers must be within -2**63 .. 2**63-1"),
        ("t", None, "key 't': null is not a value"),
        ("", 1, "key '' must not be empty"),
    ],
)
def test_an_entry_is_a_name_and_a_value(key: str, value: object, problem: str | None) -> None:
    found = values.entry_problem(key, value)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem)


def test_reported_times_are_milliseconds_or_seconds_as_the_protocol_says() -> None:
    assert values.timestamp(1_609_459_200, NOW, seconds=True) == 1_609_459_200_000
    assert values.timestamp(1_609_459_200.5, NOW, seconds=True) == 1_609_459_200_500
    assert values.timestamp(1_609_459_200_123, NOW, seconds=False) == 1_609_459_200_123
    assert values.timestamp(1_609_459_200_123.0, NOW, seconds=False) == 1_609_459_200_123


@pytest.mark.parametrize(
    ("value", "seconds", "problem"),
    [
        ("1609459200", True, "ts must be a number (Unix time in seconds), not a string"),
        (True, False, "not a boolean"),
        (float("nan"), True, "ts must be a finite number"),
        (1.5e12, False, None),
        (1_609_459_200_000.5, False, "whole number of milliseconds"),
        (MIN_TS_MS - 1, False, "before the year 2000; ts is Unix time in milliseconds (not"),
        (1_609_459_200_000, True, "more than a day ahead of the platform's clock; ts is Unix"),
        (1_609_459_200, False, "before the year 2000"),
        (NOW + MAX_AHEAD_MS + 1, False, "more than a day ahead"),
    ],
)
def test_a_time_that_is_not_one_says_why(value: object, seconds: bool, problem: str | None) -> None:
    if problem is None:
        assert values.timestamp(value, NOW, seconds=seconds) == int(value)  # type: ignore[call-overload]
        return
    with pytest.raises(values.Problem, match=re.escape(problem)):
        values.timestamp(value, NOW, seconds=seconds)


def test_a_day_ahead_is_the_last_time_taken() -> None:
    assert values.timestamp(NOW + MAX_AHEAD_MS, NOW, seconds=False) == NOW + MAX_AHEAD_MS
    assert values.timestamp(MIN_TS_MS, NOW, seconds=False) == MIN_TS_MS


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        ({"t": True, "h": 40, "x": 21.5}, None),  # all inline
        ({"t": 1, "s": "text", "n": {"a": [1]}}, None),  # entry by entry, all fine
        ({"t": 1, "bad\x01": 2}, "key 'bad\\x01' must not hold control characters"),
        ({"t": float("nan"), "bad\x01": 2}, "key 't': numbers must be finite"),
        ({"bad\x01": 2, "t": None}, "key 'bad\\x01' must not hold control characters"),
        ({"t": 1, "u": None}, "key 'u': null is not a value"),
        ({"t": 1, "": 2}, "key '' must not be empty"),
        ({"t": MAX_INT + 1}, "key 't': integers must be within"),
    ],
)
def test_entries_report_the_first_problem_in_order(
    entries: dict[str, object], problem: str | None
) -> None:
    """The inline checks of the common entries answer as `entry_problem` of
    each entry in turn would: the same sentence, of the first entry at fault."""
    first = next(filter(None, (values.entry_problem(k, v) for k, v in entries.items())), None)
    found = values.entries_problem(entries)
    assert found == first
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem)


@pytest.mark.parametrize(
    "bodies",
    [
        [{"t": True, "h": 40}, {"x": 21.5}],
        [{"t": 1}, {"s": "text"}],  # a string: not the inline look's
        [{"t": 1}, {"bad\x01": 2}],
        [{"bad\x80": 1}, {"t": 1}],
        [{"t": float("inf")}],
        [{"t": MIN_INT - 1}],
        [{"": 1}],
        [{"k" * MAX_KEY: 1}, {"k" * (MAX_KEY + 1): 1}],
        [],
    ],
)
def test_many_bodies_judged_at_once_say_fine_only_where_each_is(
    bodies: list[dict[str, object]],
) -> None:
    """`all_entries_fine`: True only where `entries_problem` finds nothing in every
    body by its inline look; False also where the look is not enough (a string)."""
    inline = all(all(type(v) in (bool, float, int) for v in body.values()) for body in bodies)
    fine = all(values.entries_problem(body) is None for body in bodies)
    assert values.all_entries_fine(bodies) == (inline and fine)
