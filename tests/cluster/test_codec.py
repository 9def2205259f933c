"""The values nodes send each other (bus/codec.py): every outbound message, the
forwarded calls, their results and errors come back as they left."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import pytest

from thingshub.bus import codec
from thingshub.core import commands, shadow, thingmodel
from thingshub.core.errors import (
    AnswerTooLarge,
    CommandTimeout,
    DeviceOffline,
    NotSubscribed,
    ThingsHubError,
    Unavailable,
)
from thingshub.core.messages import (
    AnswerVerdict,
    AttributesGet,
    Call,
    Control,
    DataPointsAck,
    ImageAccepted,
    ImageDelta,
    ImageRejected,
    ImageSnapshot,
    OtaInform,
    Outbound,
    PresenceNotice,
    RegisterResult,
    ReportAck,
    SubRegisterReply,
    ThingReply,
    ViaGateway,
)
from thingshub.core.model import Firmware
from thingshub.core.submessages import TopologyNotice

IMAGE = shadow.Image(
    {"led": {"on": True, "@": [1, "x"]}, "d": {"t": 2}},
    {"led": {"on": False}},
    {"led": {"on": {"timestamp": 1}}},
    {},
    3,
    1700000000,
)
CALL = Call("onenet", "command", "abc", b"\x00\xffbin", None)

SAMPLES: list[Any] = [
    ImageAccepted(shadow.Applied(IMAGE, shadow.Update({"led": {"on": True}}, version=2, id=7))),
    ImageAccepted(shadow.Applied(IMAGE, shadow.Update(reported=None, id="r1"))),
    ImageRejected("update", "r1", 162, "too deep"),
    ImageDelta(IMAGE),
    ImageSnapshot(None, IMAGE),
    CALL,
    AnswerVerdict("onenet", "abc", "accepted"),
    AttributesGet(["a", "b"]),
    Control({"temp": 21.5, "nested": {"d": [1, {"t": None}]}}),
    ReportAck("attributes", "m1", 5, None, None, True, "skipped x"),
    ReportAck("event", "m2", 6, ThingsHubError("boom", err_code="E1", err_msg="bad")),
    OtaInform(
        "t1",
        Firmware("f1", "p1", "fw", "1.2", "main", 10, "m" * 32, "s" * 64, 9, {"k": [1, 2]}),
        "md5",
        "http://h/ota/download/t1/d1?token=x",
    ),
    ThingReply("property/post", "12", 200, None, {"x": (1, 2)}),
    DataPointsAck(4, Unavailable("db down")),
    PresenceNotice(True),
    ViaGateway(("1", "2"), CALL, ("p1", "sub"), True),
    ViaGateway((), Control({"a": 1})),
    SubRegisterReply(True, "success", (RegisterResult("addr", "0", "ok"),)),
    TopologyNotice("99", (("p1", "a"), ("p2", "b"))),
    commands.Forwarded("call", "p1", "d1", commands.raw_command(b"\x01"), 7),
    commands.Forwarded("attributes_get", "p1", "d1", seconds=3, keys=[]),
    commands.CallResult("1234567", b"ok", {"code": 200, "data": {"v": 1}}, "r-1"),
]


def same(a: Any, b: Any) -> bool:
    """Equality, errors compared by class and attributes (they have no == of their own)."""
    if isinstance(a, BaseException):
        return type(a) is type(b) and vars(a) == vars(b) and a.args == b.args
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(
            same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return bool(type(a) is type(b) and a == b)


@pytest.mark.parametrize("value", SAMPLES, ids=lambda v: type(v).__name__)
def test_every_value_round_trips(value: Any) -> None:
    back = codec.decode(codec.encode(value))
    assert same(back, value), (back, value)


def test_every_outbound_type_is_sampled() -> None:
    assert set(typing.get_args(Outbound)) <= {type(v) for v in SAMPLES}


@pytest.mark.parametrize(
    "error",
    [
        DeviceOffline("device 'd1' of product 'p1' is offline"),
        NotSubscribed("not subscribed"),
        CommandTimeout("no answer within 3 s", err_code=2, err_msg="timeout"),
        AnswerTooLarge("too long", err_code=99, err_msg="CMD response too long"),
        shadow.ImageError(164, "bad", id=3),
        thingmodel.ModelError("/properties/0", "no identifier"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_keep_class_message_and_codes(error: ThingsHubError) -> None:
    back = codec.decode(codec.encode({"error": error}))["error"]
    assert same(back, error)
    assert str(back) == str(error) and back.message == error.message


def test_what_is_not_a_value_is_refused() -> None:
    for bad in (b"{", b'{"x": 1, "y": 2}', b'{"$": ["Nope", {}]}', b'{"e": 1}', b'{"b": "@@"}'):
        with pytest.raises(ValueError):
            codec.decode(bad)
    with pytest.raises(TypeError):
        codec.encode(object())


def test_an_error_keeps_what_can_travel() -> None:
    error = CommandTimeout("late", err_code=2)
    error.extra = object()  # type: ignore[attr-defined]
    back = codec.decode(codec.encode(error))
    assert type(back) is CommandTimeout and back.message == "late" and back.err_code == 2
    assert not hasattr(back, "extra")
