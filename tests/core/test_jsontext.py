"""JSON as the device protocols carry it (core/jsontext.py): compact UTF-8 out;
strict JSON in, numbers too long for any range kept out of Python's digit
limit, documents nested past the interpreter's stack read without recursion,
every failure a JsonError saying what is wrong; and text that is not valid
Unicode (a lone surrogate) refused by `loads_unicode`."""

from __future__ import annotations

import contextlib
import json
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thingshub.core import jsontext
from thingshub.core.jsontext import JsonError, loads, loads_unicode

DEEP = sys.getrecursionlimit() * 4  # far past what the recursive decoder can read


def depth_of(value: object) -> int:
    """How many containers are nested in `value`, counted without recursion."""
    depth = 0
    while isinstance(value, list | dict):
        depth += 1
        if isinstance(value, list):
            value = value[0] if value else None
        else:
            value = next(iter(value.values()), None)
    return depth


def test_dumps_is_compact_utf8_without_escapes() -> None:
    assert jsontext.dumps({"a": [1, 2.5], "é": "ü"}) == '{"a":[1,2.5],"é":"ü"}'.encode()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_dumps_refuses_what_json_does_not_have(value: float) -> None:
    with pytest.raises(ValueError):
        jsontext.dumps({"x": value})


def test_loads_reads_text_and_utf8_bytes_alike() -> None:
    assert jsontext.loads('{"t":"é"}') == {"t": "é"}
    assert jsontext.loads('{"t":"é"}'.encode()) == {"t": "é"}
    assert jsontext.loads(bytearray(b"[1]")) == [1]
    assert jsontext.loads(memoryview(b"[2]")) == [2]


def test_bytes_that_are_not_utf8_say_where() -> None:
    with pytest.raises(JsonError, match=r"not UTF-8 text \(byte 0xff at offset 6\)"):
        jsontext.loads(b'{"t":"\xff"}')


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a":-Infinity}'])
def test_nan_and_infinity_are_not_json_numbers(text: str) -> None:
    with pytest.raises(JsonError, match="is not a JSON number"):
        jsontext.loads(text)


def test_an_integer_of_more_than_32_digits_is_out_of_every_range_its_sign_kept() -> None:
    assert jsontext.loads("1" * 32) == int("1" * 32)
    assert jsontext.loads("9" * 33) == 10**33
    assert jsontext.loads("-" + "9" * 5000) == -(10**33)  # past Python's 4300-digit limit


@pytest.mark.parametrize(
    ("text", "where"),
    [("{", "line 1, column 2"), ('{"a":1,}', "line 1, column 8"), ("[1]\n[2]", "line 2")],
)
def test_a_syntax_error_says_where(text: str, where: str) -> None:
    with pytest.raises(JsonError, match=where):
        jsontext.loads(text)


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
)
DOCS = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)


@given(
    DOCS,
    st.sampled_from(["", " ", "\n\t", "\r\n "]),
    st.sampled_from(["", " ", "\n", " x", ",1"]),
)
def test_the_scanner_first_reads_what_decode_reads(doc: object, before: str, after: str) -> None:
    """A bare document is read by the scanner alone; anything around it goes to
    `decode`: the same value, or the same error, either way."""
    text = before + json.dumps(doc) + after
    try:
        expected = json.loads(text)
    except ValueError:
        with pytest.raises(JsonError):
            jsontext.loads(text)
    else:
        assert jsontext.loads(text) == expected


def test_a_failure_is_a_value_error() -> None:
    assert issubclass(JsonError, ValueError)


JSONISH = st.text(alphabet='{}[]",: \\u0123456789.eE+-truefalsnNIiy\x00\xff', max_size=40)


@given(JSONISH | st.binary(max_size=40))
def test_any_input_is_json_or_a_json_error(data: str | bytes) -> None:
    """Never another exception: callers catch JsonError alone."""
    with contextlib.suppress(JsonError):
        jsontext.loads(data)


# ---------------------------------------------------------------- past the stack


def test_a_deep_array_is_read_without_recursion() -> None:
    assert depth_of(jsontext.loads("[" * DEEP + "]" * DEEP)) == DEEP


def test_a_deep_object_is_read_with_its_keys_and_values() -> None:
    value = jsontext.loads('{"k": ' * DEEP + '"leaf"' + "}" * DEEP)
    assert depth_of(value) == DEEP
    for _ in range(DEEP):
        assert isinstance(value, dict) and list(value) == ["k"]
        value = value["k"]
    assert value == "leaf"


def test_a_deep_document_keeps_every_member() -> None:
    text = '[{"a": [1, 2], "b": {}, "c": []}, ' * DEEP + "null" + "]" * DEEP
    value = jsontext.loads(text)
    for _ in range(DEEP):
        assert isinstance(value, list) and len(value) == 2
        assert value[0] == {"a": [1, 2], "b": {}, "c": []}
        value = value[1]
    assert value is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[" * DEEP + "]" * (DEEP - 1), "expecting ',' or the end of a container"),
        ("[" * DEEP + "]" * DEEP + "]", "extra data"),
        ('{"k": ' * DEEP + "1" + "}" * (DEEP - 1) + "]", "expecting ',' or the end"),
        ('{"k": ' * DEEP + '{"x" 1}' + "}" * DEEP, "expecting ':'"),
        ('{"k": ' * DEEP + "{1: 2}" + "}" * DEEP, "expecting a property name"),
        ('{"k": ' * DEEP + '{"a": 1, }' + "}" * DEEP, "expecting a property name"),
        ("[" * DEEP + "NaN" + "]" * DEEP, "NaN is not a JSON number"),
        ("[" * DEEP + "tru" + "]" * DEEP, "Expecting value"),
    ],
    ids=[
        "unclosed",
        "closed once too often",
        "closed by the wrong bracket",
        "no colon",
        "a key that is not a string",
        "a trailing comma in an object",
        "NaN",
        "a misspelled literal",
    ],
)
def test_a_broken_deep_document_is_a_json_error(text: str, problem: str) -> None:
    with pytest.raises(JsonError, match=problem):
        jsontext.loads(text)


# ---------------------------------------------------------------- lone surrogates


@pytest.mark.parametrize(
    "text",
    [
        '"\\ud800"',
        '"\\udfff"',
        '{"\\udbff": 1}',
        '[1, {"a": ["x\\ud800y"]}]',
        '"\\ude00\\ud83d"',  # a pair in the wrong order is two lone halves
        "[" * 3000 + '"\\ud800"' + "]" * 3000,  # read without recursion
    ],
)
def test_lone_surrogates_are_refused(text: str) -> None:
    with pytest.raises(JsonError, match="surrogate"):
        loads_unicode(text)
    with pytest.raises(JsonError):
        loads_unicode(text.encode())
    loads(text)  # the device protocols answer such strings with their own codes


def test_surrogate_pairs_and_escaped_backslashes_are_fine() -> None:
    assert loads_unicode('"\\ud83d\\ude00"') == "\U0001f600"
    assert loads_unicode('"\\\\ud800"') == "\\ud800"  # a backslash, then text


@pytest.mark.parametrize(
    "text",
    [
        '{"id":"1","params":{"a":{"value":12,"time":1767225600123},"b":{"value":-3.5}}}',
        '{"big":' + "9" * 32 + ',"small":-7}',  # 32 digits: the scanner's own int
        '{"s":"' + "1" * 40 + '","n":5}',  # a long run in a string: the hook, same values
        '{"n":' + "9" * 33 + ',"m":-' + "9" * 5000 + "}",  # out of every range, signs kept
        '["é", 1, 2.5e3, true, null]',
    ],
)
def test_a_document_from_its_bytes_reads_as_from_its_text(text: str) -> None:
    """Given the bytes, the integer hook is skipped when no run of 33 digits can make
    an integer out of range: the values are the same either way."""
    expected = jsontext.loads(text)
    raw = text.encode()
    for data in (raw, bytearray(raw), memoryview(raw)):
        assert jsontext.loads(data) == expected
    assert jsontext.scan_whole(text, raw) == jsontext.scan_whole(text) == (True, expected)


def test_a_long_integer_from_bytes_is_out_of_every_range() -> None:
    assert jsontext.loads(b'{"n":' + b"9" * 33 + b"}") == {"n": 10**33}
    assert jsontext.loads(b"[-" + b"1" * 4400 + b"]") == [-(10**33)]
    assert jsontext.scan_whole("[1] ", b"[1] ") == (False, None)
