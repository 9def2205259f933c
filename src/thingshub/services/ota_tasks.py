"""The OTA tasks the service holds while they run, and how they are shown.

Rules:
- A running task keeps, beside its record, its devices in rollout order,
  the device numbers of those not yet final, the names still QUEUED (in
  order) and those under way (INFORMED, IN_PROGRESS): the rollout takes
  from the first, timeouts look at the second. A device's timeout is set
  on the monotonic clock when this process first sees it under way (from
  its `informed_at` and the wall clock then, never more than its whole
  time): a jump of the wall clock afterwards moves no deadline. The rollout
  pace is kept on the monotonic clock too, so a jump neither times every
  device out at once nor stalls the rollout.
- A view is a snapshot for the API and the console: the task and its devices.
- A download link is good while its device's upgrade is under way
  (INFORMED, IN_PROGRESS) in a running task, and until its token expires
  (core/ota.py signs and checks the token).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from thingshub.core import ota
from thingshub.core.errors import Forbidden
from thingshub.core.model import Firmware, OtaDevice, OtaTask
from thingshub.core.ports import Clock


@dataclass
class RunningTask:
    """A RUNNING task in memory."""

    task: OtaTask
    firmware: Firmware
    devices: dict[str, OtaDevice]  # rollout order
    numbers: dict[str, str]  # device name -> device number (non-final devices)
    rollout: ota.Rollout
    queued: dict[str, None] = field(default_factory=dict)  # QUEUED names, in order
    active: set[str] = field(default_factory=set)  # INFORMED and IN_PROGRESS names
    #: active name -> when it times out, on the monotonic clock (services/clock.py)
    deadlines: dict[str, int] = field(default_factory=dict)

    @property
    def remaining(self) -> int:
        return len(self.queued) + len(self.active)

    def deadline(self, device: OtaDevice, clock: Clock) -> None:
        """Set once when an active device times out, on the monotonic clock."""
        if device.name not in self.deadlines:
            left = ota.time_left_ms(device, self.task.device_timeout_s, clock.now_ms())
            if left is not None:
                self.deadlines[device.name] = clock.monotonic_ms() + left


@dataclass(frozen=True, slots=True)
class TaskView:
    task: OtaTask
    devices: list[OtaDevice]

    @property
    def counts(self) -> dict[str, int]:
        return ota.counts(self.devices)


def view(t: RunningTask) -> TaskView:
    return TaskView(t.task, list(t.devices.values()))


def device_names(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:5])
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return f"device{'s' if len(names) > 1 else ''} {shown}{more}"


def summary(t: RunningTask) -> str:
    counts = ota.counts(t.devices.values())
    return ", ".join(f"{n} {state}" for state, n in counts.items() if n)


def authorize(
    t: RunningTask | None, name: str, token: str | None, secret: bytes, now: int
) -> Firmware:
    """The package a device's download link may fetch now; Forbidden otherwise."""
    if t is None or t.task.status != ota.RUNNING or name not in t.devices:
        raise Forbidden("this download link is not valid (its task is not running)")
    ota.verify_token(secret, token, t.task.id, name, t.task.firmware_id, now)
    if t.devices[name].state not in ota.ACTIVE:
        raise Forbidden("this download link is not valid now (the upgrade is not under way)")
    return t.firmware
