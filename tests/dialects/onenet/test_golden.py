"""OneNET golden tables: what the dialect object reads from every device topic and
writes on every platform topic, byte for byte, with the seed documents' examples
wherever they give one; its logins and its topic rights.

Each decode row is (topic, payload) -> the exact core message; each encode row
is a core message -> the exact (topic, payload) pairs. A malformed payload on a
OneNET topic still decodes, into the refusal carrying OneNET's err_code.
"""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from typing import Any

import pytest

from thingshub.core import commands as calls
from thingshub.core import shadow
from thingshub.core.errors import ThingsHubError, Unauthorized
from thingshub.core.messages import (
    AnswerVerdict,
    AttributesGet,
    Call,
    CallAnswer,
    Control,
    DeviceRef,
    ImageAccepted,
    ImageDelta,
    ImageGetRequest,
    ImageRejected,
    ImageSnapshot,
    ImageUpdateRefused,
    ImageUpdateRequest,
    OtaInform,
    OtaInformReply,
    ReportAck,
)
from thingshub.core.model import Device, Firmware
from thingshub.core.shadow import MISSING, Image, ImageError, Update
from thingshub.dialects.onenet import OneNet
from thingshub.dialects.onenet import commands as onenet_commands
from thingshub.dialects.onenet.token import Token, make_token
from thingshub.dialects.port import Login

ONENET = OneNet()
REF = DeviceRef("p1", "d1", "n1")
OWN = "$sys/p1/d1/"
NOW_MS = 1_700_000_000_123
T = 1469564492  # the seeds' timestamp (Unix seconds)


def compact(text: str) -> bytes:
    """The exact bytes the platform sends for a JSON text: compact, keys in order."""
    return json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False).encode()


def comparable(message: object) -> object:
    """A message with its error (if any) as (type, err_code), since errors have no ==."""
    if message is None or not is_dataclass(message):
        return message
    values: dict[str, Any] = {}
    for f in fields(message):
        value = getattr(message, f.name)
        if isinstance(value, ThingsHubError):
            value = (type(value).__name__, value.err_code, getattr(value, "id", None))
        values[f.name] = value
    return type(message).__name__, values


# ---------------------------------------------------------------- the seeds' examples

#: The seed's image update example.
SEED_UPDATE = """{
    "state": {
        "desired": {
            "color": "red"
        },
        "reported": {
            "color": "red"
        }
    }
}"""

#: The seed's deepest valid nesting example (four objects under reported).
SEED_DEPTH = """{
"state": {
"reported": {
"one": {
"two": {
"three": {
"four": {
"key": "value"
}
}
}
}
}
}
}"""

#: The `properties` part of the seed's image document example.
SEED_PROPERTIES = """{
"state": {
"desired": {
"lights": {
"color": "RED"
},
"engine": "ON"
},
"reported": {
"lights": {
"color": "GREEN"
},
"engine": "ON"
},
"delta": {
"lights": {
"color": "RED"
}
}
},
"metadata": {
"desired": {
"lights": {
"color": {
"timestamp": 1469564492
}
},
"engine": {
"timestamp": 1469564492
}
},
"reported": {
"lights": {
"color": {
"timestamp": 1469564492
}
},
"engine": {
"timestamp": 1469564492
}
}
},
"version": 10,
"timestamp": 1469564492
}"""

#: The seed's command error example.
SEED_CMD_ERROR = """{
    "err_code": 99,
    "err_msg":"maximum payload size exceeded"
}"""

SEED_IMAGE = Image.from_stored(json.loads(SEED_PROPERTIES))


# ---------------------------------------------------------------- decode

DECODE: list[tuple[str, str, bytes, object]] = [
    (
        "an answer to an OTA notice",
        OWN + "ota/inform_reply",
        b'{"id":"12","code":200,"msg":"success"}',
        OtaInformReply(12, 200, "success"),
    ),
    (
        "an answer whose id is no tid, code no number, msg no string",
        OWN + "ota/inform_reply",
        b'{"id":12,"code":true,"msg":[1]}',
        OtaInformReply(None, None, ""),
    ),
    (
        "an answer whose msg is long",
        OWN + "ota/inform_reply",
        b'{"id":"3","code":500,"msg":"' + b"x" * 300 + b'"}',
        OtaInformReply(3, 500, "x" * 200),
    ),
    (
        "an answer that is no object",
        OWN + "ota/inform_reply",
        b"[1]",
        OtaInformReply(None, None, ""),
    ),
    ("an answer that is no JSON", OWN + "ota/inform_reply", b"{", OtaInformReply(None, None, "")),
    (
        "the seed's image update example",
        OWN + "image/update",
        SEED_UPDATE.encode(),
        ImageUpdateRequest(Update(desired={"color": "red"}, reported={"color": "red"})),
    ),
    (
        "the seed's deepest nesting is an update",
        OWN + "image/update",
        SEED_DEPTH.encode(),
        ImageUpdateRequest(
            Update(reported={"one": {"two": {"three": {"four": {"key": "value"}}}}})
        ),
    ),
    (
        "an update with a version and an id",
        OWN + "image/update",
        b'{"state":{"reported":{"t":21.5}},"version":3,"id":"r1"}',
        ImageUpdateRequest(Update(reported={"t": 21.5}, version=3, id="r1")),
    ),
    (
        "desired null clears all of desired",
        OWN + "image/update",
        b'{"state":{"desired":null},"id":7}',
        ImageUpdateRequest(Update(desired=None, reported=MISSING, id=7)),
    ),
    (
        "image/get with an empty payload",
        OWN + "image/get",
        b"",
        ImageGetRequest(None),
    ),
    (
        "image/get with an id",
        OWN + "image/get",
        b'{"id":"q1"}',
        ImageGetRequest("q1"),
    ),
    (
        "image/get with a number id",
        OWN + "image/get",
        b'{"id":12}',
        ImageGetRequest(12),
    ),
    (
        "image/get that is not JSON has no id (it has no error topic)",
        OWN + "image/get",
        b"{not json",
        ImageGetRequest(None),
    ),
    (
        "image/get that is not an object has no id",
        OWN + "image/get",
        b'["q1"]',
        ImageGetRequest(None),
    ),
    (
        "image/get with an id that is not a string or integer",
        OWN + "image/get",
        b'{"id":[1]}',
        ImageGetRequest(None),
    ),
    (
        "a command answer is kept as sent, with OneNET's size limit",
        OWN + "cmd/response/0f3c9a1b2c3d4e5f",
        b"\x00any bytes at all",
        CallAnswer(
            "onenet",
            calls.COMMAND,
            "0f3c9a1b2c3d4e5f",
            b"\x00any bytes at all",
            limit=onenet_commands.LIMIT,
        ),
    ),
]

#: Malformed updates: refused with the image code of the first rule broken,
#: carrying the request's id when it could be read.
REFUSED_UPDATES: list[tuple[str, bytes, int, object]] = [
    ("not JSON", b"{state", 160, None),
    ("not UTF-8", b'{"state":{"reported":{"a":"\xff"}}}', 160, None),
    ("not an object", b'[{"state":{}}]', 160, None),
    ("NaN is not JSON", b'{"state":{"reported":{"a":NaN}},"id":"r"}', 160, None),
    (
        "longer than 4096 bytes",
        b'{"id":"big","pad":"' + b"x" * 4096 + b'","state":{"reported":{"a":1}}}',
        161,
        "big",
    ),
    ("no state", b'{"id":"r2","desired":{"a":1}}', 163, "r2"),
    ("state not an object", b'{"state":[1]}', 163, None),
    ("state without desired or reported", b'{"id":5,"state":{"delta":{"a":1}}}', 164, 5),
    (
        "one level deeper than the seed's example",
        b'{"state":{"reported":{"one":{"two":{"three":{"four":{"five":{"k":1}}}}}}}}',
        162,
        None,
    ),
    ("a key with a dash", b'{"state":{"reported":{"bad-key":1}}}', 165, None),
    ("a string over 512 bytes", b'{"state":{"desired":{"s":"' + b"y" * 513 + b'"}}}', 165, None),
    ("an integer past 2**52", b'{"state":{"desired":{"n":4503599627370497}}}', 165, None),
    ("reported a number", b'{"state":{"reported":3}}', 165, None),
    ("another key in state", b'{"state":{"reported":{"a":1},"delta":{}}}', 165, None),
    ("version zero", b'{"id":"v","state":{"reported":{"a":1}},"version":0}', 165, "v"),
    ("an id that is a list", b'{"id":[1],"state":{"reported":{"a":1}}}', 165, None),
]

#: Topics under the device's prefix that are not a device's to publish, and
#: topics that are not the device's at all: not OneNET's message, so None.
NOT_DECODED = [
    OWN + "image/update/accepted",
    OWN + "image/get/accepted",
    OWN + "cmd/request/abc",
    OWN + "cmd/response/",
    OWN + "cmd/response/abc/accepted",
    OWN + "cmd/response/abc/rejected",
    OWN + "image",
    "$sys/p1/d2/image/update",
    "$sys/p2/d1/image/get",
    "devices/telemetry",
]


@pytest.mark.parametrize(
    ("topic", "payload", "expected"), [c[1:] for c in DECODE], ids=[c[0] for c in DECODE]
)
def test_decode(topic: str, payload: bytes, expected: object) -> None:
    assert ONENET.decode(REF, topic, payload, NOW_MS) == expected


@pytest.mark.parametrize(
    ("payload", "code", "request_id"),
    [c[1:] for c in REFUSED_UPDATES],
    ids=[c[0] for c in REFUSED_UPDATES],
)
def test_a_malformed_update_decodes_to_its_refusal(
    payload: bytes, code: int, request_id: object
) -> None:
    message = ONENET.decode(REF, OWN + "image/update", payload, NOW_MS)
    expected = ImageUpdateRefused(request_id, ImageError(code, id=request_id))  # type: ignore[arg-type]
    assert comparable(message) == comparable(expected)
    assert isinstance(message, ImageUpdateRefused)
    assert message.error.err_msg == shadow.ERR_MSG[code]


def test_a_refusal_says_what_is_wrong() -> None:
    message = ONENET.decode(REF, OWN + "image/update", b'{"state":{"reported":{"b-k":1}}}', 0)
    assert isinstance(message, ImageUpdateRefused)
    assert "b-k" in message.error.message


@pytest.mark.parametrize("topic", NOT_DECODED)
def test_topics_that_are_not_a_devices_onenet_uplink_decode_to_nothing(topic: str) -> None:
    assert ONENET.decode(REF, topic, b'{"state":{"reported":{"a":1}}}', NOW_MS) is None


# ---------------------------------------------------------------- encode


def accepted_seed_update(request_id: str | None) -> ImageAccepted:
    update = Update(desired={"color": "red"}, reported={"color": "red"}, id=request_id)
    return ImageAccepted(shadow.apply_update(None, update, T))


ENCODE: list[tuple[str, object, list[tuple[str, bytes]]]] = [
    (
        "the seed's update, accepted",
        accepted_seed_update(None),
        [
            (
                OWN + "image/update/accepted",
                compact(
                    """{"state": {"desired": {"color": "red"}, "reported": {"color": "red"}},
                        "metadata": {"desired": {"color": {"timestamp": 1469564492}},
                                     "reported": {"color": {"timestamp": 1469564492}}},
                        "version": 1, "timestamp": 1469564492}"""
                ),
            )
        ],
    ),
    (
        "an acceptance echoes the id",
        accepted_seed_update("r1"),
        [
            (
                OWN + "image/update/accepted",
                compact(
                    """{"state": {"desired": {"color": "red"}, "reported": {"color": "red"}},
                        "metadata": {"desired": {"color": {"timestamp": 1469564492}},
                                     "reported": {"color": {"timestamp": 1469564492}}},
                        "version": 1, "timestamp": 1469564492, "id": "r1"}"""
                ),
            )
        ],
    ),
    (
        "an acceptance carries only the parts sent, at the new version",
        ImageAccepted(
            shadow.apply_update(SEED_IMAGE, Update(reported={"lights": {"color": "RED"}}), T + 8)
        ),
        [
            (
                OWN + "image/update/accepted",
                compact(
                    """{"state": {"reported": {"lights": {"color": "RED"}}},
                        "metadata": {"reported": {"lights": {"color": {"timestamp": 1469564500}}}},
                        "version": 11, "timestamp": 1469564500}"""
                ),
            )
        ],
    ),
    (
        "the seed document's delta",
        ImageDelta(SEED_IMAGE),
        [
            (
                OWN + "image/update/delta",
                compact(
                    """{"state": {"lights": {"color": "RED"}},
                        "metadata": {"lights": {"color": {"timestamp": 1469564492}}},
                        "version": 10, "timestamp": 1469564492}"""
                ),
            )
        ],
    ),
    (
        "no delta: nothing to send",
        ImageDelta(shadow.apply_update(None, Update(desired={"a": 1}, reported={"a": 1}), T).image),
        [],
    ),
    (
        "the seed document's properties, as image/get/accepted",
        ImageSnapshot(None, SEED_IMAGE),
        [(OWN + "image/get/accepted", compact(SEED_PROPERTIES))],
    ),
    (
        "image/get/accepted echoes the id",
        ImageSnapshot("q1", SEED_IMAGE),
        [(OWN + "image/get/accepted", compact(SEED_PROPERTIES)[:-1] + b',"id":"q1"}')],
    ),
    (
        "an update rejected, with id and detail",
        ImageRejected("update", "r1", 165, "version conflict"),
        [
            (
                OWN + "image/update/rejected",
                b'{"err_code":165,"err_msg":"invalid parameters","id":"r1",'
                b'"detail":"version conflict"}',
            )
        ],
    ),
    (
        "a get rejected: no image",
        ImageRejected("get", None, 167),
        [(OWN + "image/get/rejected", b'{"err_code":167,"err_msg":"device image not exists"}')],
    ),
    (
        "a code OneNET does not have is reported as 128",
        ImageRejected("update", 4, 999),
        [(OWN + "image/update/rejected", b'{"err_code":128,"err_msg":"unspecified error","id":4}')],
    ),
    (
        "an OTA notice: OneJSON, the tid as its id, type 2 for a module other than FOTA",
        OtaInform(
            "t1",
            Firmware("f", "p1", "n", "1.2.0", "MCU", 1024, "0a1b", "s", 0),
            "MD5",
            "http://h/api/v1/ota/download/x",
            family="onenet",
            tid=7,
        ),
        [
            (
                OWN + "ota/inform",
                b'{"id":"7","version":"1.0","params":{"tid":7,"type":2,"target":"1.2.0",'
                b'"size":1024,"md5":"0a1b","url":"http://h/api/v1/ota/download/x"}}',
            )
        ],
    ),
    (
        "an OTA notice of a FOTA package: type 1",
        OtaInform(
            "t1",
            Firmware("f", "p1", "n", "2", "fota", 9, "m", "s", 0),
            "SHA256",
            "u",
            family="onenet",
            tid=12,
        ),
        [
            (
                OWN + "ota/inform",
                b'{"id":"12","version":"1.0","params":{"tid":12,"type":1,"target":"2",'
                b'"size":9,"md5":"m","url":"u"}}',
            )
        ],
    ),
    (
        "a command: the application's bytes, untouched",
        Call("onenet", calls.COMMAND, "0f3c9a1b2c3d4e5f", b"\x01\x02 raw"),
        [(OWN + "cmd/request/0f3c9a1b2c3d4e5f", b"\x01\x02 raw")],
    ),
    (
        "a good answer: an empty accepted",
        AnswerVerdict("onenet", "c1", calls.ACCEPTED),
        [(OWN + "cmd/response/c1/accepted", b"")],
    ),
    (
        "an unknown or repeated answer: 113",
        AnswerVerdict("onenet", "c1", calls.UNKNOWN),
        [(OWN + "cmd/response/c1/rejected", b'{"err_code":113,"err_msg":"CMD id not found"}')],
    ),
    (
        "a late answer: 112",
        AnswerVerdict("onenet", "c1", calls.LATE),
        [(OWN + "cmd/response/c1/rejected", b'{"err_code":112,"err_msg":"CMD response timeout"}')],
    ),
    (
        "the seed's error example: an answer too large",
        AnswerVerdict("onenet", "c1", calls.TOO_LARGE),
        [(OWN + "cmd/response/c1/rejected", compact(SEED_CMD_ERROR))],
    ),
]

#: Messages OneNET does not carry (another dialect does).
NOT_CARRIED: list[object] = [
    Call("thingspanel", calls.COMMAND, "0123456", b"{}"),
    AnswerVerdict("thingspanel", "0123456", calls.ACCEPTED),
    Control({"a": 1}),
    AttributesGet([]),
    ReportAck("event", "1", 0),
    OtaInform("t", Firmware("f", "p1", "n", "1", "MCU", 1, "m", "s", 0), "MD5", "u"),
]


@pytest.mark.parametrize(
    ("message", "expected"), [c[1:] for c in ENCODE], ids=[c[0] for c in ENCODE]
)
def test_encode(message: object, expected: list[tuple[str, bytes]]) -> None:
    assert ONENET.encode(REF, message) == expected


@pytest.mark.parametrize("message", NOT_CARRIED, ids=lambda m: type(m).__name__)
def test_messages_of_other_dialects_are_not_carried(message: object) -> None:
    assert ONENET.encode(REF, message) is None


def test_every_verdict_but_accepted_is_rejected_with_a_documented_code() -> None:
    for verdict in (calls.UNKNOWN, calls.LATE, calls.TOO_LARGE):
        [(topic, payload)] = ONENET.encode(REF, AnswerVerdict("onenet", "x", verdict)) or []
        body = json.loads(payload)
        assert topic.endswith("/rejected")
        assert onenet_commands.ERR_MSG[body["err_code"]] == body["err_msg"]


# ---------------------------------------------------------------- logins

KEY = "a2V5LW9mLXRoZS1kZXZpY2UtMzItYnl0ZXMtbG9uZyE="
DEVICE = Device("p1", "d1", "n1", KEY, "user", "hash", 0)
EXPIRY = 2_000_000_000


def never(device: Device, password: str) -> bool:
    raise AssertionError("a OneNET login never checks a password")


def test_a_token_login_names_the_device_by_product_and_client_id() -> None:
    token = make_token(KEY, "p1", "d1", EXPIRY, "sha1")
    login = ONENET.login("d1", "p1", token.encode())
    assert login is not None
    assert (login.dialect, login.lookup) == ("onenet", ("d", "p1", "d1"))
    assert isinstance(login.secret, Token)
    assert (login.secret.res, login.secret.et, login.secret.method) == (
        "products/p1/devices/d1",
        EXPIRY,
        "sha1",
    )
    ONENET.verify(login, DEVICE, EXPIRY - 1, never)  # admitted: no exception


@pytest.mark.parametrize(
    ("username", "password"),
    [
        (None, b"version=2018-10-31&res=x"),
        ("p1", None),
        ("p1", b"\xff\xfe not UTF-8"),
        ("p1", b"an-issued-thingspanel-password"),
    ],
)
def test_credentials_not_in_token_form_are_not_onenets(
    username: str | None, password: bytes | None
) -> None:
    assert ONENET.login("d1", username, password) is None


def test_a_malformed_token_is_refused_at_login() -> None:
    with pytest.raises(Unauthorized, match="lacks"):
        ONENET.login("d1", "p1", b"version=2018-10-31&res=products%2Fp1%2Fdevices%2Fd1")


def test_a_token_is_verified_against_the_device_found() -> None:
    token = make_token(KEY, "p1", "d1", EXPIRY)
    login = ONENET.login("d1", "p1", token.encode())
    assert login is not None
    with pytest.raises(Unauthorized, match="expired"):
        ONENET.verify(login, DEVICE, EXPIRY, never)
    other_key = Device("p1", "d1", "n1", "b3RoZXIta2V5", "user", "hash", 0)
    with pytest.raises(Unauthorized, match="signature is wrong"):
        ONENET.verify(login, other_key, 0, never)
    other_device = Device("p1", "d2", "n2", KEY, "user", "hash", 0)
    with pytest.raises(Unauthorized, match="another resource"):
        ONENET.verify(login, other_device, 0, never)
    broken_key = Device("p1", "d1", "n1", "not base64!", "user", "hash", 0)
    with pytest.raises(Unauthorized, match="device key is not base64"):
        ONENET.verify(login, broken_key, 0, never)


def test_a_login_of_another_dialect_is_not_a_onenet_token() -> None:
    with pytest.raises(Unauthorized, match="not a OneNET token"):
        ONENET.verify(Login("onenet", ("d", "p1", "d1"), "a password"), DEVICE, 0, never)


# ---------------------------------------------------------------- topic rights


def test_onenet_owns_the_sys_topics() -> None:
    assert ONENET.owns("$sys/p1/d1/image/update")
    assert ONENET.owns("$sys/anything")
    assert not ONENET.owns("devices/telemetry")
    assert not ONENET.owns("sys/p1/d1/image/update")


@pytest.mark.parametrize("topic", ["image/update", "image/get", "cmd/response/c1"], ids=lambda t: t)
def test_a_device_publishes_on_its_own_uplink_topics(topic: str) -> None:
    assert ONENET.may_publish(REF, OWN + topic)
    assert not ONENET.may_publish(REF, "$sys/p1/d2/" + topic)
    assert not ONENET.may_publish(REF, "$sys/p2/d1/" + topic)


@pytest.mark.parametrize(
    "topic",
    ["image/update/accepted", "image/update/delta", "cmd/request/c1", "cmd/response/c1/accepted"],
)
def test_a_device_never_publishes_on_the_platforms_topics(topic: str) -> None:
    assert not ONENET.may_publish(REF, OWN + topic)


@pytest.mark.parametrize(
    ("topic_filter", "granted"),
    [
        (OWN + "#", True),
        (OWN + "cmd/request/+", True),
        (OWN + "cmd/response/+/+", True),
        (OWN + "image/update/delta", True),
        ("$sys/p1/+/image/update/delta", False),
        ("$sys/+/d1/#", False),
        ("$sys/p1/d2/#", False),
        ("#", False),
    ],
)
def test_a_device_subscribes_only_within_its_own_prefix(topic_filter: str, granted: bool) -> None:
    assert ONENET.may_subscribe(REF, topic_filter) is granted


def test_deltas_are_the_one_kind_a_device_is_asked_to_listen_for() -> None:
    assert ONENET.topics(REF, ImageDelta) == (OWN + "image/update/delta",)
    assert ONENET.topics(REF, OtaInform) == (OWN + "ota/inform",)
    for kind in (ImageAccepted, ImageSnapshot, Call):
        assert ONENET.topics(REF, kind) == ()
