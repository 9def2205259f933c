"""Things that happened, as values: what services announce and others react to.

Rules:
- Events are facts in the past tense, frozen, and carry only ids and values
  (no live objects), so any bus can carry them between processes.
- `kind` names the event for subscribers and for the live stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from thingshub.core.model import DeviceEvent, Point


@dataclass(frozen=True, slots=True)
class DeviceDeleted:
    kind: ClassVar[str] = "device_deleted"
    product_id: str
    name: str
    device_number: str
    username: str
    access_token: str | None = None


@dataclass(frozen=True, slots=True)
class PresenceChanged:
    kind: ClassVar[str] = "presence"
    product_id: str
    name: str
    online: bool
    ts: int  # ms


@dataclass(frozen=True, slots=True)
class ImageChanged:
    kind: ClassVar[str] = "image"
    product_id: str
    name: str
    version: int
    state: dict[str, object]  # {"desired", "reported", "delta"?}
    ts: int  # ms


@dataclass(frozen=True, slots=True)
class AttributesReported:
    kind: ClassVar[str] = "attributes"
    product_id: str
    name: str
    values: dict[str, object]
    ts: int  # ms


@dataclass(frozen=True, slots=True)
class CommandFinished:
    kind: ClassVar[str] = "command"
    product_id: str
    name: str
    cmd_id: str
    family: str
    status: str
    ts: int  # ms


@dataclass(frozen=True, slots=True)
class TelemetryReceived:
    kind: ClassVar[str] = "telemetry"
    product_id: str
    name: str
    points: list[Point]
    ts: int  # ms, when received


@dataclass(frozen=True, slots=True)
class EventsReceived:
    kind: ClassVar[str] = "event"
    product_id: str
    name: str
    events: list[DeviceEvent]
    ts: int  # ms, when received


@dataclass(frozen=True, slots=True)
class OtaProgressed:
    """A device of an OTA task changed state or step (core/ota.py)."""

    kind: ClassVar[str] = "ota"
    product_id: str
    name: str
    task_id: str
    state: str
    step: int | None
    ts: int  # ms


@dataclass(frozen=True, slots=True)
class DesiredChanged:
    """Desired values of a device were set or deleted: each identifier's
    {"value", "version"}, or None where it was deleted."""

    kind: ClassVar[str] = "desired"
    product_id: str
    name: str
    values: dict[str, dict[str, object] | None]
    ts: int  # ms


@dataclass(frozen=True, slots=True)
class TopologyChanged:
    """A device was bound to a gateway, moved, or unbound (`gateway` None);
    `previous` is the gateway it had."""

    kind: ClassVar[str] = "topology"
    product_id: str
    name: str
    gateway: tuple[str, str] | None
    sub_address: str | None
    previous: tuple[str, str] | None
    ts: int  # ms
    #: Made by the gateway itself (it knows already), not by an application.
    by_gateway: bool = False


Event = (
    DeviceDeleted
    | PresenceChanged
    | ImageChanged
    | AttributesReported
    | CommandFinished
    | TelemetryReceived
    | EventsReceived
    | OtaProgressed
    | DesiredChanged
    | TopologyChanged
)
