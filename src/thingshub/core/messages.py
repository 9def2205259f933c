"""Messages between devices and the platform, as protocol-neutral values.

Rules:
- Dialects turn (topic, payload) into an `Inbound` value and an `Outbound`
  value into (topic, payload); services see only these values.
- Payloads a rule of the core must judge (an image update, a command answer)
  travel as the device's bytes, so the error codes of those rules stay in one
  place (core/shadow.py, core/commands.py).
- `DeviceRef` names a device everywhere a message must be addressed: both
  families' ids, so any dialect can build its topic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class DeviceRef:
    product_id: str
    name: str
    device_number: str


# ---------------------------------------------------------------- device -> platform


@dataclass(frozen=True, slots=True)
class ImageUpdateRequest:
    payload: bytes


@dataclass(frozen=True, slots=True)
class ImageGetRequest:
    payload: bytes


@dataclass(frozen=True, slots=True)
class CommandAnswer:
    """A device's answer to a OneNET command (`cmd/response/{cmd_id}`)."""

    cmd_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class TelemetryReport:
    """`devices/telemetry`: an object (real time) or an array of {ts (s), values}."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class AttributesReport:
    """`devices/attributes/{message_id}`: an object of attributes."""

    message_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class EventReport:
    """`devices/event/{message_id}`: {method, params} or an array of {ts (ms), method, params}."""

    message_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class OtaProgress:
    """`ota/devices/progress`: {step, desc, module}."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class CallAnswer:
    """A ThingsPanel answer: to a command (`devices/command/response/{id}`) or
    to an attribute set (`devices/attributes/set/response/{id}`), per `kind`."""

    kind: str  # "command" or "attributes_set"
    message_id: str
    payload: bytes


Inbound = (
    ImageUpdateRequest
    | ImageGetRequest
    | CommandAnswer
    | TelemetryReport
    | AttributesReport
    | EventReport
    | OtaProgress
    | CallAnswer
)


# ---------------------------------------------------------------- platform -> device


@dataclass(frozen=True, slots=True)
class ImageReply:
    """A reply on one of the image topics; `topic` is the part after `image/`:
    update/accepted, update/rejected, update/delta, get/accepted, get/rejected."""

    topic: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """A OneNET command: the application's bytes, untouched, on `cmd/request/{cmd_id}`."""

    cmd_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class CommandAnswerReply:
    """The platform's verdict on a device's answer: an empty `.../accepted`, or
    `.../rejected` with `body` ({"err_code", "err_msg"})."""

    cmd_id: str
    body: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class DeviceCall:
    """A ThingsPanel request that waits for an answer: a command
    (`devices/command/{dn}/{id}`, body {method, params}) or an attribute set
    (`devices/attributes/set/{dn}/{id}`, body the attributes), per `kind`."""

    kind: str  # "command" or "attributes_set"
    message_id: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AttributesGet:
    """`devices/attributes/get/{dn}`: {"keys": [...]} (empty: all)."""

    keys: list[str]


@dataclass(frozen=True, slots=True)
class Control:
    """`devices/telemetry/control/{dn}`: values to apply, fire and forget."""

    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ReportReply:
    """The platform's response object to a device's report: on
    `devices/attributes/response/{dn}/{id}` or `devices/event/response/{dn}/{id}`."""

    kind: str  # "attributes" or "event"
    message_id: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OtaInform:
    """`ota/devices/inform/{dn}`: {id, code, params}."""

    body: dict[str, Any]


Outbound = (
    ImageReply
    | CommandRequest
    | CommandAnswerReply
    | DeviceCall
    | AttributesGet
    | Control
    | ReportReply
    | OtaInform
)
