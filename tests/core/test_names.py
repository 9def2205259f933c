"""Identifiers that become topic levels (product ids, device names, device numbers).

These checks are why a device's topics always have the shape the ACL
expects: an identifier with `/`, `+` or `#` would add a level or a wildcard.
Every refusal is an InvalidRequest naming the field, so the API can tell the
caller which input to fix.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thingshub.core import names
from thingshub.core.errors import InvalidRequest

ALLOWED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"


@pytest.mark.parametrize(
    "value", ["a", "Z", "0", "_", ".", "-", "dev-1", "pid.v2_x", "a" * 64, ALLOWED[:64]]
)
def test_accepts_1_to_64_allowed_characters(value: str) -> None:
    """check returns the value itself, so callers can write `x = names.check(...)`."""
    assert names.check("name", value) is value
    assert names.is_valid(value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "is required"),
        ("a" * 65, "longer than 64"),
        ("a" * 1000, "longer than 64"),
        ("a/b", "may contain only"),
        ("a+", "may contain only"),
        ("#", "may contain only"),
        ("+", "may contain only"),
        ("a b", "may contain only"),
        (" a", "may contain only"),
        ("a\n", "may contain only"),  # `$` of a regex would let this pass
        ("a\x00", "may contain only"),
        ("é", "may contain only"),
        ("设备", "may contain only"),
        ("\uff41", "may contain only"),  # fullwidth a
        ("\u0663", "may contain only"),  # Arabic-Indic digit three
        ("$sys", "may contain only"),
        ("a*b", "may contain only"),
        ("a%2Fb", "may contain only"),
    ],
)
@pytest.mark.parametrize("field", ["name", "device_number", "id"])
def test_refuses_bad_strings_naming_the_field(field: str, value: str, reason: str) -> None:
    """Each refusal says which field and why."""
    with pytest.raises(InvalidRequest) as info:
        names.check(field, value)
    assert info.value.message.startswith(f"{field} ")
    assert reason in info.value.message
    assert not names.is_valid(value)


@pytest.mark.parametrize("value", [None, 5, 1.5, b"abc", ["a"], {"a": 1}, True])
def test_refuses_non_strings(value: object) -> None:
    """JSON gives numbers, lists and null too; they are refused, not stringified."""
    with pytest.raises(InvalidRequest, match=r"^device_number is required and must be a string$"):
        names.check("device_number", value)


@given(st.text(ALLOWED, min_size=1, max_size=64))
def test_any_allowed_string_passes(value: str) -> None:
    """Every string of the documented alphabet and length passes."""
    assert names.check("name", value) == value


@given(st.text(min_size=1, max_size=80))
def test_check_agrees_with_the_documented_rule(value: str) -> None:
    """For any text, check passes exactly when the rule says so, and never raises another error."""
    valid = 1 <= len(value) <= 64 and all(c in ALLOWED for c in value)
    if valid:
        assert names.check("name", value) == value
    else:
        with pytest.raises(InvalidRequest, match=r"^name "):
            names.check("name", value)
