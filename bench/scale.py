"""Scale on one box (issue 19, point 5): 100,000 devices held by one `thingshub serve`,
and the same connect storm against Mosquitto in the same run.

    python bench/scale.py [--conns 100000] [--concurrency 100] [--json out.json]

Why it is built this way:
- It reuses `platform_bench`'s pieces: registration through the API
  (`platform_common.register`), Mosquitto with a password file of the same devices, and
  `mqttload.connections` (idle clients on one epoll) for the storm, its hold and a
  PINGREQ to every connection at the end.
- Half the devices log in with OneNET tokens (user name = product id), half with the
  ThingsPanel user name and password that registration answered: both login paths.
- One loopback source address has ~28k ephemeral ports, so client i binds to
  127.0.0.(2 + i // --per-source) before connecting (IP_BIND_ADDRESS_NO_PORT).
- File descriptors: 100,000 sockets on each side. We raise our own soft and hard
  RLIMIT_NOFILE to `fs.nr_open` (as root), and the servers inherit it.
- Registration is setup and timed apart: the API has no batch registration, so it goes
  over `--register-concurrency` HTTP connections.
- Where the hard RLIMIT_NOFILE cannot be raised (no CAP_SYS_RESOURCE), one process holds
  at most that many sockets: `--workers N` runs `serve --workers N` on a scratch
  PostgreSQL database instead (the kernel spreads the connects over the workers by
  SO_REUSEPORT; RSS and CPU are summed over the supervisor and its workers, its private
  NATS reported apart), and `--procs N` splits the clients over N load processes.
  Mosquitto, one process, then gets the largest storm its descriptors allow, from the
  same clients, and the note says so.
- RSS of the server: idle (registered, nothing connected), then with everyone connected
  and held `--hold` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
from pathlib import Path
from typing import Any

import mqttload
import servers
from cluster_bench import ClusterRun, TreeCpu, process_tree
from platform_bench import mosquitto_logins
from platform_common import PRODUCT, DeviceLogin, add_database_arg, progress, register


def raise_nofile() -> int:
    """Soft and hard RLIMIT_NOFILE to fs.nr_open (root only), inherited by the servers."""
    want = int(Path("/proc/sys/fs/nr_open").read_text())
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def sources(count: int, per_source: int) -> list[str]:
    """127.0.0.2, 127.0.0.3, ...: enough source addresses for `count` clients."""
    n = (count + per_source - 1) // per_source
    return [f"127.0.{(2 + k) // 256}.{(2 + k) % 256}" for k in range(n)]


def logins_of(devs: list[DeviceLogin]) -> tuple[list[str], list[tuple[str, str]]]:
    """Client ids and logins: even devices OneNET tokens, odd ones ThingsPanel passwords."""
    ids = [d.name for d in devs]
    logins = [
        (PRODUCT, d.token) if i % 2 == 0 else (d.username, d.password) for i, d in enumerate(devs)
    ]
    return ids, logins


def figures(r: mqttload.ConnectionsResult) -> dict[str, Any]:
    return {
        "connected": r.connected,
        "failed": r.failed,
        "alive": r.alive,
        "connects_per_s": round(r.connects_per_s),
        "connect_seconds": round(r.connect_seconds, 1),
        "rss_before_mb": round(r.rss_before_kb / 1024, 1),
        "rss_held_mb": round(r.rss_held_kb / 1024, 1),
        "bytes_per_conn": round(r.bytes_per_conn),
        "server_cpu_pct": round(r.server_cpu_pct),
        "load_cpu_pct": round(r.load_cpu_pct),
        "other_cpu_pct": round(r.other_cpu_pct),
        "error": r.error,
        "notes": r.notes,
    }


async def storm(
    server: servers.Server,
    probe: mqttload.ServerProbe,
    ids: list[str],
    logins: Any,
    a: argparse.Namespace,
) -> Any:
    return await mqttload.connections(
        server.host,
        server.port,
        client_ids=ids,
        logins=logins,
        concurrency=a.concurrency,
        hold=a.hold,
        keepalive=600,
        procs=a.procs,
        probe=probe,
        limit=a.limit,
        sources=sources(len(ids), a.per_source),
        per_source=a.per_source,
    )


def connect_all(
    server: servers.PlatformServer, probe: mqttload.ServerProbe, a: argparse.Namespace
) -> tuple[list[DeviceLogin], dict[str, Any]]:
    """Register `--conns` devices through `server`'s API, then the storm against it."""
    out: dict[str, Any] = {}
    devs, reg_s = mqttload.run_loop(register(server, a.conns, a.register_concurrency, a.limit * 10))
    out["register_seconds"] = round(reg_s, 1)
    progress(f"registered {len(devs):,} devices in {reg_s:.0f} s")
    ids, logins = logins_of(devs)
    out["thingshub"] = figures(mqttload.run_loop(storm(server, probe, ids, logins, a)))
    progress(f"thingshub: {out['thingshub']}")
    return devs, out


def run_thingshub(a: argparse.Namespace, out: dict[str, Any]) -> list[DeviceLogin]:
    """One `serve` on SQLite, or `serve --workers N` on a scratch PostgreSQL database."""
    if not a.workers:
        server = servers.start_platform(None, timeout=60)
        try:
            devs, got = connect_all(server, server, a)
            out.update(got)
        finally:
            out["thingshub_exit"] = server.stop()
        return devs
    run = ClusterRun(a, a.workers, workers=True)
    with run as nodes:
        nats = TreeCpu(nodes.nodes[0], nats=True)
        devs, got = connect_all(nodes.nodes[0], nodes, a)
        out.update(got)
        tree = process_tree(nodes.nodes[0].pid)
        out["thingshub"]["processes"] = sum(name != "nats-server" for _, name in tree)
        out["thingshub"]["nats_rss_mb"] = round(nats.rss_kb() / 1024, 1)
    run.note_exit(out)
    return devs


def run(a: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"conns": a.conns, "workers": a.workers, "nofile": raise_nofile()}
    progress(f"RLIMIT_NOFILE {out['nofile']:,}; {len(sources(a.conns, a.per_source))} sources")
    devs = run_thingshub(a, out)
    # One Mosquitto process holds at most what its descriptors allow.
    mosq_count = min(len(devs), out["nofile"] - 500)
    out["mosquitto_conns"] = mosq_count
    users = mosquitto_logins(devs[:mosq_count])
    pw = servers.mosquitto_password_file(users)
    try:
        mosq = servers.start_mosquitto(
            None, a.mosquitto, ["allow_anonymous false", f"password_file {pw}"]
        )
        try:
            r = mqttload.run_loop(storm(mosq, mosq, [u for u, _ in users], users, a))
            out["mosquitto"] = figures(r)
            progress(f"mosquitto: {out['mosquitto']}")
        finally:
            mosq.stop()
    finally:
        shutil.rmtree(pw.parent, ignore_errors=True)
    th, mo = out["thingshub"]["connects_per_s"], out["mosquitto"]["connects_per_s"]
    out["ratio"] = round(th / mo, 2) if mo else None
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conns", type=int, default=100_000)
    p.add_argument("--concurrency", type=int, default=100, help="connects in progress")
    p.add_argument("--per-source", type=int, default=20_000, help="clients per source address")
    p.add_argument("--register-concurrency", type=int, default=8)
    p.add_argument("--hold", type=float, default=10.0)
    p.add_argument("--limit", type=float, default=900.0, help="deadline of the storm (s)")
    p.add_argument("--mosquitto", default=servers.MOSQUITTO)
    p.add_argument("--workers", type=int, default=0, help="serve --workers N on PostgreSQL")
    p.add_argument("--procs", type=int, default=0, help="load processes (0: this one)")
    add_database_arg(p, "the scratch database of --workers")
    p.add_argument("--src", type=Path, help="run thingshub from this src/ dir (another commit)")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    progress(f"uptime: {os.getloadavg()}")
    out = run(a)
    out["loadavg_end"] = os.getloadavg()
    text = json.dumps(out, indent=1)
    print(text)
    if a.json:
        a.json.write_text(text)
    mosquitto_ok = out["mosquitto"]["alive"] == out["mosquitto_conns"]
    ok = out["thingshub"]["alive"] == a.conns and mosquitto_ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
