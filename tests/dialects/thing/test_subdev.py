"""A OneNET gateway's `thing/sub/...` topics in the thing dialect (dialects/thing/subdev.py):
its requests and their refusals, the sasToken checks in their order, what it records,
the calls to its sub-devices and its tree's changes, and its answers on any reply topic."""

from __future__ import annotations

import json
from typing import Any

import pytest

from thingshub.core import thingmodel
from thingshub.core.messages import (
    AttributesGet,
    Call,
    CallAnswer,
    DeviceRef,
    ThingRefused,
    ThingReply,
    ViaGateway,
)
from thingshub.core.model import Device
from thingshub.core.submessages import GatewayNote, SubRequest, TopologyNotice
from thingshub.dialects.onenet import token as tokens
from thingshub.dialects.thing import Thing, subdev

REF = DeviceRef("p1", "gw", "dn-1")
T = "$sys/p1/gw/thing/"
NOW_S = 1_700_000_000
KEY = "a2V5LWtleS1rZXkta2V5"
SUB = Device("p2", "s1", "n2", KEY, "user", "hash", 0)
thing = Thing()


def decode(topic: str, body: Any) -> Any:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return thing.decode(REF, T + topic, payload, 0)


def ident(**more: Any) -> dict[str, Any]:
    return {"productID": "p2", "deviceName": "s1", **more}


@pytest.mark.parametrize("topic", ["sub/login", "sub/logout"])
def test_login_and_logout(topic: str) -> None:
    assert decode(topic, {"id": "1", "params": ident()}) == SubRequest(topic, "1", ("p2", "s1"))
    refused = decode(topic, {"id": "2", "params": {"productID": "p2"}})
    assert isinstance(refused, ThingRefused) and refused.error.err_code == 313
    assert refused.request == topic and refused.request_id == "2"
    refused = decode(topic, {"id": "3", "params": ["p2", "s1"]})
    assert isinstance(refused, ThingRefused) and refused.error.err_code == 313


def test_envelope_codes_come_first() -> None:
    assert decode("sub/login", b"{").error.err_code == 301
    assert decode("sub/login", {"id": "x", "params": ident()}).error.err_code == 312


def test_topo_get() -> None:
    assert decode("sub/topo/get", {"id": "1"}) == SubRequest("sub/topo/get", "1", None)
    assert decode("sub/topo/get", {"id": "1", "params": {}}).device is None
    refused = decode("sub/topo/get", {"id": "1", "params": {"x": 1}})
    assert isinstance(refused, ThingRefused) and refused.error.err_code == 313


@pytest.mark.parametrize("topic", ["sub/topo/add", "sub/topo/delete"])
def test_topo_add_and_delete_carry_the_token_check(topic: str) -> None:
    token = tokens.make_token(KEY, "p2", "s1", NOW_S + 60, method="sha1")
    request = decode(topic, {"id": "1", "params": ident(sasToken=token)})
    assert isinstance(request, SubRequest) and request.device == ("p2", "s1")
    assert request.credential is not None
    assert request.credential(SUB, NOW_S) is None
    for missing in (ident(), ident(sasToken=""), ident(sasToken=5)):
        refused = decode(topic, {"id": "2", "params": missing})
        assert isinstance(refused, ThingRefused) and refused.error.err_code == 313


def check(token: str, device: Device | None = SUB) -> int | None:
    refusal = subdev.check_token(token, ("p2", "s1"), device, NOW_S)
    return None if refusal is None else refusal[0]


def test_token_checks_in_order() -> None:
    good = tokens.make_token(KEY, "p2", "s1", NOW_S + 60)
    assert check(good) is None
    assert check("garbage") == thingmodel.INVALID_TOKEN
    assert check(good.replace("2018-10-31", "2022-05-01")) == thingmodel.INVALID_TOKEN
    assert check(good.replace("method=sha256", "method=sm3")) == thingmodel.INVALID_TOKEN
    other = tokens.make_token(KEY, "p2", "s2", NOW_S + 60)
    assert check(other) == thingmodel.INVALID_TOKEN  # names another device
    expired = tokens.make_token(KEY, "p2", "s1", NOW_S)
    assert check(expired) == thingmodel.TOKEN_EXPIRED
    assert check(expired, None) == thingmodel.TOKEN_EXPIRED  # expiry before existence
    assert check(good, None) == thingmodel.DEVICE_NOT_FOUND
    wrong = tokens.make_token("b3RoZXIta2V5", "p2", "s1", NOW_S + 60)
    assert check(wrong) == thingmodel.SIGN_NOT_MATCH


@pytest.mark.parametrize("topic", ["sub/topo/get/result", "sub/topo/change_reply"])
def test_notes_are_recorded_as_sent(topic: str) -> None:
    note = decode(topic, {"id": "7", "code": 200, "msg": "ok"})
    assert note == GatewayNote(topic, "7", 200, "ok")
    assert decode(topic, b"not json") == GatewayNote(topic, "", None, None)


@pytest.mark.parametrize(
    "topic", ["sub/property/set_reply", "sub/property/get_reply", "sub/service/invoke_reply"]
)
def test_answers_on_any_reply_topic_may_answer_any_call(topic: str) -> None:
    answer = decode(topic, {"id": "12", "code": 100, "msg": "failed"})
    assert isinstance(answer, CallAnswer) and answer.family == "thing"
    assert answer.call_id == "12"
    assert {"property_set", "property_get", "service", "desired_push"} <= {
        answer.kind,
        *answer.also,
    }
    assert answer.body == {"id": "12", "code": 100, "msg": "failed", "data": None}


def test_rights_on_the_gateway_prefix() -> None:
    for topic in (*subdev.REQUESTS, *subdev.NOTES, *subdev.ANSWERS):
        assert thing.may_publish(REF, T + topic), topic
        assert not thing.may_publish(DeviceRef("p1", "other", "x"), T + topic)
    for topic in (*subdev.CALLS, subdev.TOPO_CHANGE, "sub/other", "sub/login/reply"):
        assert not thing.may_publish(REF, T + topic), topic
    assert decode("sub/other", {"id": "1"}) is None


def via(kind: str, body: bytes, target: str | None = None) -> ViaGateway:
    return ViaGateway((), Call("thing", kind, "42", body, target), ("p2", "s1"))


def test_calls_to_a_sub_device() -> None:
    wire = thing.encode(REF, via("property_set", b'{"t":1}'))
    assert wire == [
        (
            T + "sub/property/set",
            b'{"id":"42","version":"1.0","params":'
            b'{"productID":"p2","deviceName":"s1","params":{"t":1}}}',
        )
    ]
    wire = thing.encode(REF, via("desired_push", b'{"t":1}'))
    assert wire is not None and wire[0][0] == T + "sub/property/set"
    wire = thing.encode(REF, via("property_get", b'["t"]'))
    assert wire is not None and wire[0][0] == T + "sub/property/get"
    assert json.loads(wire[0][1])["params"]["params"] == ["t"]
    wire = thing.encode(REF, via("service", b'{"a":1}', "add"))
    assert wire == [
        (
            T + "sub/service/invoke",
            b'{"id":"42","version":"1.0","params":{"productID":"p2","deviceName":"s1",'
            b'"identifier":"add","input":{"a":1}}}',
        )
    ]


def test_what_is_not_a_thing_call_to_a_sub_device_is_left_to_others() -> None:
    assert thing.encode(REF, ViaGateway((), AttributesGet([]), ("p2", "s1"))) is None
    assert (
        thing.encode(REF, ViaGateway((), Call("tp", "command", "1", b"{}"), ("p2", "s1"))) is None
    )
    assert thing.encode(REF, ViaGateway((), Call("thing", "property_set", "1", b"{}"))) is None


def test_topology_notice_and_listening() -> None:
    notice = TopologyNotice("9", (("p2", "s1"), ("p3", "x")))
    assert thing.encode(REF, notice) == [
        (
            T + "sub/topo/change",
            b'{"id":"9","version":"1.0","params":{"subList":[{"productID":"p2","deviceName":"s1"},'
            b'{"productID":"p3","deviceName":"x"}]}}',
        )
    ]
    assert thing.topics(REF, TopologyNotice) == (T + "sub/topo/change",)
    assert thing.topics(REF, ViaGateway) == tuple(T + t for t in subdev.CALLS)


def test_replies_go_to_the_request_topic() -> None:
    reply = ThingReply("sub/topo/get", "3", 200, None, [{"productID": "p2", "deviceName": "s1"}])
    assert thing.encode(REF, reply) == [
        (
            T + "sub/topo/get/reply",
            b'{"id":"3","code":200,"msg":"success","data":[{"productID":"p2","deviceName":"s1"}]}',
        )
    ]
