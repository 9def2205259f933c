"""Messages between devices and the platform, as protocol-neutral values.

Rules:
- Dialects turn (topic, payload) into an `Inbound` value and an `Outbound`
  value into (topic, payload); services see only these values, never a
  topic or a payload format.
- Inbound values are decoded and checked by the dialect, time included
  (`received_at`, the platform's clock when the message arrived). What a
  dialect refuses arrives as a refusal carrying the error (with the
  protocol's code as its wire hint), so the service still stores nothing,
  counts it, and answers on the protocol's error path.
- `DeviceRef` names a device everywhere a message must be addressed: both
  families' ids, so any dialect can build its topic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from thingshub.core.commands import AnswerLimit
from thingshub.core.errors import ThingsHubError
from thingshub.core.model import DeviceEvent, Firmware, Point, fast_init
from thingshub.core.ota import Progress
from thingshub.core.shadow import Applied, Image, ImageError, RequestId, Update
from thingshub.core.submessages import TopologyNotice


@dataclass(frozen=True, slots=True)
class DeviceRef:
    product_id: str
    name: str
    device_number: str


# ---------------------------------------------------------------- device -> platform


@dataclass(frozen=True, slots=True)
class ImageUpdateRequest:
    """A device's update of its image, checked by core/shadow.py's rules."""

    update: Update


@dataclass(frozen=True, slots=True)
class ImageUpdateRefused:
    """A device's update its dialect refused; answered with the error."""

    request_id: RequestId
    error: ImageError


@dataclass(frozen=True, slots=True)
class ImageGetRequest:
    """A device asks for its image."""

    request_id: RequestId


@dataclass(frozen=True, slots=True, init=False)
class TelemetryReport:
    """Telemetry points, checked; stored whole, never answered. `__init__`: as `Point`'s."""

    points: Sequence[Point]  # a real-time object's: `PointsAt`
    received_at: int

    def __init__(self, points: Sequence[Point], received_at: int) -> None:
        _REPORT[0](self, points)
        _REPORT[1](self, received_at)


@dataclass(frozen=True, slots=True)
class AttributesReport:
    """Attributes, checked; answered (`ReportAck`) under `reply_to` once stored."""

    reply_to: str
    values: dict[str, object]
    received_at: int


@dataclass(frozen=True, slots=True)
class EventReport:
    """Events, checked; answered under `reply_to` once stored. `historical`:
    sent as a batch of past events (its answer names no method)."""

    reply_to: str
    events: list[DeviceEvent]
    historical: bool
    received_at: int


@dataclass(frozen=True, slots=True)
class ReportRefused:
    """A report of `kind` ("telemetry", "attributes", "event") its dialect refused.

    `reply_to` is where the refusal is answered (None: the protocol has no
    answer for it); `method` an event's name when it could be read, for the
    answer to echo; `gateway`: the report came in a gateway's form, and is
    answered in it."""

    kind: str
    reply_to: str | None
    error: ThingsHubError
    received_at: int
    method: str | None = None
    gateway: bool = False


@fast_init
@dataclass(frozen=True, slots=True)
class NodeData:
    """What a gateway's report holds for one device of its tree (`fast_init`: one a device
    of a message): `path` is the sub-device addresses leading from the sending gateway
    down to it (empty: itself); the points, attributes or events of the report's kind."""

    path: tuple[str, ...]
    points: Sequence[Point] = ()  # `PointsAt` as decoded
    attributes: dict[str, object] | None = None
    events: tuple[DeviceEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class GatewayReport:
    """A gateway's report of `kind` ("telemetry", "attributes", "event") for
    itself and its sub-devices, checked whole; answered under `reply_to`
    (None: never answered) once stored."""

    kind: str
    reply_to: str | None
    nodes: tuple[NodeData, ...]
    received_at: int


@dataclass(frozen=True, slots=True)
class SubRegister:
    """One address a gateway asks to have as a sub-device: `model` names the
    product to create it in (None: the gateway's), `protocol` is kept as said."""

    sub_address: str
    model: str | None = None
    protocol: str | None = None


@dataclass(frozen=True, slots=True)
class SubRegisterRequest:
    """A gateway registers sub-devices (`problem`: why the request is unreadable;
    `invalid`: addresses refused as malformed, with why)."""

    registers: tuple[SubRegister, ...]
    invalid: tuple[tuple[str, str], ...] = ()
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class OtaProgress:
    """An OTA progress report, checked."""

    progress: Progress


@dataclass(frozen=True, slots=True)
class OtaInformReply:
    """A OneNET device's answer to an OTA notice, for the task part of `tid`
    (None: the answer named no tid it could have been given)."""

    tid: int | None
    code: int | None
    msg: str


@dataclass(frozen=True, slots=True)
class OtaProgressRefused:
    """An OTA progress report its dialect refused (counted, never answered)."""

    error: ThingsHubError


@dataclass(frozen=True, slots=True)
class CallAnswer:
    """A device's answer to a call (`Call`) of `family` and `kind`, under its id.

    `payload` is kept as sent; `body` is what the dialect read from it for
    the application (None: the payload is the answer); `problem` says why
    the payload is not an answer its protocol allows (the call then fails);
    `limit` is the protocol's size limit for answers, if it has one, and
    `problem_code` the protocol's code for an unusable answer. `also` names
    the other kinds of call the answer may be for, where one answer topic
    serves several (OneNET's `property/set_reply` answers property sets and
    desired values pushed alike); the call's id tells which it is."""

    family: str
    kind: str
    call_id: str
    payload: bytes
    body: dict[str, Any] | None = None
    problem: str | None = None
    limit: AnswerLimit | None = None
    problem_code: int | None = None
    also: tuple[str, ...] = ()


# ---------------------------------------------------------------- the thing model


@fast_init
@dataclass(frozen=True, slots=True)
class ThingValue:
    """One reported value: a property's value or an event's output, at `ts` (Unix
    ms; None: when the platform received it). One per value: `fast_init`."""

    identifier: str
    value: Any
    ts: int | None


@fast_init
@dataclass(frozen=True, slots=True)
class ThingData:
    """What one device reports in a post: its properties and its events.

    `identity` is (product id, device name) when the post names a device
    (its sender or one of its sub-devices), None for the sender itself."""

    identity: tuple[str, str] | None
    properties: Sequence[ThingValue]  # a property post's: `ValuesAt` (core/thingvalues)
    events: tuple[ThingValue, ...]


@fast_init
@dataclass(frozen=True, slots=True)
class ThingPost:
    """A post of properties and/or events, answered under `reply_to` once stored.

    `request` names it for the answer ("property/post", "event/post",
    "pack/post", "history/post")."""

    request: str
    request_id: str
    data: tuple[ThingData, ...]
    received_at: int


@dataclass(frozen=True, slots=True)
class DesiredGet:
    """A device asks for desired values (an empty tuple: all of them)."""

    request_id: str
    identifiers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DesiredDelete:
    """A device deletes desired values: each identifier with the version it saw
    (None: whatever the version)."""

    request_id: str
    versions: dict[str, int | None]


@dataclass(frozen=True, slots=True)
class ThingRefused:
    """A thing-model request its dialect refused; answered with the error's code."""

    request: str
    request_id: str
    error: ThingsHubError


@dataclass(frozen=True, slots=True)
class DataPoints:
    """Data points in the legacy form (OneNET `dp/post/json`), checked."""

    request_id: int
    points: list[Point]
    received_at: int


@dataclass(frozen=True, slots=True)
class DataPointsRefused:
    """Data points its dialect refused (`request_id` -1 when unreadable)."""

    request_id: int
    error: ThingsHubError


Inbound = (
    ImageUpdateRequest
    | ImageUpdateRefused
    | ImageGetRequest
    | TelemetryReport
    | AttributesReport
    | EventReport
    | ReportRefused
    | OtaProgress
    | OtaProgressRefused
    | CallAnswer
    | ThingPost
    | DesiredGet
    | DesiredDelete
    | ThingRefused
    | DataPoints
    | DataPointsRefused
    | GatewayReport
    | SubRegisterRequest
)


# ---------------------------------------------------------------- platform -> device


@dataclass(frozen=True, slots=True)
class ImageAccepted:
    """A device's update was applied: `applied` holds the update and the new image."""

    applied: Applied


@dataclass(frozen=True, slots=True)
class ImageRejected:
    """A device's `request` ("update" or "get") was refused with an image code."""

    request: str
    request_id: RequestId
    err_code: int
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class ImageDelta:
    """The image's desired state differs from its reported state: tell the device."""

    image: Image


@dataclass(frozen=True, slots=True)
class ImageSnapshot:
    """The answer to a device asking for its image."""

    request_id: RequestId
    image: Image


@dataclass(frozen=True, slots=True)
class Call:
    """A request that waits for the device's answer (`CallAnswer`) under `call_id`.

    `target` names what the call is for where its kind needs one (a service's
    identifier)."""

    family: str
    kind: str
    call_id: str
    body: bytes
    target: str | None = None


@dataclass(frozen=True, slots=True)
class PresenceNotice:
    """The device is now online or offline (for whoever listens to its presence)."""

    online: bool


@fast_init
@dataclass(frozen=True, slots=True)
class ThingReply:
    """The answer to a device's thing-model request: `code` (200 or the rule
    broken, core/thingmodel.CODES), a `hint` saying what was wrong, and
    `data` where the request asks for some."""

    request: str
    request_id: str
    code: int
    hint: str | None = None
    data: Any = None


@dataclass(frozen=True, slots=True)
class DataPointsAck:
    """The answer to legacy data points: stored (`error` None) or refused."""

    request_id: int
    error: ThingsHubError | None = None


@dataclass(frozen=True, slots=True)
class AnswerVerdict:
    """The platform's verdict on a device's answer (core/commands.py's verdicts);
    a protocol may announce it to the device or not."""

    family: str
    call_id: str
    verdict: str


@dataclass(frozen=True, slots=True)
class AttributesGet:
    """`devices/attributes/get/{dn}`: {"keys": [...]} (empty: all)."""

    keys: list[str]


@dataclass(frozen=True, slots=True)
class Control:
    """`devices/telemetry/control/{dn}`: values to apply, fire and forget."""

    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ReportAck:
    """The platform's answer to a report of `kind` ("attributes", "event")
    under `reply_to`: stored (`error` None) or not, and why. `method`: the
    event's name to echo; `at`: the platform's clock (ms); `gateway`: the
    report was a gateway's (answered in that form); `note`: what the success
    message says besides (sub-device addresses skipped, say)."""

    kind: str
    reply_to: str
    at: int
    error: ThingsHubError | None = None
    method: str | None = None
    gateway: bool = False
    note: str | None = None


@dataclass(frozen=True, slots=True)
class ViaGateway:
    """A message for a sub-device, carried by its top gateway's connection:
    `path` is the addresses leading from that gateway down to the device
    (empty: the gateway itself, in the gateway's form; also empty for a
    protocol that names the device by its ids), `target` the device itself
    (None: the gateway). `gateway`: the device has sub-devices of its own, so
    it is addressed as a gateway (firmware of a sub-gateway looks for its
    requests where its own reports go); the service reads that from
    storage, the dialect only words it."""

    path: tuple[str, ...]
    message: Call | Control | AttributesGet
    target: tuple[str, str] | None = None
    gateway: bool = False


@dataclass(frozen=True, slots=True)
class RegisterResult:
    """The fate of one address of a `SubRegisterRequest`: `errcode` "" (a new
    sub-device), "exists" (a child already) or "INVALID_PARAM", and why."""

    sub_address: str
    errcode: str
    message: str


@dataclass(frozen=True, slots=True)
class SubRegisterReply:
    """The answer to a gateway's registration (`ok` False: its payload was unreadable)."""

    ok: bool
    message: str
    results: tuple[RegisterResult, ...] = ()


@dataclass(frozen=True, slots=True)
class OtaInform:
    """A device has an upgrade to make: task `task_id`, `firmware` at `url`,
    signed with `sign_method` (its digest of the file)."""

    task_id: str
    firmware: Firmware
    sign_method: str
    url: str
    #: The protocol family it is for ("thingspanel", "onenet"): each has its topic.
    family: str = "thingspanel"
    #: OneNET's task id of the device's part.
    tid: int | None = None


Outbound = (
    ImageAccepted
    | ImageRejected
    | ImageDelta
    | ImageSnapshot
    | Call
    | AnswerVerdict
    | AttributesGet
    | Control
    | ReportAck
    | OtaInform
    | ThingReply
    | DataPointsAck
    | PresenceNotice
    | ViaGateway
    | SubRegisterReply
    | TopologyNotice
)


_REPORT = tuple(TelemetryReport.__dict__[n].__set__ for n in ("points", "received_at"))
