"""OTA tasks: informing devices at the rollout pace, their progress, timeouts,
cancellation, and who may download what.

Rules (docs/protocols.md section 4; the state machine and tokens are core/ota.py):
- Running tasks live in memory (loaded at start: a stopped server resumes
  its rollouts) and every change is written through storage. A device's
  row is written from its current state at the moment the write is queued,
  so writes queued later always carry a state at least as new; progress
  reports are acknowledged (QoS 1) only once their state is durable.
- A device is informed (QoS 0, `ota/devices/inform/{device_number}`) when
  its task has a rollout token for it and it is online and subscribed to
  that topic: by the rollout loop (every `tick` seconds), at once when the
  task is created, and right after it subscribes to the topic. A device
  that was informed but had not started reporting is informed again when it
  subscribes again (a QoS 0 inform may have been lost); that costs no token.
- A device has at most one running task per module: a task naming a device
  busy with the same module is refused (409).
- The rollout loop also times out devices informed `device_timeout_s` ago
  that did not reach a final state (on the monotonic clock, as the pace:
  ota_tasks.py); a task whose devices are all final is
  COMPLETED. Cancelling turns the non-final devices to CANCELED; a deleted
  device's part of its tasks is canceled too.
- Progress that changes nothing is counted in `ignored` by reason, never an
  error. Every change of a device is announced as `OtaProgressed`.
- Downloads: the URL carries a token bound to the task, the device and the
  file; ota_tasks.py says when it is good.
- The rollout loop is a cluster-wide job (jobs.py, `ota`): one node of a
  cluster informs at the pace and times out, another takes over if it dies.
  Progress reports, creation and cancellation are handled on whichever node
  gets them. In a cluster (`shared`) other nodes change the tasks too, so
  every node reads the running tasks again every `tick` (`refresh`; the
  job's holder before each round): tasks created or ended elsewhere, and
  devices whose stored state is newer than the one in memory. A download
  refused by this node's memory, or a progress report it would ignore, is
  checked again after a refresh (at most one a tick for reports). Only the
  job's holder informs QUEUED devices (the pace is its bucket's); any node
  informs again a device it informed that subscribes again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

from thingshub.core import ota
from thingshub.core.errors import Conflict, Forbidden, InvalidRequest, NotFound
from thingshub.core.events import DeviceDeleted, Event, OtaProgressed, PresenceChanged
from thingshub.core.messages import DeviceRef, OtaInform, OtaProgress, OtaProgressRefused
from thingshub.core.model import Firmware, OtaDevice, OtaTask, Page
from thingshub.core.ports import Clock, DeviceLink, EventBus, OtaRepo
from thingshub.services.background import cancel
from thingshub.services.devices import DeviceService, check_limit, decode_cursor, encode_cursor
from thingshub.services.firmware import FirmwareService
from thingshub.services.jobs import Job, Jobs
from thingshub.services.ota_tasks import (
    RunningTask,
    TaskView,
    authorize,
    device_names,
    summary,
    view,
)

log = logging.getLogger("thingshub.ota")

Key = tuple[str, str]
#: Longest life of a download token, whatever the device timeout.
MAX_TOKEN_LIFETIME_S = 86_400


class OtaService:
    def __init__(
        self,
        repo: OtaRepo,
        firmware: FirmwareService,
        devices: DeviceService,
        link: DeviceLink,
        clock: Clock,
        bus: EventBus,
        jobs: Jobs,
        *,
        secret: bytes,
        public_url: str,
        tick: float = 1.0,
        max_token_lifetime_s: int = MAX_TOKEN_LIFETIME_S,
        shared: bool = False,
    ) -> None:
        self.repo = repo
        self.firmware = firmware
        self.devices = devices
        self.link = link
        self.clock = clock
        self.bus = bus
        self.secret = secret
        self.public_url = public_url.rstrip("/")
        #: Seconds between two rounds of the rollout loop (informs and timeouts).
        self.tick = tick
        self.max_token_lifetime_s = max_token_lifetime_s
        self._tasks: dict[str, RunningTask] = {}
        self._by_device: dict[Key, dict[str, str]] = {}  # device -> module -> running task
        self._unsubscribed: set[Key] = set()  # online, but not listening when last tried
        self._lock = asyncio.Lock()  # creating and cancelling tasks
        #: Other nodes change the same tasks (a cluster): see the module rules.
        self.shared = shared
        self.job: Job = jobs.job("ota", self._round, every=tick)
        self._following: asyncio.Task[None] | None = None
        self._refreshed_at = 0.0  # monotonic time of the last refresh
        self._writes: set[asyncio.Task[Any]] = set()
        self._ids = ota.IdClock()
        #: Progress reports that changed nothing, by reason (core/ota.IGNORE_REASONS).
        self.ignored: Counter[str] = Counter()
        self.accepted = 0
        self.informs = 0
        self.downloads: Counter[str] = Counter()  # "served", "refused"
        bus.subscribe(self._on_event, [DeviceDeleted, PresenceChanged])

    @property
    def running_count(self) -> int:
        return sum(1 for t in self._tasks.values() if t.task.status == ota.RUNNING)

    # ------------------------------------------------------------ life

    async def start(self) -> None:
        """Resume the running tasks, then start the rollout loop."""
        for task in await self.repo.running():
            try:
                await self._resume(task)
            except Exception:
                log.exception("resuming OTA task %s failed", task.id)
        await self.job.start()
        if self.shared:
            self._following = asyncio.get_running_loop().create_task(self._follow())

    @property
    def paces(self) -> bool:
        """Whether this node informs QUEUED devices (it runs the rollout job)."""
        return self.job.holding or not self.shared

    async def _resume(self, task: OtaTask) -> None:
        firmware = await self.firmware.repo.get(task.product_id, task.firmware_id)
        devices = await self.repo.devices(task.id)
        now = self.clock.now_ms()
        if firmware is None:  # cannot happen: a package in use is never deleted
            ended = [ota.ended(d, ota.CANCELED, "the firmware is gone", now) for d in devices]
            await self.repo.finish_task(task.id, ota.CANCELED, now, ended)
            return
        rollout = ota.Rollout(task.rollout_per_minute, self.clock.monotonic_ms())
        t = RunningTask(task, firmware, {d.name: d for d in devices}, {}, rollout)
        gone = []
        for d in devices:
            if d.state in ota.FINAL:
                continue
            device = await self.devices.find_device(task.product_id, d.name)
            if device is None:
                gone.append(d.name)
                continue
            t.numbers[d.name] = device.device_number
        if task.id in self._tasks:  # created here meanwhile (refresh)
            return
        for d in devices:
            self._track(t, d)
        self._tasks[task.id] = t
        for name in gone:
            self._end(t, name, ota.CANCELED, ota.DELETED_DESC, now)
        if t.remaining == 0:
            await self._complete(t)
        else:
            log.info("OTA task %s resumed (%d device(s) to go)", task.id, t.remaining)

    async def stop(self) -> None:
        await self.job.stop()
        await cancel(self._following)
        self._following = None
        if self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    async def _round(self) -> None:
        if self.shared:
            await self.refresh()
        self.step()

    async def _follow(self) -> None:
        """A node not running the job keeps up with the others' changes."""
        while True:
            await asyncio.sleep(self.tick)
            if self.job.holding:
                continue
            try:
                await self.refresh()
            except Exception:
                log.warning("reading the running OTA tasks again failed", exc_info=True)

    async def refresh(self, only: str | None = None) -> None:
        """Read the running tasks (or task `only`) again from the database: those
        created or ended by other nodes, and device states newer than ours."""
        self._refreshed_at = time.monotonic()
        known = set(self._tasks) if only is None else {only} & set(self._tasks)
        running = [t for t in await self.repo.running() if only is None or t.id == only]
        for task_id in known - {t.id for t in running}:  # ended elsewhere
            gone = self._tasks.pop(task_id, None)
            if gone is not None:
                self._untrack(gone)
        for task in running:
            t = self._tasks.get(task.id)
            if t is None:
                await self._resume(task)
                continue
            for stored in await self.repo.devices(task.id):
                mine = t.devices.get(stored.name)
                if mine is not None and ota_newer(stored, mine):
                    self._set(t, stored, stored.updated_at, announce=False)
            if t.remaining == 0:
                await self._complete(t)

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

    # ------------------------------------------------------------ tasks

    async def create_task(
        self,
        product_id: str,
        firmware_id: object,
        devices: object = None,
        everything: object = None,
        sign_method: object = None,
        rollout_per_minute: object = None,
        device_timeout_s: object = None,
    ) -> TaskView:
        sign = ota.check_sign_method(sign_method)
        rate = ota.check_rollout(rollout_per_minute)
        timeout = ota.check_device_timeout(device_timeout_s)
        targets = ota.check_targets(devices, everything)
        if not isinstance(firmware_id, str) or not firmware_id:
            raise InvalidRequest("firmware_id is required")
        await self.devices.get_product(product_id)
        firmware = await self.firmware.get(product_id, firmware_id)
        numbers = await self._numbers(product_id, targets)
        async with self._lock:
            busy = [
                n for n in numbers if firmware.module in self._by_device.get((product_id, n), {})
            ]
            if busy:
                raise Conflict(
                    f"{device_names(busy)} already upgrading module {firmware.module!r} in a"
                    " running task; cancel that task first"
                )
            now = self.clock.now_ms()
            task = OtaTask(
                id=ota.new_id(self._ids.next(now)),
                product_id=product_id,
                firmware_id=firmware.id,
                module=firmware.module,
                version=firmware.version,
                sign_method=sign,
                rollout_per_minute=rate,
                device_timeout_s=timeout,
                status=ota.RUNNING,
                created_at=now,
            )
            rows = [ota.queued(task.id, name, now) for name in numbers]
            await self.repo.add_task(task, rows)
            # The pace starts with the rollout, once the task is stored: a bucket
            # started before that write would have gained a fraction of a device
            # by the first inform, and let the second come early.
            started = self.clock.now_ms()
            rollout = ota.Rollout(rate, self.clock.monotonic_ms())
            t = RunningTask(task, firmware, {d.name: d for d in rows}, numbers, rollout)
            for d in rows:
                self._track(t, d)
            self._tasks[task.id] = t
        log.info(
            "OTA task %s: %d device(s) of %s to %s %s",
            task.id,
            len(rows),
            product_id,
            firmware.module,
            firmware.version,
        )
        if self.paces:
            self._rollout(t, started)
        return view(t)

    async def _numbers(self, product_id: str, targets: list[str] | None) -> dict[str, str]:
        """name -> device number of the devices a task targets (None: every device)."""
        numbers = await self.devices.numbers(product_id, targets)
        if targets is None and not numbers:
            raise Conflict(f"product {product_id!r} has no devices")
        if len(numbers) > ota.MAX_TASK_DEVICES:
            raise InvalidRequest(f"a task targets at most {ota.MAX_TASK_DEVICES} devices")
        return numbers

    async def get_task(self, product_id: str, task_id: str) -> TaskView:
        t = self._tasks.get(task_id)
        if t is not None and t.task.product_id == product_id:
            return view(t)
        task = await self.repo.get_task(product_id, task_id)
        if task is None:
            await self.devices.get_product(product_id)
            raise NotFound(f"OTA task {task_id!r} does not exist in product {product_id!r}")
        t = self._tasks.get(task_id)  # it may have been loaded meanwhile
        if t is not None:
            return view(t)
        return TaskView(task, await self.repo.devices(task_id))

    async def list_tasks(
        self, product_id: str, limit: int = 100, cursor: str | None = None
    ) -> Page[tuple[OtaTask, dict[str, int]]]:
        """A product's tasks, oldest first, each with how many devices are in each state."""
        check_limit(limit)
        await self.devices.get_product(product_id)
        tasks = await self.repo.list_tasks(product_id, limit + 1, decode_cursor(cursor))
        more = len(tasks) > limit
        tasks = tasks[:limit]
        stored = await self.repo.counts([t.id for t in tasks])
        items = []
        for task in tasks:
            running = self._tasks.get(task.id)
            if running is not None:
                items.append((running.task, ota.counts(running.devices.values())))
            else:
                items.append((task, {**dict.fromkeys(ota.STATES, 0), **stored.get(task.id, {})}))
        return Page(items, encode_cursor(tasks[-1].id) if more else None)

    async def cancel(self, product_id: str, task_id: str) -> TaskView:
        """Cancel a running task (its non-final devices become CANCELED); cancelling
        a canceled task changes nothing; a completed one is a Conflict."""
        async with self._lock:
            t = self._tasks.get(task_id)
            if t is None or t.task.product_id != product_id or t.task.status != ota.RUNNING:
                shown = await self.get_task(product_id, task_id)
                if shown.task.status == ota.CANCELED:
                    return shown
                raise Conflict(f"OTA task {task_id!r} is {shown.task.status} already")
            now = self.clock.now_ms()
            for name in [*t.queued, *t.active]:  # written below, with the task
                self._end(t, name, ota.CANCELED, ota.CANCELED_DESC, now, save=False)
            t.task = replace(t.task, status=ota.CANCELED, finished_at=now)
            try:
                await self.repo.finish_task(task_id, ota.CANCELED, now, list(t.devices.values()))
            finally:
                self._tasks.pop(task_id, None)
        log.info("OTA task %s canceled", task_id)
        return view(t)

    # ------------------------------------------------------------ from devices

    async def device_refused_progress(self, ref: DeviceRef, message: OtaProgressRefused) -> None:
        """A progress report its dialect refused: counted, nothing else."""
        if isinstance(message.error, InvalidRequest):
            self.ignored[ota.ignore_reason(message.error)] += 1
        else:
            self.ignored[ota.IGNORED_INVALID] += 1

    async def device_progress(self, ref: DeviceRef, message: OtaProgress) -> None:
        """A device's progress report: move its task along (or count why not)."""
        stale = time.monotonic() - self._refreshed_at >= self.tick
        if self.shared and stale and not self._expects(ref, message):
            await self.refresh()  # informed by another node a moment ago?
        progress = message.progress
        key = (ref.product_id, ref.name)
        modules = self._by_device.get(key)
        if not modules:
            self.ignored[ota.IGNORED_NO_TASK] += 1
            return
        task_id = modules.get(progress.module)
        t = self._tasks.get(task_id) if task_id is not None else None
        if t is None:
            self.ignored[ota.IGNORED_UNKNOWN_MODULE] += 1
            return
        device = t.devices[ref.name]
        if device.state not in ota.ACTIVE:
            self.ignored[ota.IGNORED_NOT_INFORMED] += 1
            return
        now = self.clock.now_ms()
        self._set(t, ota.progressed(device, progress, now), now)
        self.accepted += 1
        await self._save(t.task.id, ref.name)
        if t.remaining == 0:
            await self._complete(t)

    def _expects(self, ref: DeviceRef, message: OtaProgress) -> bool:
        """Whether this node's memory has the device's upgrade under way."""
        task_id = self._by_device.get((ref.product_id, ref.name), {}).get(message.progress.module)
        t = self._tasks.get(task_id) if task_id is not None else None
        return t is not None and t.devices[ref.name].state in ota.ACTIVE

    def device_subscribed(self, ref: DeviceRef, filters: list[str]) -> None:
        """After SUBACK: inform the device if it now listens for its informs."""
        if not self.link.listens(ref, filters, OtaInform):
            return
        key = (ref.product_id, ref.name)
        self._unsubscribed.discard(key)
        now = self.clock.now_ms()
        for task_id in list(self._by_device.get(key, {}).values()):
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

    # ------------------------------------------------------------ downloads

    async def authorize_download(self, task_id: str, name: str, token: str | None) -> Firmware:
        """The package a download link may fetch now; Forbidden otherwise."""
        try:
            try:
                firmware = self._authorize(task_id, name, token)
            except Forbidden:
                if not self.shared:
                    raise
                await self.refresh(task_id)  # another node may have informed it just now
                firmware = self._authorize(task_id, name, token)
        except Forbidden:
            self.downloads["refused"] += 1
            raise
        self.downloads["served"] += 1
        return firmware

    def _authorize(self, task_id: str, name: str, token: str | None) -> Firmware:
        t = self._tasks.get(task_id)
        return authorize(t, name, token, self.secret, self.clock.now_ms())

    def file_of(self, firmware: Firmware) -> Path:
        return self.firmware.path(firmware.id)

    def download_url(self, task_id: str, name: str, informed_at: int, timeout_s: int) -> str:
        expires = ota.token_expiry(informed_at, timeout_s, self.max_token_lifetime_s)
        firmware_id = self._tasks[task_id].task.firmware_id
        token = ota.sign_token(self.secret, task_id, name, firmware_id, expires)
        return f"{self.public_url}/ota/download/{task_id}/{name}?token={token}"

    # ------------------------------------------------------------ the machinery

    def _track(self, t: RunningTask, device: OtaDevice) -> None:
        """Index a non-final device of a running task."""
        if device.state in ota.FINAL:
            return
        self._by_device.setdefault((t.task.product_id, device.name), {})[t.task.module] = t.task.id
        if device.state == ota.QUEUED:
            t.queued[device.name] = None
        else:
            t.active.add(device.name)
            t.deadline(device, self.clock)

    def _untrack(self, t: RunningTask) -> None:
        """Forget the devices of a task no longer held."""
        for name in [*t.queued, *t.active]:
            modules = self._by_device.get((t.task.product_id, name))
            if modules is not None and modules.get(t.task.module) == t.task.id:
                del modules[t.task.module]
                if not modules:
                    del self._by_device[(t.task.product_id, name)]

    def _set(self, t: RunningTask, device: OtaDevice, now: int, *, announce: bool = True) -> None:
        """Record a device's new state in memory, and announce it (a state read
        from the database was announced by the node that made it)."""
        name = device.name
        t.devices[name] = device
        t.queued.pop(name, None)
        if device.state in ota.ACTIVE:
            t.active.add(name)
            t.deadline(device, self.clock)
        else:
            t.active.discard(name)
            t.deadlines.pop(name, None)
        if device.state in ota.FINAL:
            key = (t.task.product_id, name)
            modules = self._by_device.get(key)
            if modules is not None and modules.get(t.task.module) == t.task.id:
                del modules[t.task.module]
                if not modules:
                    del self._by_device[key]
            t.numbers.pop(name, None)
        if announce:
            self.bus.publish(
                OtaProgressed(t.task.product_id, name, t.task.id, device.state, device.step, now)
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
        inform = OtaInform(t.task.id, t.firmware, t.task.sign_method, url)
        if not self.link.send(DeviceRef(t.task.product_id, name, number), inform):
            self._unsubscribed.add((t.task.product_id, name))
            return False
        self.informs += 1
        if device.state == ota.QUEUED:
            self._set(t, informed, now)
            self._later(self._save(t.task.id, name))
        return True

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

    def _on_event(self, event: Event) -> None:
        if isinstance(event, PresenceChanged):
            self._unsubscribed.discard((event.product_id, event.name))
        elif isinstance(event, DeviceDeleted):
            key = (event.product_id, event.name)
            self._unsubscribed.discard(key)
            now = self.clock.now_ms()
            for task_id in list(self._by_device.get(key, {}).values()):
                t = self._tasks.get(task_id)
                if t is None or t.task.status != ota.RUNNING:
                    continue
                self._end(t, event.name, ota.CANCELED, ota.DELETED_DESC, now)
                if t.remaining == 0:
                    self._later(self._complete(t))


def ota_newer(stored: OtaDevice, mine: OtaDevice) -> bool:
    """Whether a device's stored state replaces the one in memory: a final state
    never changes, and otherwise the later change wins (ties: memory's)."""
    if mine.state in ota.FINAL:
        return False
    return stored.state in ota.FINAL or stored.updated_at > mine.updated_at
