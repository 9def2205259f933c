"""ThingsPanel golden tables: what the dialect object reads from every device topic
and writes on every platform topic, byte for byte, with the seed document's
examples wherever it gives one; its logins and its topic rights.

Each decode row is (topic, payload) -> the exact core message; each encode row
is a core message -> the exact (topic, payload) pairs. A malformed payload on a
ThingsPanel topic still decodes, into the refusal carrying ThingsPanel's
errcode (or, for an answer, a `CallAnswer` saying what is wrong with it).
"""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass, replace
from typing import Any

import pytest

from thingshub.core import commands as calls
from thingshub.core.errors import NotFound, ThingsHubError, Unauthorized, Unavailable
from thingshub.core.messages import (
    AnswerVerdict,
    AttributesGet,
    AttributesReport,
    Call,
    CallAnswer,
    Control,
    DeviceRef,
    EventReport,
    ImageDelta,
    ImageRejected,
    OtaInform,
    OtaProgress,
    OtaProgressRefused,
    PresenceNotice,
    ReportAck,
    ReportRefused,
    TelemetryReport,
)
from thingshub.core.model import Device, DeviceEvent, Firmware, Point
from thingshub.core.ota import Progress
from thingshub.core.shadow import Image
from thingshub.dialects.port import Login
from thingshub.dialects.thingspanel import ThingsPanel
from thingshub.dialects.thingspanel.reports import (
    INVALID_JSON,
    INVALID_PARAM,
    MAX_PAYLOAD,
    PAYLOAD_TOO_LARGE,
    ReportError,
)

TP = ThingsPanel()
DN = "dev-42"
REF = DeviceRef("p1", "d1", DN)
NOW_MS = 1_700_000_000_123
SEED_TS_MS = 1_609_459_200_123  # a platform clock whose seconds are the seed's "ts"


def compact(text: str) -> bytes:
    """The exact bytes the platform sends for a JSON text: compact, keys in order."""
    return json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False).encode()


def comparable(message: object) -> object:
    """A message with its error (if any) as (type, errcode), since errors have no ==."""
    if message is None or not is_dataclass(message):
        return message
    values: dict[str, Any] = {}
    for f in fields(message):
        value = getattr(message, f.name)
        if isinstance(value, ThingsHubError):
            value = (type(value).__name__, value.err_code)
        values[f.name] = value
    return type(message).__name__, values


# ---------------------------------------------------------------- the seed's examples

SEED_REALTIME_TELEMETRY = """{
  "temperature": 25.5,
  "humidity": 65.0,
  "switch": true
}"""

SEED_HISTORICAL_TELEMETRY = """[
  {"ts": 1609459200, "values": {"temperature": 22.5, "humidity": 60.0}},
  {"ts": 1609462800, "values": {"temperature": 23.0, "humidity": 61.5}}
]"""

SEED_ATTRIBUTES = """{
  "ip": "192.168.1.100",
  "mac": "00:11:22:33:44:55",
  "version": "1.0.0"
}"""

SEED_REALTIME_EVENT = """{
  "method": "AlarmTriggered",
  "params": {
    "level": "high",
    "sensor": "temperature"
  }
}"""

SEED_HISTORICAL_EVENT = """[
  {
    "ts": 1609459200000,
    "method": "AlarmTriggered",
    "params": {
      "level": "high",
      "sensor": "temperature"
    }
  },
  {
    "ts": 1609462800000,
    "method": "DeviceStarted",
    "params": {
      "version": "1.0.0",
      "mode": "normal"
    }
  }
]"""

SEED_OTA_SUCCESS = """{
  "step": "100",
  "desc": "Upgrade 100%",
  "module": "MCU"
}"""

SEED_OTA_FAILURE = """{
  "step": "-1",
  "desc": "OTA Failed, download failed",
  "module": "MCU"
}"""

SEED_CONTROL = """{
  "temperature": 25.0,
  "brightness": 80,
  "switch": true
}"""

SEED_ATTRIBUTE_SET = """{
  "ip": "192.168.1.100",
  "heartbeat": 30,
  "report_interval": 60
}"""

SEED_GET_ALL = """{
  "keys": []
}"""

SEED_GET_SPECIFIC = """{
  "keys": ["temperature", "humidity"]
}"""

SEED_COMMAND = """{
  "method": "Restart",
  "params": {
    "delay": 5,
    "mode": "safe"
  }
}"""

SEED_INFORM = """{
  "id": "1001",
  "code": 200,
  "params": {
    "version": "2.0.1",
    "size": 1024000,
    "url": "https://example.com/firmware/device_v2.0.1.bin",
    "signMethod": "MD5",
    "sign": "d41d8cd98f00b204e9800998ecf8427e",
    "module": "MCU",
    "extData": {
      "description": "Fix temperature sensor bug",
      "mandatory": true
    }
  }
}"""

SEED_SUCCESS = """{
  "result": 0,
  "message": "success",
  "ts": 1609459200
}"""

SEED_FAILURE = """{
  "result": 1,
  "errcode": "INVALID_PARAM",
  "message": "Parameter validation failed",
  "ts": 1609459200,
  "method": "Restart"
}"""


# ---------------------------------------------------------------- decode

DECODE: list[tuple[str, str, str | bytes, object]] = [
    (
        "the seed's real-time telemetry: every key at the platform's clock",
        "devices/telemetry",
        SEED_REALTIME_TELEMETRY,
        TelemetryReport(
            [
                Point("temperature", NOW_MS, 25.5),
                Point("humidity", NOW_MS, 65.0),
                Point("switch", NOW_MS, True),
            ],
            NOW_MS,
        ),
    ),
    (
        "the seed's historical telemetry: ts in seconds",
        "devices/telemetry",
        SEED_HISTORICAL_TELEMETRY,
        TelemetryReport(
            [
                Point("temperature", 1_609_459_200_000, 22.5),
                Point("humidity", 1_609_459_200_000, 60.0),
                Point("temperature", 1_609_462_800_000, 23.0),
                Point("humidity", 1_609_462_800_000, 61.5),
            ],
            NOW_MS,
        ),
    ),
    (
        "the seed's attributes, answered under the message id",
        "devices/attributes/0123456",
        SEED_ATTRIBUTES,
        AttributesReport(
            "0123456",
            {"ip": "192.168.1.100", "mac": "00:11:22:33:44:55", "version": "1.0.0"},
            NOW_MS,
        ),
    ),
    (
        "the seed's real-time event: at the platform's clock",
        "devices/event/0123457",
        SEED_REALTIME_EVENT,
        EventReport(
            "0123457",
            [DeviceEvent(NOW_MS, "AlarmTriggered", {"level": "high", "sensor": "temperature"})],
            False,
            NOW_MS,
        ),
    ),
    (
        "the seed's historical events: ts in milliseconds",
        "devices/event/0123458",
        SEED_HISTORICAL_EVENT,
        EventReport(
            "0123458",
            [
                DeviceEvent(
                    1_609_459_200_000,
                    "AlarmTriggered",
                    {"level": "high", "sensor": "temperature"},
                ),
                DeviceEvent(
                    1_609_462_800_000, "DeviceStarted", {"version": "1.0.0", "mode": "normal"}
                ),
            ],
            True,
            NOW_MS,
        ),
    ),
    (
        "the seed's OTA success",
        "ota/devices/progress",
        SEED_OTA_SUCCESS,
        OtaProgress(Progress(100, "Upgrade 100%", "MCU")),
    ),
    (
        "the seed's OTA failure",
        "ota/devices/progress",
        SEED_OTA_FAILURE,
        OtaProgress(Progress(-1, "OTA Failed, download failed", "MCU")),
    ),
    (
        "the seed's success response, answering a command",
        "devices/command/response/0123459",
        SEED_SUCCESS,
        CallAnswer(
            "thingspanel",
            calls.COMMAND,
            "0123459",
            SEED_SUCCESS.encode(),
            body={"result": 0, "message": "success", "ts": 1609459200},
        ),
    ),
    (
        "the seed's failure response, answering an attribute set",
        "devices/attributes/set/response/0123460",
        SEED_FAILURE,
        CallAnswer(
            "thingspanel",
            calls.ATTRIBUTES_SET,
            "0123460",
            SEED_FAILURE.encode(),
            body={
                "result": 1,
                "errcode": "INVALID_PARAM",
                "message": "Parameter validation failed",
                "ts": 1609459200,
                "method": "Restart",
            },
        ),
    ),
]

#: Malformed reports: refused with ThingsPanel's errcode; an event's method is
#: kept for the answer to echo when it can be read.
REFUSED: list[tuple[str, str, bytes, object]] = [
    (
        "telemetry that is not JSON: no answer topic",
        "devices/telemetry",
        b"temperature=25.5",
        ReportRefused("telemetry", None, ReportError(INVALID_JSON, "-"), NOW_MS),
    ),
    (
        "empty telemetry",
        "devices/telemetry",
        b"{}",
        ReportRefused("telemetry", None, ReportError(INVALID_PARAM, "-"), NOW_MS),
    ),
    (
        "telemetry over 64 KB",
        "devices/telemetry",
        b'{"k":"' + b"x" * MAX_PAYLOAD + b'"}',
        ReportRefused("telemetry", None, ReportError(PAYLOAD_TOO_LARGE, "-"), NOW_MS),
    ),
    (
        "attributes that are not an object: answered under the message id",
        "devices/attributes/77",
        b'["ip"]',
        ReportRefused("attributes", "77", ReportError(INVALID_PARAM, "-"), NOW_MS),
    ),
    (
        "attributes that are not UTF-8",
        "devices/attributes/78",
        b'{"ip":"\xff"}',
        ReportRefused("attributes", "78", ReportError(INVALID_JSON, "-"), NOW_MS),
    ),
    (
        "an event with bad params: its method is echoed",
        "devices/event/79",
        b'{"method":"AlarmTriggered","params":"high"}',
        ReportRefused(
            "event", "79", ReportError(INVALID_PARAM, "-"), NOW_MS, method="AlarmTriggered"
        ),
    ),
    (
        "an event that is not JSON: no method to echo",
        "devices/event/80",
        b"{method:",
        ReportRefused("event", "80", ReportError(INVALID_JSON, "-"), NOW_MS),
    ),
    (
        "an event from the future",
        "devices/event/81",
        b'{"method":"M","ts":1900000000000}',
        ReportRefused("event", "81", ReportError(INVALID_PARAM, "-"), NOW_MS, method="M"),
    ),
    (
        "OTA progress with a step out of range",
        "ota/devices/progress",
        b'{"step":"101","module":"MCU"}',
        OtaProgressRefused(ReportError(INVALID_PARAM, "-")),
    ),
    (
        "OTA progress that is not JSON",
        "ota/devices/progress",
        b"100%",
        OtaProgressRefused(ReportError(INVALID_JSON, "-")),
    ),
]

#: Answers that are not response objects: kept as sent, with the problem.
BAD_ANSWERS: list[tuple[str, str, bytes, str, str]] = [
    ("not JSON", "devices/command/response/90", b"ok", calls.COMMAND, "not valid JSON"),
    (
        "no result",
        "devices/command/response/91",
        b'{"message":"done"}',
        calls.COMMAND,
        "result is missing",
    ),
    (
        "result 2",
        "devices/attributes/set/response/92",
        b'{"result":2,"message":"?"}',
        calls.ATTRIBUTES_SET,
        "result must be 0 (success) or 1 (failure), not 2",
    ),
    (
        "message not a string",
        "devices/attributes/set/response/93",
        b'{"result":0,"message":7}',
        calls.ATTRIBUTES_SET,
        "message must be a string",
    ),
]

#: Not a device's ThingsPanel uplink: None (the message id is one level).
NOT_DECODED = [
    "devices/attributes/",
    "devices/attributes/1/2",
    "devices/event/",
    "devices/event/1/2",
    "devices/command/response/",
    "devices/command/response/1/2",
    "devices/attributes/set/response/",
    "devices/attributes/set/response/1/2",
    f"devices/telemetry/control/{DN}",
    f"devices/command/{DN}/1",
    f"devices/attributes/get/{DN}",
    f"ota/devices/inform/{DN}",
    "devices/telemetry/",
    "ota/devices/progress/1",
    "$sys/p1/d1/image/update",
    "devices",
]


def as_bytes(payload: str | bytes) -> bytes:
    return payload.encode() if isinstance(payload, str) else payload


@pytest.mark.parametrize(
    ("topic", "payload", "expected"), [c[1:] for c in DECODE], ids=[c[0] for c in DECODE]
)
def test_decode(topic: str, payload: str, expected: object) -> None:
    assert TP.decode(REF, topic, as_bytes(payload), NOW_MS) == expected


@pytest.mark.parametrize(
    ("topic", "payload", "expected"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_a_malformed_report_decodes_to_its_refusal(
    topic: str, payload: bytes, expected: object
) -> None:
    message = TP.decode(REF, topic, payload, NOW_MS)
    assert comparable(message) == comparable(expected)
    error = getattr(message, "error", None)
    assert isinstance(error, ReportError) and error.message  # a sentence for the device


@pytest.mark.parametrize(
    ("topic", "payload", "kind", "problem"),
    [c[1:] for c in BAD_ANSWERS],
    ids=[c[0] for c in BAD_ANSWERS],
)
def test_an_answer_that_is_not_a_response_object_says_why(
    topic: str, payload: bytes, kind: str, problem: str
) -> None:
    message = TP.decode(REF, topic, payload, NOW_MS)
    assert isinstance(message, CallAnswer)
    assert (message.family, message.kind, message.call_id, message.payload, message.body) == (
        "thingspanel",
        kind,
        topic.rsplit("/", 1)[1],
        payload,
        None,
    )
    assert message.problem is not None
    assert message.problem.startswith("the device's answer is not a response object: ")
    assert problem in message.problem
    assert message.limit is None  # ThingsPanel sets no size of its own on answers


@pytest.mark.parametrize("topic", NOT_DECODED)
def test_topics_that_are_not_a_devices_uplink_decode_to_nothing(topic: str) -> None:
    assert TP.decode(REF, topic, b'{"result":0,"message":"x","a":1}', NOW_MS) is None


def test_a_refused_report_names_what_is_wrong() -> None:
    message = TP.decode(REF, "devices/telemetry", b'{"t":null}', NOW_MS)
    assert isinstance(message, ReportRefused)
    assert "'t'" in message.error.message and "null" in message.error.message


# ---------------------------------------------------------------- encode

FIRMWARE = Firmware(
    id="f1",
    product_id="p1",
    name="MCU-2.0.1",
    version="2.0.1",
    module="MCU",
    size=1024000,
    md5="d41d8cd98f00b204e9800998ecf8427e",
    sha256="e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    created_at=0,
    ext_data={"description": "Fix temperature sensor bug", "mandatory": True},
)
URL = "https://example.com/firmware/device_v2.0.1.bin"
#: The OTA inform's topic, in both spellings a ThingsPanel device may listen on.
INFORMS = ("inform", "infrom")

ENCODE: list[tuple[str, object, list[tuple[str, bytes]]]] = [
    (
        "the seed's command",
        Call("thingspanel", calls.COMMAND, "0123456", compact(SEED_COMMAND)),
        [(f"devices/command/{DN}/0123456", compact(SEED_COMMAND))],
    ),
    (
        "the seed's attribute set",
        Call("thingspanel", calls.ATTRIBUTES_SET, "0123457", compact(SEED_ATTRIBUTE_SET)),
        [(f"devices/attributes/set/{DN}/0123457", compact(SEED_ATTRIBUTE_SET))],
    ),
    (
        "the seed's control values",
        Control({"temperature": 25.0, "brightness": 80, "switch": True}),
        [(f"devices/telemetry/control/{DN}", compact(SEED_CONTROL))],
    ),
    (
        "the seed's attribute get, all",
        AttributesGet([]),
        [(f"devices/attributes/get/{DN}", compact(SEED_GET_ALL))],
    ),
    (
        "the seed's attribute get, specific",
        AttributesGet(["temperature", "humidity"]),
        [(f"devices/attributes/get/{DN}", compact(SEED_GET_SPECIFIC))],
    ),
    (
        "the seed's success response, answering attributes",
        ReportAck("attributes", "0123458", SEED_TS_MS),
        [(f"devices/attributes/response/{DN}/0123458", compact(SEED_SUCCESS))],
    ),
    (
        "a real-time event's answer echoes its method",
        ReportAck("event", "0123459", SEED_TS_MS, method="AlarmTriggered"),
        [
            (
                f"devices/event/response/{DN}/0123459",
                b'{"result":0,"message":"success","ts":1609459200,"method":"AlarmTriggered"}',
            )
        ],
    ),
    (
        "the seed's failure response, answering an event",
        ReportAck(
            "event",
            "0123460",
            SEED_TS_MS,
            ReportError(INVALID_PARAM, "Parameter validation failed"),
            "Restart",
        ),
        [(f"devices/event/response/{DN}/0123460", compact(SEED_FAILURE))],
    ),
    (
        "a report of a device deleted meanwhile: INTERNAL",
        ReportAck("attributes", "1", SEED_TS_MS, NotFound("gone")),
        [
            (
                f"devices/attributes/response/{DN}/1",
                b'{"result":1,"errcode":"INTERNAL","message":"the device no longer exists",'
                b'"ts":1609459200}',
            )
        ],
    ),
    (
        "a report the platform could not store: INTERNAL",
        ReportAck("event", "2", SEED_TS_MS, Unavailable("disk full"), "M"),
        [
            (
                f"devices/event/response/{DN}/2",
                b'{"result":1,"errcode":"INTERNAL",'
                b'"message":"the platform could not store the report","ts":1609459200,'
                b'"method":"M"}',
            )
        ],
    ),
    (
        "the seed's OTA inform",
        OtaInform("1001", FIRMWARE, "MD5", URL),
        # ThingsPanel's default configuration spells the topic "infrom": both are sent.
        [(f"ota/devices/{spelling}/{DN}", compact(SEED_INFORM)) for spelling in INFORMS],
    ),
    (
        "presence: online, on the status topic",
        PresenceNotice(True),
        [(f"devices/status/{DN}", b"1")],
    ),
    (
        "presence: offline, on the status topic",
        PresenceNotice(False),
        [(f"devices/status/{DN}", b"0")],
    ),
    (
        "an OTA inform signed with SHA256",
        OtaInform("1002", FIRMWARE, "SHA256", URL),
        [
            (
                f"ota/devices/{spelling}/{DN}",
                compact(SEED_INFORM)
                .replace(b'"1001"', b'"1002"')
                .replace(b'"MD5"', b'"SHA256"')
                .replace(FIRMWARE.md5.encode(), FIRMWARE.sha256.encode()),
            )
            for spelling in INFORMS
        ],
    ),
]

#: ThingsPanel never tells a device what became of its answer.
QUIET = [
    AnswerVerdict("thingspanel", "0123456", verdict)
    for verdict in (calls.ACCEPTED, calls.UNKNOWN, calls.LATE, calls.TOO_LARGE)
]

#: Messages ThingsPanel does not carry (another dialect does).
NOT_CARRIED: list[object] = [
    Call("onenet", calls.COMMAND, "c1", b"raw"),
    AnswerVerdict("onenet", "c1", calls.ACCEPTED),
    ImageDelta(Image({"a": 1}, {}, {"a": {"timestamp": 1}}, {}, 1, 1)),
    ImageRejected("get", None, 167),
]


@pytest.mark.parametrize(
    ("message", "expected"), [c[1:] for c in ENCODE], ids=[c[0] for c in ENCODE]
)
def test_encode(message: object, expected: list[tuple[str, bytes]]) -> None:
    assert TP.encode(REF, message) == expected


@pytest.mark.parametrize("message", QUIET, ids=lambda m: m.verdict)
def test_verdicts_on_answers_send_nothing(message: AnswerVerdict) -> None:
    assert TP.encode(REF, message) == []


@pytest.mark.parametrize("message", NOT_CARRIED, ids=lambda m: type(m).__name__)
def test_messages_of_other_dialects_are_not_carried(message: object) -> None:
    assert TP.encode(REF, message) is None


# ---------------------------------------------------------------- logins

DEVICE = Device("p1", "d1", DN, "a2V5", "user-1", "hash", 0)


def test_any_user_name_and_password_is_a_thingspanel_login() -> None:
    login = TP.login("any-client-id", "user-1", b"issued password")
    assert login == Login("thingspanel", ("u", "user-1"), "issued password")


def test_a_login_without_user_name_is_not_thingspanels() -> None:
    assert TP.login("c", None, b"pw") is None


def test_a_user_name_alone_is_an_access_token_login() -> None:
    """ThingsPanel firmware may log in with its access token as the user name alone."""
    assert TP.login("c", "user-1", None) == Login("thingspanel", ("t", "user-1"), None)


def test_an_empty_password_is_an_access_token_login_too() -> None:
    assert TP.login("c", "token-1", b"") == Login("thingspanel", ("t", "token-1"), None)


def test_an_access_token_is_the_whole_credential() -> None:
    def password_ok(device: Device, password: str) -> bool:
        raise AssertionError("an access token login has no password to check")

    device = replace(DEVICE, access_token="token-1")
    TP.verify(Login("thingspanel", ("t", "token-1"), None), device, 0, password_ok)
    for found, token in ((device, "token-2"), (DEVICE, "token-1")):
        with pytest.raises(Unauthorized, match="wrong access token"):
            TP.verify(Login("thingspanel", ("t", token), None), found, 0, password_ok)


def test_a_password_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(Unauthorized, match="not UTF-8"):
        TP.login("c", "user-1", b"\xff\xfe")


def test_the_password_is_checked_by_the_platform() -> None:
    checked: list[tuple[Device, str]] = []

    def password_ok(device: Device, password: str) -> bool:
        checked.append((device, password))
        return password == "right"

    TP.verify(Login("thingspanel", ("u", "user-1"), "right"), DEVICE, 0, password_ok)
    with pytest.raises(Unauthorized, match="wrong user name or password"):
        TP.verify(Login("thingspanel", ("u", "user-1"), "wrong"), DEVICE, 0, password_ok)
    assert checked == [(DEVICE, "right"), (DEVICE, "wrong")]


def test_a_login_whose_secret_is_not_a_password_is_refused_unchecked() -> None:
    def password_ok(device: Device, password: str) -> bool:
        raise AssertionError("not a password: nothing to check")

    with pytest.raises(Unauthorized):
        TP.verify(Login("thingspanel", ("u", "user-1"), b"bytes"), DEVICE, 0, password_ok)


def test_an_access_token_login_is_the_devices_own_token_or_refused() -> None:
    """The token found the device, so it is the whole credential; a device whose
    token changed meanwhile (or a lookup that went astray) is refused."""

    def password_ok(device: Device, password: str) -> bool:
        raise AssertionError("a token login has no password to check")

    device = replace(DEVICE, access_token="tok-1")
    TP.verify(Login("thingspanel", ("t", "tok-1"), None), device, 0, password_ok)
    with pytest.raises(Unauthorized, match="wrong access token"):
        TP.verify(Login("thingspanel", ("t", "tok-2"), None), device, 0, password_ok)


# ---------------------------------------------------------------- topic rights


@pytest.mark.parametrize(
    ("topic", "owned"),
    [
        ("devices/telemetry", True),
        ("devices/anything/else", True),
        ("ota/devices/progress", True),
        ("ota/other", False),
        ("$sys/p1/d1/image/update", False),
        ("device/telemetry", False),
    ],
)
def test_thingspanel_owns_the_devices_and_ota_topics(topic: str, owned: bool) -> None:
    assert TP.owns(topic) is owned


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [
        ("devices/telemetry", True),
        ("devices/attributes/1", True),
        ("devices/event/1", True),
        ("ota/devices/progress", True),
        ("devices/command/response/1", True),
        ("devices/attributes/set/response/1", True),
        (f"devices/telemetry/control/{DN}", False),
        (f"devices/command/{DN}/1", False),
        (f"devices/attributes/response/{DN}/1", False),
        (f"ota/devices/inform/{DN}", False),
        ("devices/attributes/1/2", False),
        ("devices/attributes/+", False),
        (f"devices/status/{DN}", True),  # accepted and ignored
        ("devices/status/other", False),
        (f"devices/status/{DN}/x", False),
        (f"ota/devices/infrom/{DN}", False),
    ],
)
def test_a_device_publishes_only_on_the_uplink_topics(topic: str, allowed: bool) -> None:
    assert TP.may_publish(REF, topic) is allowed


@pytest.mark.parametrize(
    ("topic_filter", "granted"),
    [
        (f"devices/telemetry/control/{DN}", True),
        (f"devices/attributes/set/{DN}/+", True),
        (f"devices/attributes/get/{DN}", True),
        (f"devices/command/{DN}/+", True),
        (f"ota/devices/inform/{DN}", True),
        (f"devices/attributes/response/{DN}/+", True),
        (f"devices/event/response/{DN}/+", True),
        (f"ota/devices/infrom/{DN}", True),  # the default configuration's spelling
        (f"devices/status/{DN}", True),
        ("devices/status/+", False),
        ("devices/command/other/+", False),
        ("devices/command/+/+", False),
        ("devices/#", False),
        ("devices/telemetry", False),
        ("devices/command/response/+", False),
    ],
)
def test_a_device_subscribes_only_to_topics_carrying_its_number(
    topic_filter: str, granted: bool
) -> None:
    assert TP.may_subscribe(REF, topic_filter) is granted


def test_informs_are_the_one_kind_a_device_is_asked_to_listen_for() -> None:
    assert TP.topics(REF, OtaInform) == tuple(f"ota/devices/{s}/{DN}" for s in INFORMS)
    for kind in (Call, Control, AttributesGet, ReportAck, ImageDelta):
        assert TP.topics(REF, kind) == ()
