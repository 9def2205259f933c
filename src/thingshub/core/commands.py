"""Calls from applications to devices: what is asked, ids, timeouts, the verdict on answers.

Rules:
- A call is a `CallRequest`: the protocol family and kind of call (the
  command records' `family` and `kind`), and the body as bytes. The
  builders below make the ones the HTTP API offers.
- A call waits `timeout` seconds: 10 by default, 1 to 30 allowed; anything
  else is a 400.
- Call ids come in two styles: RANDOM (URL-safe and unique, 16 hex digits;
  OneNET's command ids) or CLOCK (the last 7 digits of the millisecond
  clock, moved on while one is still in use; ThingsPanel's message ids).
- The verdict on an answer, checked in this order: a call not known (or not
  this device's, or of a kind the answer cannot be for), or one already
  answered → UNKNOWN;
  answered after its timeout → LATE; longer than the protocol allows →
  TOO_LARGE; otherwise ACCEPTED. Each dialect words a verdict (or keeps
  quiet about it) on its own wire.
- A record's status is one of sent, answered, timeout, failed, rejected; once
  it leaves `sent` it never changes again.
- In a cluster, an operation of the command service on a device connected to
  another node travels there whole as a `Forwarded` value (its timeout
  already checked), and its `CallResult` or error comes back.
"""

from __future__ import annotations

import secrets
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from thingshub.core.errors import InvalidRequest
from thingshub.core.jsontext import dumps
from thingshub.core.model import CommandRecord

DEFAULT_TIMEOUT = 10
MIN_TIMEOUT = 1
MAX_TIMEOUT = 30

SENT, ANSWERED, TIMEOUT, FAILED, REJECTED = "sent", "answered", "timeout", "failed", "rejected"
STATUSES = (SENT, ANSWERED, TIMEOUT, FAILED, REJECTED)

#: Verdicts on an answer (see the module's rules).
ACCEPTED, UNKNOWN, LATE, TOO_LARGE = "accepted", "unknown", "late", "too_large"

#: Styles of call id.
RANDOM, CLOCK = "random", "clock"

#: The protocol families and the kinds of call the HTTP API makes.
ONENET, THINGSPANEL = "onenet", "thingspanel"
COMMAND, ATTRIBUTES_SET = "command", "attributes_set"


@dataclass(frozen=True, slots=True)
class CallRequest:
    """What a call asks of a device, whatever the protocol (`target`: what the
    call is for, where its kind needs one, e.g. a service's identifier)."""

    family: str
    kind: str
    body: bytes
    id_style: str = RANDOM
    target: str | None = None
    #: Whether a sub-device is named by its addresses below its gateway (ThingsPanel);
    #: False: by its own ids (OneNET's thing model), so it needs no address.
    addressed: bool = True


@dataclass(frozen=True, slots=True)
class CallResult:
    """A call's answer: the id it had on the wire, the device's bytes, what its
    dialect read from them (None: the bytes are the answer), and the id of
    its command record."""

    call_id: str
    payload: bytes
    body: dict[str, Any] | None
    record_id: str = ""


#: The operations of the command service that can be forwarded to another node.
CALL, SEND, ATTRIBUTES_GET, CONTROL = "call", "send", "attributes_get", "control"


@dataclass(frozen=True, slots=True)
class Forwarded:
    """An operation of the command service, to run on the node holding the
    connection of the device (or of its top gateway): `request` and `seconds`
    for CALL and SEND, `keys` and `seconds` for ATTRIBUTES_GET, `values` for
    CONTROL."""

    op: str
    product_id: str
    name: str
    request: CallRequest | None = None
    seconds: int = DEFAULT_TIMEOUT
    keys: list[str] | None = None
    values: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class AnswerLimit:
    """The longest answer a protocol allows (bytes), and its own code and words for one longer."""

    max_size: int
    err_code: int
    err_msg: str


def raw_command(payload: bytes) -> CallRequest:
    """A OneNET command: the application's bytes, sent untouched."""
    return CallRequest(ONENET, COMMAND, bytes(payload), RANDOM)


def method_call(method: object, params: object) -> CallRequest:
    """A ThingsPanel command {method, params}."""
    if not isinstance(method, str) or not method:
        raise InvalidRequest("method must be a non-empty string")
    body = _json({"method": method, "params": {} if params is None else params})
    return CallRequest(THINGSPANEL, COMMAND, body, CLOCK)


def attribute_set(values: object) -> CallRequest:
    """A ThingsPanel attribute set: the attributes as a JSON object."""
    if not isinstance(values, dict) or not values:
        raise InvalidRequest("the attributes to set must be a non-empty JSON object")
    return CallRequest(THINGSPANEL, ATTRIBUTES_SET, _json(values), CLOCK)


def _json(body: dict[str, Any]) -> bytes:
    try:
        return dumps(body)
    except (TypeError, ValueError):
        raise InvalidRequest("the request is not valid JSON") from None


def check_timeout(value: object, default: int = DEFAULT_TIMEOUT) -> int:
    """The call's timeout in seconds, from a query parameter (None: the default)."""
    if value is None:
        return default
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


def new_call_id(style: str, now_ms: int, in_use: Container[str]) -> str:
    return new_command_id() if style == RANDOM else new_message_id(now_ms, in_use)


def answer_verdict(
    record: CommandRecord | None,
    *,
    pending: bool,
    size: int,
    limit: AnswerLimit | None,
    product_id: str,
    name: str,
    family: str,
    kind: str,
    also: tuple[str, ...] = (),
) -> str:
    """The verdict on an answer to `record` (see the module's rules).

    `pending` says whether a caller still waits for this answer; `record` is
    what is known of the call (None: nothing), which must be the answering
    device's own, of the answer's family and of its kind or one of the kinds
    in `also` (an answer topic serving several kinds of call).
    """
    mine = (
        record is not None
        and record.product_id == product_id
        and record.name == name
        and record.family == family
        and (record.kind == kind or record.kind in also)
    )
    if not mine or (not pending and record.status != TIMEOUT):  # type: ignore[union-attr]
        return UNKNOWN
    if not pending:
        return LATE
    if limit is not None and size > limit.max_size:
        return TOO_LARGE
    return ACCEPTED
