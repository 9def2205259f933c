"""Page cursors (core/cursors.py): a cursor names the position after which the next
page starts; every cursor of the published pattern is valid (past the end is an
empty page, so numbers beyond 64 bits read as its ends), and anything else is an
InvalidRequest saying how to get a good one."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thingshub.core import cursors
from thingshub.core.errors import InvalidRequest
from thingshub.core.jsontext import INT64_MAX, INT64_MIN

IDS = st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True)
INT64 = st.integers(min_value=INT64_MIN, max_value=INT64_MAX)


@pytest.mark.parametrize("empty", [None, ""])
def test_no_cursor_is_the_first_page(empty: str | None) -> None:
    assert cursors.after_key(empty) is None
    assert cursors.after_point(empty) is None
    assert cursors.before_command(empty) is None
    assert cursors.after_pair(empty) is None


@given(IDS)
def test_a_key_cursor_is_the_last_key_itself(last: str) -> None:
    assert cursors.after_key(cursors.key(last)) == last
    assert re.fullmatch(cursors.KEY_PATTERN, cursors.key(last))


@given(INT64, st.integers(min_value=0, max_value=INT64_MAX))
def test_a_point_cursor_is_its_time_and_sequence(ts: int, seq: int) -> None:
    cursor = cursors.point(ts, seq)
    assert re.fullmatch(cursors.POINT_PATTERN, cursor)
    assert cursors.after_point(cursor) == (ts, seq)


@given(INT64, IDS)
def test_a_command_cursor_is_its_time_and_id(created_at: int, cmd_id: str) -> None:
    cursor = cursors.command(created_at, cmd_id)
    assert re.fullmatch(cursors.COMMAND_PATTERN, cursor)
    assert cursors.before_command(cursor) == (created_at, cmd_id)


@given(IDS, IDS)
def test_a_pair_cursor_is_the_last_product_and_name(product_id: str, name: str) -> None:
    cursor = cursors.pair(product_id, name)
    assert re.fullmatch(cursors.PAIR_PATTERN, cursor)
    assert cursors.after_pair(cursor) == (product_id, name)


def test_numbers_past_64_bits_are_read_as_the_ends() -> None:
    assert cursors.after_point("9" * 19 + "." + "9" * 19) == (INT64_MAX, INT64_MAX)
    assert cursors.after_point("-" + "9" * 19 + ".0") == (INT64_MIN, 0)
    assert cursors.before_command("-9999999999999999999.c1") == (INT64_MIN, "c1")


@pytest.mark.parametrize(
    ("parse", "cursor"),
    [
        (cursors.after_key, "a/b"),
        (cursors.after_key, "k" * 65),
        (cursors.after_point, "12"),
        (cursors.after_point, "1.2.3"),
        (cursors.after_point, "1." + "9" * 20),
        (cursors.after_point, "x.1"),
        (cursors.before_command, "12"),
        (cursors.before_command, "12.a/b"),
        (cursors.before_command, "t.c1"),
        (cursors.after_pair, "p1"),
        (cursors.after_pair, "p1/d1"),
        (cursors.after_pair, "p1:d1:x"),
    ],
)
def test_a_malformed_cursor_is_refused(parse: object, cursor: str) -> None:
    with pytest.raises(InvalidRequest, match="give the `next` of the previous page"):
        parse(cursor)  # type: ignore[operator]
