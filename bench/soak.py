"""A soak of the whole platform (issue 19, point 6): mixed traffic for a long time,
sampled every 10 s, and a verdict on whether the server stays flat.

    python bench/soak.py                      # one hour (the documented run)
    python bench/soak.py --duration 600       # ten minutes
    python bench/soak.py --duration 20 --interval 2 --warmup 6   # smoke (tests/bench)

The traffic, all at once, on one `thingshub serve` (fresh SQLite data dir):
- telemetry: `--telemetry` ThingsPanel devices (user name and password logins), each
  one QoS 1 `devices/telemetry` message a second; the PUBACK latency is timed.
- image updates: `--images` OneNET devices (token logins), one QoS 1 update every 2 s.
- commands: `--commands` OneNET devices answering `cmd/request/+` (platform_commands'
  `CommandDevice`), called over HTTP at `--command-rate`; the call latency is timed.
- OTA downloads: one firmware of 64 KiB, one task for one ThingsPanel device; that
  device downloads its URL (no API key, the signed token) every 2 s, whole or ranged.
- stream clients: two WebSocket clients on `/api/v1/stream`, reading everything.
- reconnect churn: `--churn` OneNET devices; every 0.5 s one of them connects, and
  leaves with DISCONNECT or by dropping the socket (no goodbye), in turn.

Every `--interval` s it samples the server's RSS (/proc/PID/status), SQLite's share of
it (`thingshub_sqlite_memory_bytes` on /metrics: its page caches above all), its open
file descriptors (/proc/PID/fd), the event loop's lag seen from outside (the time of a
`GET /healthz`, which does nothing but answer), and the p99 of the telemetry PUBACKs and
of the command calls over that interval. Errors of every kind are counted.

Verdict, the rule: of the samples after `--warmup` (default 60 s, or a fifth of a short
run), the baseline is the median of the first third (at least 3 samples) and the end the
median of the last third (medians: one noisy sample on a shared machine is no trend).
"flat" when RSS less SQLite's heap at the end is within +10 % (+8 MiB for small
processes) of the baseline and SQLite's heap within the bound of its page caches
(`thingshub_sqlite_cache_limit_bytes`: a cache filling as the database grows is growth
by design, up to that bound, and a leak anywhere else still shows), open fds within
+10 % (+5), the p99s and the lag at the end within 3x the baseline
(+20 ms; a shared machine is noisy), the server alive and no errors. Else "NOT flat" and
why; the exit status is 0 for flat, 1 otherwise.

It reuses the platform benchmark's pieces: `servers.start_platform`,
`platform_common.register` / `open_devices` / `api` / `percentile`, and
`platform_commands.CommandDevice`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import websockets

import mqttload
import servers
from mqttload import VERSION, now, packet_id
from platform_commands import CommandDevice
from platform_common import PRODUCT, DeviceLogin, api, open_devices, percentile, progress, register
from thingshub.mqtt.codec import CodecError, PubAck, Publish, encode_publish


class Counters:
    """What every part of the traffic counts, and the latencies of the current interval."""

    def __init__(self) -> None:
        self.n: dict[str, int] = dict.fromkeys(
            ("telemetry", "images", "commands", "downloads", "stream_msgs", "churn"), 0
        )
        self.errors: dict[str, int] = {}
        self.error_examples: list[str] = []
        self.puback_ms: list[float] = []
        self.command_ms: list[float] = []

    def error(self, kind: str, why: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if len(self.error_examples) < 5:
            self.error_examples.append(f"{kind}: {why}")


class Publisher(mqttload.Conn):
    """A device publishing QoS 1 on one topic; each PUBACK's latency goes to `sink`."""

    def __init__(self, topic: bytes, payload: Callable[[int], bytes], sink: list[float]) -> None:
        super().__init__()
        self.topic, self.payload, self.sink = topic, payload, sink
        self.k = 0
        self.sent_at: dict[int, float] = {}

    def publish(self) -> None:
        pid = packet_id(self.k)
        self.sent_at[pid] = now()
        self.write(encode_publish(self.topic, self.payload(self.k), 1, False, False, pid, VERSION))
        self.k += 1

    def control(self, packet: Any) -> None:
        if type(packet) is PubAck:
            t = self.sent_at.pop(packet.packet_id, None)
            if t is not None:
                self.sink.append((now() - t) * 1000)
        elif type(packet) is not Publish:  # image accepted/rejected answers are ignored
            super().control(packet)


class OtaDevice(mqttload.Conn):
    """A ThingsPanel device subscribed to its OTA inform topic; keeps the last URL."""

    url: str | None = None

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (p := self.reader.next_packet()) is not None:
                if type(p) is Publish:
                    with contextlib.suppress(ValueError, KeyError):
                        self.url = json.loads(p.payload)["params"]["url"]
                else:
                    self.control(p)
        except CodecError as exc:
            self.fail(f"undecodable: {exc}")


async def every(period: float, stop: float, step: Callable[[], Any]) -> None:
    """Call `step` (sync or async) every `period` s until `stop`, on a fixed schedule."""
    t = now()
    while t < stop:
        out = step()
        if asyncio.iscoroutine(out):
            await out
        t += period
        await asyncio.sleep(max(0.0, t - now()))


async def soak(server: servers.PlatformServer, a: argparse.Namespace) -> dict[str, Any]:
    c = Counters()
    n_tel, n_img, n_cmd, n_churn = a.telemetry, a.images, a.commands, a.churn
    total = n_tel + n_img + n_cmd + 1 + n_churn
    devs, reg_s = await register(server, total, 4, 300)
    progress(f"registered {total} devices in {reg_s:.1f} s")
    tel, img = devs[:n_tel], devs[n_tel : n_tel + n_img]
    cmd = devs[n_tel + n_img : n_tel + n_img + n_cmd]
    ota_dev, churn = devs[n_tel + n_img + n_cmd], devs[n_tel + n_img + n_cmd + 1 :]
    host, port = server.host, server.port
    body = b'{"temperature": %d.5, "humidity": 40.25}'
    tel_conns = await open_devices(
        host, port,
        [lambda: Publisher(b"devices/telemetry", lambda k: body % k, c.puback_ms)] * n_tel,
        [d.name for d in tel], [(d.username, d.password) for d in tel], 20,
    )  # fmt: skip

    def image_factory(d: DeviceLogin) -> Callable[[], Publisher]:
        topic = f"$sys/{PRODUCT}/{d.name}/image/update".encode()
        return lambda: Publisher(
            topic, lambda k: b'{"state":{"reported":{"t":%d}},"id":"%d"}' % (k, k + 1), []
        )

    img_conns = await open_devices(
        host, port, [image_factory(d) for d in img], [d.name for d in img],
        [(PRODUCT, d.token) for d in img], 20,
        lambda i: [f"$sys/{PRODUCT}/{img[i].name}/image/update/+"],
    )  # fmt: skip
    cmd_conns = await open_devices(
        host, port, [lambda d=d: CommandDevice(d.name, 0) for d in cmd], [d.name for d in cmd],
        [(PRODUCT, d.token) for d in cmd], 20,
        lambda i: [f"$sys/{PRODUCT}/{cmd[i].name}/cmd/request/+"],
    )  # fmt: skip
    async with api(server, 8) as http:
        number = (await http.get(f"/api/v1/products/{PRODUCT}/devices/{ota_dev.name}")).json()
        number = number.get("device_number", ota_dev.name)
        (ota_conn,) = await open_devices(
            host, port, [OtaDevice], [ota_dev.name], [(ota_dev.username, ota_dev.password)], 1,
            lambda i: [f"ota/devices/inform/{number}"],
        )  # fmt: skip
        fw = os.urandom(64 * 1024)
        r = await http.post(
            f"/api/v1/products/{PRODUCT}/firmware",
            files={"file": ("fw.bin", fw, "application/octet-stream")},
            data={"version": "2.0.0", "module": "MCU"},
        )
        r.raise_for_status()
        r = await http.post(
            f"/api/v1/products/{PRODUCT}/ota-tasks",
            json={"firmware_id": r.json()["id"], "devices": [ota_dev.name]},
        )
        r.raise_for_status()
        samples = await traffic(server, a, c, http, tel_conns, img_conns, cmd, ota_conn, churn, fw)
    for conn in [*tel_conns, *img_conns, *cmd_conns, ota_conn]:
        conn.close()
    return {"samples": samples, "counts": c.n, "errors": c.errors, "examples": c.error_examples}


async def traffic(
    server: servers.PlatformServer,
    a: argparse.Namespace,
    c: Counters,
    http: httpx.AsyncClient,
    tel_conns: list[Publisher],
    img_conns: list[Publisher],
    cmd: list[DeviceLogin],
    ota_conn: OtaDevice,
    churn: list[DeviceLogin],
    fw: bytes,
) -> list[dict[str, Any]]:
    t0 = now()
    stop = t0 + a.duration
    cmd_seq = itertools.count()

    def telemetry() -> None:
        for conn in tel_conns:
            if conn.lost.done():
                c.error("telemetry", conn.why)
            else:
                conn.publish()
                c.n["telemetry"] += 1

    def images() -> None:
        for conn in img_conns:
            if not conn.lost.done():
                conn.publish()
                c.n["images"] += 1

    async def call() -> None:
        j = next(cmd_seq)
        name = cmd[j % len(cmd)].name
        t = now()
        try:
            r = await http.post(
                f"/api/v1/products/{PRODUCT}/devices/{name}/commands",
                params={"timeout": 5}, content=b"c%d" % j,
            )  # fmt: skip
            if r.status_code != 200:
                c.error("command", f"HTTP {r.status_code} {r.text[:100]}")
                return
        except httpx.HTTPError as exc:
            c.error("command", repr(exc))
            return
        c.command_ms.append((now() - t) * 1000)
        c.n["commands"] += 1

    calls: set[asyncio.Task[None]] = set()

    def commands() -> None:
        task = asyncio.get_running_loop().create_task(call())
        calls.add(task)
        task.add_done_callback(calls.discard)

    async def download() -> None:
        url = ota_conn.url
        if url is None:
            return
        ranged = c.n["downloads"] % 2 == 1
        async with httpx.AsyncClient(timeout=30) as dev_http:
            try:
                r = await dev_http.get(url, headers={"Range": "bytes=1000-"} if ranged else {})
            except httpx.HTTPError as exc:
                c.error("ota", repr(exc))
                return
        if r.content != (fw[1000:] if ranged else fw):
            c.error("ota", f"HTTP {r.status_code}, {len(r.content)} bytes")
        else:
            c.n["downloads"] += 1

    async def churn_one() -> None:
        k = c.n["churn"]
        d = churn[k % len(churn)]
        try:
            conn = await mqttload.open_conn(
                mqttload.Conn, server.host, server.port, d.name, 60, 10.0, PRODUCT, d.token
            )
        except mqttload.LoadError as exc:
            c.error("churn", str(exc))
            return
        c.n["churn"] += 1
        conn.close() if k % 2 else conn.abort()

    async def stream_client() -> None:
        url = f"ws://{server.host}:{server.http_port}/api/v1/stream?key={server.api_key}"
        while now() < stop:
            try:
                async with websockets.connect(url, max_size=None) as ws:
                    while now() < stop:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(1.0):
                                await ws.recv()
                                c.n["stream_msgs"] += 1
            except (OSError, websockets.WebSocketException) as exc:
                c.error("stream", repr(exc))
                await asyncio.sleep(1.0)

    samples: list[dict[str, Any]] = []

    async def sample() -> None:
        t = now()
        try:
            r = await http.get("/healthz")
            lag = (now() - t) * 1000 if r.status_code == 200 else float("nan")
        except httpx.HTTPError as exc:
            c.error("healthz", repr(exc))
            lag = float("nan")
        pub, cmdl = sorted(c.puback_ms), sorted(c.command_ms)
        c.puback_ms.clear()
        c.command_ms.clear()
        try:
            fds = len(os.listdir(f"/proc/{server.pid}/fd"))
        except OSError:
            fds = -1
        try:
            sqlite = await sqlite_memory(http)
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            c.error("metrics", repr(exc))
            sqlite = (float("nan"), float("nan"))
        rss = server.rss_kb() / 1024
        s = {
            "t": round(t - t0),
            "rss_mb": round(rss, 1),
            "sqlite_mb": round(sqlite[0], 1),
            "sqlite_limit_mb": round(sqlite[1], 1),
            "rss_less_sqlite_mb": round(rss - sqlite[0], 1),
            "fds": fds,
            "lag_ms": round(lag, 1),
            "puback_p99_ms": round(percentile(pub, 99), 1),
            "command_p99_ms": round(percentile(cmdl, 99), 1),
            "errors": sum(c.errors.values()),
        }
        samples.append(s)
        progress("  ".join(f"{k} {v}" for k, v in s.items()))

    jobs = [
        every(1.0, stop, telemetry),
        every(2.0, stop, images),
        every(1.0 / a.command_rate, stop, commands),
        every(2.0, stop, download),
        every(0.5, stop, churn_one),
        every(a.interval, stop, sample),
        stream_client(),
        stream_client(),
    ]
    await asyncio.gather(*jobs)
    if calls:  # the last calls answer before the HTTP client closes
        await asyncio.wait(calls, timeout=10)
    return samples


async def sqlite_memory(http: httpx.AsyncClient) -> tuple[float, float]:
    """SQLite's heap and the bound of its page caches, in MB, off /metrics (KeyError
    when either is missing: the caller counts it as an error of the run)."""
    r = await http.get("/metrics")
    values = {
        name: float(value)
        for name, value in (line.split(" ", 1) for line in r.text.splitlines())
        if name in ("thingshub_sqlite_memory_bytes", "thingshub_sqlite_cache_limit_bytes")
    }
    mb = 1024 * 1024
    return (
        values["thingshub_sqlite_memory_bytes"] / mb,
        values["thingshub_sqlite_cache_limit_bytes"] / mb,
    )


def verdict(
    samples: list[dict[str, Any]], a: argparse.Namespace, alive: bool, errors: int
) -> tuple[bool, list[str]]:
    """The rule of the module docstring: (flat, why not)."""
    warm = [s for s in samples if s["t"] >= a.warmup]
    if len(warm) < 6:
        return False, [f"only {len(warm)} samples after the warm-up: run longer"]
    third = max(3, len(warm) // 3)
    base, end = warm[:third], warm[-third:]
    why = []
    for key, pct, slack in (
        ("rss_less_sqlite_mb", 1.10, 8.0),
        ("fds", 1.10, 5.0),
        ("lag_ms", 3.0, 20.0),
        ("puback_p99_ms", 3.0, 20.0),
        ("command_p99_ms", 3.0, 20.0),
    ):
        b, e = (statistics.median(r[key] for r in rows) for rows in (base, end))
        if e > max(b * pct, b + slack):
            why.append(f"{key} grew from {b:.1f} to {e:.1f}")
    over = [r for r in warm if r["sqlite_mb"] > r["sqlite_limit_mb"]]
    if over:
        why.append(f"SQLite's heap {over[0]['sqlite_mb']} MB over its bound at {over[0]['t']} s")
    if not alive:
        why.append("the server died")
    if errors:
        why.append(f"{errors} errors")
    return not why, why


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=3600.0, help="seconds (3600)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between samples (10)")
    p.add_argument("--warmup", type=float, help="seconds before the baseline (60; 1/5 if short)")
    p.add_argument("--telemetry", type=int, default=50, help="telemetry devices (50, 1 msg/s)")
    p.add_argument("--images", type=int, default=20, help="image devices (20, 1 per 2 s)")
    p.add_argument("--commands", type=int, default=10, help="command devices (10)")
    p.add_argument("--command-rate", type=float, default=10.0, help="calls per s (10)")
    p.add_argument("--churn", type=int, default=20, help="churning devices (20)")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    if a.warmup is None:
        a.warmup = min(60.0, a.duration / 5)
    progress(f"load average {os.getloadavg()}")
    server = servers.start_platform(None, timeout=60)
    try:
        out = mqttload.run_loop(soak(server, a))
        alive = server.alive()
    finally:
        code = server.stop()
    errors = sum(out["errors"].values())
    flat, why = verdict(out["samples"], a, alive, errors)
    out.update(flat=flat, why=why, exit_code=code, loadavg_end=os.getloadavg())
    cols = list(out["samples"][0]) if out["samples"] else []
    print(" | ".join(cols))
    for s in out["samples"]:
        print(" | ".join(str(s[k]) for k in cols))
    print(f"counts: {out['counts']}; errors: {out['errors']} {out['examples']}")
    print("verdict: flat" if flat else f"verdict: NOT flat ({'; '.join(why)})")
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
