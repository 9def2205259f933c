"""The rules of calls to devices (core/commands.py): the requests the HTTP API
builds, the timeout a caller may ask for, the two styles of call id, and the
verdict on a device's answer, checked in its documented order."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thingshub.core import commands
from thingshub.core.commands import (
    ACCEPTED,
    ANSWERED,
    ATTRIBUTES_SET,
    CLOCK,
    COMMAND,
    FAILED,
    LATE,
    ONENET,
    RANDOM,
    REJECTED,
    SENT,
    THINGSPANEL,
    TIMEOUT,
    TOO_LARGE,
    UNKNOWN,
    AnswerLimit,
    CallRequest,
)
from thingshub.core.errors import InvalidRequest
from thingshub.core.model import CommandRecord

# ---------------------------------------------------------------- the requests


def test_a_onenet_command_carries_the_applications_bytes_untouched() -> None:
    body = bytearray(b"\x00\xffnot json at all")
    request = commands.raw_command(body)
    assert request == CallRequest(ONENET, COMMAND, b"\x00\xffnot json at all", RANDOM)
    body[0] = 1  # the request is a copy: changing the caller's buffer changes nothing
    assert request.body == b"\x00\xffnot json at all"


def test_a_thingspanel_command_is_method_and_params_as_compact_json() -> None:
    """The seed's command example, as the platform sends it."""
    request = commands.method_call("Restart", {"delay": 5, "mode": "safe"})
    assert request == CallRequest(
        THINGSPANEL, COMMAND, b'{"method":"Restart","params":{"delay":5,"mode":"safe"}}', CLOCK
    )


def test_a_command_without_params_sends_an_empty_object() -> None:
    assert json.loads(commands.method_call("Reboot", None).body) == {
        "method": "Reboot",
        "params": {},
    }


def test_params_are_any_json_value_and_non_ascii_is_not_escaped() -> None:
    body = commands.method_call("Say", ["é", 1]).body
    assert body == '{"method":"Say","params":["é",1]}'.encode()


@pytest.mark.parametrize("method", ["", None, 5, ["Restart"], {"m": 1}])
def test_a_command_needs_a_method_name(method: object) -> None:
    with pytest.raises(InvalidRequest, match="method must be a non-empty string"):
        commands.method_call(method, {})


@pytest.mark.parametrize("params", [{"x": float("nan")}, {"x": float("inf")}, {"x": {1, 2}}])
def test_params_that_are_not_json_are_refused(params: object) -> None:
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        commands.method_call("Set", params)


def test_an_attribute_set_is_the_attributes_as_json() -> None:
    """The seed's attribute set example."""
    values = {"ip": "192.168.1.100", "heartbeat": 30, "report_interval": 60}
    request = commands.attribute_set(values)
    assert request == CallRequest(
        THINGSPANEL,
        ATTRIBUTES_SET,
        b'{"ip":"192.168.1.100","heartbeat":30,"report_interval":60}',
        CLOCK,
    )


@pytest.mark.parametrize("values", [{}, None, [], ["ip"], "ip", 3])
def test_an_attribute_set_needs_a_non_empty_object(values: object) -> None:
    with pytest.raises(InvalidRequest, match="non-empty JSON object"):
        commands.attribute_set(values)


def test_attribute_values_that_are_not_json_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        commands.attribute_set({"level": float("nan")})


# ---------------------------------------------------------------- timeouts


def test_no_timeout_means_ten_seconds() -> None:
    assert commands.check_timeout(None) == commands.DEFAULT_TIMEOUT == 10


@given(st.integers(min_value=1, max_value=30))
def test_every_whole_second_from_1_to_30_is_allowed(seconds: int) -> None:
    """As a number or as the text of a query parameter."""
    assert commands.check_timeout(seconds) == seconds
    assert commands.check_timeout(str(seconds)) == seconds


@given(st.integers().filter(lambda n: not 1 <= n <= 30))
def test_whole_seconds_outside_1_to_30_are_refused(seconds: int) -> None:
    with pytest.raises(InvalidRequest, match="between 1 and 30 seconds"):
        commands.check_timeout(str(seconds))


@pytest.mark.parametrize("value", ["", "ten", "1.5", "5s", 2.5, "0x10"])
def test_a_timeout_that_is_not_a_whole_number_is_refused(value: object) -> None:
    with pytest.raises(InvalidRequest, match="whole number of seconds"):
        commands.check_timeout(value)


# ---------------------------------------------------------------- call ids


def test_random_ids_are_16_hex_digits_and_unique() -> None:
    ids = {commands.new_command_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)


def test_a_message_id_is_the_last_7_digits_of_the_clock() -> None:
    assert commands.new_message_id(1_700_000_123_456, set()) == "0123456"
    assert commands.new_message_id(42, set()) == "0000042"


def test_a_message_id_in_use_moves_on_to_the_next_free_one() -> None:
    assert commands.new_message_id(1_700_000_123_456, {"0123456", "0123457"}) == "0123458"


def test_message_ids_wrap_around_after_9999999() -> None:
    assert commands.new_message_id(9_999_999, {"9999999"}) == "0000000"


@given(
    st.integers(min_value=0, max_value=2**53),
    st.sets(st.integers(min_value=0, max_value=9_999_999).map(lambda n: f"{n:07d}"), max_size=50),
)
def test_a_message_id_is_never_one_in_use(now_ms: int, in_use: set[str]) -> None:
    message_id = commands.new_message_id(now_ms, in_use)
    assert re.fullmatch(r"[0-9]{7}", message_id)
    assert message_id not in in_use


def test_each_style_makes_its_own_kind_of_id() -> None:
    assert re.fullmatch(r"[0-9a-f]{16}", commands.new_call_id(RANDOM, 1_700_000_123_456, set()))
    assert commands.new_call_id(CLOCK, 1_700_000_123_456, {"0123456"}) == "0123457"


# ---------------------------------------------------------------- the verdict on an answer

LIMIT = AnswerLimit(1023, 99, "maximum payload size exceeded")


def record(status: str = SENT, **fields: str) -> CommandRecord:
    values = {"product_id": "p", "name": "d", "family": ONENET, "kind": COMMAND, **fields}
    return CommandRecord(
        "c1",
        values["product_id"],
        values["name"],
        values["family"],
        values["kind"],
        b"{}",
        status,
        1,
    )


def verdict(
    rec: CommandRecord | None,
    *,
    pending: bool = True,
    size: int = 10,
    limit: AnswerLimit | None = LIMIT,
    product_id: str = "p",
    name: str = "d",
    family: str = ONENET,
    kind: str = COMMAND,
    also: tuple[str, ...] = (),
) -> str:
    return commands.answer_verdict(
        rec,
        pending=pending,
        size=size,
        limit=limit,
        product_id=product_id,
        name=name,
        family=family,
        kind=kind,
        also=also,
    )


def test_an_answer_to_a_waiting_call_of_its_own_is_accepted() -> None:
    assert verdict(record()) == ACCEPTED


def test_an_answer_to_no_known_call_is_unknown() -> None:
    assert verdict(None) == UNKNOWN
    assert verdict(None, pending=False) == UNKNOWN


@pytest.mark.parametrize(
    "other",
    [
        {"product_id": "p2"},
        {"name": "d2"},
        {"family": THINGSPANEL},
        {"kind": ATTRIBUTES_SET},
    ],
)
def test_an_answer_to_another_devices_or_another_kind_of_call_is_unknown(
    other: dict[str, str],
) -> None:
    """A device cannot answer (or learn about) a call made to someone else."""
    assert verdict(record(), **other) == UNKNOWN  # type: ignore[arg-type]
    assert verdict(record(TIMEOUT), pending=False, **other) == UNKNOWN  # type: ignore[arg-type]


def test_an_answer_topic_serving_several_kinds_answers_each_of_them() -> None:
    """OneNET's `property/set_reply` answers a property set and desired values
    pushed on `property/set` alike: the call's id tells which it is."""
    pushed = record(kind="desired_push")
    assert verdict(pushed, kind="property_set", also=("desired_push",)) == ACCEPTED
    assert verdict(pushed, kind="property_set") == UNKNOWN
    assert verdict(record(), kind="property_set", also=("desired_push",)) == UNKNOWN


@pytest.mark.parametrize("status", [ANSWERED, FAILED, REJECTED, SENT])
def test_a_call_no_longer_waiting_and_not_timed_out_is_unknown(status: str) -> None:
    """Answered already (a repeat), or failed: OneNET's 113 "CMD id not found"."""
    assert verdict(record(status), pending=False) == UNKNOWN


def test_an_answer_after_the_timeout_is_late() -> None:
    assert verdict(record(TIMEOUT), pending=False) == LATE


def test_an_answer_longer_than_the_protocol_allows_is_too_large() -> None:
    assert verdict(record(), size=1023) == ACCEPTED
    assert verdict(record(), size=1024) == TOO_LARGE


def test_a_protocol_without_a_limit_accepts_any_size() -> None:
    assert verdict(record(), size=10**9, limit=None) == ACCEPTED


@given(
    mine=st.booleans(),
    pending=st.booleans(),
    status=st.sampled_from(commands.STATUSES),
    size=st.integers(min_value=0, max_value=4096),
    limit=st.none() | st.integers(min_value=0, max_value=2048),
)
def test_the_verdicts_come_in_their_documented_order(
    mine: bool, pending: bool, status: str, size: int, limit: int | None
) -> None:
    """Unknown before late before too large before accepted: the first rule that
    applies decides, whatever the later ones would say."""
    rec = record(status) if mine else replace(record(status), name="someone-else")
    answer_limit = None if limit is None else AnswerLimit(limit, 99, "too large")
    got = verdict(rec, pending=pending, size=size, limit=answer_limit)
    if not mine or (not pending and status != TIMEOUT):
        assert got == UNKNOWN
    elif not pending:
        assert got == LATE
    elif limit is not None and size > limit:
        assert got == TOO_LARGE
    else:
        assert got == ACCEPTED
