"""Properties of the ThingsPanel report rules, over generated payloads.

Valid reports are generated from names without control characters or
surrogates, values of every JSON kind within the limits, and timestamps
between 2000 and one day past the clock; the expected points and events are
computed by the test (timestamps checked with exact fractions), not by the
code under test. Hostile payloads are arbitrary bytes, token soups of
near-JSON, and valid JSON with one defect spliced in.
"""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from thingshub.core import ota, values
from thingshub.core.jsontext import dumps
from thingshub.core.values import MAX_AHEAD_MS, MAX_INT, MIN_INT, MIN_TS_MS
from thingshub.dialects.thingspanel import reports as telemetry
from thingshub.dialects.thingspanel.reports import (
    INVALID_PARAM,
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

NOW = st.integers(1_600_000_000_000, 2_000_000_000_000)
NAME_CHARS = st.characters(blacklist_categories=("Cc", "Cs"))
NAMES = st.one_of(
    st.sampled_from(["temperature", "humidity", "switch", "ts", "values", "method"]),
    st.text(NAME_CHARS, min_size=1, max_size=12),
    st.text(NAME_CHARS, min_size=1, max_size=3).map(  # exactly MAX_KEY characters
        lambda s: (s * values.MAX_KEY)[: values.MAX_KEY]
    ),
)
STRINGS = st.text(st.characters(blacklist_categories=["Cs"]), max_size=16)
SCALARS = st.one_of(
    st.booleans(),
    st.integers(MIN_INT, MAX_INT),
    st.sampled_from([MIN_INT, MAX_INT, 0, -1]),
    st.floats(allow_nan=False, allow_infinity=False),
    STRINGS,
)
NESTED = st.recursive(
    st.one_of(SCALARS, st.none()),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(STRINGS, inner, max_size=3),
    max_leaves=5,
)
VALUES = st.one_of(
    SCALARS, st.lists(NESTED, max_size=3), st.dictionaries(STRINGS, NESTED, max_size=3)
)
OBJECTS = st.dictionaries(NAMES, VALUES, min_size=1, max_size=6)
RECORD_VALUES = st.dictionaries(NAMES, VALUES, min_size=1, max_size=3)
PARAMS = st.dictionaries(STRINGS, NESTED, max_size=4)


def seconds(now_ms: int) -> st.SearchStrategy[int | float]:
    low, high = MIN_TS_MS // 1000, (now_ms + MAX_AHEAD_MS) // 1000
    return st.one_of(
        st.integers(low, high),
        st.sampled_from([low, high]),
        st.floats(float(low), float(high)),
    )


def millis(now_ms: int) -> st.SearchStrategy[int]:
    high = now_ms + MAX_AHEAD_MS
    return st.one_of(st.integers(MIN_TS_MS, high), st.sampled_from([MIN_TS_MS, high]))


def canon(value: Any) -> str:
    """JSON text that tells a bool from an int and an int from a float."""
    return json.dumps(value, ensure_ascii=True)


def points_of(points: list[Any]) -> list[tuple[str, int, str]]:
    return [(p.key, p.ts, canon(p.value)) for p in points]


# ---------------------------------------------------------------- valid reports


@given(OBJECTS, NOW)
def test_real_time_telemetry_is_one_point_per_key_at_now(body: dict[str, Any], now: int) -> None:
    points = parse_telemetry(dumps(body), now)
    assert points_of(points) == [(k, now, canon(v)) for k, v in body.items()]


@st.composite
def historical(draw: st.DrawFn) -> tuple[int, list[dict[str, Any]]]:
    now = draw(NOW)
    records = draw(
        st.lists(
            st.fixed_dictionaries({"ts": seconds(now), "values": RECORD_VALUES}),
            min_size=1,
            max_size=4,
        )
    )
    return now, records


@settings(max_examples=50)  # big examples; the shapes are few
@given(historical())
def test_historical_telemetry_points_carry_their_record_time(
    case: tuple[int, list[dict[str, Any]]],
) -> None:
    now, records = case
    points = parse_telemetry(dumps(records), now)
    assert len(points) == sum(len(r["values"]) for r in records)
    expected = [(k, r["ts"], canon(v)) for r in records for k, v in r["values"].items()]
    for point, (key, ts, value) in zip(points, expected, strict=True):
        assert (point.key, canon(point.value)) == (key, value)
        if isinstance(ts, int):
            assert point.ts == ts * 1000
        else:
            error = abs(Fraction(point.ts) - Fraction(ts) * 1000)
            assert error <= Fraction(1, 2) + Fraction(1, 1000)  # nearest ms, float noise aside
        assert MIN_TS_MS <= point.ts <= now + MAX_AHEAD_MS


@given(OBJECTS)
def test_attributes_are_the_object_as_sent(body: dict[str, Any]) -> None:
    assert canon(parse_attributes(dumps(body))) == canon(body)


@given(NAMES, st.one_of(st.none(), PARAMS), NOW)
def test_a_real_time_event(method: str, params: dict[str, Any] | None, now: int) -> None:
    body: dict[str, Any] = {"method": method}
    if params is not None:
        body["params"] = params
    events, historical = parse_event(dumps(body), now)
    assert not historical
    assert [(e.ts, e.method, canon(e.params)) for e in events] == [
        (now, method, canon(params or {}))
    ]
    assert event_method(dumps(body)) == method


@settings(max_examples=50)  # big examples; the shapes are few
@given(st.data(), NOW)
def test_historical_events_keep_their_times(data: st.DataObject, now: int) -> None:
    records = data.draw(
        st.lists(
            st.fixed_dictionaries(
                {"ts": millis(now), "method": NAMES}, optional={"params": PARAMS}
            ),
            min_size=1,
            max_size=6,
        )
    )
    events, historical = parse_event(dumps(records), now)
    assert historical
    assert [(e.ts, e.method, canon(e.params)) for e in events] == [
        (r["ts"], r["method"], canon(r.get("params", {}))) for r in records
    ]


STEPS = st.one_of(st.integers(1, 100), st.integers(-4, -1))


@given(STEPS, st.booleans(), NAMES, st.one_of(st.none(), STRINGS))
def test_progress_steps_as_strings_or_integers(
    step: int, as_string: bool, module: str, desc: str | None
) -> None:
    body: dict[str, Any] = {"step": str(step) if as_string else step, "module": module}
    if desc is not None:
        body["desc"] = desc
    progress = parse_progress(dumps(body))
    assert (progress.step, progress.module, progress.desc) == (step, module, desc or "")


@given(st.integers().filter(lambda n: not (1 <= n <= 100 or -4 <= n <= -1)), st.booleans())
def test_other_steps_are_refused(step: int, as_string: bool) -> None:
    payload = dumps({"step": str(step) if as_string else step, "module": "MCU"})
    try:
        parse_progress(payload)
    except ReportError as exc:
        assert exc.errcode == INVALID_PARAM
        assert exc.message.startswith("step must be")
    else:
        raise AssertionError(f"step {step!r} was accepted")


@given(st.sampled_from([0, 1]), STRINGS, st.dictionaries(STRINGS, NESTED, max_size=4))
def test_answers_are_kept_as_sent(result: int, message: str, extra: dict[str, Any]) -> None:
    body = {**extra, "result": result, "message": message}
    assert canon(parse_answer(dumps(body))) == canon(body)


# ---------------------------------------------------------------- one defect refuses all

DEFECTS: list[tuple[str, Any]] = [
    ("ts", "1609459200"),
    ("ts", True),
    ("ts", None),
    ("ts", -1),
    ("ts", 10**13),
    ("values", []),
    ("values", {}),
    ("values", {"": 1}),
    ("values", {"k": None}),
    ("values", {"k": "\ud800"}),
    ("extra", 1),
]


@settings(max_examples=50)  # big examples; the shapes are few
@given(historical(), st.data(), st.sampled_from(DEFECTS))
def test_one_bad_record_refuses_the_whole_message(
    case: tuple[int, list[dict[str, Any]]], data: st.DataObject, defect: tuple[str, Any]
) -> None:
    now, records = case
    index = data.draw(st.integers(0, len(records)), label="index")
    bad = {"ts": 1609459200, "values": {"k": 1}, defect[0]: defect[1]}
    records.insert(index, bad)
    payload = json.dumps(records, ensure_ascii=True).encode()
    try:
        parse_telemetry(payload, now)
    except ReportError as exc:
        assert exc.errcode == INVALID_PARAM
        assert exc.message.startswith(f"record [{index}]")
    else:
        raise AssertionError("a message with a bad record was accepted")


# ---------------------------------------------------------------- hostile payloads

TOKENS = [
    b"{", b"}", b"[", b"]", b",", b":", b" ", b'"ts"', b'"values"', b'"method"', b'"params"',
    b'"step"', b'"module"', b'"desc"', b'"result"', b'"message"', b'"a"', b'""', b"1609459200",
    b"1609459200000", b"1609459200.5", b"1e400", b"-1", b'"-1"', b'"100"', b"0", b"1", b"null",
    b"true", b"false", b'"\\ud800"', b'"\\u0000"', b"NaN", b"-Infinity", b"99999999999999999999",
    b"\xff", b"\xc3", b"\xef\xbb\xbf",
]  # fmt: skip
HOSTILE = st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from(TOKENS), max_size=40).map(b"".join),
    st.recursive(
        st.one_of(SCALARS, st.none(), st.text()),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=12,
    ).map(lambda v: json.dumps(v, ensure_ascii=True).encode()),
)


def judged(call: Any, payload: bytes) -> object:
    """The result of `call(payload)`, or the ReportError it raised: nothing else."""
    try:
        result = call(payload)
    except ReportError as exc:
        assert exc.errcode in (telemetry.INVALID_JSON, INVALID_PARAM, PAYLOAD_TOO_LARGE)
        assert exc.message
        exc.message.encode("utf-8")  # it travels in a reply
        return exc
    return result


def storable(value: Any) -> None:
    """What is accepted can be written as JSON: finite, UTF-8, no strange types."""
    dumps(value)


@given(HOSTILE, NOW)
def test_any_payload_is_parsed_or_refused_with_a_report_error(payload: bytes, now: int) -> None:
    points = judged(lambda p: parse_telemetry(p, now), payload)
    if isinstance(points, list):
        assert points
        for point in points:
            storable(point.value)
            assert MIN_TS_MS <= point.ts <= now + MAX_AHEAD_MS
    attributes = judged(parse_attributes, payload)
    if isinstance(attributes, dict):
        storable(attributes)
    events = judged(lambda p: parse_event(p, now), payload)
    if isinstance(events, tuple):
        for event in events[0]:
            storable([event.method, event.params])
    progress = judged(parse_progress, payload)
    if isinstance(progress, ota.Progress):
        storable([progress.desc, progress.module])
    answer = judged(parse_answer, payload)
    if isinstance(answer, dict):
        storable(answer)
    method = event_method(payload)
    if method is not None:
        storable(method)


@given(st.binary(min_size=9, max_size=64) | HOSTILE.filter(lambda b: len(b) > 8))
def test_size_is_judged_first(payload: bytes) -> None:
    for call in (
        lambda p: parse_telemetry(p, 1_700_000_000_000, max_payload=8),
        lambda p: parse_attributes(p, max_payload=8),
        lambda p: parse_event(p, 1_700_000_000_000, max_payload=8),
        lambda p: parse_progress(p, max_payload=8),
        lambda p: parse_answer(p, max_payload=8),
    ):
        error = judged(call, payload)
        assert isinstance(error, ReportError)
        assert error.errcode == PAYLOAD_TOO_LARGE
    assert event_method(payload, max_payload=8) is None


# ---------------------------------------------------------------- responses


@given(
    st.booleans(),
    st.integers(0, 2**40),
    st.sampled_from(telemetry.ERRCODES),
    st.one_of(st.none(), STRINGS),
    st.one_of(st.none(), NAMES),
)
def test_response_shape(
    ok: bool, now_s: int, errcode: str, message: str | None, method: str | None
) -> None:
    body = response(
        ok, now_s=now_s, errcode=None if ok else errcode, message=message, method=method
    )
    keys = ["result", "message", "ts"] if ok else ["result", "errcode", "message", "ts"]
    assert list(body) == keys + (["method"] if method is not None else [])
    assert body["result"] == (0 if ok else 1)
    assert body["ts"] == now_s
    if message is not None:
        assert body["message"] == message
    elif ok:
        assert body["message"] == "success"
    if not ok:
        assert body["errcode"] == errcode
    storable(body)
