"""core/jsontext: text that is not valid Unicode is refused."""

from __future__ import annotations

import pytest

from thingshub.core.jsontext import JsonError, loads, loads_unicode


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
