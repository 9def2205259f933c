"""The rollout of OTA tasks and each change of a device's state: OtaService's base.

Rules (docs/protocols.md section 4; services/ota.py has the service's own):
- A device is informed (QoS 0, `ota/devices/inform/{device_number}`, or
  OneNET's `$sys/{pid}/{name}/ota/inform` when it listens there instead)
  when its task has a rollout token for it and it is online and subscribed
  to that topic: by the rollout loop (every `tick` seconds), at once when
  the task is created, and right after it subscribes to the topic. A
  device that was informed but had not started reporting is informed again
  when it subscribes again (a QoS 0 inform may have been lost); that costs
  no token. A OneNET device that asks (`check`) while QUEUED is informed by
  its question, when the pace allows. Only the node running the rollout
  job informs QUEUED devices (`paces`).
- Each round also times out devices informed `device_timeout_s` ago that
  did not reach a final state; a task whose devices are all final is
  COMPLETED.
- A change of a device is kept in memory (ota_tasks.Running), announced as
  `OtaProgressed` (unless read from the database: the node that made it
  announced it) and written through storage from the device's state at the
  moment the write is queued, so writes queued later always carry a state
  at least as new.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any

from thingshub.core import ota
from thingshub.core.events import OtaProgressed
from thingshub.core.messages import DeviceRef, OtaInform
from thingshub.core.model import OtaDevice
from thingshub.core.ports import Clock, DeviceLink, EventBus, OtaRepo
from thingshub.services.jobs import Job
from thingshub.services.ota_tasks import Running, RunningTask, summary

log = logging.getLogger("thingshub.ota")

#: The families an inform is tried in, in order, until a connection takes it.
INFORM_FAMILIES = ("thingspanel", "onenet")


class OtaRollout:
    """What OtaService holds (set by its constructor) and the changes of it that
    its parts share."""

    repo: OtaRepo
    link: DeviceLink
    clock: Clock
    bus: EventBus
    secret: bytes
    public_url: str
    max_token_lifetime_s: int
    running: Running
    job: Job
    shared: bool
    accepted: int
    informs: int
    _tasks: dict[str, RunningTask]
    _unsubscribed: set[tuple[str, str]]
    _writes: set[asyncio.Task[Any]]

    @property
    def paces(self) -> bool:
        """Whether this node informs QUEUED devices (it runs the rollout job)."""
        return self.job.holding or not self.shared

    def step(self) -> None:
        """One round of the rollout loop: timeouts, informs, completions."""
        now, mono = self.clock.now_ms(), self.clock.monotonic_ms()
        for t in list(self._tasks.values()):
            if t.task.status != ota.RUNNING:
                continue
            for name in [n for n in t.active if t.deadlines.get(n, mono + 1) <= mono]:
                self._end(t, name, ota.TIMED_OUT, "", now)
            self._rollout(t, now)
            if t.remaining == 0:
                self._later(self._complete(t))

    def device_subscribed(self, ref: DeviceRef, filters: list[str]) -> None:
        """After SUBACK: inform the device if it now listens for its informs."""
        if not self.link.listens(ref, filters, OtaInform):
            return
        self._unsubscribed.discard((ref.product_id, ref.name))
        now = self.clock.now_ms()
        for task_id in list(self.running.modules(ref.product_id, ref.name).values()):
            t = self._tasks.get(task_id)
            if t is None or t.task.status != ota.RUNNING:
                continue
            t.numbers[ref.name] = ref.device_number
            state = t.devices[ref.name].state
            mono = self.clock.monotonic_ms()
            if state == ota.QUEUED and self.paces and t.rollout.available(mono):
                if self._inform(t, ref.name, now):
                    t.rollout.take(mono)
            elif state == ota.INFORMED:
                self._inform(t, ref.name, now)  # again: the first may have been lost

    def download_url(self, task_id: str, name: str, informed_at: int, timeout_s: int) -> str:
        expires = ota.token_expiry(informed_at, timeout_s, self.max_token_lifetime_s)
        firmware_id = self._tasks[task_id].task.firmware_id
        token = ota.sign_token(self.secret, task_id, name, firmware_id, expires)
        return f"{self.public_url}/ota/download/{task_id}/{name}?token={token}"

    def _set(self, t: RunningTask, device: OtaDevice, now: int, *, announce: bool = True) -> None:
        """Record a device's new state in memory, and announce it (a state read
        from the database was announced by the node that made it)."""
        self.running.settle(t, device, self.clock)
        if announce:
            self.bus.publish(
                OtaProgressed(
                    t.task.product_id, device.name, t.task.id, device.state, device.step, now
                )
            )

    def _end(
        self, t: RunningTask, name: str, state: str, desc: str, now: int, *, save: bool = True
    ) -> None:
        """CANCELED or TIMED_OUT, unless the device is final already."""
        device = t.devices[name]
        if state == ota.TIMED_OUT:
            ended = ota.timed_out(device, t.task.device_timeout_s, now)
        else:
            ended = ota.ended(device, state, desc, now)
        if ended is not device:
            self._set(t, ended, now)
            if save:
                self._later(self._save(t.task.id, name))

    def _rollout(self, t: RunningTask, now: int) -> None:
        """Inform the queued devices that can be, as far as the pace allows."""
        pid = t.task.product_id
        mono = self.clock.monotonic_ms()
        for name in list(t.queued):
            if not t.rollout.available(mono):
                return
            if (pid, name) in self._unsubscribed or not self.link.is_online(pid, name):
                continue
            if self._inform(t, name, now):
                t.rollout.take(mono)

    def _inform(self, t: RunningTask, name: str, now: int) -> bool:
        device = t.devices[name]
        number = t.numbers.get(name)
        if number is None or not self.public_url:  # the URL is known once HTTP listens
            return False
        informed = ota.informed(device, now)
        assert informed.informed_at is not None
        url = self.download_url(t.task.id, name, informed.informed_at, t.task.device_timeout_s)
        ref = DeviceRef(t.task.product_id, name, number)
        for family in INFORM_FAMILIES:
            inform = OtaInform(t.task.id, t.firmware, t.task.sign_method, url, family, device.tid)
            if self.link.send(ref, inform):
                break
        else:
            self._unsubscribed.add((t.task.product_id, name))
            return False
        self.informs += 1
        if device.state == ota.QUEUED:
            self._set(t, replace(informed, protocol=family), now)
            self._later(self._save(t.task.id, name))
        return True

    def inform_by_request(self, t: RunningTask, name: str, protocol: str) -> bool:
        """A QUEUED device asks for its task: informed now if the rollout pace allows."""
        now, mono = self.clock.now_ms(), self.clock.monotonic_ms()
        if t.devices[name].state != ota.QUEUED or not t.rollout.available(mono):
            return False
        t.rollout.take(mono)
        self._set(t, replace(ota.informed(t.devices[name], now), protocol=protocol), now)
        self._later(self._save(t.task.id, name))
        return True

    async def update(self, t: RunningTask, device: OtaDevice) -> None:
        """Record a device's new state (from OneNET's API), durably; complete its task
        if that was the last device under way."""
        if device == t.devices[device.name]:
            return
        self._set(t, device, self.clock.now_ms())
        self.accepted += 1
        await self._save(t.task.id, device.name)
        if t.remaining == 0:
            await self._complete(t)

    async def _save(self, task_id: str, name: str) -> None:
        """Write a device's current state (nothing if its task is no longer held)."""
        t = self._tasks.get(task_id)
        if t is not None:
            await self.repo.save_device(t.devices[name])

    async def _complete(self, t: RunningTask) -> None:
        if t.task.status != ota.RUNNING or self._tasks.get(t.task.id) is not t:
            return
        now = self.clock.now_ms()
        t.task = replace(t.task, status=ota.COMPLETED, finished_at=now)
        try:
            await self.repo.finish_task(t.task.id, ota.COMPLETED, now, list(t.devices.values()))
        finally:
            self._tasks.pop(t.task.id, None)
        log.info("OTA task %s completed: %s", t.task.id, summary(t))

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._writes.add(task)
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[Any]) -> None:
        self._writes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("recording OTA state failed: %r", task.exception())
