"""The `telemetry` test of `platform_bench.py`: ThingsPanel telemetry at QoS 1, durably
stored, against Mosquitto acknowledging the same load with nothing stored.

Why it is built this way (bench/README.md says what each figure means):
- A QoS 1 PUBACK from the platform means the message's points are durable (docs/protocols.md
  section 1), so PUBACKs counted in a window are messages stored in it, and points/s is
  3 x msgs/s (each message carries 3 keys). The count is then checked through the API:
  for a sample of devices, the stored history of each key must hold exactly the
  device's acknowledged messages, with the values sent.
- Every device keeps `--tel-window` messages in flight, sending the next as each PUBACK
  comes back: a fleet sending "as fast as acknowledged". The total in flight
  (devices x window) is what lets the platform's group-commit writer fill its batches.
- Mosquitto gets the same devices, the same logins and the same bytes, and only
  acknowledges them: the ceiling of an MQTT server on this machine, printed as a ratio.
- The devices run on the lean client (`mqttload`): PUBLISHes are encoded before the
  clock starts, each device's packets of one refill go out in one write, and a chunk
  of PUBACKs is read in place (4 bytes each) without building packet objects.
- The measured window starts after `--tel-warmup` seconds of load, so it sees the
  platform's steady state rather than its first batches.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import statistics
import struct
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

import mqttload
import servers
from mqttload import VERSION, Cpu, LoadError, Snapshot, now, packet_id
from platform_common import (
    FLAG_LOAD,
    PRODUCT,
    DeviceLogin,
    PlatformRun,
    api,
    exit_noted,
    fmt,
    median,
    open_devices,
    percentile,
    progress,
    py_spy,
    quiet,
    register,
    runs_flags,
)
from thingshub.mqtt.codec import CodecError, PacketType, PubAck, encode_publish

TOPIC = b"devices/telemetry"
KEYS = ("temperature", "humidity", "switch")
TARGET_MSGS_PER_S = 15_000.0
#: `end` of the history queries: 2100-01-01 in Unix ms, after any point of the run.
END_MS = 4_102_444_800_000
_PUBACK_HEAD = 0x4002  # a PUBACK's fixed header: type 4, remaining length 2
_PUBACKS = struct.Struct(">HH")


@dataclass
class TelemetryStats:
    """What came back during one run, across all devices."""

    sent: int = 0
    acks: int = 0
    unexpected: int = 0  # PUBACKs for no message in flight
    window_start: float = math.inf
    window_end: float = math.inf
    in_window: int = 0  # PUBACKs read within [window_start, window_end]
    latencies: list[float] = field(default_factory=list)  # in the window: written -> PUBACK


class TelemetryDevice(mqttload.Conn):
    """One device publishing `devices/telemetry` at QoS 1 with `window` in flight.

    Message k of device i is `{"temperature": k.5, "humidity": i%100.25, "switch": k
    even}`: the values of its stored points tell which messages were stored. Packets are
    encoded ahead (`prepare`), in chunks when more are needed.
    """

    def __init__(self, index: int, stats: TelemetryStats, window: int) -> None:
        super().__init__()
        self.index = index
        self.stats = stats
        self.window = window
        self.humidity = index % 100 + 0.25
        self.packets: list[bytes] = []
        self.first = 0  # message number of packets[0]
        self.count = 0  # messages sent over the whole run
        self.acked = 0
        self.sent_at: dict[int, float] = {}  # packet id -> written at
        self.running = False
        self.stop_at = math.inf

    def _encode(self, k: int) -> bytes:
        payload = b'{"temperature": %d.5, "humidity": %.2f, "switch": %s}' % (
            k, self.humidity, b"true" if k % 2 == 0 else b"false",
        )  # fmt: skip
        return encode_publish(TOPIC, payload, 1, False, False, packet_id(k), VERSION)

    def prepare(self, n: int) -> None:
        """Encode the next `n` messages now, before the clock starts."""
        self.first = self.count
        self.packets = [self._encode(k) for k in range(self.count, self.count + n)]

    def pump(self, t: float) -> None:
        """Refill the window, in one write."""
        if not self.running or t >= self.stop_at or self.lost.done():
            return
        n = self.window - len(self.sent_at)
        if n <= 0:
            return
        k, i = self.count, self.count - self.first
        if i + n > len(self.packets):  # more than prepared: drop the sent, encode a chunk
            ahead = self.packets[i:]
            ahead.extend(self._encode(j) for j in range(k + len(ahead), k + n + 256))
            self.packets, self.first, i = ahead, k, 0
        for j in range(k, k + n):
            self.sent_at[packet_id(j)] = t
        self.count = k + n
        self.stats.sent += n
        self.write(b"".join(self.packets[i : i + n]))

    def data_received(self, data: bytes) -> None:
        t = now()
        n = len(data) // 4
        if (
            not self.reader.buffered
            and len(data) % 4 == 0
            and data[0::4] == b"\x40" * n
            and data[1::4] == b"\x02" * n
        ):
            pids = [pid for _, pid in _PUBACKS.iter_unpack(data)]
        else:
            pids = []
            self.reader.feed(data)
            try:
                while (p := self.reader.next_packet()) is not None:
                    if type(p) is PubAck and p.type is PacketType.PUBACK:
                        pids.append(p.packet_id)
                    else:
                        self.control(p)
            except CodecError as exc:
                self.fail(f"undecodable bytes from the server: {exc}")
        if not pids:
            return
        st = self.stats
        in_window = st.window_start <= t <= st.window_end
        lat = st.latencies
        for pid in pids:
            sent = self.sent_at.pop(pid, None)
            if sent is None:
                st.unexpected += 1
                continue
            self.acked += 1
            st.acks += 1
            if in_window:
                st.in_window += 1
                lat.append(t - sent)
        self.pump(t)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.running = False

    @property
    def settled(self) -> bool:
        """Nothing owed: every message sent is acknowledged, or the connection is gone."""
        return not self.sent_at or self.lost.done()


@dataclass
class TelemetryResult:
    """One server's run: messages acknowledged, how fast, at what latency and CPU."""

    server: str
    devices: int
    window: int
    seconds: float
    warmup: float
    sent: int = 0
    acks: int = 0
    unacked: int = 0  # sent, no PUBACK by the end of the drain
    unexpected: int = 0
    msgs_per_s: float = 0.0
    points_per_s: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    mean_ms: float = 0.0
    server_cpu_pct: float = 0.0
    load_cpu_pct: float = 0.0
    other_cpu_pct: float = 0.0
    db_cpu_pct: float = 0.0
    server_us_per_msg: float = 0.0
    db_us_per_msg: float = 0.0
    rss_start_kb: int = 0
    rss_max_kb: int = 0
    rss_end_kb: int = 0
    lost_devices: int = 0
    verify: dict[str, Any] = field(default_factory=dict)
    complete: bool = False
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def telemetry_load(
    devices: Sequence[TelemetryDevice],
    res: TelemetryResult,
    probe: mqttload.ServerProbe,
    drain: float,
    helpers: mqttload.CpuProbe | None = None,
    profile: Path | None = None,
    pid: int = 0,
    values_per_msg: int = len(KEYS),
) -> TelemetryStats:
    """Every device pumps for warmup + seconds; the window is the last `seconds`. Then
    the sending stops and every PUBACK still owed is awaited (up to `drain` s). With
    `profile`, py-spy records process `pid` over the window. Each message carries
    `values_per_msg` points."""
    st = TelemetryStats()
    # Enough for 20,000 msg/s in all; a faster server makes devices encode more as they go.
    per_device = math.ceil(20_000 * (res.warmup + res.seconds) / max(1, len(devices))) + 16
    for d in devices:
        d.stats = st
        d.prepare(min(per_device, 2_000))
    gc.collect()
    gc.freeze()
    try:
        res.rss_start_kb = res.rss_max_kb = probe.rss_kb()
        t_start = now()
        stop_at = t_start + res.warmup + res.seconds
        for d in devices:
            d.running, d.stop_at = True, stop_at
            d.pump(t_start)
        await asyncio.sleep(res.warmup)
        with py_spy(profile, pid, f"telemetry-{res.server}", res.seconds):
            snap0 = Snapshot.take(probe, helpers)
            st.window_start, st.window_end = snap0.t, snap0.t + res.seconds
            while now() < st.window_end:
                await asyncio.sleep(min(0.5, max(0.0, st.window_end - now())))
                res.rss_max_kb = max(res.rss_max_kb, probe.rss_kb())
                if not probe.alive():
                    res.error = "server died"
                    break
            snap1 = Snapshot.take(probe, helpers)
        for d in devices:
            d.running = False
        for _ in range(max(1, int(drain / 0.05))):
            if all(d.settled for d in devices):
                break
            await asyncio.sleep(0.05)
        res.rss_end_kb = probe.rss_kb()
    finally:
        gc.unfreeze()
    cpu = Cpu.between(snap0, snap1)
    res.sent, res.acks, res.unexpected = st.sent, st.acks, st.unexpected
    res.unacked = sum(len(d.sent_at) for d in devices)
    res.msgs_per_s = st.in_window / res.seconds
    res.points_per_s = res.msgs_per_s * values_per_msg
    lat = sorted(st.latencies)
    if lat:
        res.p50_ms, res.p95_ms = 1e3 * percentile(lat, 50), 1e3 * percentile(lat, 95)
        res.p99_ms, res.max_ms = 1e3 * percentile(lat, 99), 1e3 * lat[-1]
        res.mean_ms = 1e3 * statistics.fmean(lat)
    res.server_cpu_pct, res.load_cpu_pct = cpu.server_pct, cpu.load_pct
    res.other_cpu_pct, res.db_cpu_pct = cpu.other_pct, cpu.helpers_pct
    res.server_us_per_msg = 1e6 * cpu.server_s / max(1, st.in_window)
    res.db_us_per_msg = 1e6 * cpu.helpers_s / max(1, st.in_window)
    res.lost_devices = sum(1 for d in devices if d.lost.done())
    if res.unacked:
        res.notes.append(f"{res.unacked:,} messages got no PUBACK within {drain:g} s")
    if res.unexpected:
        res.notes.append(f"{res.unexpected:,} PUBACKs for no message in flight")
    if res.lost_devices:
        why = next(d.why for d in devices if d.lost.done())
        res.notes.append(f"{res.lost_devices} devices lost their connection: {why}")
    if res.load_cpu_pct >= FLAG_LOAD:
        res.notes.append(
            f"the load generator used {res.load_cpu_pct:.0f}% of its core: the figure may be "
            "its limit, not the server's"
        )
    res.complete = (
        res.error is None
        and res.unacked == 0
        and res.unexpected == 0
        and res.lost_devices == 0
        and st.in_window > 0
    )
    return st


async def verify_telemetry(
    server: servers.PlatformServer,
    devices: Sequence[TelemetryDevice],
    names: Sequence[str],
    sample: int,
) -> dict[str, Any]:
    """Read back a sample of devices' history through the API, every page of every key.

    Each key must hold exactly one point per acknowledged message: as many points as
    PUBACKs, the temperatures being exactly k + 0.5 for k = 0..acked-1 (so no message is
    missing or stored twice), the humidity the device's own, and `switch` true for the
    even k.
    """
    step = max(1, len(devices) // max(1, sample))
    chosen = list(range(len(devices)))[::step][:sample]
    bad: list[str] = []
    points = 0
    try:
        async with api(server, 4) as http, asyncio.timeout(120):
            for i in chosen:
                d, name = devices[i], names[i]
                got: dict[str, list[Any]] = {}
                for key in KEYS:
                    values: list[Any] = []
                    cursor: str | None = None
                    while True:
                        params = {"key": key, "start": "0", "end": str(END_MS), "limit": "10000"}
                        if cursor:
                            params["cursor"] = cursor
                        r = await http.get(
                            f"/api/v1/products/{PRODUCT}/devices/{name}/telemetry", params=params
                        )
                        if r.status_code != 200:
                            raise LoadError(f"{name} {key}: HTTP {r.status_code} {r.text[:100]}")
                        page = r.json()
                        values.extend(v for _, v in page["points"])
                        cursor = page.get("next")
                        if not cursor:
                            break
                    got[key] = values
                    points += len(values)
                n = d.acked
                want_switch = (n + 1) // 2
                problems = []
                if [len(got[k]) for k in KEYS] != [n] * len(KEYS):
                    problems.append(f"{[len(got[k]) for k in KEYS]} points for {n:,} PUBACKs")
                elif sorted(got["temperature"]) != [k + 0.5 for k in range(n)]:
                    problems.append("temperatures are not those of messages 0..n-1")
                elif any(v != d.humidity for v in got["humidity"]):
                    problems.append(f"humidity other than {d.humidity}")
                elif sum(1 for v in got["switch"] if v is True) != want_switch:
                    problems.append("switch values differ from those sent")
                if problems:
                    bad.append(f"{name}: " + "; ".join(problems))
    except TimeoutError:
        bad.append("the checks took more than 120 s")
    except (httpx.HTTPError, LoadError, KeyError, TypeError, ValueError) as exc:
        bad.append(f"{type(exc).__name__}: {exc}")
    return {"checked": len(chosen), "points": points, "bad": bad}


async def connect_telemetry_devices(
    host: str, port: int, logins: Sequence[DeviceLogin], window: int, concurrency: int
) -> list[TelemetryDevice]:
    """Log every device in with its ThingsPanel user name and password (client id: its
    name); no subscription, since devices/telemetry has no response topic."""
    placeholder = TelemetryStats()

    def factory(i: int) -> Callable[[], TelemetryDevice]:
        return lambda: TelemetryDevice(i, placeholder, window)

    return await open_devices(
        host,
        port,
        [factory(i) for i in range(len(logins))],
        [d.name for d in logins],
        [(d.username, d.password) for d in logins],
        concurrency,
    )


def new_result(server: str, a: argparse.Namespace) -> TelemetryResult:
    return TelemetryResult(server, a.tel_devices, a.tel_window, a.seconds, a.tel_warmup)


def run_telemetry_thingshub(a: argparse.Namespace, logins_out: list[DeviceLogin]) -> dict[str, Any]:
    """One platform: register, log in, load, drain, then read a sample back via the API."""
    run = PlatformRun(a)
    with run as server:

        async def go() -> dict[str, Any]:
            logins, reg_s = await register(
                server, a.tel_devices, a.register_concurrency, a.limit * 5
            )
            logins_out[:] = logins
            progress(f"    registered {len(logins):,} devices in {reg_s:.1f} s")
            devices = await connect_telemetry_devices(
                server.host, server.port, logins, a.tel_window, a.conn_concurrency
            )
            res = new_result("thingshub", a)
            try:
                await quiet(a)
                await telemetry_load(
                    devices, res, server, a.drain, run.helpers, a.py_spy, server.pid
                )
                res.verify = await verify_telemetry(
                    server, devices, [d.name for d in logins], a.tel_verify
                )
            finally:
                mqttload.close_all(devices)
                await asyncio.sleep(0.1)
            if res.verify["bad"]:
                res.complete = False
            progress(f"    thingshub: {describe_telemetry(res)}")
            return {**figures(res), "register_seconds": reg_s}

        result = mqttload.run_loop(go())
    return exit_noted(result, run)


def run_telemetry_mosquitto(a: argparse.Namespace, logins: Sequence[DeviceLogin]) -> dict[str, Any]:
    """Mosquitto, open (no password file: the same user names and passwords are sent and
    not checked) and in memory: it only acknowledges the same load."""
    server = servers.start_mosquitto(a.server_cpus if a.pin else None, a.mosquitto)
    try:

        async def go() -> TelemetryResult:
            devices = await connect_telemetry_devices(
                server.host, server.port, logins, a.tel_window, a.conn_concurrency
            )
            res = new_result("mosquitto", a)
            try:
                await quiet(a)
                await telemetry_load(devices, res, server, a.drain)
            finally:
                mqttload.close_all(devices)
                await asyncio.sleep(0.1)
            return res

        res = mqttload.run_loop(go())
    finally:
        alive, code = server.alive(), server.stop()
    if not alive:
        res.complete = False
        res.error = res.error or f"mosquitto died (exit {code})"
    progress(f"    mosquitto: {describe_telemetry(res)}")
    return figures(res)


def figures(res: TelemetryResult) -> dict[str, Any]:
    """A run as `attempt` and the report want it."""
    out = res.as_dict()
    out["valid"] = res.complete
    out["other_max"] = res.other_cpu_pct
    out["errors"] = [res.error] if res.error else []
    return out


# ----------------------------------------------------------------------- report


def describe_telemetry(r: TelemetryResult) -> str:
    text = (
        f"{r.msgs_per_s:,.0f} msg/s ({r.points_per_s:,.0f} points/s), {r.acks:,} PUBACKs of "
        f"{r.sent:,} sent; PUBACK latency p50 {r.p50_ms:.1f} p99 {r.p99_ms:.1f} max "
        f"{r.max_ms:.1f} ms; server {r.server_cpu_pct:.0f}% load {r.load_cpu_pct:.0f}% other "
        f"{r.other_cpu_pct:.0f}%; {r.server_us_per_msg:.0f} us/msg; RSS "
        f"{r.rss_start_kb / 1024:,.0f}->{r.rss_max_kb / 1024:,.0f} MB"
    )
    if r.db_cpu_pct:
        text += f"; database {r.db_cpu_pct:.0f}% = {r.db_us_per_msg:.0f} us/msg"
    if r.verify:
        v = r.verify
        text += f"; API check {v['checked'] - len(v['bad'])}/{v['checked']} devices ok"
    if r.error:
        text += f"; ERROR {r.error}"
    if r.notes:
        text += "; " + "; ".join(r.notes)
    return text


def print_telemetry(
    by_server: dict[str, list[dict[str, Any]]], a: argparse.Namespace, env: dict[str, Any]
) -> None:
    names = [n for n in ("mosquitto", "thingshub") if n in by_server]
    print()
    print(
        f"telemetry: {a.tel_devices:,} devices (MQTT 3.1.1, ThingsPanel user name/password) "
        f"publish devices/telemetry at QoS 1, {len(KEYS)} keys a message, {a.tel_window} in "
        f"flight each, {a.seconds:g} s measured after {a.tel_warmup:g} s"
    )
    print("  thingshub: PUBACK once the points are durable; " + env["storage"])
    if "mosquitto" in names:
        print("  mosquitto: PUBACK only, nothing stored (no subscriber, persistence off)")
    print()

    def flags(n: str) -> str:
        return runs_flags(by_server[n], a.max_other)

    # label, key, digits, scale, flags shown, ratio shown
    rows: list[tuple[str, str, int, float, bool, bool]] = [
        ("messages/s acknowledged", "msgs_per_s", 0, 1, True, True),
        ("points/s durably stored", "points_per_s", 0, 1, False, False),
        ("PUBACK latency p50, ms", "p50_ms", 1, 1, False, False),
        ("PUBACK latency p99, ms", "p99_ms", 1, 1, False, False),
        ("PUBACK latency max, ms", "max_ms", 1, 1, False, False),
        ("server CPU %", "server_cpu_pct", 0, 1, False, False),
        ("server CPU per message, us", "server_us_per_msg", 1, 1, False, True),
        ("load CPU %", "load_cpu_pct", 0, 1, False, False),
        ("other CPU %", "other_cpu_pct", 0, 1, False, False),
        *(
            [
                ("database backends' CPU %", "db_cpu_pct", 0, 1, False, False),
                ("database backends' CPU per message, us", "db_us_per_msg", 1, 1, False, False),
            ]
            if a.database_url
            else []
        ),
        ("server RSS before the load, MB", "rss_start_kb", 0, 1 / 1024, False, False),
        ("server RSS at most during the load, MB", "rss_max_kb", 0, 1 / 1024, False, False),
    ]
    width = max(len(r[0]) for r in rows) + 2
    head = f"{'figure':<{width}}" + "".join(f"{n:>14}" for n in names)
    if len(names) == 2:
        head += f"{'thingshub/mosq':>16}{'target':>22}"
    print(head)
    print("-" * len(head))
    for label, key, digits, scale, flagged, with_ratio in rows:
        line = f"{label:<{width}}"
        vals: dict[str, float | None] = {}
        for n in names:
            v = median(by_server[n], key)
            if key == "points_per_s" and n != "thingshub":
                v = None  # mosquitto stores nothing
            vals[n] = None if v is None else v * scale
            f = flags(n) if flagged else ""
            line += f"{fmt(vals[n], digits) + (' ' + f if f else ''):>14}"
        if len(names) == 2:
            m, t = vals["mosquitto"], vals["thingshub"]
            ratio = t / m if with_ratio and m and t is not None else None
            line += f"{fmt(ratio, 2) if with_ratio else '':>16}"
        if key == "msgs_per_s" and "thingshub" in names:
            t = vals["thingshub"]
            ok = t is not None and t >= TARGET_MSGS_PER_S
            target = f">= {TARGET_MSGS_PER_S:,.0f} {'ok' if ok else 'MISSED'}"
            line += f"{target:>22}"
        print(line)
    for n in names:
        for r in by_server[n]:
            for e in r.get("errors", []):
                print(f"  {n} run {r.get('run')}: ERROR {e}")
            for note in r.get("notes", []):
                print(f"  {n} run {r.get('run')}: {note}")
            v = r.get("verify")
            if v:
                print(
                    f"  {n} run {r.get('run')}: history read back through the API for "
                    f"{v['checked']} devices ({v['points']:,} points): "
                    f"{v['checked'] - len(v['bad'])}/{v['checked']} equal to their PUBACKs"
                )
                for b in v["bad"][:10]:
                    print(f"    MISMATCH {b}")
    reg = median(by_server.get("thingshub", []), "register_seconds")
    if reg:
        print(f"  (setup: {a.tel_devices:,} devices registered through the API in {reg:.1f} s)")
