"""The thing-model dialect (dialects/thing/): every topic both ways, with the OneJSON
payloads devices in the field send, the envelope's codes in their order, and the
compact replies field code looks for by the text `"code":200`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from thingshub.core.errors import ThingsHubError
from thingshub.core.messages import (
    AnswerVerdict,
    Call,
    CallAnswer,
    DesiredDelete,
    DesiredGet,
    DeviceRef,
    ThingData,
    ThingPost,
    ThingRefused,
    ThingReply,
    ThingValue,
)
from thingshub.dialects.registry import default_registry
from thingshub.dialects.thing import Thing

REF = DeviceRef("pid", "dev", "dn-1")
T = "$sys/pid/dev/thing/"
NOW = 1_700_000_000_000
thing = Thing()


def decode(topic: str, body: Any) -> Any:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return thing.decode(REF, T + topic, payload, NOW)


def test_property_post() -> None:
    body = {
        "id": "123",
        "version": "1.0",
        "params": {"temp": {"value": 23.6, "time": 1_599_534_283_111}, "hum": {"value": 40}},
    }
    values = (ThingValue("temp", 23.6, 1_599_534_283_111), ThingValue("hum", 40, None))
    assert decode("property/post", body) == ThingPost(
        "property/post", "123", (ThingData(None, values, ()),), NOW
    )


@pytest.mark.parametrize(
    ("time", "ts"),
    [(1_599_534_283_111, 1_599_534_283_111), (1.5e12, 1_500_000_000_000), (0, None), (None, None)],
)
def test_a_time_is_unix_ms_and_0_or_null_is_when_received(time: Any, ts: int | None) -> None:
    post = decode("property/post", {"id": "1", "params": {"t": {"value": 1, "time": time}}})
    assert post.data[0].properties == (ThingValue("t", 1, ts),)


@pytest.mark.parametrize(
    ("time", "words"),
    [
        (-5, "must not be negative"),
        (True, "must be Unix ms"),
        (1.5, "must be a whole number of ms"),
    ],
)
def test_a_time_that_is_not_unix_ms_is_313(time: Any, words: str) -> None:
    refused = decode("property/post", {"id": "1", "params": {"t": {"value": 1, "time": time}}})
    assert isinstance(refused, ThingRefused) and refused.error.err_code == 313
    assert refused.error.message == f"t: time {words}"


def test_event_post() -> None:
    body = {"id": "7", "params": {"alarm": {"value": {"level": 3}, "time": 1_700_000_000_001}}}
    assert decode("event/post", body) == ThingPost(
        "event/post",
        "7",
        (ThingData(None, (), (ThingValue("alarm", {"level": 3}, 1_700_000_000_001),)),),
        NOW,
    )


def test_pack_and_history_posts() -> None:
    pack = {
        "id": "9",
        "params": [
            {"properties": {"temp": {"value": 1}}, "events": {"boot": {"value": {}}}},
            {
                "identity": {"productID": "pid", "deviceName": "dev"},
                "event": {"door": {"value": {"open": True}}},
            },
        ],
    }
    post = decode("pack/post", pack)
    assert isinstance(post, ThingPost) and post.request == "pack/post"
    assert post.data[0] == ThingData(
        None, (ThingValue("temp", 1, None),), (ThingValue("boot", {}, None),)
    )
    assert post.data[1].identity == ("pid", "dev")
    assert post.data[1].events == (ThingValue("door", {"open": True}, None),)
    history = {
        "id": "10",
        "params": [{"properties": {"temp": [{"value": 1, "time": 5}, {"value": 2, "time": 6}]}}],
    }
    post = decode("history/post", history)
    assert isinstance(post, ThingPost)
    assert post.data[0].properties == (ThingValue("temp", 1, 5), ThingValue("temp", 2, 6))


def test_desired_get_and_delete() -> None:
    assert decode("property/desired/get", {"id": "1", "params": ["temp", "mode"]}) == DesiredGet(
        "1", ("temp", "mode")
    )
    assert decode("property/desired/get", {"id": "2", "params": []}) == DesiredGet("2", ())
    body = {"id": "3", "params": {"temp": {"version": 2}, "mode": {}}}
    assert decode("property/desired/delete", body) == DesiredDelete("3", {"temp": 2, "mode": None})


@pytest.mark.parametrize(
    ("payload", "code", "echo"),
    [
        (b"not json", 301, ""),
        (b"[1, 2]", 301, ""),
        (b'{"id": "12345678901234", "params": {}}', 312, "12345678901234"),
        (b'{"id": 1.5, "params": {}}', 312, "1.5"),
        (b'{"id": null, "params": {}}', 312, ""),
        (b'{"params": {"t": {"value": 1}}}', 312, ""),
        (b'{"id": "1", "version": 1, "params": {"t": {"value": 1}}}', 313, "1"),
        (b'{"id": "1", "params": {}}', 313, "1"),
        (b'{"id": "1", "params": {"t": 5}}', 313, "1"),
        (b'{"id": "1", "params": {"t": {"value": 1, "time": -5}}}', 313, "1"),
        (b'{"id": "1", "params": {"t": {"value": 1, "time": 1.5}}}', 313, "1"),
        (b'{"id": "1", "params": {"t": {"value": 1, "time": "now"}}}', 313, "1"),
    ],
)
def test_the_envelope_refusals_come_in_the_order_of_the_codes(
    payload: bytes, code: int, echo: str
) -> None:
    refused = decode("property/post", payload)
    assert isinstance(refused, ThingRefused)
    assert refused.request == "property/post" and refused.request_id == echo
    assert refused.error.err_code == code


def test_an_integer_id_counts_as_its_decimal_string() -> None:
    post = decode("property/post", {"id": 42, "params": {"t": {"value": 1}}})
    assert isinstance(post, ThingPost) and post.request_id == "42"


@pytest.mark.parametrize(
    "params",
    [
        [],
        [{"properties": {"t": {"value": 1}}}] * 11,
        [{"identity": "pid/dev", "properties": {"t": {"value": 1}}}],
        [{"event": {}, "events": {}}],
        [{"identity": {"productID": "pid", "deviceName": "dev"}}],
    ],
)
def test_a_bad_pack_is_313(params: Any) -> None:
    refused = decode("pack/post", {"id": "1", "params": params})
    assert isinstance(refused, ThingRefused) and refused.error.err_code == 313


def test_history_needs_time() -> None:
    refused = decode("history/post", {"id": "1", "params": [{"properties": {"t": [{"value": 1}]}}]})
    assert isinstance(refused, ThingRefused) and "time is required" in refused.error.message


def test_a_payload_over_256_kb_is_313_and_keeps_its_id() -> None:
    body = {"id": "5", "params": {"t": {"value": "x" * (256 * 1024)}}}
    refused = decode("property/post", body)
    assert isinstance(refused, ThingRefused)
    assert (refused.request_id, refused.error.err_code) == ("5", 313)


def test_replies_are_compact_json_on_the_reply_topic() -> None:
    wire = thing.encode(REF, ThingReply("property/post", "123", 200))
    assert wire == [(T + "property/post/reply", b'{"id":"123","code":200,"msg":"success"}')]
    wire = thing.encode(
        REF, ThingReply("property/desired/get", "4", 200, None, {"t": {"value": 1, "version": 2}})
    )
    assert wire is not None and b'"code":200' in wire[0][1] and b" " not in wire[0][1]
    # A success without a hint or data for any id is what the JSON encoder would make.
    for request_id in ("0", "9999999999999", "12345678901234", "x1", 'a"b', "é"):
        wire = thing.encode(REF, ThingReply("property/post", request_id, 200))
        body = {"id": request_id, "code": 200, "msg": "success"}
        compact = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        assert wire == [(T + "property/post/reply", compact)]
    hinted = thing.encode(REF, ThingReply("property/post", "9", 200, "noted"))
    assert hinted == [(T + "property/post/reply", b'{"id":"9","code":200,"msg":"success: noted"}')]
    refusal = thing.encode(REF, ThingReply("event/post", "8", 302, "t: 5 > max 4"))
    assert refusal == [
        (
            T + "event/post/reply",
            b'{"id":"8","code":302,"msg":"data type error: t: 5 > max 4"}',
        )
    ]


def test_platform_requests_and_the_device_replies() -> None:
    assert thing.encode(REF, Call("thing", "property_set", "0000042", b'{"temp":22}')) == [
        (T + "property/set", b'{"id":"0000042","version":"1.0","params":{"temp":22}}')
    ]
    assert thing.encode(REF, Call("thing", "property_get", "43", b'["temp"]')) == [
        (T + "property/get", b'{"id":"43","version":"1.0","params":["temp"]}')
    ]
    assert thing.encode(REF, Call("thing", "service", "44", b'{"a":1}', "add")) == [
        (T + "service/add/invoke", b'{"id":"44","version":"1.0","params":{"a":1}}')
    ]
    assert thing.encode(REF, AnswerVerdict("thing", "44", "late")) == []
    assert thing.encode(REF, Call("onenet", "command", "1", b"x")) is None

    answer = decode("property/set_reply", {"id": "0000042", "code": 200, "msg": "success"})
    assert answer == CallAnswer(
        "thing",
        "property_set",
        "0000042",
        b'{"id": "0000042", "code": 200, "msg": "success"}',
        body={"id": "0000042", "code": 200, "msg": "success", "data": None},
        also=("desired_push",),  # desired values pushed on property/set are answered alike
    )
    got = decode("property/get_reply", {"id": "43", "code": 200, "data": {"temp": 21}})
    assert isinstance(got, CallAnswer) and (got.kind, got.also) == ("property_get", ())
    assert got.body is not None and got.body["data"] == {"temp": 21}
    invoked = decode("service/add/invoke_reply", {"id": 44, "code": 200, "data": {"c": 3}})
    assert isinstance(invoked, CallAnswer) and (invoked.kind, invoked.call_id) == ("service", "44")
    no_code = decode("property/set_reply", {"id": "45", "msg": "ok"})
    assert isinstance(no_code, CallAnswer) and no_code.problem_code == 304


def test_topic_rights_and_ownership() -> None:
    for rest in (
        "property/post",
        "event/post",
        "property/desired/get",
        "property/desired/delete",
        "pack/post",
        "history/post",
        "property/set_reply",
        "property/get_reply",
        "service/add/invoke_reply",
    ):
        assert thing.may_publish(REF, T + rest), rest
    for topic in (
        T + "property/set",
        T + "property/post/reply",
        T + "service/add/invoke",
        T + "service/a/b/invoke_reply",
        "$sys/pid/other/thing/property/post",
        "devices/telemetry",  # another family's topic
    ):
        assert not thing.may_publish(REF, topic), topic
    assert thing.decode(REF, "devices/telemetry", b"{}", 1) is None
    assert thing.owns(T + "property/post") and not thing.owns("$sys/pid/dev/image/update")
    registry = default_registry()
    assert registry.family(T + "event/post") == "thing"
    assert registry.family("$sys/pid/dev/image/get") == "onenet"
    assert registry.may_subscribe(REF, T + "#")  # OneNET's rights cover the device's prefix
    assert registry.covers(REF, [T + "property/set"], Call)


def test_the_thing_dialect_takes_no_logins() -> None:
    assert thing.login("dev", "pid", b"version=2018-10-31&res=x") is None


def test_errors_keep_their_codes_as_wire_hints() -> None:
    refused = decode("property/post", b"{")
    assert isinstance(refused, ThingRefused) and isinstance(refused.error, ThingsHubError)
    assert refused.error.err_msg == "json format error"


@pytest.mark.parametrize(
    "topic",
    [
        "$sys/pid/other/thing/property/post",  # another device's
        T + "property/post/reply",  # the platform's
        T + "property/set",
        T + "service/add/invoke",
        T + "service//invoke_reply",
        T + "service/a/b/invoke_reply",
        T + "unknown",
    ],
)
def test_topics_that_are_not_a_devices_thing_uplink_decode_to_nothing(topic: str) -> None:
    assert thing.decode(REF, topic, b'{"id":"1","params":{}}', NOW) is None


@pytest.mark.parametrize(
    "payload",
    [b"\xff", b"not json", b'["1"]', b'{"code": 200}', b'{"id": "x", "code": 200}', b'{"id": -1}'],
)
def test_a_reply_without_a_usable_id_is_an_answer_to_nothing(payload: bytes) -> None:
    answer = thing.decode(REF, T + "property/set_reply", payload, NOW)
    assert answer == CallAnswer(
        "thing",
        "property_set",
        "",
        payload,
        problem="the reply has no usable id",
        also=("desired_push",),  # a set_reply may answer a desired-value push too
    )


def test_a_reply_keeps_only_a_string_msg_and_an_integer_code() -> None:
    answer = decode("property/get_reply", {"id": "9", "code": True, "msg": 5})
    assert isinstance(answer, CallAnswer) and answer.problem_code == 304
    answer = decode("property/get_reply", {"id": "9", "code": 302, "msg": ["x"]})
    assert isinstance(answer, CallAnswer) and answer.body == {
        "id": "9",
        "code": 302,
        "msg": None,
        "data": None,
    }


def test_only_calls_are_asked_for_and_only_the_own_topics_owned() -> None:
    assert thing.topics(REF, Call) == (
        T + "property/set",
        T + "property/get",
        T + "service/+/invoke",
    )
    assert thing.topics(REF, ThingReply) == ()
    for topic in ("devices/telemetry", "$sys/pid", "$sys/pid/dev/dp/post/json"):
        assert not thing.owns(topic), topic
    assert thing.encode(REF, AnswerVerdict("onenet", "1", "late")) is None
    assert thing.encode(REF, "not a message") is None
