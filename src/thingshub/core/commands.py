"""Commands from applications to devices: ids, timeouts, and the verdict on answers.

Rules (protocols.md sections 3 and 4):
- A call waits `timeout` seconds: 10 by default, 1 to 30 allowed; anything
  else is a 400.
- OneNET command ids are URL-safe and unique (random, 16 hex digits).
  ThingsPanel message ids follow the devices' own style: the last 7 digits of
  the millisecond clock, moved on while one is still in use for that device.
- The verdict on a OneNET answer, checked in this order: an unknown id, or one
  already answered → 113 "CMD id not found"; answered after its timeout →
  112 "CMD response timeout"; 1024 bytes or more → 99 "maximum payload size
  exceeded"; otherwise accepted. 100 "internal error" is for platform failures.
- A record's status is one of sent, answered, timeout, failed, rejected; once
  it leaves `sent` it never changes again.
"""

from __future__ import annotations

import secrets
from collections.abc import Container

from thingshub.core.errors import InvalidRequest
from thingshub.core.model import CommandRecord

DEFAULT_TIMEOUT = 10
MIN_TIMEOUT = 1
MAX_TIMEOUT = 30
MAX_ANSWER = 1024  # bytes; an answer this long or longer is refused

ERR_TOO_LARGE = 99
ERR_INTERNAL = 100
ERR_TIMEOUT = 112
ERR_NOT_FOUND = 113
ERR_MSG = {
    ERR_TOO_LARGE: "maximum payload size exceeded",
    ERR_INTERNAL: "internal error",
    ERR_TIMEOUT: "CMD response timeout",
    ERR_NOT_FOUND: "CMD id not found",
}

SENT, ANSWERED, TIMEOUT, FAILED, REJECTED = "sent", "answered", "timeout", "failed", "rejected"
STATUSES = (SENT, ANSWERED, TIMEOUT, FAILED, REJECTED)


def check_timeout(value: object) -> int:
    """The call's timeout in seconds, from a query parameter (None: the default)."""
    if value is None:
        return DEFAULT_TIMEOUT
    try:
        timeout = int(str(value))
    except ValueError:
        raise InvalidRequest(f"timeout must be a whole number of seconds, not {value!r}") from None
    if not MIN_TIMEOUT <= timeout <= MAX_TIMEOUT:
        raise InvalidRequest(f"timeout must be between {MIN_TIMEOUT} and {MAX_TIMEOUT} seconds")
    return timeout


def new_command_id() -> str:
    return secrets.token_hex(8)


def new_message_id(now_ms: int, in_use: Container[str]) -> str:
    """A ThingsPanel message id: the last 7 digits of the clock, moved on while taken."""
    n = now_ms % 10_000_000
    for i in range(10_000_000):
        candidate = f"{(n + i) % 10_000_000:07d}"
        if candidate not in in_use:
            return candidate
    raise RuntimeError("every message id is in use")  # unreachable in practice


def answer_verdict(
    record: CommandRecord | None, *, pending: bool, size: int, product_id: str, name: str
) -> int | None:
    """The OneNET error code for an answer to `record` (None: accept it).

    `pending` says whether a caller still waits for this answer; `record` is
    what is known of the command (None: nothing), which must be the answering
    device's own.
    """
    mine = record is not None and record.product_id == product_id and record.name == name
    if not mine or (not pending and record.status != TIMEOUT):  # type: ignore[union-attr]
        return ERR_NOT_FOUND
    if not pending:
        return ERR_TIMEOUT
    if size >= MAX_ANSWER:
        return ERR_TOO_LARGE
    return None
