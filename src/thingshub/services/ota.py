"""OTA tasks: informing devices at the rollout pace, their progress, timeouts,
cancellation, and who may download what.

Rules (docs/protocols.md section 4; the state machine and tokens are core/ota.py):
- Running tasks live in memory (loaded at start: a stopped server resumes
  its rollouts) and every change is written through storage. A device's
  row is written from its current state at the moment the write is queued,
  so writes queued later always carry a state at least as new; progress
  reports are acknowledged (QoS 1) only once their state is durable.
- Informing devices at the pace, timeouts, and how each change of a device
  is kept, announced and written: ota_rollout.py (this class's base).
- A device has at most one running task per module: a task naming a device
  busy with the same module is refused (409).
- Cancelling turns the non-final devices to CANCELED; a deleted device's
  part of its tasks is canceled too.
- Progress that changes nothing is counted in `ignored` by reason, never an
  error. Every change of a device is announced as `OtaProgressed`.
- Downloads: the URL carries a token bound to the task, the device and the
  file; ota_tasks.py says when it is good.
- Both families take part in one task: each device's part has a OneNET
  `tid` (positive; storage gives them in the task's transaction, so that
  processes sharing a database never give one twice) and the `protocol` through
  which it was informed or asked (an inform goes on ThingsPanel's topic if
  the device listens there, else on OneNET's `ota/inform`); OneNET's HTTP
  API (onenet_ota.py) moves the same states.
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
from dataclasses import replace
from pathlib import Path
from typing import Any

from thingshub.core import ota
from thingshub.core.errors import Conflict, Forbidden, InvalidRequest, NotFound
from thingshub.core.events import DeviceDeleted, Event, PresenceChanged
from thingshub.core.messages import DeviceRef, OtaProgress, OtaProgressRefused
from thingshub.core.model import Firmware, OtaDevice, OtaTask, Page
from thingshub.core.ports import Clock, DeviceLink, EventBus, OtaRepo
from thingshub.services.background import cancel
from thingshub.services.devices import DeviceService
from thingshub.services.firmware import FirmwareService
from thingshub.services.jobs import Job, Jobs
from thingshub.services.ota_rollout import OtaRollout
from thingshub.services.ota_tasks import (
    Running,
    RunningTask,
    TaskView,
    authorize,
    device_names,
    view,
)
from thingshub.services.products import check_limit, decode_cursor, encode_cursor

log = logging.getLogger("thingshub.ota")

#: Longest life of a download token, whatever the device timeout.
MAX_TOKEN_LIFETIME_S = 86_400


class OtaService(OtaRollout):
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
        #: The running tasks, by id and by device.
        self.running = Running()
        self._tasks = self.running.tasks
        self._unsubscribed: set[tuple[str, str]] = set()  # online, not listening when last tried
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
            self.running.track(t, d, self.clock)
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
                self.running.untrack(gone)
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
            busy = [n for n in numbers if firmware.module in self.running.modules(product_id, n)]
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
            first_tid = await self.repo.add_task(task, rows)  # tids unique across processes
            rows = [replace(d, tid=first_tid + i) for i, d in enumerate(rows)]
            # The pace starts with the rollout, once the task is stored: a bucket
            # started before that write would have gained a fraction of a device
            # by the first inform, and let the second come early.
            started = self.clock.now_ms()
            rollout = ota.Rollout(rate, self.clock.monotonic_ms())
            t = RunningTask(task, firmware, {d.name: d for d in rows}, numbers, rollout)
            for d in rows:
                self.running.track(t, d, self.clock)
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
        modules = self.running.modules(ref.product_id, ref.name)
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
        task_id = self.running.modules(ref.product_id, ref.name).get(message.progress.module)
        t = self._tasks.get(task_id) if task_id is not None else None
        return t is not None and t.devices[ref.name].state in ota.ACTIVE

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

    # ------------------------------------------------------------ events

    def _on_event(self, event: Event) -> None:
        if isinstance(event, PresenceChanged):
            self._unsubscribed.discard((event.product_id, event.name))
        elif isinstance(event, DeviceDeleted):
            self._unsubscribed.discard((event.product_id, event.name))
            now = self.clock.now_ms()
            for task_id in list(self.running.modules(event.product_id, event.name).values()):
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
