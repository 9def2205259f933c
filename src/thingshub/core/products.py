"""The rules of a product's settings, checked the same on creation and on change.

Rules:
- `name`: a string of 1-128 characters, not only white space.
- `retention_days`: a whole number of days, 1-36500, or None (keep everything).
- `gateway_auto_register`: a boolean; false refuses `devices/register` from
  the product's gateways (field-protocols §3.3: on unless set false).
- `dynamic_registration`: a boolean; true lets devices register themselves
  with a product-level OneNET token (field-protocols §5.4: off unless set).
- Only the fields of PRODUCT_SETTINGS can change; a change is checked whole,
  so a bad field stores nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from thingshub.core.errors import InvalidRequest
from thingshub.core.model import PRODUCT_SETTINGS

MAX_PRODUCT_NAME = 128
MAX_RETENTION_DAYS = 36500


def check_settings(changes: Mapping[str, object]) -> dict[str, object]:
    """The settings of `changes`, each checked; InvalidRequest names the first bad one."""
    for field in changes:
        if field not in PRODUCT_SETTINGS:
            raise InvalidRequest(f"{field!r} is not a setting of a product")
    if "name" in changes:
        name = changes["name"]
        if not isinstance(name, str) or not name.strip():
            raise InvalidRequest("name is required and must be a non-empty string")
        if len(name) > MAX_PRODUCT_NAME:
            raise InvalidRequest(f"name is longer than {MAX_PRODUCT_NAME} characters")
    if "retention_days" in changes:
        days = changes["retention_days"]
        if days is not None and (
            isinstance(days, bool)
            or not isinstance(days, int)
            or not 1 <= days <= MAX_RETENTION_DAYS
        ):
            raise InvalidRequest(
                f"retention_days must be a whole number of days (1-{MAX_RETENTION_DAYS}) or null"
            )
    if "gateway_auto_register" in changes and not isinstance(
        changes["gateway_auto_register"], bool
    ):
        raise InvalidRequest("gateway_auto_register must be true or false")
    if "dynamic_registration" in changes and not isinstance(changes["dynamic_registration"], bool):
        raise InvalidRequest("dynamic_registration must be true or false")
    return dict(changes)
