"""ThingsPanel device reports (dialects/thingspanel/reports.py): the protocol's published
examples, and every refusal with its errcode and a message naming what is wrong."""

from __future__ import annotations

import json
from typing import Any

import pytest

from thingshub.core.errors import InvalidRequest
from thingshub.core.model import DeviceEvent, Point, PointsAt
from thingshub.core.ota import FAILURES, Progress
from thingshub.core.values import MAX_KEY, MAX_NESTING, MAX_STRING, MIN_TS_MS
from thingshub.dialects.thingspanel import reports as telemetry
from thingshub.dialects.thingspanel.reports import (
    INVALID_JSON,
    INVALID_PARAM,
    MAX_ATTRIBUTES,
    MAX_EVENTS,
    MAX_PAYLOAD,
    MAX_POINTS,
    PAYLOAD_TOO_LARGE,
    ReportError,
    event_method,
    parse_answer,
    parse_attributes,
    parse_event,
    parse_progress,
    parse_telemetry,
    response,
)

NOW = 1_700_000_000_123  # ms, 2023-11-14
DAY = 86_400_000


def refused(call: Any, *args: Any, **kwargs: Any) -> ReportError:
    with pytest.raises(ReportError) as info:
        call(*args, **kwargs)
    return info.value


# ---------------------------------------------------------------- the protocol's published examples

SEED_TELEMETRY = b"""{
  "temperature": 25.5,
  "humidity": 65.0,
  "switch": true
}"""

SEED_HISTORICAL = b"""[
  {"ts": 1609459200, "values": {"temperature": 22.5, "humidity": 60.0}},
  {"ts": 1609462800, "values": {"temperature": 23.0, "humidity": 61.5}}
]"""

SEED_ATTRIBUTES = b"""{
  "ip": "192.168.1.100",
  "mac": "00:11:22:33:44:55",
  "version": "1.0.0"
}"""

SEED_EVENT = b"""{
  "method": "AlarmTriggered",
  "params": {
    "level": "high",
    "sensor": "temperature"
  }
}"""

SEED_HISTORICAL_EVENTS = b"""[
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

SEED_OTA_SUCCESS = b"""{
  "step": "100",
  "desc": "Upgrade 100%",
  "module": "MCU"
}"""

SEED_OTA_FAILURE = b"""{
  "step": "-1",
  "desc": "OTA Failed, download failed",
  "module": "MCU"
}"""

SEED_ANSWER_FAILURE = b"""{
  "result": 1,
  "errcode": "INVALID_PARAM",
  "message": "Parameter validation failed",
  "ts": 1609459200,
  "method": "Restart"
}"""


def test_seed_real_time_telemetry_is_stamped_with_the_platform_clock() -> None:
    points = parse_telemetry(SEED_TELEMETRY, NOW)
    assert points == [
        Point("temperature", NOW, 25.5),
        Point("humidity", NOW, 65.0),
        Point("switch", NOW, True),
    ]
    assert points[2].value is True
    # The values as sent, at one time: no `Point` made per value until read.
    assert isinstance(points, PointsAt) and points.ts == NOW


def test_seed_historical_telemetry_converts_seconds_to_milliseconds() -> None:
    assert parse_telemetry(SEED_HISTORICAL, NOW) == [
        Point("temperature", 1_609_459_200_000, 22.5),
        Point("humidity", 1_609_459_200_000, 60.0),
        Point("temperature", 1_609_462_800_000, 23.0),
        Point("humidity", 1_609_462_800_000, 61.5),
    ]


def test_seed_attributes() -> None:
    assert parse_attributes(SEED_ATTRIBUTES) == {
        "ip": "192.168.1.100",
        "mac": "00:11:22:33:44:55",
        "version": "1.0.0",
    }


def test_seed_real_time_event() -> None:
    assert parse_event(SEED_EVENT, NOW) == (
        [DeviceEvent(NOW, "AlarmTriggered", {"level": "high", "sensor": "temperature"})],
        False,
    )
    assert event_method(SEED_EVENT) == "AlarmTriggered"


def test_seed_historical_events_keep_their_millisecond_timestamps() -> None:
    assert parse_event(SEED_HISTORICAL_EVENTS, NOW) == (
        [
            DeviceEvent(
                1_609_459_200_000, "AlarmTriggered", {"level": "high", "sensor": "temperature"}
            ),
            DeviceEvent(1_609_462_800_000, "DeviceStarted", {"version": "1.0.0", "mode": "normal"}),
        ],
        True,
    )
    assert event_method(SEED_HISTORICAL_EVENTS) is None


def test_seed_ota_progress() -> None:
    done = parse_progress(SEED_OTA_SUCCESS)
    assert done == Progress(100, "Upgrade 100%", "MCU")
    assert done.succeeded and not done.failed
    failed = parse_progress(SEED_OTA_FAILURE)
    assert failed == Progress(-1, "OTA Failed, download failed", "MCU")
    assert failed.failed and not failed.succeeded
    assert FAILURES[failed.step] == "upgrade failed"


def test_seed_response_examples() -> None:
    assert response(True, now_s=1609459200) == {
        "result": 0,
        "message": "success",
        "ts": 1609459200,
    }
    failure = response(
        False,
        now_s=1609459200,
        errcode="INVALID_PARAM",
        message="Parameter validation failed",
        method="Restart",
    )
    assert (
        json.dumps(failure, separators=(",", ":")).encode()
        == json.dumps(json.loads(SEED_ANSWER_FAILURE), separators=(",", ":")).encode()
    )  # same fields, same order


def test_seed_answer_is_kept_as_sent() -> None:
    assert parse_answer(SEED_ANSWER_FAILURE) == json.loads(SEED_ANSWER_FAILURE)
    assert parse_answer(b'{"result":0,"message":"success","ts":1609459200}') == {
        "result": 0,
        "message": "success",
        "ts": 1609459200,
    }


# ---------------------------------------------------------------- accepted shapes


def test_telemetry_values_of_every_kind() -> None:
    payload = (
        b'{"i": -3, "f": 1.5e3, "b": false, "s": "on", "o": {"x": [1, null, {"y": "z"}]},'
        b' "a": [], "e": {}, "big": 9223372036854775807, "small": -9223372036854775808}'
    )
    values = {p.key: p.value for p in parse_telemetry(payload, NOW)}
    assert values == {
        "i": -3,
        "f": 1500.0,
        "b": False,
        "s": "on",
        "o": {"x": [1, None, {"y": "z"}]},
        "a": [],
        "e": {},
        "big": 2**63 - 1,
        "small": -(2**63),
    }


def test_historical_fractional_seconds_round_to_the_millisecond() -> None:
    points = parse_telemetry(
        b'[{"ts": 1609459200.123, "values": {"t": 1}}, {"ts": 1609459200.0004, "values": '
        b'{"t": 2}}, {"ts": 16094592e2, "values": {"t": 3}}]',
        NOW,
    )
    assert [p.ts for p in points] == [1_609_459_200_123, 1_609_459_200_000, 1_609_459_200_000]


def test_timestamp_bounds_are_inclusive() -> None:
    first = MIN_TS_MS // 1000
    last_s = (NOW + DAY) // 1000
    points = parse_telemetry(
        json.dumps(
            [{"ts": first, "values": {"a": 1}}, {"ts": last_s, "values": {"a": 2}}]
        ).encode(),
        NOW,
    )
    assert [p.ts for p in points] == [MIN_TS_MS, last_s * 1000]
    events, _ = parse_event(
        f'[{{"ts": {MIN_TS_MS}, "method": "a"}}, {{"ts": {NOW + DAY}, "method": "b"}}]'.encode(),
        NOW,
    )
    assert [e.ts for e in events] == [MIN_TS_MS, NOW + DAY]


def test_an_object_holding_ts_and_values_is_real_time_telemetry() -> None:
    # The seed tells the formats apart by the root alone: an object is real time.
    assert parse_telemetry(b'{"ts": 1609459200, "values": {"a": 1}}', NOW) == [
        Point("ts", NOW, 1609459200),
        Point("values", NOW, {"a": 1}),
    ]


def test_duplicate_keys_keep_the_last() -> None:
    assert parse_telemetry(b'{"a": 1, "a": 2}', NOW) == [Point("a", NOW, 2)]


def test_keys_may_be_any_printable_text() -> None:
    key = "温度 °C/x.y-z" + "k" * (MAX_KEY - 11)
    assert len(key) == MAX_KEY
    payload = json.dumps({key: 1, "🌡": 2}).encode()
    assert [p.key for p in parse_telemetry(payload, NOW)] == [key, "🌡"]


def test_strings_up_to_the_limit_are_accepted() -> None:
    value = "€" * (MAX_STRING // 3) + "x" * (MAX_STRING % 3)
    assert len(value.encode()) == MAX_STRING
    assert parse_attributes(json.dumps({"s": value}).encode()) == {"s": value}


def test_nesting_up_to_the_limit_is_accepted() -> None:
    value: Any = 1
    for level in range(MAX_NESTING):
        value = [value] if level % 2 else {"k": value}
    assert parse_attributes(json.dumps({"deep": value}).encode()) == {"deep": value}


def test_a_configured_max_payload() -> None:
    payload = b'{"a": 1}'
    assert parse_telemetry(payload, NOW, max_payload=len(payload)) == [Point("a", NOW, 1)]
    error = refused(parse_telemetry, payload, NOW, max_payload=len(payload) - 1)
    assert error.errcode == PAYLOAD_TOO_LARGE
    bigger = json.dumps({"s": "x" * 4000, "t": "y" * 4000}).encode() * 1
    big_list = b"[" + b",".join([b'{"ts": 1609459200, "values": ' + bigger + b"}"] * 10) + b"]"
    assert len(big_list) > MAX_PAYLOAD // 2
    assert len(parse_telemetry(big_list, NOW, max_payload=10 * MAX_PAYLOAD)) == 20


def test_real_time_event_params_are_optional() -> None:
    assert parse_event(b'{"method": "Boot"}', NOW) == ([DeviceEvent(NOW, "Boot", {})], False)
    assert parse_event(b'{"method": "Boot", "params": null}', NOW) == (
        [DeviceEvent(NOW, "Boot", {})],
        False,
    )


def test_event_other_fields_are_ignored() -> None:
    assert parse_event(b'{"method": "Boot", "id": "17", "extra": [1]}', NOW) == (
        [DeviceEvent(NOW, "Boot", {})],
        False,
    )


def test_an_event_object_with_ts_is_one_event_at_that_time() -> None:
    payload = b'{"ts": 1609459200000, "method": "Boot", "params": {"v": 1}}'
    assert parse_event(payload, NOW) == ([DeviceEvent(1_609_459_200_000, "Boot", {"v": 1})], False)
    assert event_method(payload) == "Boot"
    whole = b'{"ts": 1609459200000.0, "method": "Boot"}'
    assert parse_event(whole, NOW)[0][0].ts == 1_609_459_200_000


def test_event_method_is_best_effort() -> None:
    assert event_method(b'{"method": "Boot", "params": 3}') == "Boot"  # invalid, still named
    assert event_method(b'{"method": "Boot", "ts": "x"}') == "Boot"
    assert event_method(b'{"method": ""}') is None
    assert event_method(b'{"method": 5}') is None
    assert event_method(b'{"method": "\\ud800"}') is None
    assert event_method(b'{"method": "x\\n"}') is None
    assert event_method(json.dumps({"method": "m" * (MAX_KEY + 1)}).encode()) is None
    assert event_method(b"[]") is None
    assert event_method(b"\xff") is None
    assert event_method(b"{") is None
    assert event_method(b"[" * 100_000) is None
    assert event_method(b'{"method": "Boot"}', max_payload=5) is None


@pytest.mark.parametrize(
    ("payload", "step"),
    [
        (b'{"step": "1", "module": "MCU"}', 1),
        (b'{"step": "55", "module": "MCU"}', 55),
        (b'{"step": "-4", "module": "MCU"}', -4),
        (b'{"step": 42, "module": "MCU"}', 42),
        (b'{"step": -2, "module": "MCU"}', -2),
    ],
)
def test_progress_steps(payload: bytes, step: int) -> None:
    progress = parse_progress(payload)
    assert progress == Progress(step, "", "MCU")
    assert progress.succeeded is False
    assert progress.failed is (step < 0)


def test_progress_desc_may_be_null_and_other_fields_are_ignored() -> None:
    assert parse_progress(b'{"step":"7","desc":null,"module":"WiFi","version":"2"}') == Progress(
        7, "", "WiFi"
    )


def test_answers_keep_every_field() -> None:
    payload = b'{"result": 0, "message": "", "data": {"x": [1, null]}, "errcode": 7, "ts": "?"}'
    assert parse_answer(payload) == {
        "result": 0,
        "message": "",
        "data": {"x": [1, None]},
        "errcode": 7,
        "ts": "?",
    }
    long = json.dumps({"result": 1, "message": "x" * (MAX_STRING * 4)}).encode()
    assert parse_answer(long)["message"] == "x" * (MAX_STRING * 4)


# ---------------------------------------------------------------- responses


def test_response_shapes() -> None:
    assert response(True, now_s=5, method="Boot") == {
        "result": 0,
        "message": "success",
        "ts": 5,
        "method": "Boot",
    }
    assert list(response(False, now_s=5, errcode=INVALID_JSON, message="m", method="x")) == [
        "result",
        "errcode",
        "message",
        "ts",
        "method",
    ]
    assert response(False, now_s=5, errcode="INTERNAL") == {
        "result": 1,
        "errcode": "INTERNAL",
        "message": "internal error",
        "ts": 5,
    }
    for code in telemetry.ERRCODES:
        assert response(False, now_s=0, errcode=code)["message"]


def test_response_from_a_report_error() -> None:
    error = refused(parse_event, b'{"method": "Boot", "params": 3}', NOW)
    body = response(
        False, now_s=NOW // 1000, errcode=error.errcode, message=error.message, method="Boot"
    )
    assert body == {
        "result": 1,
        "errcode": "INVALID_PARAM",
        "message": "params must be an object, not a number",
        "ts": NOW // 1000,
        "method": "Boot",
    }


def test_response_refuses_mixed_up_arguments() -> None:
    with pytest.raises(ValueError, match="errcode"):
        response(True, now_s=1, errcode=INVALID_JSON)
    with pytest.raises(ValueError, match="errcode"):
        response(False, now_s=1)
    with pytest.raises(ValueError, match="errcode"):
        response(False, now_s=1, errcode="NOPE")


def test_report_error_is_an_invalid_request_with_an_errcode() -> None:
    error = ReportError(INVALID_PARAM, "why")
    assert isinstance(error, InvalidRequest)
    assert (error.errcode, error.message, str(error)) == (INVALID_PARAM, "why", "why")
    with pytest.raises(ValueError):
        ReportError("INTERNAL", "a report is never refused as the platform's fault")


# ---------------------------------------------------------------- refusals

PARSERS = {
    "telemetry": lambda p, **kw: parse_telemetry(p, NOW, **kw),
    "attributes": parse_attributes,
    "event": lambda p, **kw: parse_event(p, NOW, **kw),
    "progress": parse_progress,
    "answer": parse_answer,
}


@pytest.mark.parametrize("kind", PARSERS)
@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"", "empty"),
        (b" \n\t", "empty"),
        (b"\xff\xfe{}", "not UTF-8 text (byte 0xff at offset 0)"),
        (b'{"a": "\xc3"}', "not UTF-8 text"),
        ('{"a": 1}'.encode("utf-16"), "not UTF-8"),
        (b"\xef\xbb\xbf{}", "byte order mark"),
        (b"{", "not valid JSON"),
        (b"{'a': 1}", "not valid JSON: Expecting property name"),
        (b'{"a": 1,}', "not valid JSON"),
        (b'{"a": 1} x', "not valid JSON: Extra data"),
        (b'{"a": NaN}', "NaN is not a JSON number"),
        (b'{"a": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"a": 01}', "not valid JSON"),
        (b"[" * 50_000, "not valid JSON"),
        (b"[" * 50_000 + b"]" * 49_999, "not valid JSON"),
        (b'{"a":' * 20_000 + b"1" + b"}" * 19_999 + b"]", "not valid JSON"),
    ],
)
def test_not_json_is_invalid_json(kind: str, payload: bytes, words: str) -> None:
    error = refused(PARSERS[kind], payload, max_payload=10**6)
    assert error.errcode == INVALID_JSON
    assert words in error.message


@pytest.mark.parametrize("kind", PARSERS)
def test_size_is_checked_before_anything_is_decoded(kind: str) -> None:
    payload = b"\xff" * (MAX_PAYLOAD + 1)  # neither UTF-8 nor JSON: the size wins
    error = refused(PARSERS[kind], payload)
    assert error.errcode == PAYLOAD_TOO_LARGE
    assert error.message == f"the payload has {MAX_PAYLOAD + 1} bytes; at most 65536 are accepted"


@pytest.mark.parametrize("kind", PARSERS)
def test_nesting_past_the_stack_is_judged_as_nesting(kind: str) -> None:
    deep = b'{"a":' * 20_000 + b"1" + b"}" * 20_000
    error = refused(PARSERS[kind], deep, max_payload=10**6)
    assert error.errcode == INVALID_PARAM
    assert f"nested more than {MAX_NESTING} levels" in error.message


def telemetry_error(payload: bytes | str, now: int = NOW) -> ReportError:
    if isinstance(payload, str):
        payload = payload.encode()
    return refused(parse_telemetry, payload, now)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("{}", "the telemetry object is empty: there is nothing to store"),
        ("[]", "the telemetry array is empty: there is nothing to store"),
        ('"x"', "telemetry must be a JSON object of key-value pairs (real time) or an array"),
        ("3", "historical), not a number"),
        ("null", "not null"),
        ("true", "not a boolean"),
        ('{"": 1}', "key '' must not be empty"),
        ('{"a\\u0000b": 1}', "key 'a\\x00b' must not hold control characters"),
        ('{"tab\\there": 1}', "key 'tab\\there' must not hold control characters"),
        ('{"\\u007f": 1}', "must not hold control characters"),
        ('{"\\u0085": 1}', "must not hold control characters"),
        ('{"\\udc00": 1}', "unpaired surrogates"),
        ('{"a": null}', "key 'a': null is not a value (leave the key out when there is none)"),
        ('{"a": 1e400}', "key 'a': numbers must be finite"),
        ('{"a": -1e400}', "key 'a': numbers must be finite"),
        ('{"a": 9223372036854775808}', "key 'a': integers must be within -2**63 .. 2**63-1"),
        ('{"a": -9223372036854775809}', "key 'a': integers must be within"),
        ('{"a": ' + "9" * 5000 + "}", "key 'a': integers must be within"),
        ('{"a": "\\ud800x"}', "key 'a': strings must not hold unpaired surrogates"),
        (
            '{"a": {"b": [1, "\\udfff"]}}',
            "key 'a': strings must not hold unpaired surrogates (at ['b'][1])",
        ),
        ('{"a": {"\\ud800": 1}}', "key 'a': keys: strings must not hold unpaired surrogates"),
        ('{"a": [{"b": 1e999}]}', "key 'a': numbers must be finite (at [0]['b'])"),
        (
            '{"ok": 1, "a": [' + "[" * MAX_NESTING + "]" * MAX_NESTING + "]}",
            "key 'a': objects and arrays are nested more than 32 levels deep",
        ),
        (
            "[1]",
            'record [0] must be an object {"ts": <Unix seconds>, "values": {...}}, not a number',
        ),
        ('[{"ts": 1609459200, "values": {"a": 1}}, []]', "record [1] must be an object"),
        ('[{"values": {"a": 1}}]', "record [0]: ts is missing (Unix time in seconds)"),
        (
            '[{"ts": "1609459200", "values": {"a": 1}}]',
            "record [0]: ts must be a number (Unix time in seconds), not a string",
        ),
        (
            '[{"ts": true, "values": {"a": 1}}]',
            "record [0]: ts must be a number (Unix time in seconds), not a boolean",
        ),
        (
            '[{"ts": null, "values": {"a": 1}}]',
            "record [0]: ts must be a number (Unix time in seconds), not null",
        ),
        ('[{"ts": [1], "values": {"a": 1}}]', "not an array"),
        (
            '[{"ts": -1, "values": {"a": 1}}]',
            "record [0]: ts -1 is before the year 2000; ts is Unix time in seconds",
        ),
        ('[{"ts": 0, "values": {"a": 1}}]', "record [0]: ts 0 is before the year 2000"),
        ('[{"ts": 946684799.999, "values": {"a": 1}}]', "before the year 2000"),
        ('[{"ts": 1e400, "values": {"a": 1}}]', "record [0]: ts must be a finite number"),
        ('[{"ts": 1e306, "values": {"a": 1}}]', "more than a day ahead"),
        ('[{"ts": -1e306, "values": {"a": 1}}]', "before the year 2000"),
        (
            '[{"ts": 1609459200000, "values": {"a": 1}}]',
            "record [0]: ts 1609459200000 is more than a day ahead of the platform's clock; "
            "ts is Unix time in seconds (not milliseconds)",
        ),
        ('[{"ts": 1609459200}]', "record [0]: values is missing"),
        (
            '[{"ts": 1609459200, "values": [1]}]',
            "record [0]: values must be an object of key-value pairs, not an array",
        ),
        (
            '[{"ts": 1609459200, "values": null}]',
            "record [0]: values must be an object of key-value pairs, not null",
        ),
        ('[{"ts": 1609459200, "values": 5}]', "not a number"),
        (
            '[{"ts": 1609459200, "values": {}}]',
            "record [0]: values is empty: there is nothing to store",
        ),
        (
            '[{"ts": 1609459200, "values": {"a": 1}, "temperature": 3}]',
            "record [0]: unknown field 'temperature': a record holds only ts and values",
        ),
        (
            '[{"ts": 1609459200, "values": {"a": 1}}, {"ts": 1609459200, "values": {"": 1}}]',
            "record [1]: key '' must not be empty",
        ),
        ('[{"ts": 1609459200, "values": {"a": null}}]', "record [0]: key 'a': null is not a value"),
        ("{" + '"k": 1, ' * 3 + '"a": {"x": "\\ud800"}}', "key 'a'"),
    ],
)
def test_telemetry_refusals(payload: str, message: str) -> None:
    error = telemetry_error(payload)
    assert error.errcode == INVALID_PARAM
    assert message in error.message


def test_a_future_timestamp_is_refused_relative_to_now() -> None:
    now_s = NOW // 1000
    ok = f'[{{"ts": {now_s + 86_400}, "values": {{"a": 1}}}}]'
    assert parse_telemetry(ok.encode(), NOW)[0].ts == (now_s + 86_400) * 1000
    late = f'[{{"ts": {now_s + 86_401}, "values": {{"a": 1}}}}]'
    assert "more than a day ahead" in telemetry_error(late).message
    assert parse_telemetry(late.encode(), NOW + 1000)[0].ts == (now_s + 86_401) * 1000


def test_long_names_and_strings() -> None:
    error = telemetry_error(json.dumps({"k" * (MAX_KEY + 1): 1}))
    assert error.message == f"key {'k' * 40 + '...'!r} has 129 characters; at most 128 are allowed"
    error = telemetry_error(json.dumps({"s": "€" * (MAX_STRING // 3 + 1)}))
    assert error.message == "key 's': strings may have at most 4096 bytes (UTF-8)"
    error = telemetry_error(json.dumps({"s": {"t": ["x" * (MAX_STRING + 1)]}}))
    assert error.message == "key 's': strings may have at most 4096 bytes (UTF-8) (at ['t'][0])"


def test_the_first_broken_rule_gives_the_error() -> None:
    error = telemetry_error('{"a": null, "": 1}')
    assert error.message.startswith("key 'a'")
    error = telemetry_error('[{"ts": "x", "values": 3, "extra": 1}]')
    assert "ts must be a number" in error.message
    error = telemetry_error('[{"ts": 1609459200, "values": {"a": 1}, "x": 1}, 5]')
    assert "unknown field 'x'" in error.message


def test_too_many_points() -> None:
    at_limit = json.dumps({f"k{i}": 1 for i in range(MAX_POINTS)}).encode()
    assert len(parse_telemetry(at_limit, NOW, max_payload=10**6)) == MAX_POINTS
    over = json.dumps({f"k{i}": 1 for i in range(MAX_POINTS + 1)}).encode()
    error = refused(parse_telemetry, over, NOW, max_payload=10**6)
    assert error.errcode == PAYLOAD_TOO_LARGE
    assert error.message == "the message carries 10001 points; at most 10000 are accepted"


def test_too_many_historical_points() -> None:
    record = {"ts": 1609459200, "values": {f"k{i}": i for i in range(100)}}
    at_limit = json.dumps([record] * (MAX_POINTS // 100)).encode()
    assert len(parse_telemetry(at_limit, NOW, max_payload=10**7)) == MAX_POINTS
    over = json.dumps([record] * (MAX_POINTS // 100) + [{"ts": 1609459200, "values": {"x": 1}}])
    error = refused(parse_telemetry, over.encode(), NOW, max_payload=10**7)
    assert error.errcode == PAYLOAD_TOO_LARGE
    assert "passed at record [100]" in error.message
    many = json.dumps([{"ts": 1609459200, "values": {"a": 1}}] * (MAX_POINTS + 1)).encode()
    error = refused(parse_telemetry, many, NOW, max_payload=10**7)
    assert error.errcode == PAYLOAD_TOO_LARGE
    assert "10001 records" in error.message


def test_a_bad_record_after_good_ones_refuses_the_whole_message() -> None:
    good = [{"ts": 1609459200 + i, "values": {"a": i}} for i in range(50)]
    payload = json.dumps([*good, {"ts": 1609459200, "values": {"a": None}}]).encode()
    error = telemetry_error(payload)
    assert (
        error.message
        == "record [50]: key 'a': null is not a value (leave the key out when there is none)"
    )


@pytest.mark.parametrize(
    ("payload", "errcode", "message"),
    [
        ("{}", INVALID_PARAM, "the attributes object is empty: there is nothing to store"),
        ("[]", INVALID_PARAM, "attributes must be a JSON object of key-value pairs, not an array"),
        ('[{"ip": "x"}]', INVALID_PARAM, "not an array"),
        ('"ip"', INVALID_PARAM, "not a string"),
        ('{"": "x"}', INVALID_PARAM, "key '' must not be empty"),
        ('{"ip": null}', INVALID_PARAM, "key 'ip': null is not a value"),
        ('{"ip": "\\ud83d"}', INVALID_PARAM, "key 'ip': strings must not hold unpaired surrogates"),
        ('{"n": 1e309}', INVALID_PARAM, "key 'n': numbers must be finite"),
        ("{ip: 1}", INVALID_JSON, "not valid JSON"),
    ],
)
def test_attribute_refusals(payload: str, errcode: str, message: str) -> None:
    error = refused(parse_attributes, payload.encode())
    assert error.errcode == errcode
    assert message in error.message


def test_too_many_attributes() -> None:
    at_limit = json.dumps({f"k{i}": i for i in range(MAX_ATTRIBUTES)}).encode()
    assert len(parse_attributes(at_limit)) == MAX_ATTRIBUTES
    over = json.dumps({f"k{i}": i for i in range(MAX_ATTRIBUTES + 1)}).encode()
    error = refused(parse_attributes, over)
    assert error.errcode == PAYLOAD_TOO_LARGE
    assert error.message == "the message carries 1001 attributes; at most 1000 are accepted"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            '"Boot"',
            'an event must be a JSON object {"method", "params"} (real time) or an array of '
            '{"ts", "method", "params"} (historical), not a string',
        ),
        ("[]", "the event array is empty: there is nothing to store"),
        ("{}", "method is missing (the event's name)"),
        ('{"temperature": 3}', "method is missing"),
        ('{"method": ""}', "method must not be empty"),
        ('{"method": 3}', "method must be a string, not a number"),
        ('{"method": null}', "method must be a string, not null"),
        ('{"method": "a\\nb"}', "method must not hold control characters"),
        ('{"method": "Boot", "params": [1]}', "params must be an object, not an array"),
        ('{"method": "Boot", "params": "x"}', "params must be an object, not a string"),
        ('{"method": "Boot", "params": {"v": 1e999}}', "params: numbers must be finite (at ['v'])"),
        (
            '{"method": "Boot", "params": {"v": "\\ud800"}}',
            "params: strings must not hold unpaired surrogates (at ['v'])",
        ),
        (
            '{"method": "Boot", "ts": "1609459200000"}',
            "ts must be a number (Unix time in milliseconds), not a string",
        ),
        (
            '{"method": "Boot", "ts": null}',
            "ts must be a number (Unix time in milliseconds), not null",
        ),
        (
            '{"method": "Boot", "ts": 1609459200}',
            "ts 1609459200 is before the year 2000; ts is Unix time in milliseconds (not seconds)",
        ),
        (
            "[3]",
            'event [0] must be an object {"ts": <Unix milliseconds>, "method", "params"}, '
            "not a number",
        ),
        ('[{"method": "Boot"}]', "event [0]: ts is missing (Unix time in milliseconds)"),
        (
            '[{"ts": 1609459200000, "method": "A"}, {"ts": 1609459200000}]',
            "event [1]: method is missing",
        ),
        (
            '[{"ts": false, "method": "A"}]',
            "event [0]: ts must be a number (Unix time in milliseconds), not a boolean",
        ),
        (
            '[{"ts": 1609459200000.5, "method": "A"}]',
            "event [0]: ts must be a whole number of milliseconds, not 1609459200000.5",
        ),
        ('[{"ts": -5, "method": "A"}]', "event [0]: ts -5 is before the year 2000"),
        ('[{"ts": 1e400, "method": "A"}]', "event [0]: ts must be a finite number"),
        (
            '[{"ts": 99999999999999, "method": "A"}]',
            "event [0]: ts 99999999999999 is more than a day ahead of the platform's clock; "
            "ts is Unix time in milliseconds",
        ),
        (
            '[{"ts": 1609459200000, "method": "A", "params": 1}]',
            "event [0]: params must be an object, not a number",
        ),
    ],
)
def test_event_refusals(payload: str, message: str) -> None:
    error = refused(parse_event, payload.encode(), NOW)
    assert error.errcode == INVALID_PARAM
    assert message in error.message


def test_too_many_events() -> None:
    event = {"ts": 1609459200000, "method": "A"}
    assert len(parse_event(json.dumps([event] * MAX_EVENTS).encode(), NOW)[0]) == MAX_EVENTS
    error = refused(parse_event, json.dumps([event] * (MAX_EVENTS + 1)).encode(), NOW)
    assert error.errcode == PAYLOAD_TOO_LARGE
    assert error.message == "the message carries 1001 events; at most 1000 are accepted"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("[]", 'OTA progress must be a JSON object {"step", "desc", "module"}, not an array'),
        ('{"module": "MCU"}', "step is missing"),
        (
            '{"step": "0", "module": "MCU"}',
            'step must be "1".."100" (percent) or "-1".."-4" (failure), not \'0\'',
        ),
        ('{"step": "101", "module": "MCU"}', "not '101'"),
        ('{"step": "-5", "module": "MCU"}', "not '-5'"),
        ('{"step": "050", "module": "MCU"}', "not '050'"),
        ('{"step": "+5", "module": "MCU"}', "not '+5'"),
        ('{"step": " 5", "module": "MCU"}', "not ' 5'"),
        ('{"step": "5.0", "module": "MCU"}', "not '5.0'"),
        ('{"step": "", "module": "MCU"}', "not ''"),
        ('{"step": 0, "module": "MCU"}', "not 0"),
        ('{"step": 50.0, "module": "MCU"}', "not 50.0"),
        ('{"step": true, "module": "MCU"}', "not a boolean"),
        ('{"step": null, "module": "MCU"}', "not null"),
        ('{"step": "100"}', "module is missing"),
        ('{"step": "100", "module": ""}', "module must not be empty"),
        ('{"step": "100", "module": 1}', "module must be a string, not a number"),
        ('{"step": "100", "module": "MCU", "desc": 5}', "desc must be a string, not a number"),
        (
            '{"step": "100", "module": "MCU", "desc": "\\udc00"}',
            "desc: strings must not hold unpaired surrogates",
        ),
    ],
)
def test_progress_refusals(payload: str, message: str) -> None:
    error = refused(parse_progress, payload.encode())
    assert error.errcode == INVALID_PARAM
    assert message in error.message


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("[]", 'a response must be a JSON object {"result": 0|1, "message": ...}, not an array'),
        ('"ok"', "not a string"),
        ('{"message": "x"}', "result is missing (0 for success, 1 for failure)"),
        ('{"result": 2, "message": "x"}', "result must be 0 (success) or 1 (failure), not 2"),
        ('{"result": "0", "message": "x"}', "not '0'"),
        ('{"result": 0.0, "message": "x"}', "not 0.0"),
        ('{"result": false, "message": "x"}', "not a boolean"),
        ('{"result": null, "message": "x"}', "not null"),
        ('{"result": 0}', "message is missing"),
        ('{"result": 0, "message": null}', "message must be a string, not null"),
        (
            '{"result": 0, "message": "\\ud800"}',
            "strings must not hold unpaired surrogates (at ['message'])",
        ),
        ('{"result": 0, "message": "", "x": [1e999]}', "numbers must be finite (at ['x'][0])"),
    ],
)
def test_answer_refusals(payload: str, message: str) -> None:
    error = refused(parse_answer, payload.encode())
    assert error.errcode == INVALID_PARAM
    assert message in error.message
