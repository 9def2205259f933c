"""Identifiers that become MQTT topic levels: product ids, device names, device numbers.

Rules:
- 1 to 64 characters of `[A-Za-z0-9_.-]`, so an identifier can never contain
  `/`, `+` or `#` and never changes the shape of a topic.
- Checked at the edge (API, CLI) with a message naming the field.
"""

from __future__ import annotations

import re

from thingshub.core.errors import InvalidRequest

MAX_LENGTH = 64
_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def is_valid(value: str) -> bool:
    return bool(_PATTERN.fullmatch(value))


def check(field: str, value: object) -> str:
    """Return `value` if it is a valid identifier, else raise InvalidRequest."""
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{field} is required and must be a string")
    if len(value) > MAX_LENGTH:
        raise InvalidRequest(f"{field} is longer than {MAX_LENGTH} characters")
    if not _PATTERN.fullmatch(value):
        raise InvalidRequest(f"{field} may contain only letters, digits, '_', '.' and '-'")
    return value
