"""Events (core/events.py) are frozen facts that any bus can carry: each type has
its own `kind`, the name subscribers and the live stream know it by, and holds
only ids and values."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from thingshub.core.events import Event, PresenceChanged

KINDS = typing.get_args(Event)


def test_every_event_type_has_its_own_kind() -> None:
    kinds = [kind.kind for kind in KINDS]
    assert len(set(kinds)) == len(kinds) == 10
    assert set(kinds) == {
        "device_deleted",
        "presence",
        "image",
        "attributes",
        "command",
        "telemetry",
        "event",
        "ota",
        "desired",
        "topology",
    }


def test_the_kind_is_the_types_not_a_field() -> None:
    """`kind` is not an argument, so an event can never claim another type's name."""
    for kind in KINDS:
        assert "kind" not in {f.name for f in dataclasses.fields(kind)}


def test_events_are_frozen() -> None:
    event = PresenceChanged("p", "d", True, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.online = False  # type: ignore[misc]


def test_events_hold_only_ids_and_values() -> None:
    """Every field is a plain value (or the core's value types): nothing live to send."""
    allowed = {"str", "int", "bool", "int | None", "str | None", "dict[str, object]"}
    allowed.add("dict[str, dict[str, object] | None]")  # desired values; None = deleted
    allowed |= {"list[Point]", "list[DeviceEvent]"}  # core/model.py's frozen values
    allowed.add("tuple[str, str] | None")  # a gateway's (product id, name)
    for kind in KINDS:
        for f in dataclasses.fields(kind):
            assert f.type in allowed, (kind.__name__, f.name, f.type)
