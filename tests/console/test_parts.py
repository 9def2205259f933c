"""The console's plain parts, without a browser: the meter, the bucket arithmetic of
the charts, the tags patch, the sign-in target, the formatting, how thing-model
types read and typed inputs turn into values, and the sub-device tree's state."""

from __future__ import annotations

import pytest

from thingshub.console import fmt
from thingshub.console.auth import safe_target
from thingshub.console.device_image import tags_patch
from thingshub.console.device_telemetry import BUCKETS, RANGES, interval_for, window
from thingshub.console.meter import Meter
from thingshub.console.thing_text import (
    range_text,
    read_model_file,
    read_value,
    type_text,
    value_text,
)
from thingshub.console.tree import Child, SubTree, key_of
from thingshub.core.errors import InvalidRequest, NotFound
from thingshub.core.events import DeviceDeleted, PresenceChanged, TopologyChanged
from thingshub.core.shadow import ImageError
from thingshub.core.thingmodel import DataType, parse_model


def test_the_meter_totals_per_minute_and_rates_over_recent_samples() -> None:
    meter = Meter(minutes=3, window=10)
    meter.sample(600.0, {"points": 100})  # the first sample is the baseline only
    assert meter.per_minute("points", 600.0)[-1] == (600_000, 0)
    meter.sample(605.0, {"points": 150})
    meter.sample(610.0, {"points": 250})
    assert meter.per_minute("points", 610.0) == [(480_000, 0), (540_000, 0), (600_000, 150)]
    assert meter.rate("points") == pytest.approx(15.0)  # 150 points in 10 s
    meter.sample(665.0, {"points": 10})  # a restart of the counter counts from zero
    assert meter.per_minute("points", 665.0)[-1] == (660_000, 10)
    meter.sample(840.0, {"points": 20})
    assert [m for m, _ in meter.per_minute("points", 840.0)] == [720_000, 780_000, 840_000]
    assert meter.per_minute("points", 840.0)[-1] == (840_000, 10)  # older minutes fell off
    assert meter.rate("missing") == 0.0


@pytest.mark.parametrize("label", list(RANGES))
def test_chart_ranges_have_round_intervals_and_about_300_buckets(label: str) -> None:
    span = RANGES[label]
    interval = interval_for(span)
    assert span / interval <= BUCKETS
    assert span / interval > BUCKETS / 3
    start, end, got = window(span, now=1_700_000_123_456)
    assert got == interval
    assert start % interval == 0 and end % interval == 0  # buckets stay put as time passes
    assert start <= 1_700_000_123_456 - span and end > 1_700_000_123_456
    assert (end - start) // interval <= BUCKETS + 2


def test_the_tags_patch_turns_the_old_tags_into_the_new_ones() -> None:
    old = {"room": "3", "floor": "1", "keep": "x"}
    new = {"room": "4", "keep": "x", "zone": "north"}
    assert tags_patch(old, new) == {"floor": None, "room": "4", "zone": "north"}
    assert tags_patch(old, dict(old)) == {}


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/devices?product=p1", "/devices?product=p1"),
        ("/", "/"),
        (None, "/"),
        ("", "/"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
    ],
)
def test_only_console_paths_are_followed_after_signing_in(
    target: str | None, expected: str
) -> None:
    assert safe_target(target) == expected


def test_formatting() -> None:
    assert fmt.ago(None) == "never"
    assert fmt.ago(10_000, now=10_500) == "just now"
    assert fmt.ago(10_000, now=52_000) == "42 s ago"
    assert fmt.ago(0, now=5 * 60_000) == "5 min ago"
    assert fmt.ago(0, now=3 * 3_600_000) == "3 h ago"
    assert fmt.ago(0, now=2 * 86_400_000) == "2 d ago"
    assert fmt.value(21.5) == "21.5" and fmt.value(True) == "true" and fmt.value("on") == "on"
    assert fmt.value({"a": [1, 2]}) == '{"a": [1, 2]}'
    assert fmt.rate(0.5) == "0.50" and fmt.rate(12.34) == "12.3" and fmt.rate(1234.5) == "1,234"
    assert fmt.when(None) == "—"
    # The API's sentence, with the protocol's code where there is one.
    assert fmt.error(InvalidRequest("limit must be between 1 and 1000")) == (
        "limit must be between 1 and 1000"
    )
    assert fmt.error(ImageError(165, "version must be a positive integer")) == (
        f"version must be a positive integer (err_code 165: {ImageError(165).err_msg})"
    )
    assert fmt.error(NotFound("no such device")) == "no such device"


def test_thing_model_types_read_shortly() -> None:
    model = parse_model(
        {
            "properties": [
                {"identifier": "t", "dataType": {"type": "float",
                 "specs": {"min": "-40", "max": "125", "unit": "°C"}}},
                {"identifier": "n", "dataType": {"type": "int32"}},
                {"identifier": "m", "dataType": {"type": "int64", "specs": {"min": "0"}}},
                {"identifier": "e", "dataType": {"type": "enum", "specs": {"0": "off", "1": "on"}}},
                {"identifier": "s", "dataType": {"type": "string", "specs": {"length": "16"}}},
                {"identifier": "b", "dataType": {"type": "bitMap", "specs": {"length": 4}}},
                {"identifier": "a", "dataType": {"type": "array",
                 "specs": {"length": 3, "type": "float", "specs": {"min": 0, "max": 1}}}},
                {"identifier": "x", "dataType": {"type": "struct", "specs": [
                    {"identifier": "p", "name": "P", "dataType": {"type": "bool"}}]}},
            ]
        }
    )  # fmt: skip
    shown = {
        k: (type_text(p.data_type), range_text(p.data_type)) for k, p in model.properties.items()
    }
    assert shown == {
        "t": ("float", "-40 … 125 °C"),
        "n": ("int32", "—"),  # the type's own limits are not the model's
        "m": ("int64", "≥ 0"),
        "e": ("enum", "0: off, 1: on"),
        "s": ("string", "≤ 16 chars"),
        "b": ("bitMap", "4 bits"),
        "a": ("array<float>", "≤ 3 items; 0 … 1"),
        "x": ("struct", "{p: bool}"),
    }
    assert value_text(model.properties["e"].data_type, 1) == "1 (on)"
    assert value_text(model.properties["t"].data_type, 21.5) == "21.5 °C"
    assert value_text(None, True) == "true"


def test_typed_inputs_give_the_json_values_the_types_call_for() -> None:
    int32, real = DataType("int32"), DataType("float")
    assert read_value(int32, 3.0, "n") == 3 and isinstance(read_value(int32, 3.0, "n"), int)
    assert read_value(real, 2.5, "t") == 2.5
    assert read_value(int32, 2.5, "n") == 2.5  # not integral: the service refuses it (302)
    assert read_value(DataType("bool"), None, "b") is False
    assert read_value(DataType("string"), None, "s") == ""
    assert read_value(DataType("struct"), '{"p": true}', "x") == {"p": True}
    with pytest.raises(InvalidRequest, match="n: a value is needed"):
        read_value(int32, None, "n")
    with pytest.raises(InvalidRequest, match="x: not JSON"):
        read_value(DataType("array"), "[1,", "x")


def test_a_tsl_file_is_strict_json() -> None:
    assert read_model_file(b'\xef\xbb\xbf{"properties": []}') == {"properties": []}
    with pytest.raises(InvalidRequest, match=r"not JSON: .*\(line 2, column 1\)"):
        read_model_file(b'{"a": 1,\n}')
    with pytest.raises(InvalidRequest, match="NaN"):
        read_model_file(b'{"a": NaN}')
    with pytest.raises(InvalidRequest, match="not UTF-8"):
        read_model_file(b'{"a": "\xff"}')


# ---------------------------------------------------------------- the sub-device tree

ROOT = ("p", "gw")


def _child(name: str, *, gateway: bool = False, online: bool = False) -> Child:
    return Child(("p", name), name.upper(), online, 1000 if online else None, gateway)


def _shown(tree: SubTree) -> list[tuple[str, int]]:
    return [(r["label"] if r["more"] else r["name"], r["depth"]) for r in tree.rows(5000)]


def test_the_tree_shows_open_nodes_depth_first_with_a_more_row_per_next_page() -> None:
    tree = SubTree(ROOT)
    tree.fill(ROOT, [_child("a"), _child("g", gateway=True)], "cursor-1")
    assert tree.to_open(50) == [("p", "g")]
    tree.opened(("p", "g"))
    tree.fill(("p", "g"), [_child("x", online=True)], None)
    assert _shown(tree) == [("a", 1), ("g", 1), ("x", 2), ("more sub-devices of gw", 1)]
    row = tree.rows(5000)[2]
    assert row["id"] == "p/x" and key_of(row["id"]) == ("p", "x")
    assert (row["sub_address"], row["status"], row["activity"]) == ("X", "online", "4 s ago")
    tree.fill(ROOT, [_child("b")], None, more=True)  # the next page, appended
    assert _shown(tree)[-1] == ("b", 1)
    assert tree.loaded(ROOT) == 3 and tree.to_open(50) == []
    tree.close(("p", "g"))
    assert _shown(tree) == [("a", 1), ("g", 1), ("b", 1)]
    assert ("p", "x") not in tree.nodes  # opened again, it loads afresh


def test_a_large_tree_stays_folded_at_first_sight() -> None:
    tree = SubTree(ROOT)
    tree.fill(ROOT, [_child(f"g{i}", gateway=True) for i in range(3)], None)
    assert tree.to_open(5) == [("p", "g0"), ("p", "g1")]  # 3 rows + at least 1 each
    assert tree.to_open(3) == []


def test_a_list_loaded_again_keeps_the_state_of_the_children_still_in_it() -> None:
    tree = SubTree(ROOT)
    tree.fill(ROOT, [_child("g", gateway=True), _child("h", gateway=True)], None)
    for key in (("p", "g"), ("p", "h")):
        tree.opened(key)
    tree.fill(("p", "g"), [_child("x", gateway=True)], None)
    tree.opened(("p", "x"))
    tree.fill(("p", "x"), [_child("y")], None)
    tree.fill(("p", "h"), [_child("z")], None)
    tree.fill(ROOT, [_child("g", gateway=True), _child("k")], None)  # h went away
    assert _shown(tree) == [("g", 1), ("x", 2), ("y", 3), ("k", 1)]
    assert ("p", "z") not in tree.nodes
    tree.fill(ROOT, [_child("g", gateway=True), _child("k"), _child("y")], None)  # y moved up
    assert _shown(tree) == [("g", 1), ("x", 2), ("k", 1), ("y", 1)]
    tree.fill(("p", "g"), [_child("x", gateway=False)], None)  # x lost its children
    assert tree.nodes[("p", "x")].open is False and _shown(tree)[1] == ("x", 2)


def test_events_change_the_nodes_they_name() -> None:
    tree = SubTree(ROOT)
    tree.fill(ROOT, [_child("a"), _child("g", gateway=True)], None)
    tree.opened(("p", "g"))
    tree.fill(("p", "g"), [_child("x")], None)
    online = PresenceChanged("p", "x", True, 4000)
    assert tree.wants(online) and not tree.wants(PresenceChanged("p", "stranger", True, 1))
    assert tree.apply([online]) == (True, [])
    assert tree.rows(5000)[2]["status"] == "online"
    moved = TopologyChanged("p", "x", ("p", "a"), None, ("p", "g"), 5000)
    assert tree.wants(moved)
    # g's list is loaded: load it again; a is not: it just becomes a gateway.
    assert tree.apply([moved]) == (True, [("p", "g")])
    assert tree.rows(5000)[0]["gateway"] is True
    bound = TopologyChanged("q", "new", ROOT, "n", None, 6000)
    assert tree.wants(bound) and tree.apply([bound, bound]) == (False, [ROOT])
    assert not tree.wants(TopologyChanged("q", "new", ("q", "other"), None, None, 1))
    deleted = DeviceDeleted("p", "x", "dn", "user")
    assert tree.apply([deleted]) == (False, [("p", "g")])
    assert tree.apply([DeviceDeleted("p", "gw", "dn", "user")]) == (False, [])  # the root
