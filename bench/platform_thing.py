"""The `thing` test of `platform_bench.py`: OneNET thing-model property posts of 10 typed
properties, durably stored, against ThingsPanel telemetry of the same 10 values.

Why it is built this way (bench/README.md says what each figure means):
- The question is what the thing model costs over plain telemetry (issue 14: no worse
  than 0.8 x ThingsPanel). Both are stored the same way (points through the group-commit
  writer), so the difference is the OneJSON envelope, the per-value objects, the checks
  against the product's model and the reply. Both sides therefore send the same values,
  10 a message, from the same number of devices with the same window, for the same
  time, each on a fresh platform, in the same invocation; the ratio thing / ThingsPanel
  of one run is the figure (drift on a shared machine hits both alike).
- A thing device posts `$sys/{pid}/{name}/thing/property/post` at QoS 1 and a post counts
  once both its PUBACK and its `property/post/reply` came back: the reply is the
  device's answer (code 200 once stored, docs/protocols.md 5.2), the PUBACK the MQTT
  acknowledgement; the window refills only then.
- The 10 properties cover the scalar data types a device reports (int32, int64, float,
  double, bool, enum, string, date, bitMap), with bounds, so every value goes through
  its type's check. Each post carries a `time` per value, as devices in the field do.
- Every value tells which message it came from (`seq` is the message number k), so the
  stored history read back through the API must hold exactly one point per key per
  acknowledged message, on both sides: `seq` 0..n-1, and n points for every other key.
- The load client is `telemetry_load` of platform_telemetry.py: the same pre-encoding,
  window refills, warmup, CPU and RSS probes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import httpx

import mqttload
import servers
from mqttload import VERSION, LoadError, now, packet_id
from platform_common import (
    PRODUCT,
    DeviceLogin,
    PlatformRun,
    api,
    attempt,
    exit_noted,
    fmt,
    median,
    open_devices,
    progress,
    quiet,
    register,
    runs_flags,
)
from platform_telemetry import (
    END_MS,
    TOPIC,
    TelemetryDevice,
    TelemetryResult,
    TelemetryStats,
    describe_telemetry,
    figures,
    telemetry_load,
)
from thingshub.mqtt.codec import CodecError, PubAck, Publish, encode_publish

TARGET_RATIO = 0.8
THING, THINGSPANEL = "thing", "thingspanel"

#: The model's 10 properties: (identifier, dataType).
PROPERTIES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("seq", {"type": "int64", "specs": {"min": 0}}),
    ("temp", {"type": "float", "specs": {"min": -40, "max": 125, "unit": "C"}}),
    ("humidity", {"type": "double", "specs": {"min": 0, "max": 100, "unit": "%"}}),
    ("pressure", {"type": "int32", "specs": {"min": 300, "max": 1100, "unit": "hPa"}}),
    ("on", {"type": "bool", "specs": {"0": "off", "1": "on"}}),
    ("mode", {"type": "enum", "specs": {"0": "off", "1": "eco", "2": "comfort"}}),
    ("label", {"type": "string", "specs": {"length": 32}}),
    ("seen", {"type": "date", "specs": {}}),
    ("flags", {"type": "bitMap", "specs": {"length": 8}}),
    ("level", {"type": "int32", "specs": {"min": 0, "max": 100}}),
)
KEYS = tuple(identifier for identifier, _ in PROPERTIES)
#: `seen` and each value's `time`: a fixed past instant plus the message number, in ms.
BASE_MS = 1_767_225_600_000  # 2026-01-01


def thing_model() -> dict[str, Any]:
    """The product's model, in OneNET's export shape (docs/protocols.md 5.3)."""
    return {
        "properties": [
            {"identifier": i, "name": i, "accessMode": "r", "dataType": t} for i, t in PROPERTIES
        ]
    }


def values(k: int, index: int) -> list[bytes]:
    """Message k of device `index`: one JSON literal per key of KEYS, every one valid."""
    return [
        b"%d" % k,
        b"%d.5" % (k % 160 - 39),
        b"%d.25" % (index % 100),
        b"%d" % (300 + k % 800),
        b"true" if k % 2 == 0 else b"false",
        b"%d" % (k % 3),
        b'"d%d-m%d"' % (index, k),
        b"%d" % (BASE_MS + k),
        b"%d" % (k % 256),
        b"%d" % (k % 101),
    ]


class ThingsPanelDevice(TelemetryDevice):
    """A ThingsPanel device posting the 10 values on `devices/telemetry` (no time: the
    platform stamps them when it receives them)."""

    def _encode(self, k: int) -> bytes:
        body = b",".join(
            b'"%s":%s' % (key, v) for key, v in zip(_KEYS, values(k, self.index), strict=True)
        )
        return encode_publish(TOPIC, b"{" + body + b"}", 1, False, False, packet_id(k), VERSION)


_KEYS = [k.encode() for k in KEYS]


class ThingDevice(TelemetryDevice):
    """A OneNET device posting the 10 properties on `thing/property/post` at QoS 1.

    `sent_at` is keyed by packet id as in `TelemetryDevice`; a post is done, and leaves
    `sent_at`, once both its PUBACK and its reply (id = k + 1) have come back. A reply
    other than code 200 is counted in `codes` and fails the run.
    """

    def __init__(self, index: int, name: str, stats: TelemetryStats, window: int) -> None:
        super().__init__(index, stats, window)
        self.topic = f"$sys/{PRODUCT}/{name}/thing/property/post".encode()
        self.acked_pids: set[int] = set()
        self.replied_pids: set[int] = set()
        self.codes: Counter[int] = Counter()
        self.foreign = 0  # PUBLISHes that are not a reply to a post in flight

    def _encode(self, k: int) -> bytes:
        at = b"%d" % (BASE_MS + k)
        params = b",".join(
            b'"%s":{"value":%s,"time":%s}' % (key, v, at)
            for key, v in zip(_KEYS, values(k, self.index), strict=True)
        )
        payload = b'{"id":"%d","version":"1.0","params":{%s}}' % (k + 1, params)
        return encode_publish(self.topic, payload, 1, False, False, packet_id(k), VERSION)

    def data_received(self, data: bytes) -> None:
        t = now()
        reader = self.reader
        reader.feed(data)
        st = self.stats
        done = False
        try:
            while (p := reader.next_packet()) is not None:
                pid: int | None
                if type(p) is PubAck:
                    pid = p.packet_id
                    if pid not in self.sent_at or pid in self.acked_pids:
                        st.unexpected += 1
                        continue
                    self.acked_pids.add(pid)
                elif type(p) is Publish:
                    pid = self._reply(p.payload)
                    if pid is None:
                        continue
                    self.replied_pids.add(pid)
                else:
                    self.control(p)
                    continue
                if pid in self.acked_pids and pid in self.replied_pids:
                    self._done(pid, t)
                    done = True
        except CodecError as exc:
            self.fail(f"undecodable bytes from the server: {exc}")
        if done:
            self.pump(t)

    def _reply(self, payload: bytes) -> int | None:
        """The packet id of the post a reply answers; None (counted) if it answers none."""
        try:
            body = json.loads(payload)
            k = int(body["id"]) - 1
            code = body["code"]
        except (ValueError, KeyError, TypeError):
            self.foreign += 1
            return None
        pid = packet_id(k)
        if k < 0 or pid not in self.sent_at or pid in self.replied_pids:
            self.foreign += 1
            return None
        self.codes[code] += 1
        return pid

    def _done(self, pid: int, t: float) -> None:
        self.acked_pids.discard(pid)
        self.replied_pids.discard(pid)
        sent = self.sent_at.pop(pid)
        self.acked += 1
        st = self.stats
        st.acks += 1
        if st.window_start <= t <= st.window_end:
            st.in_window += 1
            st.latencies.append(t - sent)


async def verify_points(
    server: servers.PlatformServer,
    devices: Sequence[TelemetryDevice],
    names: Sequence[str],
    sample: int,
) -> dict[str, Any]:
    """Read back a sample of devices' history through the API, every key, every page.

    Each key must hold one point per acknowledged message: `seq` exactly 0..n-1 (no
    message missing or stored twice), and n points for each of the other keys.
    """
    step = max(1, len(devices) // max(1, sample))
    chosen = list(range(len(devices)))[::step][:sample]
    bad: list[str] = []
    points = 0
    try:
        async with api(server, 4) as http, asyncio.timeout(300):
            for i in chosen:
                d, name = devices[i], names[i]
                counts: dict[str, int] = {}
                seqs: list[Any] = []
                for key in KEYS:
                    cursor: str | None = None
                    counts[key] = 0
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
                        counts[key] += len(page["points"])
                        if key == "seq":
                            seqs.extend(v for _, v in page["points"])
                        cursor = page.get("next")
                        if not cursor:
                            break
                points += sum(counts.values())
                n = d.acked
                if list(counts.values()) != [n] * len(KEYS):
                    bad.append(f"{name}: {list(counts.values())} points for {n:,} posts")
                elif sorted(seqs) != list(range(n)):
                    bad.append(f"{name}: seq values are not those of messages 0..n-1")
    except TimeoutError:
        bad.append("the checks took more than 300 s")
    except (httpx.HTTPError, LoadError, KeyError, TypeError, ValueError) as exc:
        bad.append(f"{type(exc).__name__}: {exc}")
    return {"checked": len(chosen), "points": points, "bad": bad}


def run_side(side: str, a: argparse.Namespace) -> dict[str, Any]:
    """One platform: register (the thing side's product with its model), log in, load,
    drain, then read a sample back through the API."""
    run = PlatformRun(a)
    with run as server:

        async def go() -> dict[str, Any]:
            product = {"thing_model": thing_model()} if side == THING else None
            logins, reg_s = await register(
                server, a.tel_devices, a.register_concurrency, a.limit * 5, product
            )
            progress(f"    registered {len(logins):,} devices in {reg_s:.1f} s")
            devices = await connect(server, side, logins, a)
            res = TelemetryResult(side, a.tel_devices, a.tel_window, a.seconds, a.tel_warmup)
            try:
                await quiet(a)
                await telemetry_load(
                    devices,
                    res,
                    server,
                    a.drain,
                    run.helpers,
                    a.py_spy,
                    server.pid,
                    values_per_msg=len(KEYS),
                )
                if side == THING:
                    _thing_checks(res, devices)
                res.verify = await verify_points(
                    server, devices, [d.name for d in logins], a.tel_verify
                )
            finally:
                mqttload.close_all(devices)
                await asyncio.sleep(0.1)
            if res.verify["bad"]:
                res.complete = False
            progress(f"    {side}: {describe_telemetry(res)}")
            return {**figures(res), "register_seconds": reg_s}

        result = mqttload.run_loop(go())
    return exit_noted(result, run)


async def connect(
    server: servers.PlatformServer, side: str, logins: Sequence[DeviceLogin], a: argparse.Namespace
) -> list[TelemetryDevice]:
    """Thing devices log in with their OneNET token and subscribe to their post reply
    (QoS 0); ThingsPanel devices with their user name and password, no subscription."""
    placeholder = TelemetryStats()
    window = a.tel_window
    factories: list[Callable[[], TelemetryDevice]]
    if side == THING:
        factories = [
            partial(ThingDevice, i, d.name, placeholder, window) for i, d in enumerate(logins)
        ]
        return await open_devices(
            server.host,
            server.port,
            factories,
            [d.name for d in logins],
            [(PRODUCT, d.token) for d in logins],
            a.conn_concurrency,
            lambda i: [f"$sys/{PRODUCT}/{logins[i].name}/thing/property/post/reply"],
        )
    factories = [partial(ThingsPanelDevice, i, placeholder, window) for i in range(len(logins))]
    return await open_devices(
        server.host,
        server.port,
        factories,
        [d.name for d in logins],
        [(d.username, d.password) for d in logins],
        a.conn_concurrency,
    )


def _thing_checks(res: TelemetryResult, devices: Sequence[TelemetryDevice]) -> None:
    """Every reply must be code 200 and answer a post in flight."""
    codes: Counter[int] = Counter()
    foreign = 0
    for d in devices:
        assert isinstance(d, ThingDevice)
        codes.update(d.codes)
        foreign += d.foreign
    refused = sum(n for code, n in codes.items() if code != 200)
    if refused:
        res.notes.append(f"{refused:,} replies were not 200: {dict(codes)}")
        res.complete = False
    if foreign:
        res.notes.append(f"{foreign:,} replies answered no post in flight")
        res.complete = False


def run_thing(a: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """`--runs` pairs, each side on a fresh platform, each redone once if disturbed. The
    order alternates (ThingsPanel first in odd runs) so that neither side always meets
    the machine in the same state."""
    by_side: dict[str, list[dict[str, Any]]] = {THINGSPANEL: [], THING: []}
    for i in range(a.runs):
        order = (THINGSPANEL, THING) if i % 2 == 0 else (THING, THINGSPANEL)
        for side in order:
            progress(f"[thing {i + 1}/{a.runs}] {side}: {a.tel_devices:,} devices ...")
            out = attempt(side, a, partial(run_side, side, a))
            out["run"] = i + 1
            by_side[side].append(out)
    return by_side


# ----------------------------------------------------------------------- report


def ratios(by_side: dict[str, list[dict[str, Any]]], key: str) -> list[float]:
    """thing / ThingsPanel of `key`, run by run, where both runs of a pair are valid."""
    out = []
    for t, p in zip(by_side[THING], by_side[THINGSPANEL], strict=True):
        if t.get("valid") and p.get("valid") and p.get(key):
            out.append(t[key] / p[key])
    return out


def cpu_ratios(by_side: dict[str, list[dict[str, Any]]]) -> list[float]:
    """ThingsPanel's CPU per message / thing's (server + database), run by run."""
    out = []
    for t, p in zip(by_side[THING], by_side[THINGSPANEL], strict=True):
        if not (t.get("valid") and p.get("valid")):
            continue
        mine = t.get("server_us_per_msg", 0) + t.get("db_us_per_msg", 0)
        theirs = p.get("server_us_per_msg", 0) + p.get("db_us_per_msg", 0)
        if mine and theirs:
            out.append(theirs / mine)
    return out


def print_thing(
    by_side: dict[str, list[dict[str, Any]]], a: argparse.Namespace, env: dict[str, Any]
) -> None:
    print()
    print(
        f"thing: {a.tel_devices:,} devices (MQTT 3.1.1) post {len(KEYS)} values a message at "
        f"QoS 1, {a.tel_window} in flight each, {a.seconds:g} s measured after "
        f"{a.tel_warmup:g} s; {env['storage']}"
    )
    print(
        "  thing: OneNET token, thing/property/post (OneJSON, a time per value) checked "
        "against a model of 10 typed properties; done at PUBACK + reply 200"
    )
    print("  thingspanel: user name/password, devices/telemetry of the same values; PUBACK")
    print()

    def flags(side: str) -> str:
        return runs_flags(by_side[side], a.max_other)

    # label, key, digits, flags shown, ratio shown
    rows: list[tuple[str, str, int, bool, bool]] = [
        ("messages/s (posts/s) acknowledged", "msgs_per_s", 0, True, True),
        ("points/s durably stored", "points_per_s", 0, False, True),
        ("latency p50 (PUBACK, + reply for thing), ms", "p50_ms", 1, False, False),
        ("latency p99, ms", "p99_ms", 1, False, False),
        ("server CPU %", "server_cpu_pct", 0, False, False),
        ("server CPU per message, us", "server_us_per_msg", 1, False, True),
        ("load CPU %", "load_cpu_pct", 0, False, False),
        ("other CPU %", "other_cpu_pct", 0, False, False),
        *(
            [
                ("database backends' CPU %", "db_cpu_pct", 0, False, False),
                ("database backends' CPU per message, us", "db_us_per_msg", 1, False, True),
            ]
            if a.database_url
            else []
        ),
        ("server RSS at most during the load, MB", "rss_max_kb", 0, False, False),
    ]
    width = max(len(r[0]) for r in rows) + 2
    head = f"{'figure':<{width}}{THINGSPANEL:>14}{THING:>14}{'thing/tp':>10}"
    print(head)
    print("-" * len(head))
    for label, key, digits, flagged, with_ratio in rows:
        scale = 1 / 1024 if key.endswith("_kb") else 1
        line = f"{label:<{width}}"
        vals = {}
        for side in (THINGSPANEL, THING):
            v = median(by_side[side], key)
            vals[side] = None if v is None else v * scale
            f = flags(side) if flagged else ""
            line += f"{fmt(vals[side], digits) + (' ' + f if f else ''):>14}"
        if with_ratio:
            r = ratios(by_side, key)
            line += f"{fmt(sorted(r)[len(r) // 2] if r else None, 2):>10}"
        print(line)
    r = ratios(by_side, "msgs_per_s")
    if r:
        shown = ", ".join(f"{x:.2f}" for x in r)
        ok = sorted(r)[len(r) // 2] >= TARGET_RATIO
        print(
            f"thing / ThingsPanel messages/s, run by run: {shown}; target >= "
            f"{TARGET_RATIO:.2f}: {'ok' if ok else 'MISSED'}"
        )
        # Server CPU per message does not depend on how much of its core the server got,
        # so it holds when other processes took part of it in one run and not the other.
        # With PostgreSQL, the database backends' CPU per message counts too.
        cpu = cpu_ratios(by_side)
        if cpu:
            shown = ", ".join(f"{x:.2f}" for x in cpu)
            ok = sorted(cpu)[len(cpu) // 2] >= TARGET_RATIO
            print(
                "the same by CPU per message (server + database; ThingsPanel us / thing us), "
                f"run by run: {shown}; target >= {TARGET_RATIO:.2f}: {'ok' if ok else 'MISSED'}"
            )
    for side in (THINGSPANEL, THING):
        for run in by_side[side]:
            for e in run.get("errors", []):
                print(f"  {side} run {run.get('run')}: ERROR {e}")
            for note in run.get("notes", []):
                print(f"  {side} run {run.get('run')}: {note}")
            v = run.get("verify")
            if v:
                print(
                    f"  {side} run {run.get('run')}: history read back through the API for "
                    f"{v['checked']} devices ({v['points']:,} points): "
                    f"{v['checked'] - len(v['bad'])}/{v['checked']} equal to their "
                    "acknowledged messages"
                )
                for b in v["bad"][:10]:
                    print(f"    MISMATCH {b}")
