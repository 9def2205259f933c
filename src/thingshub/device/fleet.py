"""A fleet of simulated devices on one event loop: what `thingshub simulate` and `demo` run.

Rules:
- Every simulated device is an SDK device (`OneNetDevice`, `ThingsPanelDevice`):
  the fleet shows what the SDK does, over real sockets, and nothing else.
- Ten thousand devices share one loop: no thread per device, connects started
  `connect_at_once` at a time (the server serializes logins per address),
  one pacing task for the whole fleet instead of a timer per device.
- `rate` is messages a second for the whole fleet, spread over the devices
  online; about one message in twenty is an event (OneNET: an image report),
  the rest telemetry from the device's profile (`sine` or `walk`).
- Devices answer every call (commands, attribute and property sets and gets,
  services), follow desired state and perform OTA upgrades (installing is a
  no-op); `Stats` counts what happened for the live view and the summary.
- OneNET devices (both kinds) take upgrades through the OneNET OTA API at
  `api_url` when it is given, set off by the `ota/inform` notice only (no
  check at connect: ten thousand HTTP checks at once would be a load test of
  their own); they start at version 1.0.0.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

from thingshub.device.base import Device
from thingshub.device.onenet import OneNetDevice
from thingshub.device.thingspanel import ThingsPanelDevice

PROTOCOLS = ("onenet", "thingspanel", "thing-model")
PROFILES = ("sine", "walk")


@dataclass(frozen=True, slots=True)
class Spec:
    """One device to simulate, with the secrets its registration returned."""

    protocol: str
    product_id: str
    name: str
    device_number: str
    key: str
    username: str
    password: str


@dataclass
class Stats:
    devices: int = 0
    online: int = 0
    sent: int = 0
    calls: int = 0
    upgrades: int = 0
    errors: int = 0
    connect_started: float = field(default_factory=time.monotonic)
    #: Seconds from the first connect to the last device online (None until all are).
    connect_time: float | None = None
    #: (monotonic time, messages sent) about once a second, for the rate.
    samples: list[tuple[float, int]] = field(default_factory=list)

    def rate(self) -> float:
        """Messages a second over the last few seconds."""
        if len(self.samples) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.samples[max(0, len(self.samples) - 6)], self.samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


class Profile:
    """Telemetry values of one device: a sine around a base, or a random walk."""

    def __init__(self, kind: str, seed: int) -> None:
        self.kind = kind
        self.rng = random.Random(seed)
        self.phase = self.rng.uniform(0, 2 * math.pi)
        self.temperature = 20 + self.rng.uniform(-3, 3)
        self.humidity = 50 + self.rng.uniform(-10, 10)

    def next(self) -> dict[str, float]:
        if self.kind == "sine":
            t = time.time() / 60 * 2 * math.pi + self.phase
            temperature = self.temperature + 5 * math.sin(t)
            humidity = self.humidity + 10 * math.cos(t)
        else:
            self.temperature += self.rng.gauss(0, 0.3)
            self.humidity = min(100.0, max(0.0, self.humidity + self.rng.gauss(0, 1)))
            temperature, humidity = self.temperature, self.humidity
        return {"temperature": round(temperature, 2), "humidity": round(humidity, 1)}


class Simulated:
    """One device of the fleet: its SDK device, its profile and its state."""

    def __init__(
        self,
        spec: Spec,
        url: str,
        profile: str,
        seed: int,
        stats: Stats,
        api_url: str | None = None,
    ) -> None:
        self.spec = spec
        self.api_url = api_url
        self.stats = stats
        self.profile = Profile(profile, seed)
        self.state: dict[str, Any] = {"mode": "auto", "fw": "1.0.0"}
        self.count = 0
        self.device: Device = self._make(url)

    def _make(self, url: str) -> Device:
        s = self.spec
        backoff = (1.0, 30.0)
        if s.protocol == "thingspanel":
            tp = ThingsPanelDevice(s.device_number, s.username, s.password, url, backoff=backoff)
            tp.on_command(self._command)
            tp.on_attributes_set(self.state.update)
            tp.on_attributes_get(lambda keys: {k: self.state.get(k) for k in keys} or self.state)
            tp.on_control(self.state.update)
            tp.on_ota(self._install)
            return tp
        thing = s.protocol == "thing-model"
        one = OneNetDevice(s.product_id, s.name, s.key, url, backoff=backoff, image=not thing)
        if thing:
            one.on_property_set(self._follow)
            one.on_property_get(lambda ids: {i: self.state.get(i) for i in ids} or self.state)
            one.on_service("reboot", lambda params: {"rebooted": True, **params})
        else:
            one.on_command(lambda payload: b"ok:" + payload)
        if self.api_url is not None:
            one.on_ota(self._install, api_url=self.api_url, version="1.0.0", check_on_connect=False)
        return one

    def _command(self, method: str, params: Any) -> dict[str, Any]:
        return {"method": method, "echo": params}

    async def _follow(self, values: dict[str, Any]) -> None:
        """A thing-model set (or desired value pushed): applied, then reported."""
        self.state.update(values)
        assert isinstance(self.device, OneNetDevice)
        self.device.spawn(self.device.post_properties(values))

    def _install(self, firmware: Any, _data: bytes) -> None:
        self.state["fw"] = firmware.version
        self.stats.upgrades += 1

    async def send(self) -> None:
        """One message: an event now and then, telemetry otherwise."""
        self.count += 1
        event = self.count % 20 == 0
        d = self.device
        values = self.profile.next()
        if isinstance(d, ThingsPanelDevice):
            if event:
                await d.send_event("Heartbeat", {"uptime": self.count})
            else:
                await d.send_telemetry(values)
        elif isinstance(d, OneNetDevice) and self.spec.protocol == "thing-model":
            if event:
                await d.post_event("heartbeat", {"uptime": self.count})
            else:
                await d.post_properties(values)
        elif isinstance(d, OneNetDevice):
            if event:
                await d.report({"uptime": self.count})
            else:
                await d.post_datapoints(values)
        self.stats.sent += 1


class Fleet:
    """Devices on one loop: connect them, pace their messages, count, close."""

    def __init__(
        self,
        url: str,
        specs: list[Spec],
        *,
        rate: float,
        profile: str = "sine",
        connect_at_once: int = 100,
        api_url: str | None = None,
    ) -> None:
        self.stats = Stats(devices=len(specs))
        self.members = [
            Simulated(spec, url, profile, i, self.stats, api_url) for i, spec in enumerate(specs)
        ]
        self.rate = rate
        self.connect_at_once = connect_at_once
        self._tasks: set[asyncio.Task[Any]] = set()

    async def run(self, duration: float | None, stop: asyncio.Event | None = None) -> Stats:
        """Connect, then send until `duration` seconds passed or `stop` is set."""
        stop = stop or asyncio.Event()
        stats = self.stats
        stats.connect_started = time.monotonic()
        connecting = asyncio.create_task(self._connect_all())
        pacing = asyncio.create_task(self._pace())
        counting = asyncio.create_task(self._count())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration)
        for task in (connecting, pacing, counting):
            task.cancel()
        await self.close()
        return stats

    async def _connect_all(self) -> None:
        gate = asyncio.Semaphore(self.connect_at_once)

        async def one(member: Simulated) -> None:
            async with gate:
                member.device.start()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(member.device.client.connected.wait(), 60)

        await asyncio.gather(*(one(m) for m in self.members))

    async def _count(self) -> None:
        stats = self.stats
        while True:
            online = 0
            calls = errors = 0
            for m in self.members:
                d = m.device
                online += d.online
                calls += getattr(d, "calls_answered", 0)
                errors += d.errors
            stats.online, stats.calls = online, calls
            stats.errors = errors + self._send_errors
            if online == stats.devices and stats.connect_time is None:
                stats.connect_time = time.monotonic() - stats.connect_started
            stats.samples.append((time.monotonic(), stats.sent))
            del stats.samples[:-30]
            await asyncio.sleep(1.0)

    _send_errors = 0

    async def _pace(self) -> None:
        """Every tick, the next devices in turn send one message each."""
        tick = 0.1
        owed = 0.0
        turn = 0
        while True:
            await asyncio.sleep(tick)
            owed += self.rate * tick
            online = [m for m in self.members if m.device.online] if owed >= 1 else []
            while owed >= 1 and online:
                member = online[turn % len(online)]
                turn += 1
                owed -= 1
                self._spawn(member.send())
            owed = min(owed, self.rate)  # never a burst of what could not be sent

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._send_errors += 1

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        closing = [m.device.close() for m in self.members]
        for chunk in range(0, len(closing), 500):
            await asyncio.gather(*closing[chunk : chunk + 500], return_exceptions=True)
