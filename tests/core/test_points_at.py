"""core/model.PointsAt: values reported at one time, read as the points a list would hold."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from thingshub.core.model import Point, PointsAt

T0 = 1_700_000_000_000


def test_it_reads_as_the_list_of_its_points() -> None:
    values = {"temperature": 21.5, "humidity": 40, "switch": True}
    at = PointsAt(T0, values)
    points = [Point(k, T0, v) for k, v in values.items()]
    assert isinstance(at, Sequence)
    assert len(at) == 3 and list(at) == points
    assert at[0] == points[0] and at[-1] == points[-1] and at[1:] == points[1:]
    assert at.ts == T0 and at.values is values
    assert points[1] in at and Point("humidity", T0 + 1, 40) not in at
    assert list(reversed(at)) == points[::-1] and at.index(points[2]) == 2


def test_it_equals_a_list_or_tuple_of_the_same_points() -> None:
    at = PointsAt(T0, {"a": 1, "b": "x"})
    points = [Point("a", T0, 1), Point("b", T0, "x")]
    assert at == points and points == at and tuple(points) == at and at == tuple(points)
    assert at == PointsAt(T0, {"a": 1, "b": "x"})
    assert at != PointsAt(T0 + 1, {"a": 1, "b": "x"}) and at != points[:1]
    assert at.__eq__({"a": 1, "b": "x"}) is NotImplemented and at != "ab"
    assert repr(at) == f"PointsAt({T0}, {{'a': 1, 'b': 'x'}})"


def test_it_is_frozen_and_not_hashed() -> None:
    at = PointsAt(T0, {"a": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        at.ts = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        hash(at)
