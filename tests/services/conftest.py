"""The world of the service tests: the real services on the memory storage, the
real in-process bus and a fake clock, with no sockets.

- `world`: every service wired as app.py wires them, around `Devices`, the one
  part that is not ThingsHub: the devices themselves, behind the `DeviceLink`
  port.
- `Devices` records every message the platform sends, encodes it with the real
  dialects and delivers it only to a connected device subscribed to a matching
  filter (so `send` answers as the gateway does); devices publish wire
  messages (`publish`), decoded by the real dialects and routed to the service
  handlers as the gateway routes them; a device may be scripted to answer
  calls (`on_call`).
- Tests are `async def`: a hook below runs each with `asyncio.run`, under a
  time limit, so a hang fails instead of blocking the suite. Services'
  background loops are not started; tests drive them (`ota.step()`,
  `presence.flush()`) and move the fake clock.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from thingshub.bus.local import LocalBus
from thingshub.core.events import Event
from thingshub.core.messages import (
    AttributesReport,
    Call,
    CallAnswer,
    DeviceRef,
    EventReport,
    ImageGetRequest,
    ImageUpdateRefused,
    ImageUpdateRequest,
    OtaProgress,
    OtaProgressRefused,
    Outbound,
    ReportRefused,
    TelemetryReport,
)
from thingshub.core.model import Firmware, Point
from thingshub.core.ports import Storage
from thingshub.core.settlement import Settlement
from thingshub.core.topics import topic_matches
from thingshub.dialects.registry import Registry, default_registry
from thingshub.services.clock import FakeClock
from thingshub.services.commands import CommandService
from thingshub.services.credentials import new_pepper
from thingshub.services.devices import DeviceService
from thingshub.services.firmware import FirmwareService
from thingshub.services.images import ImageService
from thingshub.services.ingest import IngestService
from thingshub.services.jobs import Jobs
from thingshub.services.ota import OtaService
from thingshub.services.presence import PresenceService
from thingshub.storage import open_storage

#: Seconds an async test may run before it fails.
TEST_LIMIT = 30.0

#: The platform's address in download links.
PUBLIC_URL = "http://thingshub.test"


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an `async def` test on a new event loop."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}

    async def run() -> None:
        async with asyncio.timeout(TEST_LIMIT):
            await pyfuncitem.obj(**kwargs)

    asyncio.run(run())
    return True


Handler = Callable[[DeviceRef, Any], Awaitable[None]]
#: A device's script for calls: the (topic, payload) it publishes in answer, or None.
Script = Callable[[Call], tuple[str, bytes] | None]


class Devices:
    """The devices on the other side of the `DeviceLink` port."""

    def __init__(self, presence: PresenceService, dialects: Registry) -> None:
        self.presence = presence
        self.dialects = dialects
        #: Every message the platform sent, delivered or not, in order.
        self.sent: list[tuple[DeviceRef, Outbound]] = []
        #: What each device received: (topic, payload), in order.
        self.wire: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
        self.handlers: dict[type, Handler] = {}
        #: What `heard` says: False as a broker where no connection holds a subscription.
        self.anyone_subscribed = True
        self._filters: dict[tuple[str, str], list[str]] = {}
        self._scripts: dict[tuple[str, str], Script] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ the DeviceLink port

    def send(self, ref: DeviceRef, message: Outbound) -> bool:
        self.sent.append((ref, message))
        _, wire = self.dialects.encode(ref, message)
        if not wire:
            return True  # nothing to send: received, as the gateway counts it
        key = (ref.product_id, ref.name)
        filters = self._filters.get(key, []) if self.presence.is_online(*key) else []
        delivered = [(t, p) for t, p in wire if any(topic_matches(f, t) for f in filters)]
        self.wire.setdefault(key, []).extend(delivered)
        script = self._scripts.get(key)
        if delivered and isinstance(message, Call) and script is not None:
            answer = script(message)
            if answer is not None:
                self._later(self.publish(ref, *answer))
        return bool(delivered)

    def is_online(self, product_id: str, name: str) -> bool:
        return self.presence.is_online(product_id, name)

    def heard(self, ref: DeviceRef) -> bool:
        return self.anyone_subscribed

    def listens(self, ref: DeviceRef, filters: list[str], kind: type) -> bool:
        return self.dialects.covers(ref, filters, kind)

    # ------------------------------------------------------------ what devices do

    def subscribe(self, ref: DeviceRef, *filters: str) -> None:
        """The device holds these subscriptions (granted: the tests use its own topics)."""
        assert all(self.dialects.may_subscribe(ref, f) for f in filters), filters
        self._filters.setdefault((ref.product_id, ref.name), []).extend(filters)

    def on_call(self, ref: DeviceRef, script: Script) -> None:
        """Answer every call that reaches the device as `script` says."""
        self._scripts[(ref.product_id, ref.name)] = script

    async def publish(self, ref: DeviceRef, topic: str, payload: bytes, now_ms: int = 0) -> None:
        """A device's message, decoded by its dialect and handled by its service."""
        assert self.dialects.may_publish(ref, topic), topic
        decoded = self.dialects.decode(ref, topic, payload, now_ms or _now(self.presence))
        assert decoded is not None, f"no dialect decodes {topic}"
        _, message = decoded
        await self.handlers[type(message)](ref, message)

    def received(self, ref: DeviceRef, kind: type | None = None) -> list[Any]:
        """The messages the platform sent to a device (of one type), delivered or not."""
        return [
            m
            for r, m in self.sent
            if (r.product_id, r.name) == (ref.product_id, ref.name)
            and (kind is None or isinstance(m, kind))
        ]

    def _later(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            await work

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _now(presence: PresenceService) -> int:
    return presence.clock.now_ms()


@dataclass
class World:
    clock: FakeClock
    bus: LocalBus
    storage: Storage
    devices: DeviceService
    presence: PresenceService
    link: Devices
    commands: CommandService
    ingest: IngestService
    images: ImageService
    firmware: FirmwareService
    ota: OtaService
    _seq: int = 0
    _holders: dict[tuple[str, str], int] = field(default_factory=dict)

    async def device(
        self,
        name: str = "d1",
        product_id: str = "p1",
        *,
        online: bool = True,
        subscribe: tuple[str, ...] = (),
        **fields: Any,
    ) -> DeviceRef:
        """A registered device (its product made if needed), connected unless told not."""
        if await self.storage.products.get(product_id) is None:
            await self.devices.create_product(product_id, f"product {product_id}")
        created = await self.devices.create_device(product_id, name, **fields)
        d = created.device
        ref = DeviceRef(d.product_id, d.name, d.device_number)
        if online:
            self.connect(name, product_id)
        if subscribe:
            self.link.subscribe(ref, *subscribe)
        return ref

    def connect(self, name: str = "d1", product_id: str = "p1") -> int:
        """A new connection of the device (numbered as the MQTT server numbers them)."""
        self._seq += 1
        self._holders[(product_id, name)] = self._seq
        self.presence.connected(product_id, name, self._seq)
        return self._seq

    def disconnect(self, name: str = "d1", product_id: str = "p1") -> None:
        """The device's newest connection closes."""
        self.presence.disconnected(product_id, name, self._holders.pop((product_id, name)))

    async def upload(self, product_id: str = "p1", *, version: str = "2.0.1") -> Firmware:
        """A firmware package of module MCU."""
        upload = await self.firmware.begin(product_id)
        await upload.write(b"firmware " + version.encode())
        return await self.firmware.finish(upload, version=version, module="MCU")

    def watch(self, *kinds: type) -> list[Any]:
        """The events of these types announced on the bus from now on (a list that grows)."""
        seen: list[Event] = []
        self.bus.subscribe(seen.append, kinds)
        return seen


async def settle(turns: int = 50) -> None:
    """Let work started on this loop (a push, a write) run to its end, to show that
    it did nothing: with the memory storage it needs a few turns at most."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def eventually(check: Callable[[], object], turns: int = 1000) -> None:
    """Let the event loop run until `check()` is true; fail if it never becomes so.

    Counted in loop turns, not seconds: the work awaited (a push, a write) runs
    on this loop with the memory storage and needs a few turns at most."""
    for _ in range(turns):
        if check():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"still false after {turns} turns of the event loop")


def build_world(
    tmp_path: Path, storage: Storage | None = None, clock: FakeClock | None = None
) -> World:
    """Every service, wired as app.py wires them (`storage`: share one, as two
    processes share a database)."""
    clock = clock or FakeClock()
    bus = LocalBus()
    storage = storage or open_storage("memory://", tmp_path)
    devices = DeviceService(storage, clock, bus, new_pepper())
    presence = PresenceService(storage.devices, clock, bus)
    link = Devices(presence, default_registry())
    commands = CommandService(storage.commands, devices, link, clock, bus)
    ingest = IngestService(storage.telemetry, storage.attributes, storage.events, link, clock, bus)
    images = ImageService(storage.images, devices, presence, link, clock, bus)
    firmware = FirmwareService(storage.firmware, devices, clock, tmp_path / "firmware")
    ota = OtaService(
        storage.ota,
        firmware,
        devices,
        link,
        clock,
        bus,
        Jobs(storage.locks),
        secret=b"s" * 32,
        public_url=PUBLIC_URL,
    )
    link.handlers = {
        ImageUpdateRequest: images.device_update,
        ImageUpdateRefused: images.device_refused_update,
        ImageGetRequest: images.device_get,
        CallAnswer: commands.answer,
        TelemetryReport: ingest.telemetry_report,
        AttributesReport: ingest.attribute_report,
        EventReport: ingest.event_report,
        ReportRefused: ingest.refused_report,
        OtaProgress: ota.device_progress,
        OtaProgressRefused: ota.device_refused_progress,
    }
    return World(
        clock, bus, storage, devices, presence, link, commands, ingest, images, firmware, ota
    )


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield build_world(tmp_path)


class Settling:
    """A telemetry store whose appends join one settlement, decided by the test
    as the group-commit writer would: the stored members' `then`s, then its waiters."""

    def __init__(self) -> None:
        self.settlement = Settlement()
        self.thens: list[Callable[[], None] | None] = []
        #: The devices of each `append_devices_settled`, as its member.
        self.devices: list[list[tuple[str, str, Sequence[Point]]]] = []

    def append_settled(
        self,
        product_id: str,
        name: str,
        points: Sequence[Point],
        then: Callable[[], None] | None = None,
    ) -> Settlement:
        self.settlement.join()
        self.thens.append(then)
        return self.settlement

    def append_devices_settled(
        self, devices: Sequence[tuple[str, str, Sequence[Point]]]
    ) -> Settlement:
        self.settlement.join()
        self.thens.append(None)
        self.devices.append(list(devices))
        return self.settlement

    def decide(
        self,
        failures: dict[int, BaseException] | None = None,
        error: BaseException | None = None,
        missing: set[int] | None = None,
        values: dict[int, object] | None = None,
    ) -> None:
        if error is None:
            for member, then in enumerate(self.thens):
                if (
                    then is not None
                    and member not in (failures or {})
                    and member not in (missing or set())
                ):
                    then()
        for waiter in self.settlement.settle(failures, error, missing, values):
            waiter()

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"not used here: {name}")
