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
- `Running` holds the running tasks, and indexes each device not yet final
  by (product, name) and module, and by its OneNET tid: a device has at most
  one running task per module, and a tid names one device's part.
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


class Running:
    """The RUNNING tasks held, with the indexes of their devices not yet final."""

    def __init__(self) -> None:
        self.tasks: dict[str, RunningTask] = {}
        self._by_device: dict[tuple[str, str], dict[str, str]] = {}  # -> module -> task id
        self._tids: dict[int, tuple[str, str]] = {}  # tid -> (task id, name)

    def modules(self, product_id: str, name: str) -> dict[str, str]:
        """module -> the running task upgrading it on this device."""
        return self._by_device.get((product_id, name), {})

    def track(self, t: RunningTask, device: OtaDevice, clock: Clock) -> None:
        """Index a non-final device of a running task."""
        if device.state in ota.FINAL:
            return
        if device.tid is not None:
            self._tids[device.tid] = (t.task.id, device.name)
        self._by_device.setdefault((t.task.product_id, device.name), {})[t.task.module] = t.task.id
        if device.state == ota.QUEUED:
            t.queued[device.name] = None
        else:
            t.active.add(device.name)
            t.deadline(device, clock)

    def settle(self, t: RunningTask, device: OtaDevice, clock: Clock) -> None:
        """Keep `device`, the new state of one of `t`'s devices, and its indexes."""
        name = device.name
        t.devices[name] = device
        t.queued.pop(name, None)
        if device.state in ota.ACTIVE:
            t.active.add(name)
            t.deadline(device, clock)
        else:
            t.active.discard(name)
            t.deadlines.pop(name, None)
        if device.state not in ota.FINAL:
            return
        modules = self._by_device.get((t.task.product_id, name))
        if modules is not None and modules.get(t.task.module) == t.task.id:
            del modules[t.task.module]
            if not modules:
                del self._by_device[(t.task.product_id, name)]
        t.numbers.pop(name, None)
        if device.tid is not None:
            self._tids.pop(device.tid, None)

    def untrack(self, t: RunningTask) -> None:
        """Forget the devices of a task no longer held (it ended on another node)."""
        for name in [*t.queued, *t.active]:
            modules = self._by_device.get((t.task.product_id, name))
            if modules is not None and modules.get(t.task.module) == t.task.id:
                del modules[t.task.module]
                if not modules:
                    del self._by_device[(t.task.product_id, name)]
            tid = t.devices[name].tid
            if tid is not None and self._tids.get(tid) == (t.task.id, name):
                del self._tids[tid]

    def running_of(self, product_id: str, name: str) -> list[RunningTask]:
        """The running tasks a device takes part in and is not final in, oldest first."""
        ids = self.modules(product_id, name).values()
        return sorted((self.tasks[i] for i in ids if i in self.tasks), key=lambda t: t.task.id)

    def by_tid(self, tid: int) -> tuple[RunningTask, str] | None:
        """The running task and device name of a tid still under way."""
        found = self._tids.get(tid)
        t = self.tasks.get(found[0]) if found is not None else None
        return None if t is None or found is None else (t, found[1])


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
