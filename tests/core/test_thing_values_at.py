"""core/thingvalues.ValuesAt: a property post's values at one time, read as the
`ThingValue`s a tuple would hold."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from thingshub.core.messages import ThingValue
from thingshub.core.thingvalues import ValuesAt

T0 = 1_700_000_000_000


def test_it_reads_as_the_tuple_of_its_values() -> None:
    posted = {"temp": 21.5, "on": True, "mode": 2}
    at = ValuesAt(T0, posted)
    values = [ThingValue(k, v, T0) for k, v in posted.items()]
    assert isinstance(at, Sequence)
    assert len(at) == 3 and list(at) == values
    assert at[0] == values[0] and at[-1] == values[-1] and at[1:] == values[1:]
    assert at.ts == T0 and at.values is posted
    assert list(ValuesAt(None, {"a": 1})) == [ThingValue("a", 1, None)]


def test_it_equals_a_list_or_tuple_of_the_same_values() -> None:
    at = ValuesAt(None, {"a": 1, "b": "x"})
    values = (ThingValue("a", 1, None), ThingValue("b", "x", None))
    assert at == values and values == at and list(values) == at
    assert at == ValuesAt(None, {"a": 1, "b": "x"}) and at != ValuesAt(T0, {"a": 1, "b": "x"})
    assert at.__eq__({"a": 1, "b": "x"}) is NotImplemented and at != "ab"
    assert repr(at) == "ValuesAt(None, {'a': 1, 'b': 'x'})"


def test_it_is_frozen_and_not_hashed() -> None:
    at = ValuesAt(T0, {"a": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        at.ts = 5
    with pytest.raises(TypeError):
        hash(at)
