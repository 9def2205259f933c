"""The `image` test of `platform_bench.py`: OneNET device image updates over MQTT.

bench/README.md says what each figure means and why it is measured this way.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

import mqttload
import servers
from mqttload import VERSION, Cpu, Snapshot, now, packet_id
from platform_common import (
    FLAG_LOAD,
    PRODUCT,
    DeviceLogin,
    PlatformRun,
    api,
    exit_noted,
    open_devices,
    percentile,
    progress,
    quiet,
    register,
)
from thingshub.mqtt.codec import CodecError, PubAck, Publish, encode_publish

#: The platform's per-device limit on image updates (services/images.py: rate, burst).
DEVICE_RATE_LIMIT = 10.0
DEVICE_BURST = 20
TARGET_UPDATES_PER_S = 5_000.0
TARGET_P99_MS = 20.0


# ------------------------------------------------------------------------ image


@dataclass
class ImageStats:
    """What came back during one image mode, across all devices."""

    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    reject_codes: Counter[str] = field(default_factory=Counter)
    unexpected: int = 0  # replies naming no update in flight (duplicates, or foreign)
    version_gaps: int = 0  # an accepted version that is not the device's previous + 1
    acks: int = 0  # PUBACKs
    outstanding: int = 0  # updates sent and not answered yet
    latencies: list[float] = field(default_factory=list)  # publish -> accepted, s
    t_first: float = 0.0
    t_last: float = 0.0  # last accepted
    window_end: float = math.inf
    in_window: int = 0  # accepted by window_end
    done_sending: bool = False
    idle: asyncio.Future[None] | None = None

    def check_idle(self) -> None:
        if self.done_sending and self.outstanding <= 0 and self.idle and not self.idle.done():
            self.idle.set_result(None)


class ImageDevice(mqttload.Conn):
    """One device publishing image updates (QoS 1) and reading its accepted/rejected.

    Updates are pre-encoded (`prepare`) before a mode starts. Each carries `t` and an `id`
    equal to the device's update number (1, 2, ...), so each reply is matched to its
    update by `id`: exactly one reply per update, and `version` in the accepted ones must
    grow by 1. In `pump` mode (saturation) each reply lets the device send again, with at
    most `window` updates in flight and at least `min_gap` s between two sends, so it stays
    under the platform's per-device rate limit.
    """

    def __init__(self, index: int, name: str, stats: ImageStats) -> None:
        super().__init__()
        self.index = index
        self.name = name
        self.stats = stats
        self.topic = f"$sys/{PRODUCT}/{name}/image/update".encode()
        self._name = name.encode()
        self.packets: list[bytes] = []
        self.first = 0  # update number - 1 of packets[0]
        self.count = 0  # updates sent, over the whole run
        self.sent_at: dict[int, float] = {}
        self.accepted_total = 0
        self.last_version = 0
        self.max_t = 0
        self.window = 1
        self.min_gap = 0.0
        self.running = False
        self.next_allowed = 0.0
        self.stop_at = math.inf
        self._timer: asyncio.TimerHandle | None = None

    def _encode(self, k: int) -> bytes:
        t = k + 1
        payload = b'{"state":{"reported":{"t":%d,"n":"%s"}},"id":"%d"}' % (t, self._name, t)
        return encode_publish(self.topic, payload, 1, False, False, packet_id(k), VERSION)

    def prepare(self, n: int) -> None:
        """Encode the next `n` updates now, before the clock starts."""
        self.first = self.count
        self.packets = [self._encode(k) for k in range(self.count, self.count + n)]

    def send_next(self, t: float) -> None:
        k = self.count
        i = k - self.first
        if i >= len(self.packets):  # more than prepared: encode another chunk
            self.packets.extend(self._encode(j) for j in range(k, k + 64))
        self.count = k + 1
        self.sent_at[k + 1] = t
        st = self.stats
        st.sent += 1
        st.outstanding += 1
        self.write(self.packets[i])

    def pump(self) -> None:
        """Saturation: refill the window, no faster than one send per `min_gap` s."""
        self._timer = None
        if not self.running or self.lost.done():
            return
        t = now()
        while len(self.sent_at) < self.window and t < self.stop_at:
            if t < self.next_allowed:
                self._timer = asyncio.get_running_loop().call_later(
                    self.next_allowed - t, self.pump
                )
                return
            self.send_next(t)
            self.next_allowed = t + self.min_gap

    def halt(self) -> None:
        self.running = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        t = now()
        reader = self.reader
        reader.feed(data)
        replied = False
        try:
            while (p := reader.next_packet()) is not None:
                if type(p) is Publish:
                    self._reply(p.topic, p.payload, t)
                    replied = True
                elif type(p) is PubAck:
                    self.stats.acks += 1
                else:
                    self.control(p)
        except CodecError as exc:
            self.fail(f"undecodable bytes from the server: {exc}")
        if replied and self.running and self._timer is None:
            self.pump()

    def _reply(self, topic: str, payload: bytes, t: float) -> None:
        st = self.stats
        try:
            body = json.loads(payload)
            n = int(body["id"])
        except (ValueError, KeyError, TypeError):
            st.unexpected += 1
            return
        sent = self.sent_at.pop(n, None)
        if sent is None:
            st.unexpected += 1
            return
        st.outstanding -= 1
        if topic.endswith("/accepted"):
            st.accepted += 1
            st.latencies.append(t - sent)
            st.t_last = t
            if t <= st.window_end:
                st.in_window += 1
            version = body.get("version")
            if version != self.last_version + 1:
                st.version_gaps += 1
            if isinstance(version, int):
                self.last_version = version
            self.accepted_total += 1
            self.max_t = max(self.max_t, n)
        else:
            st.rejected += 1
            st.reject_codes[str(body.get("err_code"))] += 1
        st.check_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.halt()


@dataclass
class ImageResult:
    """One image mode: what was sent, what came back, how fast, and at what CPU."""

    mode: str  # "fixed" (offered rate) or "saturation"
    devices: int
    seconds: float
    offered_rate: float = 0.0
    window: int = 0
    device_rate_cap: float = 0.0
    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    reject_codes: dict[str, int] = field(default_factory=dict)
    missing: int = 0  # no reply by the end of the drain
    unexpected: int = 0
    version_gaps: int = 0
    acks: int = 0
    lost_connections: int = 0
    rate: float = 0.0  # accepted updates per second
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    mean_ms: float = 0.0
    max_lag_ms: float = 0.0  # fixed: how late the sender was on its schedule, at worst
    db_cpu_pct: float = 0.0  # PostgreSQL backends of the platform's database
    db_us_per_update: float = 0.0
    capped: bool = False  # saturation: the per-device cap, not the server, was the limit
    server_cpu_pct: float = 0.0
    load_cpu_pct: float = 0.0
    other_cpu_pct: float = 0.0
    server_us_per_update: float = 0.0
    complete: bool = False
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def finish_result(
    res: ImageResult,
    st: ImageStats,
    devices: Sequence[ImageDevice],
    cpu: Cpu,
    cpu_updates: int,
) -> ImageResult:
    """Fill the result from the stats; `complete` iff every update got exactly one reply."""
    res.sent, res.accepted, res.rejected = st.sent, st.accepted, st.rejected
    res.reject_codes = dict(st.reject_codes)
    res.unexpected, res.version_gaps, res.acks = st.unexpected, st.version_gaps, st.acks
    res.missing = sum(len(d.sent_at) for d in devices)
    res.lost_connections = sum(1 for d in devices if d.lost.done())
    lat = sorted(st.latencies)
    if lat:
        res.p50_ms, res.p95_ms = 1e3 * percentile(lat, 50), 1e3 * percentile(lat, 95)
        res.p99_ms, res.max_ms = 1e3 * percentile(lat, 99), 1e3 * lat[-1]
        res.mean_ms = 1e3 * statistics.fmean(lat)
    res.server_cpu_pct, res.load_cpu_pct = cpu.server_pct, cpu.load_pct
    res.other_cpu_pct = cpu.other_pct
    res.server_us_per_update = 1e6 * cpu.server_s / max(1, cpu_updates)
    res.db_cpu_pct = cpu.helpers_pct
    res.db_us_per_update = 1e6 * cpu.helpers_s / max(1, cpu_updates)
    if res.missing:
        res.notes.append(f"{res.missing:,} updates got no reply")
    if res.acks < res.sent - res.missing:
        res.notes.append(f"PUBACKs missing: {res.sent - res.acks:,}")
    if res.unexpected:
        res.notes.append(f"{res.unexpected:,} replies to no update in flight (duplicates?)")
    if res.version_gaps:
        res.notes.append(f"{res.version_gaps:,} accepted versions not previous + 1")
    if res.lost_connections:
        res.notes.append(f"{res.lost_connections} devices lost their connection")
    res.complete = (
        res.error is None
        and res.missing == 0
        and res.unexpected == 0
        and res.version_gaps == 0
        and res.lost_connections == 0
        and res.accepted + res.rejected == res.sent
        and res.sent > 0
    )
    return res


def _new_stats(devices: Sequence[ImageDevice]) -> ImageStats:
    st = ImageStats(idle=asyncio.get_running_loop().create_future())
    for d in devices:
        d.stats = st
    return st


async def _drain(st: ImageStats, limit: float) -> None:
    """Wait for every reply (up to `limit` s), then briefly for the PUBACKs: the platform
    sends an update's accepted before its PUBACK (the PUBACK waits for the handler)."""
    st.done_sending = True
    st.check_idle()
    assert st.idle is not None
    await asyncio.wait([st.idle], timeout=limit)
    for _ in range(200):  # 2 s
        if st.acks >= st.sent:
            break
        await asyncio.sleep(0.01)


async def image_fixed(
    devices: Sequence[ImageDevice],
    rate: float,
    seconds: float,
    probe: mqttload.ServerProbe,
    drain: float,
    helpers: mqttload.CpuProbe | None = None,
) -> ImageResult:
    """An offered load of `rate` updates/s in all, spread evenly: update j goes to device
    j mod D at t0 + j/rate, whether or not the device's previous one was answered (open
    loop, so a slow server shows as latency, not as a lower offered rate)."""
    count = len(devices)
    res = ImageResult("fixed", count, seconds, offered_rate=rate)
    if rate / count > DEVICE_RATE_LIMIT:
        res.notes.append(
            f"{rate / count:g} updates/s per device is above the platform's limit of "
            f"{DEVICE_RATE_LIMIT:g}/s (burst {DEVICE_BURST}): expect rejections (err_code 128)"
        )
    total = int(rate * seconds)
    for i, d in enumerate(devices):
        d.prepare(len(range(i, total, count)))
    st = _new_stats(devices)
    gc.collect()
    gc.freeze()
    try:
        snap0 = Snapshot.take(probe, helpers)
        t0 = snap0.t
        sent = 0
        next_check = t0 + 0.5
        while sent < total:
            t = now()
            due = min(total, int((t - t0) * rate) + 1)
            if due > sent:
                res.max_lag_ms = max(res.max_lag_ms, 1e3 * (t - t0 - sent / rate))
                for j in range(sent, due):
                    d = devices[j % count]
                    if not d.lost.done():
                        d.send_next(t)
                sent = due
            if t >= next_check:
                next_check = t + 0.5
                if not probe.alive():
                    res.error = "server died"
                    break
            await asyncio.sleep(max(0.0, t0 + sent / rate - now()))
        await _drain(st, drain)
        snap1 = Snapshot.take(probe, helpers)
    finally:
        gc.unfreeze()
    res.rate = st.accepted / max(1e-9, (st.t_last or now()) - t0)
    finish_result(res, st, devices, Cpu.between(snap0, snap1), st.sent)
    if res.max_lag_ms > 50:
        res.notes.append(f"the load fell up to {res.max_lag_ms:.0f} ms behind its schedule")
    return res


async def image_saturation(
    devices: Sequence[ImageDevice],
    seconds: float,
    window: int,
    cap: float,
    probe: mqttload.ServerProbe,
    drain: float,
    helpers: mqttload.CpuProbe | None = None,
) -> ImageResult:
    """Every device keeps `window` updates in flight, at most `cap` per second, for
    `seconds`; the rate is what was accepted within those seconds."""
    count = len(devices)
    res = ImageResult("saturation", count, seconds, window=window, device_rate_cap=cap)
    for d in devices:
        d.prepare(math.ceil(cap * seconds) + window + 1)
    st = _new_stats(devices)
    gc.collect()
    gc.freeze()
    try:
        snap0 = Snapshot.take(probe, helpers)
        t0 = snap0.t
        st.window_end = t0 + seconds
        for d in devices:
            d.window, d.min_gap = window, 1.0 / cap
            d.next_allowed, d.stop_at, d.running = t0, t0 + seconds, True
            d.pump()
        while now() < st.window_end:
            await asyncio.sleep(min(0.5, max(0.0, st.window_end - now())))
            if not probe.alive():
                res.error = "server died"
                break
        snap1 = Snapshot.take(probe, helpers)
        for d in devices:
            d.halt()
        await _drain(st, drain)
    finally:
        gc.unfreeze()
    res.rate = st.in_window / seconds
    finish_result(res, st, devices, Cpu.between(snap0, snap1), st.in_window)
    ceiling = count * cap
    if res.rate >= 0.9 * ceiling:
        res.capped = True
        res.notes.append(
            f"at {res.rate / ceiling:.0%} of the per-device cap ({count} x {cap:g}/s): the "
            "platform may be faster; use more devices (--image-devices)"
        )
    return res


async def verify_images(
    server: servers.PlatformServer, devices: Sequence[ImageDevice], sample: int
) -> dict[str, Any]:
    """Check through the API that a sample of devices' images hold what they were told.

    `version` must equal the number of updates accepted for the device (it starts at 1
    with the first), and `state.reported.t` the highest accepted `t`.
    """
    step = max(1, len(devices) // max(1, sample))
    chosen = list(devices)[::step][:sample]
    bad: list[str] = []
    try:
        async with api(server, 10) as http, asyncio.timeout(60):
            for d in chosen:
                r = await http.get(f"/api/v1/products/{PRODUCT}/devices/{d.name}/image")
                if d.accepted_total == 0:
                    if r.status_code != 404:
                        bad.append(f"{d.name}: no update accepted, but HTTP {r.status_code}")
                    continue
                if r.status_code != 200:
                    bad.append(f"{d.name}: HTTP {r.status_code} {r.text[:100]}")
                    continue
                props = r.json().get("properties", {})
                version = props.get("version")
                t = props.get("state", {}).get("reported", {}).get("t")
                if version != d.accepted_total or t != d.max_t:
                    bad.append(
                        f"{d.name}: version {version} (accepted {d.accepted_total}), "
                        f"reported.t {t} (last accepted {d.max_t})"
                    )
    except TimeoutError:
        bad.append("the checks took more than 60 s")
    except httpx.HTTPError as exc:
        bad.append(f"{type(exc).__name__}: {exc}")
    return {"checked": len(chosen), "bad": bad}


async def connect_devices(
    server: servers.PlatformServer, logins: Sequence[DeviceLogin], concurrency: int
) -> list[ImageDevice]:
    """Log every device in (token) and subscribe it to its accepted and rejected topics."""
    placeholder = ImageStats()

    def factory(i: int, name: str) -> Callable[[], ImageDevice]:
        return lambda: ImageDevice(i, name, placeholder)

    def filters(i: int) -> list[str]:
        base = f"$sys/{PRODUCT}/{logins[i].name}/image/update"
        return [f"{base}/accepted", f"{base}/rejected"]

    return await open_devices(
        server.host,
        server.port,
        [factory(i, d.name) for i, d in enumerate(logins)],
        [d.name for d in logins],
        [(PRODUCT, d.token) for d in logins],
        concurrency,
        filters,
    )


def run_image(a: argparse.Namespace) -> dict[str, Any]:
    """One platform: register, connect and subscribe the devices, fixed rate, saturation,
    then check a sample of images through the API."""
    run = PlatformRun(a)
    with run as server:

        async def go() -> dict[str, Any]:
            logins, reg_s = await register(
                server, a.image_devices, a.register_concurrency, a.limit * 5
            )
            progress(f"    registered {len(logins):,} devices in {reg_s:.1f} s")
            devices = await connect_devices(server, logins, a.conn_concurrency)
            out: dict[str, Any] = {"register_seconds": reg_s}
            modes: list[ImageResult] = []
            try:
                for mode in ("fixed", "saturation"):
                    await quiet(a)
                    if mode == "fixed":
                        r = await image_fixed(
                            devices, a.rate, a.seconds, server, a.drain, run.helpers
                        )
                    else:
                        r = await image_saturation(
                            devices,
                            a.seconds,
                            a.window,
                            a.device_rate_cap,
                            server,
                            a.drain,
                            run.helpers,
                        )
                    progress(f"    {describe_image(r)}")
                    modes.append(r)
                    if r.error:
                        break
                out["modes"] = [m.as_dict() for m in modes]
                out["verify"] = await verify_images(server, devices, a.verify)
            finally:
                mqttload.close_all(devices)
                await asyncio.sleep(0.1)
            modes_ok = len(modes) == 2 and all(m.complete for m in modes)
            out["valid"] = modes_ok and not out["verify"]["bad"]
            out["other_max"] = max((m.other_cpu_pct for m in modes), default=0.0)
            out["errors"] = [e for m in modes for e in [m.error] if e]
            return out

        result = mqttload.run_loop(go())
    return exit_noted(result, run)


def describe_image(r: ImageResult) -> str:
    text = (
        f"{r.mode}: {r.rate:,.0f} updates/s, {r.accepted:,} accepted, {r.rejected:,} rejected "
        f"of {r.sent:,}; latency p50 {r.p50_ms:.1f} p95 {r.p95_ms:.1f} p99 {r.p99_ms:.1f} "
        f"max {r.max_ms:.1f} ms; server {r.server_cpu_pct:.0f}% load {r.load_cpu_pct:.0f}% "
        f"other {r.other_cpu_pct:.0f}%; {r.server_us_per_update:.0f} us/update"
    )
    if r.db_cpu_pct:
        text += f"; database {r.db_cpu_pct:.0f}% = {r.db_us_per_update:.0f} us/update"
    if r.error:
        text += f"; ERROR {r.error}"
    if r.notes:
        text += "; " + "; ".join(r.notes)
    return text


def print_image(runs: list[dict[str, Any]], a: argparse.Namespace, env: dict[str, Any]) -> None:
    print()
    print(
        f"image: {a.image_devices:,} devices (token login), each subscribed to its "
        f"image/update/accepted and /rejected (QoS 0), publish image/update (QoS 1); "
        + env["storage"]
    )
    good = [r for r in runs if r.get("modes")]
    if not good:
        for r in runs:
            print(f"  ERROR {'; '.join(r.get('errors', []))}")
        return
    good.sort(key=lambda r: r["modes"][-1]["rate"])
    run = good[len(good) // 2]  # the median run by the last mode's rate
    modes = {m["mode"]: m for m in run["modes"]}
    fixed, sat = modes.get("fixed"), modes.get("saturation")

    def row(label: str, value: str, target: str = "") -> None:
        print(f"{label:<58}{value:>16}  {target}")

    print()
    row("figure", "thingshub", "target")
    print("-" * 90)
    if fixed:
        lflag = " L" if fixed["load_cpu_pct"] >= FLAG_LOAD else ""
        nflag = " N" if fixed["other_cpu_pct"] > a.max_other else ""
        row(
            f"(a) offered {fixed['offered_rate']:,.0f}/s for {fixed['seconds']:g} s: achieved/s",
            f"{fixed['rate']:,.0f}{lflag}{nflag}",
        )
        p99_ok = fixed["p99_ms"] < TARGET_P99_MS and fixed["complete"]
        row("    latency p50 / p95 ms", f"{fixed['p50_ms']:.1f} / {fixed['p95_ms']:.1f}")
        row(
            "    latency p99 / max ms",
            f"{fixed['p99_ms']:.1f} / {fixed['max_ms']:.1f}",
            f"p99 < {TARGET_P99_MS:g} {'ok' if p99_ok else 'MISSED'}",
        )
        row(
            "    accepted / rejected / no reply",
            f"{fixed['accepted']:,} / {fixed['rejected']:,} / {fixed['missing']:,}",
        )
        row(
            "    server / load / other CPU %",
            f"{fixed['server_cpu_pct']:.0f} / {fixed['load_cpu_pct']:.0f} / "
            f"{fixed['other_cpu_pct']:.0f}",
        )
        row("    server CPU per update, us", f"{fixed['server_us_per_update']:.0f}")
        if a.database_url:
            row(
                "    PostgreSQL backends: CPU %, us per update",
                f"{fixed['db_cpu_pct']:.0f} / {fixed['db_us_per_update']:.0f}",
            )
    if sat:
        lflag = " L" if sat["load_cpu_pct"] >= FLAG_LOAD else ""
        nflag = " N" if sat["other_cpu_pct"] > a.max_other else ""
        cflag = " C" if sat["capped"] else ""
        ok = sat["rate"] >= TARGET_UPDATES_PER_S and sat["complete"]
        row(
            f"(b) saturation, window {sat['window']}, <= {sat['device_rate_cap']:g}/s "
            "per device: updates/s",
            f"{sat['rate']:,.0f}{lflag}{nflag}{cflag}",
            f">= {TARGET_UPDATES_PER_S:,.0f} {'ok' if ok else 'MISSED'}",
        )
        row(
            "    ceiling set by the per-device cap, updates/s",
            f"{sat['devices'] * sat['device_rate_cap']:,.0f}",
        )
        row(
            "    latency p50 / p99 / max ms",
            f"{sat['p50_ms']:.0f} / {sat['p99_ms']:.0f} / {sat['max_ms']:.0f}",
        )
        row(
            "    accepted / rejected / no reply",
            f"{sat['accepted']:,} / {sat['rejected']:,} / {sat['missing']:,}",
        )
        row(
            "    server / load / other CPU %",
            f"{sat['server_cpu_pct']:.0f} / {sat['load_cpu_pct']:.0f} / {sat['other_cpu_pct']:.0f}",
        )
        row("    server CPU per update, us", f"{sat['server_us_per_update']:.0f}")
        if a.database_url:
            row(
                "    PostgreSQL backends: CPU %, us per update",
                f"{sat['db_cpu_pct']:.0f} / {sat['db_us_per_update']:.0f}",
            )
    v = run.get("verify")
    if v:
        row(
            "images checked through the API (version, reported.t)",
            f"{v['checked'] - len(v['bad'])}/{v['checked']} ok",
        )
        for b in v["bad"][:10]:
            print(f"    MISMATCH {b}")
    for note in run.get("notes", []):
        print(f"  {note}")
    for m in run["modes"]:
        if m["reject_codes"]:
            print(f"  {m['mode']}: rejected by err_code {m['reject_codes']}")
        for note in m["notes"]:
            print(f"  {m['mode']}: {note}")
        if m["error"]:
            print(f"  {m['mode']}: ERROR {m['error']}")
    print(f"  (setup: {a.image_devices:,} devices registered in {run['register_seconds']:.1f} s)")
