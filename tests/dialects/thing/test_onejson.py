"""The OneJSON envelope (dialects/thing/onejson.py) against field-protocols.md §0:
the request id's rule, the codes in the order of the table, and replies as the
compact text field code searches for `"code":200` in."""

from __future__ import annotations

import pytest

from thingshub.core import thingmodel
from thingshub.dialects.thing import onejson


@pytest.mark.parametrize(
    ("sent", "read"),
    [
        ("123", "123"),
        ("0", "0"),
        ("9" * 13, "9" * 13),
        ("0000042", "0000042"),  # leading zeros kept: the id is a string
        (0, "0"),
        (9_999_999_999_999, "9999999999999"),
        ("9" * 14, None),
        ("", None),
        ("12a", None),
        (" 1", None),
        ("-1", None),
        ("1\n", None),
        ("\u0661\u0662", None),  # Arabic-Indic digits: digits, not ASCII ones
        ("\u00b2", None),  # a superscript two
        ("\uff11", None),  # a fullwidth one
        (10_000_000_000_000, None),
        (-1, None),
        (True, None),
        (1.0, None),
        (None, None),
        (["1"], None),
    ],
)
def test_a_request_id_is_1_to_13_digits_or_such_an_integer(sent: object, read: str | None) -> None:
    assert onejson.request_id_of(sent) == read


@pytest.mark.parametrize(
    ("payload", "code", "echo"),
    [
        (b"\xc3\x28", thingmodel.JSON_FORMAT_ERROR, ""),
        (b'"text"', thingmodel.JSON_FORMAT_ERROR, ""),
        (b'{"id": true}', thingmodel.INVALID_MSG_ID, ""),
        (b'{"id": 12345678901234}', thingmodel.INVALID_MSG_ID, "12345678901234"),
        (b'{"id": "abc", "version": 1}', thingmodel.INVALID_MSG_ID, "abc"),  # the id comes first
        (b'{"id": "1", "version": null}', thingmodel.BAD_REQUEST, "1"),
    ],
)
def test_the_first_rule_broken_is_the_code(payload: bytes, code: int, echo: str) -> None:
    with pytest.raises(onejson.EnvelopeError) as refused:
        onejson.parse_request(payload)
    assert (refused.value.err_code, refused.value.id) == (code, echo)
    assert refused.value.err_msg == thingmodel.CODES[code]


def test_a_request_is_read_with_its_defaults() -> None:
    request = onejson.parse_request(b'{"id": 7}')
    assert request == onejson.Request("7", "1.0", None, False)
    request = onejson.parse_request(b'{"id": "8", "version": "2.0", "params": null}')
    assert request == onejson.Request("8", "2.0", None, True)
    payload = b'{"id":"1","params":1}'
    assert onejson.parse_request(payload, max_payload=len(payload)).params == 1
    with pytest.raises(onejson.EnvelopeError, match="payload too large: 21 bytes, at most 20"):
        onejson.parse_request(payload, max_payload=len(payload) - 1)


@pytest.mark.parametrize(
    ("code", "hint", "data", "text"),
    [
        (200, None, None, b'{"id":"123","code":200,"msg":"success"}'),
        (200, None, {"t": "°C"}, '{"id":"123","code":200,"msg":"success","data":{"t":"°C"}}'),
        (
            309,
            "x: no such property",
            None,
            b'{"id":"123","code":309,"msg":"identifier not exist: x: no such property"}',
        ),
        (303, "", None, b'{"id":"123","code":303,"msg":"internal error"}'),
        (999, None, None, b'{"id":"123","code":999,"msg":"error"}'),
    ],
)
def test_a_reply_is_compact_json(code: int, hint: str | None, data: object, text: object) -> None:
    expected = text.encode() if isinstance(text, str) else text
    assert onejson.reply("123", code, hint, data) == expected


def test_a_platform_request_wraps_its_params() -> None:
    assert onejson.request("12", b'{"a":1}') == b'{"id":"12","version":"1.0","params":{"a":1}}'
