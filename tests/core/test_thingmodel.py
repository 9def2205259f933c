"""The thing model (core/thingmodel.py): the document's rules, case by case, and the
values each data type admits, with hypothesis over the numeric bounds."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thingshub.core.thingmodel import (
    ModelError,
    ValueRefused,
    check,
    check_params,
    parse_model,
)

# A model in OneNET's export shape (numbers as strings, nulls, extra keys), as
# the official device SDK's example ships one.
EXPORTED: dict[str, Any] = {
    "profile": {"industryId": "1"},
    "properties": [
        {
            "identifier": "temp",
            "name": "Temperature",
            "functionType": "u",
            "accessMode": "rw",
            "functionMode": "property",
            "desc": None,
            "dataType": {
                "type": "float",
                "specs": {"min": "-40", "max": "125", "unit": "°C", "step": None},
            },
        },
        {
            "identifier": "count",
            "name": "Count",
            "accessMode": "r",
            "dataType": {"type": "int32", "specs": {"min": "0", "max": "65535"}},
        },
        {
            "identifier": "mode",
            "name": "Mode",
            "accessMode": "rw",
            "dataType": {"type": "enum", "specs": {"0": "off", "1": "on", "2": "auto"}},
        },
        {"identifier": "on", "name": "On", "accessMode": "rw", "dataType": {"type": "bool"}},
        {
            "identifier": "label",
            "name": "Label",
            "accessMode": "rw",
            "dataType": {"type": "string", "specs": {"length": "8"}},
        },
        {"identifier": "since", "name": "Since", "accessMode": "r", "dataType": {"type": "date"}},
        {
            "identifier": "flags",
            "name": "Flags",
            "accessMode": "rw",
            "dataType": {"type": "bitMap", "specs": {"length": "4"}},
        },
        {
            "identifier": "gps",
            "name": "Position",
            "accessMode": "r",
            "dataType": {
                "type": "struct",
                "specs": [
                    {"identifier": "lat", "name": "lat", "dataType": {"type": "double"}},
                    {"identifier": "lon", "name": "lon", "dataType": {"type": "double"}},
                ],
            },
        },
        {
            "identifier": "samples",
            "name": "Samples",
            "accessMode": "r",
            "dataType": {"type": "array", "specs": {"length": 3, "type": "int64"}},
        },
    ],
    "events": [
        {
            "identifier": "alarm",
            "name": "Alarm",
            "type": "alert",
            "outputData": [
                {"identifier": "level", "name": "level", "dataType": {"type": "int32"}},
            ],
        }
    ],
    "services": [
        {
            "identifier": "add",
            "name": "Add",
            "callType": "sync",
            "inputData": [
                {"identifier": "a", "name": "a", "dataType": {"type": "int32"}},
                {"identifier": "b", "name": "b", "dataType": {"type": "int32"}},
            ],
            "outputData": [{"identifier": "c", "name": "c", "dataType": {"type": "int64"}}],
        },
        {"identifier": "$SyncGetFile", "name": "File", "callType": "a"},
    ],
}


def test_an_exported_model_is_read_and_stored_in_the_canonical_form() -> None:
    model = parse_model(EXPORTED)
    assert list(model.properties) == [
        "temp",
        "count",
        "mode",
        "on",
        "label",
        "since",
        "flags",
        "gps",
        "samples",
    ]
    assert model.events["alarm"].event_type == "alert"
    assert (
        model.services["add"].call_type == "s" and model.services["$SyncGetFile"].call_type == "a"
    )
    assert [p.identifier for p in model.services["add"].input] == ["a", "b"]
    doc = model.document
    assert doc["profile"] == {"industryId": "1"}  # other keys kept as sent
    event = doc["events"][0]
    assert event["eventType"] == "alert" and "type" not in event
    service = doc["services"][0]
    assert service["callType"] == "s" and "input" in service and "inputData" not in service
    assert doc["properties"][0]["dataType"]["specs"]["min"] == "-40"  # spec values as sent
    assert not model.properties["count"].writable and model.properties["temp"].writable
    assert json.loads(json.dumps(doc)) == doc  # plain JSON


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda m: m["properties"][0].update(identifier="bad id"), "/properties/0/identifier"),
        (lambda m: m["properties"][1].update(identifier="temp"), "/properties/1/identifier"),
        (lambda m: m["events"][0].update(identifier="add"), "/services/0/identifier"),
        (
            lambda m: m["properties"][0]["dataType"].update(type="decimal"),
            "/properties/0/dataType/type",
        ),
        (
            lambda m: m["properties"][0]["dataType"]["specs"].update(min="200"),
            "/properties/0/dataType/specs",
        ),
        (
            lambda m: m["properties"][0]["dataType"]["specs"].update(max="hot"),
            "/properties/0/dataType/specs/max",
        ),
        (
            lambda m: m["properties"][2]["dataType"].update(specs={"x": "off"}),
            "/properties/2/dataType/specs/x",
        ),
        (lambda m: m["properties"][2]["dataType"].update(specs={}), "/properties/2/dataType/specs"),
        (
            lambda m: m["properties"][4]["dataType"]["specs"].update(length="0"),
            "/properties/4/dataType/specs/length",
        ),
        (
            lambda m: m["properties"][6]["dataType"]["specs"].update(length=33),
            "/properties/6/dataType/specs/length",
        ),
        (lambda m: m["properties"][0].update(accessMode="w"), "/properties/0/accessMode"),
        (lambda m: m["events"][0].update(type="fatal"), "/events/0/eventType"),
        (lambda m: m["services"][0].update(callType="later"), "/services/0/callType"),
        (
            lambda m: m["services"][0]["inputData"][1].update(identifier="a"),
            "/services/0/input/1/identifier",
        ),
        (
            lambda m: m["properties"][7]["dataType"]["specs"][0].update(
                dataType={"type": "struct", "specs": []}
            ),
            "/properties/7/dataType/specs/0/dataType",
        ),
        (
            lambda m: m["properties"][8]["dataType"]["specs"].update(type="array"),
            "/properties/8/dataType/specs/type",
        ),
        (lambda m: m.update(properties={}), "/properties"),
        (lambda m: m["properties"].append("temp"), "/properties/9"),
    ],
)
def test_a_broken_model_is_refused_with_the_json_pointer_of_the_fault(
    change: Any, path: str
) -> None:
    document = json.loads(json.dumps(EXPORTED))
    change(document)
    with pytest.raises(ModelError) as refused:
        parse_model(document)
    assert refused.value.path == path, refused.value.message


def test_function_points_are_limited() -> None:
    many = {
        "properties": [
            {"identifier": f"p{i}", "name": "p", "dataType": {"type": "bool"}} for i in range(101)
        ]
    }
    with pytest.raises(ModelError) as refused:
        parse_model(many)
    assert "at most 100" in refused.value.message
    assert len(parse_model(many, max_points=101).properties) == 101
    assert parse_model({}).properties == {}  # every list may be missing


def dt(name: str) -> Any:
    return parse_model(EXPORTED).properties[name].data_type


@pytest.mark.parametrize(
    ("prop", "value", "stored"),
    [
        ("temp", 21.5, 21.5),
        ("temp", "30.5", 30.5),  # a numeric string, as OneNET's own examples send
        ("temp", -40, -40),
        ("count", 7, 7),
        ("count", 7.0, 7),
        ("count", "12", 12),
        ("mode", 2, 2),
        ("on", True, True),
        ("on", 0, False),
        ("label", "a" * 8, "a" * 8),
        ("label", "ÄÖÜß€", "ÄÖÜß€"),  # counted in code points
        ("since", 0, 0),
        ("since", "1700000000000", 1700000000000),
        ("flags", 15, 15),
        ("gps", {"lat": 1.5}, {"lat": 1.5}),
        ("samples", [1, "2", 3.0], [1, 2, 3]),
    ],
)
def test_values_that_fit_are_stored_as_the_type_says(prop: str, value: Any, stored: Any) -> None:
    assert check(dt(prop), value, prop) == stored


@pytest.mark.parametrize(
    ("prop", "value", "message"),
    [
        ("temp", 130, "temp: 130 > max 125"),
        ("temp", -41, "temp: -41 < min -40"),
        ("temp", "warm", "temp: 'warm' is not a number (float)"),
        ("temp", None, "temp: null is not a value"),
        ("temp", True, "temp: true is not a number (float)"),
        ("count", 1.5, "count: 1.5 is not an integer (int32)"),
        ("count", 70000, "count: 70000 > max 65535"),
        ("mode", 3, "mode: 3 is not one of 0, 1, 2"),
        ("mode", "1", "mode: '1' is not one of 0, 1, 2"),
        ("on", 2, "on: 2 is not true, false, 0 or 1"),
        ("label", "a" * 9, "label: 9 characters > length 8"),
        ("label", 5, "label: 5 is not a string"),
        ("since", -1, "since: -1 is not a date (Unix ms)"),
        ("flags", 16, "flags: 16 is not a bitMap of 4 bits"),
        ("gps", {"alt": 3}, "gps.alt: no such member"),
        ("gps", [1, 2], "gps: an array is not an object (struct)"),
        ("samples", [1, 2, 3, 4], "samples: 4 elements > length 3"),
        ("samples", [1, "x"], "samples[1]: 'x' is not an integer (int64)"),
    ],
)
def test_values_that_do_not_fit_are_refused_naming_the_identifier_and_the_rule(
    prop: str, value: Any, message: str
) -> None:
    with pytest.raises(ValueRefused) as refused:
        check(dt(prop), value, prop)
    assert refused.value.message == message
    assert refused.value.err_code == 302


def test_unknown_identifiers_are_309() -> None:
    model = parse_model(EXPORTED)
    for lookup in (model.property, model.event, model.service):
        with pytest.raises(ValueRefused) as refused:
            lookup("nope")
        assert refused.value.err_code == 309
    with pytest.raises(ValueRefused, match=r"add\.c: no such member"):
        check_params(model.services["add"].input, {"a": 1, "c": 2}, "add")


@given(st.integers(-(2**70), 2**70))
def test_int32_admits_exactly_its_range(n: int) -> None:
    data_type = (
        parse_model(
            {"properties": [{"identifier": "x", "name": "x", "dataType": {"type": "int32"}}]}
        )
        .properties["x"]
        .data_type
    )
    if -(2**31) <= n < 2**31:
        assert check(data_type, n, "x") == n
        assert check(data_type, str(n), "x") == n
    else:
        with pytest.raises(ValueRefused):
            check(data_type, n, "x")


@given(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**7), 10**7)),
)
def test_a_number_is_admitted_exactly_when_it_is_finite_and_within_the_bounds(
    low: float, high: float, value: float
) -> None:
    low, high = min(low, high), max(low, high)
    spec = {"type": "double", "specs": {"min": repr(low), "max": repr(high)}}
    data_type = (
        parse_model({"properties": [{"identifier": "x", "name": "x", "dataType": spec}]})
        .properties["x"]
        .data_type
    )
    fits = math.isfinite(value) and low <= value <= high
    if fits:
        assert check(data_type, value, "x") == value
    else:
        with pytest.raises(ValueRefused):
            check(data_type, value, "x")


def test_the_lookups_return_what_the_model_defines() -> None:
    model = parse_model(EXPORTED)
    assert model.property("temp") is model.properties["temp"]
    assert model.event("alarm") is model.events["alarm"]
    assert model.service("$SyncGetFile") is model.services["$SyncGetFile"]


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ([], ""),
        ("{}", ""),
        ({"events": [{"identifier": "e", "outputData": {"level": 1}}]}, "/events/0/outputData"),
        ({"services": [{"identifier": "s", "input": "a"}]}, "/services/0/input"),
        ({"services": [{"identifier": "s", "output": ["x"]}]}, "/services/0/output/0"),
        ({"properties": [{"identifier": "p"}]}, "/properties/0/dataType"),
    ],
)
def test_the_documents_shape_is_refused_where_it_breaks(document: object, path: str) -> None:
    with pytest.raises(ModelError) as refused:
        parse_model(document)
    assert refused.value.path == path, refused.value.message


def test_null_lists_and_missing_names_take_their_defaults() -> None:
    model = parse_model(
        {
            "properties": None,
            "events": [{"identifier": "boot"}],
            "services": [{"identifier": "reboot", "name": ""}],
        }
    )
    assert model.properties == {}
    boot = model.events["boot"]
    assert (boot.name, boot.event_type, boot.output) == ("boot", "info", ())
    reboot = model.services["reboot"]
    assert (reboot.name, reboot.call_type, reboot.input, reboot.output) == ("reboot", "s", (), ())
    assert model.document["events"][0] == {
        "identifier": "boot",
        "eventType": "info",
        "outputData": [],
    }
    assert model.document["properties"] == []


def test_a_canonical_key_wins_over_its_alias() -> None:
    event = {"identifier": "e", "type": "error", "eventType": "alert"}
    model = parse_model({"events": [event]})
    assert model.events["e"].event_type == "alert"
    assert model.document["events"][0]["type"] == "error"  # kept as sent, ignored


@pytest.mark.parametrize(
    ("document", "where"),
    [
        ({"properties": [], "note": [2**64]}, "['note'][0]: integers must be within"),
        ({"properties": [], "note": {"a": -(2**63) - 1}}, "['note']['a']: integers must be"),
        ({"properties": [], "x": "\ud800"}, "['x']: "),
    ],
)
def test_a_model_holding_what_no_storage_can_hold_is_refused(
    document: dict[str, Any], where: str
) -> None:
    """The document is stored as it came, unknown keys included: an integer past 64
    bits or a lone surrogate anywhere the model's own rules do not look is refused."""
    with pytest.raises(ModelError) as refused:
        parse_model(document)
    assert refused.value.path == ""
    assert refused.value.detail.startswith(where), refused.value.detail
