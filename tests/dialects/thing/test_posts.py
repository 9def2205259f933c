"""The post grammar of the thing-model topics (dialects/thing/posts.py), read from
OneJSON `params` as field-protocols.md §1 gives them: what each post reads as, and
every refusal, which is 313 "bad request" with a hint naming the entry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from thingshub.core.messages import ThingData, ThingValue
from thingshub.core.thingvalues import ValuesAt
from thingshub.dialects.thing import posts
from thingshub.dialects.thing.onejson import EnvelopeError

RID = "77"


def values(params: Any) -> Any:
    return posts.values(params, RID)


def pack(params: Any) -> Any:
    return posts.pack(params, RID, historical=False)


def history(params: Any) -> Any:
    return posts.pack(params, RID, historical=True)


def desired_get(params: Any) -> Any:
    return posts.desired_get(params, RID)


def desired_delete(params: Any) -> Any:
    return posts.desired_delete(params, RID)


def v(identifier: str, value: Any, ts: int | None = None) -> ThingValue:
    return ThingValue(identifier, value, ts)


# (read, params, what they read as): the payloads of §1's table, and the edges of its rules.
READ: list[tuple[Callable[[Any], Any], Any, Any]] = [
    (values, {"temp": {"value": 23.6, "time": 1599534283111}}, (v("temp", 23.6, 1599534283111),)),
    (values, {"temp": {"value": 1, "time": None}}, (v("temp", 1),)),
    (values, {"temp": {"value": 1, "time": 0}}, (v("temp", 1),)),  # 0: when received
    (values, {"temp": {"value": 1, "time": 5.0}}, (v("temp", 1, 5),)),  # an integral float
    (values, {"t" * 128: {"value": None}}, (v("t" * 128, None),)),  # a null is the model's
    (
        values,
        {"alarm": {"value": {"level": 3}}, "door": {"value": {"open": True}, "time": 1}},
        (v("alarm", {"level": 3}), v("door", {"open": True}, 1)),
    ),
    (
        pack,
        [{"properties": {"temp": {"value": 1}}}, {"events": {"boot": {"value": {}}}}],
        (ThingData(None, (v("temp", 1),), ()), ThingData(None, (), (v("boot", {}),))),
    ),
    (
        pack,
        [{"identity": {"productID": "p", "deviceName": "d"}, "properties": {}, "event": {}}],
        (ThingData(("p", "d"), (), ()),),
    ),
    (
        pack,
        [{"properties": {f"p{i}": {"value": i} for i in range(100)}}] * 10,
        (ThingData(None, tuple(v(f"p{i}", i) for i in range(100)), ()),) * 10,
    ),
    (
        history,
        [
            {
                "properties": {"temp": [{"value": 1, "time": 5}, {"value": 2, "time": 6}]},
                "events": {"boot": [{"value": {"n": 1}, "time": 7}]},
            }
        ],
        (ThingData(None, (v("temp", 1, 5), v("temp", 2, 6)), (v("boot", {"n": 1}, 7),)),),
    ),
    (
        history,
        [{"properties": {"temp": [{"value": i, "time": i + 1} for i in range(100)]}}],
        (ThingData(None, tuple(v("temp", i, i + 1) for i in range(100)), ()),),
    ),
    (desired_get, ["temp", "mode"], ("temp", "mode")),
    (desired_get, [], ()),
    (desired_get, None, ()),  # absent: all
    (desired_delete, {"temp": {"version": 2}}, {"temp": 2}),
    (desired_delete, {"temp": {}, "mode": None}, {"temp": None, "mode": None}),
]


@pytest.mark.parametrize(("read", "params", "expected"), READ)
def test_a_post_reads_as_its_entries(
    read: Callable[[Any], Any], params: Any, expected: Any
) -> None:
    assert read(params) == expected


# (read, params, a part of the hint): each breaks one rule of §1.
REFUSED: list[tuple[Callable[[Any], Any], Any, str]] = [
    (values, ["temp"], "params must be an object of identifiers"),
    (values, {}, "params is empty"),
    (values, {"": {"value": 1}}, "identifiers are 1-128 characters"),
    (values, {"t" * 129: {"value": 1}}, "identifiers are 1-128 characters"),
    (values, {"temp": 1}, "temp: an entry is an object holding value"),
    (values, {"temp": {"time": 1}}, "temp: an entry is an object holding value"),
    (values, {"temp": {"value": 1, "time": True}}, "temp: time must be Unix ms"),
    (values, {"temp": {"value": 1, "time": False}}, "temp: time must be Unix ms"),
    (values, {"temp": {"value": 1, "time": "1"}}, "temp: time must be Unix ms"),
    (values, {"temp": {"value": 1, "time": 1.5}}, "temp: time must be a whole number of ms"),
    (values, {"temp": {"value": 1, "time": -1}}, "temp: time must not be negative"),
    (pack, {"properties": {}}, "params must be an array of 1 to 10 entries"),
    (pack, [], "params must be an array of 1 to 10 entries"),
    (pack, [{"properties": {"t": {"value": 1}}}] * 11, "11 entries; at most 10"),
    (pack, [{"properties": {"t": {"value": 1}}}, "t"], "[1] an entry is an object"),
    (pack, [{"identity": ["p", "d"], "events": {}}], "[0] identity is an object"),
    (pack, [{"identity": {"productID": "p"}, "events": {}}], "[0] identity needs productID"),
    (
        pack,
        [{"identity": {"productID": "", "deviceName": "d"}, "events": {}}],
        "[0] identity needs productID and deviceName",
    ),
    (pack, [{"event": {}, "events": {}}], "[0] event and events are the same: send one"),
    (pack, [{"identity": None}], "[0] an entry holds properties or events"),
    (pack, [{"properties": {"t": 1}}], "[0] properties.t: an entry is an object holding value"),
    (pack, [{"events": []}], "[0] events.params must be an object of identifiers"),
    (
        pack,
        [
            {
                "properties": {f"p{i}": {"value": i} for i in range(60)},
                "events": {f"e{i}": {"value": {}} for i in range(41)},
            }
        ],
        "[0] at most 100 values",
    ),
    (history, [{"properties": []}], "[0] properties.must be an object of identifiers"),
    (history, [{"properties": {"t": []}}], "[0] properties.t: an array of {value, time}"),
    (history, [{"properties": {"t": {"value": 1}}}], "[0] properties.t: an array of {value, time}"),
    (
        history,
        [{"properties": {"t": [{"value": 1, "time": 1}] * 101}}],
        "[0] properties.t: at most 100 items",
    ),
    (history, [{"events": {"e": [{"time": 1}]}}], "[0] events.e[0]: an item is an object"),
    (history, [{"events": {"e": [{"value": {}}]}}], "[0] events.e[0]: time is required"),
    (history, [{"events": {"e": [{"value": {}, "time": 0}]}}], "[0] events.e[0]: time is required"),
    (desired_get, {"temp": 1}, "params must be an array of identifiers"),
    (desired_get, ["temp", 5], "identifiers are 1-128 characters"),
    (desired_delete, [], "params must be an object of identifiers"),
    (desired_delete, {}, "params must be an object of identifiers"),
    (desired_delete, {"temp": 2}, "temp: an entry is an object {version?}"),
    (desired_delete, {"temp": {"version": "2"}}, "temp: version must be an integer"),
    (desired_delete, {"temp": {"version": True}}, "temp: version must be an integer"),
]


@pytest.mark.parametrize(("read", "params", "hint"), REFUSED)
def test_a_broken_post_is_313_with_a_hint_naming_the_entry(
    read: Callable[[Any], Any], params: Any, hint: str
) -> None:
    with pytest.raises(EnvelopeError) as refused:
        read(params)
    assert refused.value.err_code == 313 and refused.value.err_msg == "bad request"
    assert refused.value.id == RID
    assert hint in refused.value.message


@pytest.mark.parametrize(
    ("params", "expected"), [(p, e) for r, p, e in READ if r is values], ids=str
)
def test_a_property_post_reads_as_values_reads_it(params: Any, expected: Any) -> None:
    assert posts.properties(params, RID) == expected


@pytest.mark.parametrize(("params", "hint"), [(p, h) for r, p, h in REFUSED if r is values])
def test_a_broken_property_post_is_refused_as_values_refuses_it(params: Any, hint: str) -> None:
    with pytest.raises(EnvelopeError) as refused:
        posts.properties(params, RID)
    assert refused.value.err_code == 313 and refused.value.id == RID
    assert hint in refused.value.message


def test_a_property_post_at_one_time_or_none_is_one_mapping() -> None:
    """Every entry at the same time, or none with a time: its values as posted and the
    time once (`ValuesAt`), no `ThingValue` each; anything else value by value."""
    at = posts.properties({"a": {"value": 1, "time": 5}, "b": {"value": [2], "time": 5}}, RID)
    assert type(at) is ValuesAt and at.ts == 5 and at.values == {"a": 1, "b": [2]}
    none = posts.properties({"a": {"value": 1}, "b": {"value": 2, "time": None}}, RID)
    assert type(none) is ValuesAt and none.ts is None and none.values == {"a": 1, "b": 2}
    for params in (
        {"a": {"value": 1, "time": 5}, "b": {"value": 2, "time": 6}},  # times of their own
        {"a": {"value": 1}, "b": {"value": 2, "time": 6}},
        {"a": {"value": 1, "time": 5}, "b": {"value": 2}},
        {"a": {"value": 1, "time": 0}},  # 0: when received
        {"a": {"value": 1, "time": 5.0}},  # an integral float
        {"a": {"value": 1, "time": 1}},  # 1 or less: it may equal `true`
    ):
        assert type(posts.properties(params, RID)) is tuple


def test_a_time_equal_to_the_first_but_of_another_type_reads_as_values_would() -> None:
    """The times are compared as a set: `true` equals 1, 5.0 equals 5. A `true` is
    refused as `values` refuses it; a float equal to the first entry's integer time
    is that time, as `values` reads it."""
    with pytest.raises(EnvelopeError) as refused:
        posts.properties({"a": {"value": 1, "time": 1}, "b": {"value": 2, "time": True}}, RID)
    assert refused.value.err_code == 313 and "b: time must be Unix ms" in refused.value.message
    mixed = {"a": {"value": 1, "time": 5}, "b": {"value": 2, "time": 5.0}}
    at = posts.properties(mixed, RID)
    assert type(at) is ValuesAt and at.ts == 5
    assert at == posts.values(mixed, RID) == (ThingValue("a", 1, 5), ThingValue("b", 2, 5))


@pytest.mark.parametrize(
    ("params", "hint"),
    [
        ({"a": {"value": 1, "time": [5]}}, "a: time must be Unix ms"),  # not hashable
        ({"a": {"value": 1, "time": 5}, "": {"value": 2, "time": 5}}, "1-128 characters"),
        ({"a": {"value": 1}, "b" * 129: {"value": 2}}, "1-128 characters"),
        ({"a": {"value": 1}, "b": ["value"]}, "b: an entry is an object holding value"),
        ({"a": {"value": 1}, "b": "value"}, "b: an entry is an object holding value"),
        ({"a": {"value": 1}, "b": {"time": 5}}, "b: an entry is an object holding value"),
    ],
)
def test_what_the_one_time_reading_does_not_take_is_refused_by_values(
    params: Any, hint: str
) -> None:
    with pytest.raises(EnvelopeError) as refused:
        posts.properties(params, RID)
    assert refused.value.err_code == 313 and hint in refused.value.message
