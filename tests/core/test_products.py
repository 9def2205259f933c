"""The rules of a product's settings (core/products.py): each field checked, the
first bad one named, fields that are no settings refused."""

from __future__ import annotations

import pytest

from thingshub.core.errors import InvalidRequest
from thingshub.core.products import MAX_PRODUCT_NAME, check_settings


def test_good_settings_pass_as_given() -> None:
    good = {
        "name": "n" * MAX_PRODUCT_NAME,
        "retention_days": 1,
        "gateway_auto_register": False,
        "dynamic_registration": True,
    }
    assert check_settings(good) == good
    assert check_settings({"retention_days": None}) == {"retention_days": None}
    assert check_settings({}) == {}


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"id": "p2"}, "'id' is not a setting"),
        ({"name": None}, "name is required"),
        ({"name": " \t"}, "name is required"),
        ({"name": "n" * (MAX_PRODUCT_NAME + 1)}, "longer than 128"),
        ({"retention_days": 0}, "retention_days"),
        ({"retention_days": True}, "retention_days"),
        ({"retention_days": 1.5}, "retention_days"),
        ({"gateway_auto_register": 1}, "gateway_auto_register must be true or false"),
        ({"dynamic_registration": "yes"}, "dynamic_registration must be true or false"),
    ],
)
def test_bad_settings_are_named(changes: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidRequest, match=named):
        check_settings(changes)
