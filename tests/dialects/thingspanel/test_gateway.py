"""ThingsPanel gateways, golden: the nested payloads of `gateway/...` read into one
`GatewayReport` per message (ThingsPanel's gateway spec's examples), the refusals
of a wrong shape anywhere, `devices/register`, and every request, answer and
response the platform writes in the gateway form, byte for byte."""

from __future__ import annotations

import json

import pytest

from tests.dialects.thingspanel.test_golden import compact, comparable
from thingshub.core import commands as calls
from thingshub.core.messages import (
    AttributesGet,
    Call,
    CallAnswer,
    Control,
    DeviceRef,
    GatewayReport,
    NodeData,
    RegisterResult,
    ReportAck,
    ReportRefused,
    SubRegister,
    SubRegisterReply,
    SubRegisterRequest,
    ViaGateway,
)
from thingshub.core.model import DeviceEvent, Point, PointsAt
from thingshub.dialects.thingspanel import ThingsPanel
from thingshub.dialects.thingspanel import gateway as gateway_module
from thingshub.dialects.thingspanel.gateway import nest, parse, parse_register
from thingshub.dialects.thingspanel.reports import (
    INVALID_JSON,
    INVALID_PARAM,
    MAX_ATTRIBUTES,
    MAX_EVENTS,
    MAX_POINTS,
    PAYLOAD_TOO_LARGE,
    ReportError,
)

TP = ThingsPanel()
DN = "gw-1"
REF = DeviceRef("p1", "gw", DN)
NOW = 1_700_000_000_123

SPEC_TELEMETRY = """{
  "gateway_data": {"temperature": 25.5, "version": "v0.1"},
  "sub_device_data": {
    "28da4f5a": {"temperature": 26.5, "humidity": 60},
    "9a8b7c6d": {"switch": true}
  },
  "sub_gateway_data": {
    "sg-1": {
      "gateway_data": {"load": 0.5},
      "sub_device_data": {"s-1": {"pm25": 12}},
      "sub_gateway_data": {
        "sg-2": {
          "sub_gateway_data": {"sg-3": {"sub_device_data": {"leaf": {"t": 1}}}}
        }
      }
    }
  }
}"""


def test_telemetry_of_every_node_at_server_time() -> None:
    message = TP.decode(REF, "gateway/telemetry", SPEC_TELEMETRY.encode(), NOW)
    assert message == GatewayReport(
        "telemetry",
        None,
        (
            NodeData((), points=(Point("temperature", NOW, 25.5), Point("version", NOW, "v0.1"))),
            NodeData(
                ("28da4f5a",),
                points=(Point("temperature", NOW, 26.5), Point("humidity", NOW, 60)),
            ),
            NodeData(("9a8b7c6d",), points=(Point("switch", NOW, True),)),
            NodeData(("sg-1",), points=(Point("load", NOW, 0.5),)),
            NodeData(("sg-1", "s-1"), points=(Point("pm25", NOW, 12),)),
            NodeData(("sg-1", "sg-2", "sg-3", "leaf"), points=(Point("t", NOW, 1),)),
        ),
        NOW,
    )
    assert isinstance(message, GatewayReport)
    assert all(isinstance(node.points, PointsAt) for node in message.nodes)


def test_attributes_answered_under_the_message_id() -> None:
    payload = b'{"gateway_data": {"ip": "10.0.0.1"}, "sub_device_data": {"a:1": {"fw": "2"}}}'
    assert TP.decode(REF, "gateway/attributes/m-1", payload, NOW) == GatewayReport(
        "attributes",
        "m-1",
        (NodeData((), attributes={"ip": "10.0.0.1"}), NodeData(("a:1",), attributes={"fw": "2"})),
        NOW,
    )


def test_events_one_per_node_at_server_time_or_their_ts() -> None:
    payload = json.dumps(
        {
            "gateway_data": {"method": "boot", "params": {"v": 1}},
            "sub_device_data": {"a": {"method": "alarm", "ts": 1_600_000_000_000}},
        }
    ).encode()
    assert TP.decode(REF, "gateway/event/9", payload, NOW) == GatewayReport(
        "event",
        "9",
        (
            NodeData((), events=(DeviceEvent(NOW, "boot", {"v": 1}),)),
            NodeData(("a",), events=(DeviceEvent(1_600_000_000_000, "alarm", {}),)),
        ),
        NOW,
    )


def refused(topic: str, payload: bytes) -> tuple[str | None, str]:
    message = TP.decode(REF, topic, payload, NOW)
    assert isinstance(message, ReportRefused) and message.gateway
    assert isinstance(message.error, ReportError)
    assert message.method is None  # a gateway's event answer never names one
    return message.error.errcode, message.error.message


WRONG = [
    (b"[]", INVALID_PARAM, "the payload must be an object, not an array"),
    (b"{}", INVALID_PARAM, "holds no data"),
    (b'{"gateway_data": {}}', INVALID_PARAM, "gateway_data is empty"),
    (b'{"gateway_data": [1]}', INVALID_PARAM, "gateway_data must be an object"),
    (b'{"devices": {}}', INVALID_PARAM, "'devices' is not a field of a gateway node"),
    (b'{"sub_device_data": [1]}', INVALID_PARAM, "sub_device_data must be an object of"),
    (b'{"sub_device_data": {"a/b": {"t": 1}}}', INVALID_PARAM, "'a/b': a sub-device address"),
    (b'{"sub_device_data": {"a": 5}}', INVALID_PARAM, "sub_device_data['a'] must be an object"),
    (
        b'{"sub_gateway_data": {"g": {"gateway_data": {"t": 1}, "x": 1}}}',
        INVALID_PARAM,
        "sub_gateway_data['g'].'x' is not a field",
    ),
    (b'{"sub_gateway_data": {"g": 3}}', INVALID_PARAM, "sub_gateway_data['g'] must be an object"),
    (b'{"gateway_data": {"": 1}}', INVALID_PARAM, "gateway_data: "),
    (
        b'{"sub_gateway_data": {"g": {"sub_device_data": {"a": {"t": 1}, "b": {"": 1}}}}}',
        INVALID_PARAM,
        "sub_gateway_data['g'].sub_device_data['b']: ",
    ),
    (b'{"sub_device_data": {"a": {"t": null}}}', INVALID_PARAM, "sub_device_data['a']: "),
    (b"{", INVALID_JSON, "not valid JSON"),
]


@pytest.mark.parametrize(("payload", "errcode", "words"), WRONG)
def test_a_wrong_shape_anywhere_refuses_the_whole_message(
    payload: bytes, errcode: str, words: str
) -> None:
    for topic in ("gateway/telemetry", "gateway/attributes/1"):
        code, message = refused(topic, payload)
        assert code == errcode and words in message, message


def test_a_sixth_level_is_refused() -> None:
    five = {
        "sub_gateway_data": {
            "a": {
                "sub_gateway_data": {
                    "b": {"sub_gateway_data": {"c": {"sub_device_data": {"d": {"t": 1}}}}}
                }
            }
        }
    }
    assert isinstance(
        TP.decode(REF, "gateway/telemetry", json.dumps(five).encode(), NOW), GatewayReport
    )
    six = {
        "sub_gateway_data": {
            "a": {
                "sub_gateway_data": {
                    "b": {
                        "sub_gateway_data": {
                            "c": {"sub_gateway_data": {"d": {"sub_device_data": {"e": {"t": 1}}}}}
                        }
                    }
                }
            }
        }
    }
    code, message = refused("gateway/telemetry", json.dumps(six).encode())
    assert code == INVALID_PARAM and "deeper than 5 levels" in message
    # An empty object of children that deep holds nothing: no depth is reached.
    empty = {
        "sub_gateway_data": {
            "a": {
                "sub_gateway_data": {
                    "b": {
                        "sub_gateway_data": {
                            "c": {
                                "gateway_data": {"t": 1},
                                "sub_gateway_data": {"d": {"sub_device_data": {}}},
                            }
                        }
                    }
                }
            }
        }
    }
    assert isinstance(
        TP.decode(REF, "gateway/telemetry", json.dumps(empty).encode(), NOW), GatewayReport
    )


def test_events_are_checked_as_direct_ones() -> None:
    code, message = refused("gateway/event/1", b'{"gateway_data": {"params": {}}}')
    assert code == INVALID_PARAM and "gateway_data: method is missing" in message
    code, message = refused("gateway/event/1", b'{"gateway_data": {"method": "m", "ts": "x"}}')
    assert code == INVALID_PARAM and "gateway_data: " in message
    code, _ = refused("gateway/event/1", b'{"gateway_data": []}')
    assert code == INVALID_PARAM


@pytest.mark.parametrize(
    ("kind", "limit", "content"),
    [
        ("telemetry", MAX_POINTS, "{}"),
        ("attributes", MAX_ATTRIBUTES, "{}"),
        ("event", MAX_EVENTS, "m"),
    ],
)
def test_the_limits_count_the_whole_message(kind: str, limit: int, content: str) -> None:
    per = limit // 2 + 1
    if kind == "event":
        nodes = {f"n{i}": {"method": "m"} for i in range(limit + 1)}
    else:
        nodes = {f"n{i}": {f"k{j}": 1 for j in range(per)} for i in range(2)}
    payload = json.dumps({"sub_device_data": nodes}).encode()
    with pytest.raises(ReportError) as caught:
        parse(kind, payload, NOW, max_payload=10 * len(payload))
    assert caught.value.errcode == PAYLOAD_TOO_LARGE


def node_by_node(payload: bytes) -> list[NodeData] | str:
    """`parse` of telemetry with the message's sub-devices judged node by node
    (the fast path refused): its nodes, or its refusal's words."""
    reader = gateway_module._Reader("telemetry", NOW)
    reader._all_values = lambda children, path: False  # type: ignore[method-assign]
    try:
        reader.node(json.loads(payload), (), "")
    except ReportError as exc:
        return exc.message
    return reader.nodes


FAST_OR_NOT = [
    {"gateway_data": {"t": 1}, "sub_device_data": {"a": {"t": 1.5, "on": True}, "b:2": {"x": -3}}},
    {"sub_gateway_data": {"g": {"sub_device_data": {"a": {"t": 1}, "b": {"t": 2}}}}},
    {"sub_device_data": {"a": {"t": 1}, "b": 5}},  # not an object
    {"sub_device_data": {"a": {"t": 1}, "b": {}}},  # empty
    {"sub_device_data": {"a": {"t": 1}, "b/c": {"t": 1}}},  # a character no address has
    {"sub_device_data": {"a": {"t": 1}, "b" * 37: {"t": 1}}},  # too long an address
    {"sub_device_data": {"a": {"t": 1}, "": {"t": 1}}},
    {"sub_device_data": {"a": {"t": "text"}, "b": {"t": 2**63}}},  # a string: the node's own look
    {"sub_device_data": {"a": {"t": "text"}, "b": {"t": 2}}},  # taken node by node
    {"sub_device_data": {"a": {"t": 1}, "b": {"t": 2**63}}},  # past 64 bits
    {"sub_device_data": {"a": {"t": None}}},
    {"sub_device_data": {"a": {"t\u0001": 1}}},  # a control character in a name
    {"sub_device_data": {"a": {"k" * 129: 1}}},  # too long a name
    {
        "gateway_data": {f"k{i}": 1 for i in range(MAX_POINTS - 1)},
        "sub_device_data": {"a": {"t": 1, "u": 2}},
    },
]


@pytest.mark.parametrize("body", FAST_OR_NOT)
def test_a_messages_sub_devices_judged_at_once_or_node_by_node_alike(
    body: dict[str, object],
) -> None:
    """The common message's sub-devices are judged and taken at once; anything
    that look does not pass is judged node by node: the same nodes, in the
    same order, or the same refusal, either way."""
    payload = json.dumps(body).encode()
    expected = node_by_node(payload)
    try:
        got: list[NodeData] | str = parse("telemetry", payload, NOW, max_payload=10**7)
    except ReportError as exc:
        got = exc.message
    assert got == expected


def test_topics_that_are_not_gateway_reports() -> None:
    for topic in (
        "gateway/attributes/1/2",
        "gateway/event/",
        "gateway/other",
        "gateway/telemetry/x",
    ):
        assert TP.decode(REF, topic, b"{}", NOW) is None


def test_answers_on_the_gateway_response_topics_complete_calls() -> None:
    body = b'{"result": 0, "message": "ok", "ts": 1}'
    assert TP.decode(REF, "gateway/command/response/77", body, NOW) == CallAnswer(
        "thingspanel", calls.COMMAND, "77", body, body=json.loads(body)
    )
    answer = TP.decode(REF, "gateway/attributes/set/response/78", b"[]", NOW)
    assert isinstance(answer, CallAnswer) and answer.kind == calls.ATTRIBUTES_SET
    assert answer.problem is not None


# ---------------------------------------------------------------- requests and responses


def test_nesting_down_to_the_device() -> None:
    assert nest((), {"a": 1}) == {"gateway_data": {"a": 1}}
    assert nest(("x",), [1]) == {"sub_device_data": {"x": [1]}}
    assert nest(("x", "y", "z"), 0) == {
        "sub_gateway_data": {"x": {"sub_gateway_data": {"y": {"sub_device_data": {"z": 0}}}}}
    }


def test_a_sub_gateway_is_addressed_as_a_gateway() -> None:
    """As ThingsPanel's backend sends it: intermediate gateways as
    `sub_gateway_data.{address}`, the target's own content in `gateway_data`."""
    assert nest(("x",), {"a": 1}, gateway=True) == {
        "sub_gateway_data": {"x": {"gateway_data": {"a": 1}}}
    }
    assert nest(("x", "y"), ["fw"], gateway=True) == {
        "sub_gateway_data": {"x": {"sub_gateway_data": {"y": {"gateway_data": ["fw"]}}}}
    }
    assert nest((), 0, gateway=True) == {"gateway_data": 0}  # the top gateway itself


ENCODED = [
    (
        ViaGateway(("a",), Control({"on": True})),
        [(f"gateway/telemetry/control/{DN}", '{"sub_device_data": {"a": {"on": true}}}')],
    ),
    (
        ViaGateway((), AttributesGet([])),
        [(f"gateway/attributes/get/{DN}", '{"gateway_data": []}')],
    ),
    (
        ViaGateway(("g", "b"), AttributesGet(["fw"])),
        [
            (
                f"gateway/attributes/get/{DN}",
                '{"sub_gateway_data": {"g": {"sub_device_data": {"b": ["fw"]}}}}',
            )
        ],
    ),
    (
        ViaGateway(("g", "h"), AttributesGet([]), gateway=True),
        [
            (
                f"gateway/attributes/get/{DN}",
                '{"sub_gateway_data": {"g": {"sub_gateway_data": {"h": {"gateway_data": []}}}}}',
            )
        ],
    ),
    (
        ViaGateway(("g",), Control({"on": 1}), gateway=True),
        [
            (
                f"gateway/telemetry/control/{DN}",
                '{"sub_gateway_data": {"g": {"gateway_data": {"on": 1}}}}',
            )
        ],
    ),
    (
        ViaGateway(
            ("g",), Call("thingspanel", calls.COMMAND, "57", b'{"method":"m"}'), gateway=True
        ),
        [
            (
                f"gateway/command/{DN}/57",
                '{"sub_gateway_data": {"g": {"gateway_data": {"method": "m"}}}}',
            )
        ],
    ),
    (
        ViaGateway(("a",), Call("thingspanel", calls.ATTRIBUTES_SET, "55", b'{"x":1}')),
        [(f"gateway/attributes/set/{DN}/55", '{"sub_device_data": {"a": {"x": 1}}}')],
    ),
    (
        ViaGateway(
            ("g1", "g2", "d"),
            Call("thingspanel", calls.COMMAND, "56", b'{"method":"reboot","params":{}}'),
        ),
        [
            (
                f"gateway/command/{DN}/56",
                '{"sub_gateway_data": {"g1": {"sub_gateway_data": {"g2": {"sub_device_data":'
                ' {"d": {"method": "reboot", "params": {}}}}}}}}',
            )
        ],
    ),
    (
        ReportAck("attributes", "m-1", NOW, gateway=True),
        [
            (
                f"gateway/attributes/response/{DN}/m-1",
                '{"result":0,"message":"success","ts":1700000000}',
            ),
            (
                f"devices/attributes/response/{DN}/m-1",
                '{"result":0,"message":"success","ts":1700000000}',
            ),
        ],
    ),
    (
        ReportAck("event", "e", NOW, gateway=True, note="1 unknown sub-device address skipped: x"),
        [
            (
                f"gateway/event/response/{DN}/e",
                '{"result":0,"message":"success; 1 unknown sub-device address skipped: x",'
                '"ts":1700000000}',
            ),
            (
                f"devices/event/response/{DN}/e",
                '{"result":0,"message":"success; 1 unknown sub-device address skipped: x",'
                '"ts":1700000000}',
            ),
        ],
    ),
    (
        ReportAck("attributes", "m", NOW, ReportError(INVALID_PARAM, "bad"), gateway=True),
        [
            (
                f"gateway/attributes/response/{DN}/m",
                '{"result":1,"errcode":"INVALID_PARAM","message":"bad","ts":1700000000}',
            ),
            (
                f"devices/attributes/response/{DN}/m",
                '{"result":1,"errcode":"INVALID_PARAM","message":"bad","ts":1700000000}',
            ),
        ],
    ),
    (
        SubRegisterReply(
            True,
            "success",
            (
                RegisterResult("a", "", "created"),
                RegisterResult("b", "exists", "already a sub-device"),
            ),
        ),
        [
            (
                f"devices/register/response/{DN}",
                '{"type": "sub-register-response", "status": "success", "message": "success",'
                ' "registersRes": {"a": {"result": 0, "errorcode": "", "message": "created",'
                ' "sub_addr": "a"}, "b": {"result": 1, "errorcode": "exists", "message":'
                ' "already a sub-device", "sub_addr": "b"}}}',
            )
        ],
    ),
    (
        SubRegisterReply(False, "unreadable"),
        [
            (
                f"devices/register/response/{DN}",
                '{"type": "sub-register-response", "status": "fail", "message": "unreadable"}',
            )
        ],
    ),
]


@pytest.mark.parametrize(("message", "wire"), ENCODED)
def test_what_the_platform_writes_in_the_gateway_form(
    message: object, wire: list[tuple[str, str]]
) -> None:
    assert TP.encode(REF, message) == [(topic, compact(text)) for topic, text in wire]


def test_another_familys_call_is_not_carried_through_a_gateway() -> None:
    call = Call("onenet", calls.COMMAND, "1", b"raw")
    assert TP.encode(REF, ViaGateway(("a",), call)) is None


# ---------------------------------------------------------------- devices/register


def test_registrations_read_entry_by_entry() -> None:
    payload = json.dumps(
        {
            "registers": [
                {"sub_addr": "a:1", "model": "meter", "protocol": "modbus"},
                {"sub_addr": "b"},
                {"sub_addr": "c/d"},
                {"sub_addr": "e", "model": 5},
            ]
        }
    ).encode()
    request = TP.decode(REF, "devices/register", payload, NOW)
    assert isinstance(request, SubRegisterRequest)
    assert request.registers == (
        SubRegister("a:1", "meter", "modbus"),
        SubRegister("b"),
        SubRegister("e"),
    )
    assert [address for address, _ in request.invalid] == ["c/d"]
    assert request.problem is None


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "must be an object"),
        (b'{"registers": {}}', "must be an object"),
        (b'{"registers": [1]}', "registers[0] must be an object"),
        (b'{"registers": [{"sub_addr": 1}]}', "registers[0]"),
        (json.dumps({"registers": [{"sub_addr": "a"}] * (MAX_EVENTS + 1)}).encode(), "at most"),
    ],
)
def test_an_unreadable_registration_fails_whole(payload: bytes, words: str) -> None:
    request = parse_register(payload)
    assert request.registers == () and request.problem is not None
    assert words in request.problem


# ---------------------------------------------------------------- topic rights


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [
        ("gateway/telemetry", True),
        ("gateway/attributes/1", True),
        ("gateway/event/1", True),
        ("gateway/command/response/1", True),
        ("gateway/attributes/set/response/1", True),
        ("devices/register", True),
        (f"gateway/telemetry/control/{DN}", False),
        (f"gateway/command/{DN}/1", False),
        (f"gateway/attributes/response/{DN}/1", False),
        (f"devices/register/response/{DN}", False),
    ],
)
def test_gateway_uplinks_are_open_to_every_device(topic: str, allowed: bool) -> None:
    assert TP.may_publish(REF, topic) is allowed


@pytest.mark.parametrize(
    ("topic_filter", "granted"),
    [
        (f"gateway/telemetry/control/{DN}", True),
        (f"gateway/attributes/set/{DN}/+", True),
        (f"gateway/attributes/get/{DN}", True),
        (f"gateway/command/{DN}/+", True),
        (f"gateway/attributes/response/{DN}/+", True),
        (f"gateway/event/response/{DN}/+", True),
        (f"devices/register/response/{DN}", True),
        ("gateway/command/other/+", False),
        ("gateway/#", False),
        ("gateway/command/response/+", False),
        ("devices/register/response/+", False),
    ],
)
def test_a_gateway_subscribes_to_its_own_number_only(topic_filter: str, granted: bool) -> None:
    assert TP.may_subscribe(REF, topic_filter) is granted


def test_refusals_compare_by_errcode() -> None:
    message = TP.decode(REF, "gateway/telemetry", b"{}", NOW)
    assert comparable(message) == (
        "ReportRefused",
        {
            "kind": "telemetry",
            "reply_to": None,
            "error": ("ReportError", INVALID_PARAM),
            "received_at": NOW,
            "method": None,
            "gateway": True,
        },
    )
