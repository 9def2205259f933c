"""core/jsontext: text that is not valid Unicode, and integers past 64 bits."""

from __future__ import annotations

import pytest

from thingshub.core.jsontext import INT64_MAX, INT64_MIN, JsonError, loads


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
        loads(text)
    with pytest.raises(JsonError):
        loads(text.encode())


def test_surrogate_pairs_and_escaped_backslashes_are_fine() -> None:
    assert loads('"\\ud83d\\ude00"') == "\U0001f600"
    assert loads('"\\\\ud800"') == "\\ud800"  # a backslash, then text


def test_int64_refuses_integers_past_64_bits() -> None:
    assert loads(f"[{INT64_MIN}, {INT64_MAX}]", int64=True) == [INT64_MIN, INT64_MAX]
    for n in (INT64_MAX + 1, INT64_MIN - 1, 10**40):
        with pytest.raises(JsonError, match="64-bit"):
            loads(f'{{"a": {n}}}', int64=True)
        assert loads(str(n)) != 0  # without it, device payloads keep their own rule
