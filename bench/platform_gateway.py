"""The `gateway` test of `platform_bench.py` (issue 15): one ThingsPanel gateway carrying
1,000 sub-devices' telemetry, durably stored, next to 1,000 direct devices sending the
same values, on the same platform run.

Why it is built this way (bench/README.md says what each figure means):
- The question is what a gateway's nested payload costs per point against direct
  devices, and how many points one gateway connection can land. Both phases therefore
  run on one platform (one data dir, one process), one after the other, with the same
  values per device: sub-device i's j-th report is direct device i's message j.
- Phase 1: the gateway publishes `gateway/telemetry` at QoS 1, each message carrying
  `--gw-per-msg` sub-devices' values in `sub_device_data` (50 by default: a gateway
  polling a field bus reports its sub-devices in batches, and 50 x 3 values keeps a
  message near 3.5 KB, far under ThingsPanel's 64 KiB and 10,000 points). Message k
  covers group k % G of the sub-devices (G = subs / per-msg), so every sub-device
  reports once every G messages. The gateway keeps `--gw-window` messages in flight (20
  by default, paho's `max_inflight_messages`, the client most gateway firmware in
  Python uses), sending the next as each PUBACK comes back.
- Phase 2: the 1,000 direct devices publish `devices/telemetry` at QoS 1 with the
  telemetry test's window (`--tel-window`, 4 each), exactly as `--tests telemetry`.
- A PUBACK means the message's points are durable, so points/s = PUBACKs/s x points a
  message. Server CPU per point is the figure that compares the two shapes whatever
  the rates: a gateway message carries 150 points, a direct one 3.
- The load is `telemetry_load` of platform_telemetry.py (pre-encoded packets, window
  refills, warmup, CPU and RSS probes, drain); the checks are `verify_telemetry`'s: for a
  sample of sub-devices and of direct devices, each key's history read back through the
  API holds exactly one point per acknowledged report, with the values sent (0 lost,
  none stored twice).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from typing import Any

import httpx

import mqttload
import servers
from mqttload import VERSION, LoadError, now, packet_id
from platform_common import (
    FLAG_LOAD,
    PRODUCT,
    DeviceLogin,
    PlatformRun,
    api,
    exit_noted,
    fmt,
    open_devices,
    progress,
    quiet,
    register,
)
from platform_telemetry import (
    KEYS,
    TelemetryDevice,
    TelemetryResult,
    TelemetryStats,
    connect_telemetry_devices,
    describe_telemetry,
    figures,
    telemetry_load,
    verify_telemetry,
)
from thingshub.mqtt.codec import encode_publish

GW_TOPIC = b"gateway/telemetry"
GATEWAY = "gw000000"
PHASES = ("gateway", "direct")


def sub_name(i: int) -> str:
    return f"sub{i:06d}"


def sub_address(i: int) -> str:
    return f"s{i:05d}"


class GatewayDevice(TelemetryDevice):
    """The gateway: message k carries the values of sub-device group g = k % groups, each
    sub-device's report number j = k // groups, with the values `TelemetryDevice` gives
    device i's message j (temperature j.5, humidity i % 100 + .25, switch j even)."""

    def __init__(self, subs: int, per_msg: int, stats: TelemetryStats, window: int) -> None:
        super().__init__(0, stats, window)
        self.per_msg = per_msg
        self.groups = subs // per_msg
        # Each sub-device's entry around its two varying values, formatted once.
        self.heads = [b'"%s":{"temperature":' % sub_address(i).encode() for i in range(subs)]
        self.mids = [b',"humidity":%.2f,"switch":' % (i % 100 + 0.25) for i in range(subs)]

    def _encode(self, k: int) -> bytes:
        j, g = divmod(k, self.groups)
        temperature, switch = b"%d.5" % j, (b"true}" if j % 2 == 0 else b"false}")
        first = g * self.per_msg
        body = b",".join(
            self.heads[i] + temperature + self.mids[i] + switch
            for i in range(first, first + self.per_msg)
        )
        payload = b'{"sub_device_data":{' + body + b"}}"
        return encode_publish(GW_TOPIC, payload, 1, False, False, packet_id(k), VERSION)

    def reports(self, i: int) -> int:
        """How many reports of sub-device i were acknowledged (every message sent was,
        when the run is complete: `unacked` is 0)."""
        g = i // self.per_msg
        return max(0, (self.acked - g + self.groups - 1) // self.groups)


def expected_subs(gw: GatewayDevice, subs: int) -> list[TelemetryDevice]:
    """What `verify_telemetry` compares each sub-device's history with: its index (which
    gives its humidity) and its acknowledged reports."""
    out = []
    for i in range(subs):
        d = TelemetryDevice(i, gw.stats, 1)
        d.acked = gw.reports(i)
        out.append(d)
    return out


async def register_gateway(
    server: servers.PlatformServer, subs: int, concurrency: int, limit: float
) -> tuple[DeviceLogin, float]:
    """Create the gateway and its `subs` sub-devices (`sub000000`... at addresses
    `s00000`...) in product `bench` through the API; its login and the time taken."""
    todo = iter(range(subs))
    t0 = now()
    try:
        async with api(server, concurrency) as http, asyncio.timeout(limit):
            r = await http.post(f"/api/v1/products/{PRODUCT}/devices", json={"name": GATEWAY})
            if r.status_code != 201:
                raise LoadError(f"registering the gateway: HTTP {r.status_code} {r.text[:200]}")
            body = r.json()
            gw = DeviceLogin(GATEWAY, body["key"], "", body["username"], body["password"])

            async def worker() -> None:
                for i in todo:
                    r = await http.post(
                        f"/api/v1/products/{PRODUCT}/devices",
                        json={
                            "name": sub_name(i),
                            "gateway": {"product_id": PRODUCT, "name": GATEWAY},
                            "sub_address": sub_address(i),
                        },
                    )
                    if r.status_code != 201:
                        raise LoadError(
                            f"registering {sub_name(i)}: HTTP {r.status_code} {r.text[:200]}"
                        )

            await asyncio.gather(*(worker() for _ in range(concurrency)))
    except TimeoutError:
        raise LoadError(f"registering {subs:,} sub-devices took more than {limit:g} s") from None
    except httpx.HTTPError as exc:
        raise LoadError(f"registering sub-devices: {type(exc).__name__}: {exc}") from None
    return gw, now() - t0


def new_result(phase: str, a: argparse.Namespace) -> TelemetryResult:
    window = a.gw_window if phase == "gateway" else a.tel_window
    return TelemetryResult(phase, a.gw_subs, window, a.seconds, a.tel_warmup)


async def gateway_phase(
    a: argparse.Namespace, run: PlatformRun, server: servers.PlatformServer, gw: DeviceLogin
) -> TelemetryResult:
    """Phase 1: the gateway alone, then a sample of its sub-devices read back."""
    subs, per_msg = a.gw_subs, a.gw_per_msg
    conns = await open_devices(
        server.host,
        server.port,
        [lambda: GatewayDevice(subs, per_msg, TelemetryStats(), a.gw_window)],
        [GATEWAY],
        [(gw.username, gw.password)],
        1,
    )
    device = conns[0]
    res = new_result("gateway", a)
    try:
        await quiet(a)
        await telemetry_load(
            conns,
            res,
            server,
            a.drain,
            run.helpers,
            a.py_spy,
            server.pid,
            values_per_msg=per_msg * len(KEYS),
        )
        names = [sub_name(i) for i in range(subs)]
        res.verify = await verify_telemetry(
            server, expected_subs(device, subs), names, a.tel_verify
        )
    finally:
        mqttload.close_all(conns)
        await asyncio.sleep(0.1)
    return res


async def direct_phase(
    a: argparse.Namespace,
    run: PlatformRun,
    server: servers.PlatformServer,
    logins: Sequence[DeviceLogin],
) -> TelemetryResult:
    """Phase 2: the direct devices, as the telemetry test runs them."""
    devices = await connect_telemetry_devices(
        server.host, server.port, logins, a.tel_window, a.conn_concurrency
    )
    res = new_result("direct", a)
    try:
        await quiet(a)
        await telemetry_load(devices, res, server, a.drain, run.helpers, a.py_spy, server.pid)
        res.verify = await verify_telemetry(server, devices, [d.name for d in logins], a.tel_verify)
    finally:
        mqttload.close_all(devices)
        await asyncio.sleep(0.1)
    return res


def phase_figures(res: TelemetryResult) -> dict[str, Any]:
    if res.verify["bad"]:
        res.complete = False
    out = figures(res)
    per_msg = res.points_per_s / res.msgs_per_s if res.msgs_per_s else 0.0
    out["points_per_msg"] = per_msg
    out["server_us_per_point"] = res.server_us_per_msg / per_msg if per_msg else 0.0
    out["db_us_per_point"] = res.db_us_per_msg / per_msg if per_msg else 0.0
    return out


def run_gateway(a: argparse.Namespace) -> dict[str, Any]:
    """One platform: register both fleets, run phase 1 (gateway) then phase 2 (direct)."""
    run = PlatformRun(a)
    with run as server:

        async def go() -> dict[str, Any]:
            limit = a.limit * 5
            logins, reg_s = await register(server, a.gw_subs, a.register_concurrency, limit)
            gw, sub_s = await register_gateway(server, a.gw_subs, a.register_concurrency, limit)
            progress(
                f"    registered {len(logins):,} direct devices in {reg_s:.1f} s, the gateway "
                f"and {a.gw_subs:,} sub-devices in {sub_s:.1f} s"
            )
            phases: dict[str, Any] = {}
            g = await gateway_phase(a, run, server, gw)
            phases["gateway"] = phase_figures(g)
            progress(f"    gateway: {describe_telemetry(g)}")
            d = await direct_phase(a, run, server, logins)
            phases["direct"] = phase_figures(d)
            progress(f"    direct: {describe_telemetry(d)}")
            return {
                **phases,
                "valid": all(p["valid"] for p in phases.values()),
                "other_max": max(p["other_max"] for p in phases.values()),
                "errors": [f"{n}: {e}" for n, p in phases.items() for e in p["errors"]],
                "register_seconds": reg_s + sub_s,
            }

        result = mqttload.run_loop(go())
    return exit_noted(result, run)


# ----------------------------------------------------------------------- report


def phase_median(runs: Sequence[dict[str, Any]], phase: str, key: str) -> float | None:
    values = sorted(
        r[phase][key] for r in runs if phase in r and r[phase].get("valid") and key in r[phase]
    )
    return values[len(values) // 2] if values else None


def print_gateway(runs: list[dict[str, Any]], a: argparse.Namespace, env: dict[str, Any]) -> None:
    print()
    print(
        f"gateway: on one platform ({env['storage']}), MQTT 3.1.1, QoS 1, PUBACK once the "
        f"points are durable; {a.seconds:g} s measured after {a.tel_warmup:g} s, each phase"
    )
    print(
        f"  gateway: 1 ThingsPanel gateway, {a.gw_subs:,} sub-devices; gateway/telemetry "
        f"with {a.gw_per_msg} sub-devices x {len(KEYS)} values in sub_device_data a message, "
        f"{a.gw_window} in flight"
    )
    print(
        f"  direct: {a.gw_subs:,} ThingsPanel devices, devices/telemetry with the same "
        f"{len(KEYS)} values, {a.tel_window} in flight each (run after the gateway)"
    )
    print()

    def flags(phase: str) -> str:
        ps = [r[phase] for r in runs if phase in r]
        f = "!" if len(ps) < len(runs) or any(not p.get("valid") for p in ps) else ""
        f += "L" if any(p.get("load_cpu_pct", 0) >= FLAG_LOAD for p in ps) else ""
        return f + ("N" if any(p.get("other_cpu_pct", 0) > a.max_other for p in ps) else "")

    # label, key, digits, scale, flags shown, ratio shown
    rows: list[tuple[str, str, int, float, bool, bool]] = [
        ("messages/s acknowledged", "msgs_per_s", 0, 1, True, False),
        ("points/s durably stored", "points_per_s", 0, 1, False, True),
        ("points a message", "points_per_msg", 0, 1, False, False),
        ("PUBACK latency p50, ms", "p50_ms", 1, 1, False, False),
        ("PUBACK latency p99, ms", "p99_ms", 1, 1, False, False),
        ("server CPU %", "server_cpu_pct", 0, 1, False, False),
        ("server CPU per point, us", "server_us_per_point", 2, 1, False, True),
        ("server CPU per message, us", "server_us_per_msg", 1, 1, False, False),
        ("load CPU %", "load_cpu_pct", 0, 1, False, False),
        ("other CPU %", "other_cpu_pct", 0, 1, False, False),
        *(
            [
                ("database backends' CPU %", "db_cpu_pct", 0, 1, False, False),
                ("database backends' CPU per point, us", "db_us_per_point", 2, 1, False, True),
            ]
            if a.database_url
            else []
        ),
        ("server RSS at most during the load, MB", "rss_max_kb", 0, 1 / 1024, False, False),
    ]
    width = max(len(r[0]) for r in rows) + 2
    head = f"{'figure':<{width}}{'gateway':>14}{'direct':>14}{'gateway/direct':>16}"
    print(head)
    print("-" * len(head))
    for label, key, digits, scale, flagged, with_ratio in rows:
        line = f"{label:<{width}}"
        vals: dict[str, float | None] = {}
        for phase in PHASES:
            v = phase_median(runs, phase, key)
            vals[phase] = None if v is None else v * scale
            f = flags(phase) if flagged else ""
            line += f"{fmt(vals[phase], digits) + (' ' + f if f else ''):>14}"
        if with_ratio:
            g, d = vals["gateway"], vals["direct"]
            line += f"{fmt(g / d if g is not None and d else None, 2):>16}"
        print(line)
    for run in runs:
        n = run.get("run")
        for e in run.get("errors", []):
            print(f"  run {n}: ERROR {e}")
        for note in run.get("notes", []):
            print(f"  run {n}: {note}")
        for phase in PHASES:
            p = run.get(phase)
            if not p:
                continue
            for note in p.get("notes", []):
                print(f"  run {n} {phase}: {note}")
            v = p.get("verify")
            if v:
                what = "sub-devices" if phase == "gateway" else "devices"
                print(
                    f"  run {n} {phase}: history read back through the API for {v['checked']} "
                    f"{what} ({v['points']:,} points): {v['checked'] - len(v['bad'])}/"
                    f"{v['checked']} equal to their acknowledged reports"
                )
                for b in v["bad"][:10]:
                    print(f"    MISMATCH {b}")
    regs = sorted(r["register_seconds"] for r in runs if "register_seconds" in r)
    if regs:
        print(
            f"  (setup: {a.gw_subs:,} direct devices, the gateway and {a.gw_subs:,} "
            f"sub-devices registered through the API in {regs[len(regs) // 2]:.1f} s)"
        )
