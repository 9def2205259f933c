"""core/model.fast_init: a frozen dataclass's `__init__` through its slots' setters,
with the generated one's parameters, defaults and behaviour (frozen, equal, hashed)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from thingshub.core.messages import ThingPost, ThingReply, ThingValue
from thingshub.core.model import fast_init
from thingshub.dialects.thing.onejson import Request


@fast_init
@dataclass(frozen=True, slots=True)
class Pair:
    left: int
    right: str = "r"
    extra: object = None


@dataclass(frozen=True, slots=True)
class Plain:
    left: int
    right: str = "r"
    extra: object = None


def test_it_takes_what_the_generated_init_takes_and_makes_the_same_value() -> None:
    assert Pair.__init__ is not Plain.__init__
    for args, kwargs in [((1,), {}), ((1, "x"), {}), ((), {"left": 2, "extra": [1]})]:
        made, plain = Pair(*args, **kwargs), Plain(*args, **kwargs)  # type: ignore[arg-type]
        assert dataclasses.astuple(made) == dataclasses.astuple(plain)
    assert Pair(1) == Pair(1, "r", None) and hash(Pair(1)) == hash(Pair(1, "r"))
    assert repr(Pair(1, "x")) == "Pair(left=1, right='x', extra=None)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        Pair(1).left = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        Pair()  # type: ignore[call-arg]


def test_a_default_factory_is_refused() -> None:
    @dataclass(frozen=True, slots=True)
    class Listed:
        items: list[int] = field(default_factory=list)

    with pytest.raises(TypeError, match="default factory"):
        fast_init(Listed)


def test_the_thing_models_messages_keep_their_fields() -> None:
    value = ThingValue("t", 1.5, None)
    post = ThingPost("property/post", "1", (), 5)
    assert (value.identifier, value.value, value.ts) == ("t", 1.5, None)
    assert (post.request, post.request_id, post.data, post.received_at) == (
        "property/post",
        "1",
        (),
        5,
    )
    assert ThingReply("r", "1", 200) == ThingReply("r", "1", 200, None, None)
    assert Request("1", "1.0", {}, True).has_params
