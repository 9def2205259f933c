"""OneNET's OTA API for devices, on the OTA tasks both families share.

Rules (field-protocols §4.2; the state rules are core/onenet_ota.py):
- A device names its part of a task by `tid`; a tid of another device is
  refused (errno 4), an unknown one is "no task" (11). A tid of a task that
  is no longer running is read from storage: its device is final, and
  answers 20 (22 if canceled). In a cluster, a tid of a running task this
  node does not hold yet (made on another node) has the task read first.
- `check` of a type picks the oldest running task of the device whose
  package is of that type. It records the version the device runs; a
  version equal to the task's target completes the device's part
  (SUCCEEDED, as OneNET does), and `check` then says "no task". A device
  still QUEUED is informed by its check when the rollout pace allows;
  otherwise there is no task for it yet.
- Reported versions (`f_version`, `s_version`) are kept with the device and
  complete a running task of that type whose target they equal.
- Every step of a device through this API marks its part `onenet`.
- Writes are durable before the answer (the service awaits them).
"""

from __future__ import annotations

from dataclasses import replace

from thingshub.core import onenet_ota as rules
from thingshub.core import ota
from thingshub.core.errors import Forbidden, NotFound, ThingsHubError
from thingshub.core.messages import DeviceRef, OtaInformReply
from thingshub.core.model import Firmware, OtaDevice, OtaTask
from thingshub.services.devices import DeviceService
from thingshub.services.ota import OtaService
from thingshub.services.ota_tasks import RunningTask

REPORTED_DESC = "the device reports the target version"
#: Why an answer to a notice changed nothing (`OtaService.ignored`).
IGNORED_INFORM_REPLY = "inform_reply_without_task"


class OneNetOta:
    def __init__(self, ota_service: OtaService, devices: DeviceService) -> None:
        self.ota = ota_service
        self.devices = devices

    # ------------------------------------------------------------ versions

    async def versions(self, product_id: str, name: str) -> tuple[str | None, str | None]:
        return await self.devices.versions(product_id, name)

    async def report_versions(
        self, product_id: str, name: str, f_version: object, s_version: object
    ) -> None:
        f = None if f_version is None else rules.check_version(f_version)
        s = None if s_version is None else rules.check_version(s_version)
        await self._store_versions(product_id, name, f, s)
        for version, kind in ((f, 1), (s, 2)):
            t = self._task_of_type(product_id, name, kind) if version is not None else None
            if t is not None and version == t.task.version:
                await self._reached(t, name)

    async def _store_versions(
        self, product_id: str, name: str, f: str | None, s: str | None
    ) -> None:
        if not await self.devices.storage.devices.set_versions(product_id, name, f, s):
            raise rules.error(NotFound, rules.AUTH)

    # ------------------------------------------------------------ tasks

    async def check(
        self, product_id: str, name: str, kind: str | None, version: object
    ) -> tuple[OtaTask, Firmware, OtaDevice]:
        """The task the device has to carry out (NotFound, errno 11: none)."""
        task_type = rules.check_type(kind)
        current = rules.check_version(version)
        f, s = (current, None) if task_type == 1 else (None, current)
        await self._store_versions(product_id, name, f, s)
        t = self._task_of_type(product_id, name, task_type)
        if t is None:
            raise rules.error(NotFound, rules.NO_TASK)
        if current == t.task.version:
            await self._reached(t, name)
            raise rules.error(NotFound, rules.NO_TASK)
        device = t.devices[name]
        if device.state == ota.QUEUED and not self.ota.inform_by_request(t, name, rules.PROTOCOL):
            raise rules.error(NotFound, rules.NO_TASK)
        await self.ota.update(t, _marked(t.devices[name]))
        return t.task, t.firmware, t.devices[name]

    async def state(self, product_id: str, name: str, tid: int) -> OtaDevice:
        """Where the device's part stands (running or not)."""
        running, device = await self._locate(product_id, name, tid)
        if running is not None:
            await self.ota.update(running, _marked(device))
            return running.devices[name]
        return device

    async def download(self, product_id: str, name: str, tid: int) -> Firmware:
        """The package the device may download now; its part is under way."""
        running, device = await self._locate(product_id, name, tid)
        if running is None:
            rules.check_final(device)
            raise rules.error(NotFound, rules.NO_TASK)
        now = self.ota.clock.now_ms()
        await self.ota.update(running, _marked(rules.downloading(device, now)))
        self.ota.downloads["served"] += 1
        return running.firmware

    async def step(self, product_id: str, name: str, tid: int, step: int) -> None:
        running, device = await self._locate(product_id, name, tid)
        if running is None:
            rules.check_final(device)
            raise rules.error(NotFound, rules.NO_TASK)
        moved = _marked(rules.stepped(device, step, self.ota.clock.now_ms()))
        await self.ota.update(running, moved)
        if moved.state == ota.SUCCEEDED:
            await self._installed(running, name)

    async def inform_reply(self, ref: DeviceRef, reply: OtaInformReply) -> None:
        """A device's answer to its notice is noted in its entry's `desc` (field-
        protocols §4.1); one that names no part of its running tasks is counted."""
        try:
            if reply.tid is None:
                raise rules.error(NotFound, rules.NO_TASK)
            running, device = await self._locate(ref.product_id, ref.name, reply.tid)
        except ThingsHubError:
            self.ota.ignored[IGNORED_INFORM_REPLY] += 1
            return
        if running is None:  # ended meanwhile: its entries are final
            self.ota.ignored[IGNORED_INFORM_REPLY] += 1
            return
        desc = f"inform_reply code {reply.code}: {reply.msg}".rstrip(": ")
        await self.ota.update(running, replace(_marked(device), desc=desc))

    # ------------------------------------------------------------ the machinery

    def _task_of_type(self, product_id: str, name: str, kind: int) -> RunningTask | None:
        for t in self.ota.running.running_of(product_id, name):
            if rules.task_type(t.task.module) == kind:
                return t
        return None

    async def _reached(self, t: RunningTask, name: str) -> None:
        """The device runs the task's target: its part has succeeded."""
        device = t.devices[name]
        now = self.ota.clock.now_ms()
        done = replace(
            _marked(device),
            state=ota.SUCCEEDED,
            desc=REPORTED_DESC,
            updated_at=now,
            finished_at=now,
        )
        await self.ota.update(t, done)

    async def _installed(self, t: RunningTask, name: str) -> None:
        version = t.task.version
        f, s = (version, None) if rules.task_type(t.task.module) == 1 else (None, version)
        await self.devices.storage.devices.set_versions(t.task.product_id, name, f, s)

    async def _locate(
        self, product_id: str, name: str, tid: int
    ) -> tuple[RunningTask | None, OtaDevice]:
        """The running task (None once it has ended) and the device entry of a tid."""
        held = self.ota.running.by_tid(tid)
        if held is not None:
            t, owner = held
            if (t.task.product_id, owner) != (product_id, name):
                raise rules.error(Forbidden, rules.OTHER_DEVICE)
            return t, t.devices[owner]
        stored = await self.ota.repo.by_tid(tid)
        if stored is None:
            raise rules.error(NotFound, rules.NO_TASK)
        task, device = stored
        if task.status == ota.RUNNING and self.ota.shared:  # made or moved by another node
            await self.ota.refresh(task.id)
            if self.ota.running.by_tid(tid) is not None:
                return await self._locate(product_id, name, tid)
        if (task.product_id, device.name) != (product_id, name):
            raise rules.error(Forbidden, rules.OTHER_DEVICE)
        return None, device


def _marked(device: OtaDevice) -> OtaDevice:
    """The entry as one of a device taking part through OneNET."""
    return device if device.protocol == rules.PROTOCOL else replace(device, protocol=rules.PROTOCOL)
