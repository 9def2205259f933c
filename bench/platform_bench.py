"""The whole platform (`thingshub serve`) under device and application load: logins,
device images, commands, telemetry, thing-model posts and gateway telemetry.

    python bench/platform_bench.py [--quick]
                                   [--tests connects,image,commands,telemetry,thing,gateway]
                                   [--json out.json]
                                   [--database-url postgresql://postgres@127.0.0.1:5432/postgres]

Why it is built this way (bench/README.md says what each figure means):
- It measures the product as deployed: `thingshub serve` in a subprocess with its HTTP
  API and storage, devices registered through the API and logging in with OneNET tokens
  or ThingsPanel user names and passwords, not the bare MQTT server (`mqtt_broker.py`
  does that).
- It reuses `mqtt_broker.py`'s machinery: the server pinned to one core and the load to
  another, the lean load client on our codec (`mqttload`), CPU and RSS read from /proc,
  and the noise checks. Every figure comes with the server's, the load's and the rest of
  the machine's CPU, so a figure limited by the client (flag L) or disturbed by other
  processes (flag N) says so.
- connects and telemetry: Mosquitto is measured beside the platform, by the same client,
  with the same logins and the same bytes: the ratio is what those targets are about.
- Registration is setup, not measured. Each server run gets a fresh data dir (SQLite)
  or a scratch PostgreSQL database, so the first connects really find a cold cache.
- Every wait has a deadline; a broken server fails its run and never hangs this.
- thing: OneNET thing-model property posts are measured beside ThingsPanel telemetry of
  the same values, each on its own platform: the ratio thing / ThingsPanel is the figure.
- gateway: one ThingsPanel gateway carrying 1,000 sub-devices' telemetry, then 1,000
  direct devices sending the same values, on the same platform (issue 15).
- This file holds the command line and the connects test; the other tests are in
  `platform_image.py`, `platform_commands.py`, `platform_telemetry.py`,
  `platform_thing.py` and `platform_gateway.py`, and what they share in
  `platform_common.py`.
- This file is not called `platform.py`: a script in bench/ by that name would shadow
  the standard library's `platform` module for every script run from bench/ (asyncpg
  imports it, and so does `servers.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import shutil
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mqttload
import servers
from platform_commands import print_commands, run_commands
from platform_common import (
    FLAG_LOAD,
    PRODUCT,
    DeviceLogin,
    PlatformRun,
    add_command_args,
    add_noise_args,
    add_setup_args,
    add_telemetry_args,
    attempt,
    check_args,
    exit_noted,
    fmt,
    local_logins,
    median,
    progress,
    py_spy,
    quiet,
    register,
    runs_flags,
    start_main,
    wait_disconnected,
)
from platform_gateway import print_gateway, run_gateway
from platform_image import DEVICE_RATE_LIMIT, print_image, run_image
from platform_telemetry import (
    print_telemetry,
    run_telemetry_mosquitto,
    run_telemetry_thingshub,
)
from platform_thing import print_thing, run_thing

TESTS = ("connects", "image", "commands", "telemetry", "thing", "gateway")
TARGET_CONNECT_RATIO = 0.5


# --------------------------------------------------------------------- connects


def mosquitto_logins(logins: Sequence[DeviceLogin]) -> list[tuple[str, str]]:
    """Mosquitto's users: each device's name and its token as the password.

    The same client ids and password bytes as the platform gets; the user name is the
    device name, since a password file has one line per user (the platform's user name
    is the product id, the same for all).
    """
    return [(d.name, d.token) for d in logins]


async def connect_rounds(
    server: servers.Server,
    ids: Sequence[str],
    logins: Sequence[tuple[str, str]],
    a: argparse.Namespace,
    settle: Callable[[], Awaitable[str | None]],
    helpers: mqttload.CpuProbe | None = None,
) -> list[mqttload.ConnectionsResult]:
    """Two rounds of `mqttload.connections`: everyone logs in, is held, pinged, and leaves.

    The first round finds the platform's device cache cold (every login looks its device
    up in the database); the second finds it warm. `settle` waits until the server has
    let the first round's clients go, so the second starts from the same state.
    """
    rounds: list[mqttload.ConnectionsResult] = []
    for n in range(2):
        await quiet(a)
        r = await mqttload.connections(
            server.host,
            server.port,
            client_ids=ids,
            logins=logins,
            concurrency=a.conn_concurrency,
            hold=a.hold,
            probe=server,
            limit=a.limit,
            helpers=helpers,
        )
        rounds.append(r)
        if r.error or n == 1:
            break
        why = await settle()
        if why:
            r.notes.append(why)
    return rounds


def connects_figures(rounds: list[mqttload.ConnectionsResult]) -> dict[str, Any]:
    """The figures of one server's connect run, per round, and whether it counts."""
    out: dict[str, Any] = {"rounds": [r.as_dict() for r in rounds]}
    for i, r in enumerate(rounds, 1):
        out[f"connects_per_s_{i}"] = r.connects_per_s
        out[f"bytes_per_conn_{i}"] = r.bytes_per_conn
        out[f"us_per_connect_{i}"] = (
            r.server_cpu_pct / 100 * r.connect_seconds / max(1, r.connected) * 1e6
        )
        out[f"server_cpu_{i}"] = r.server_cpu_pct
        out[f"load_cpu_{i}"] = r.load_cpu_pct
        out[f"other_cpu_{i}"] = r.other_cpu_pct
        out[f"db_cpu_{i}"] = r.helpers_cpu_pct
        out[f"rss_before_kb_{i}"] = r.rss_before_kb
        out[f"rss_held_kb_{i}"] = r.rss_held_kb
    out["valid"] = len(rounds) == 2 and all(r.complete for r in rounds)
    out["other_max"] = max((r.other_cpu_pct for r in rounds), default=0.0)
    out["errors"] = [e for r in rounds for e in [r.error] if e]
    return out


def run_connects_thingshub(a: argparse.Namespace, logins_out: list[DeviceLogin]) -> dict[str, Any]:
    """One platform: fresh data (and database), register, two rounds of logins."""
    run = PlatformRun(a)
    with run as server:

        async def go() -> dict[str, Any]:
            logins, reg_s = await register(server, a.conns, a.register_concurrency, a.limit * 5)
            logins_out[:] = logins
            progress(f"    registered {len(logins):,} devices in {reg_s:.1f} s")

            async def settle() -> str | None:
                if not await wait_disconnected(server):
                    return "the server still counted connections 30 s after they closed"
                await asyncio.sleep(2.0)  # presence is written once a second: let it land
                return None

            # py-spy's --gil keeps only samples of work: the waits between and
            # after the rounds add none, so a generous duration costs nothing.
            with py_spy(a.py_spy, server.pid, "connects", 10 + 2 * a.conns / 2000):
                rounds = await connect_rounds(
                    server,
                    [d.name for d in logins],
                    [(PRODUCT, d.token) for d in logins],
                    a,
                    settle,
                    run.helpers,
                )
            return {**connects_figures(rounds), "register_seconds": reg_s}

        out = mqttload.run_loop(go())
    return exit_noted(out, run)


def run_connects_mosquitto(a: argparse.Namespace, logins: Sequence[DeviceLogin]) -> dict[str, Any]:
    """Mosquitto with a password file of the same devices: two rounds of the same logins."""
    users = mosquitto_logins(logins)
    pw = servers.mosquitto_password_file(users)
    try:
        server = servers.start_mosquitto(
            a.server_cpus if a.pin else None,
            a.mosquitto,
            ["allow_anonymous false", f"password_file {pw}"],
        )
        try:

            async def settle() -> str | None:
                await asyncio.sleep(2.0)  # mosquitto has no metric to poll without a login
                return None

            rounds = mqttload.run_loop(
                connect_rounds(server, [u for u, _ in users], users, a, settle)
            )
        finally:
            alive, code = server.alive(), server.stop()
        figures = connects_figures(rounds)
        if not alive:
            figures["valid"] = False
            figures["errors"].append(f"mosquitto died (exit {code})")
        return figures
    finally:
        shutil.rmtree(pw.parent, ignore_errors=True)


def connect_flags(runs: Sequence[dict[str, Any]], i: int, a: argparse.Namespace) -> str:
    return runs_flags(runs, a.max_other, f"load_cpu_{i}", f"other_cpu_{i}")


def print_connects(
    by_server: dict[str, list[dict[str, Any]]], a: argparse.Namespace, env: dict[str, Any]
) -> None:
    names = [n for n in ("mosquitto", "thingshub") if n in by_server]
    print()
    print(
        f"connects: {a.conns:,} devices log in ({a.conn_concurrency} at a time, MQTT 3.1.1, "
        f"CONNACK 0 required), are held {a.hold:g} s and pinged; twice"
    )
    print("  thingshub: OneNET token (user = product id, password = token), " + env["storage"])
    print("  mosquitto: password file of the same devices (user = device name, same token)")
    print()
    # label, figure, round, flags shown, ratio shown
    rows: list[tuple[str, str, int, bool, bool]] = [
        ("connects/s, round 1 (thingshub cache cold)", "connects_per_s", 1, True, True),
        ("connects/s, round 2 (cache warm)", "connects_per_s", 2, True, True),
        ("RSS per connection, round 1, B", "bytes_per_conn", 1, False, True),
        ("RSS per connection, round 2 (reuses round 1's), B", "bytes_per_conn", 2, False, True),
        ("server CPU per connect, round 1, us", "us_per_connect", 1, False, True),
        ("server CPU per connect, round 2, us", "us_per_connect", 2, False, True),
        ("server CPU %, round 1", "server_cpu", 1, False, False),
        ("server CPU %, round 2", "server_cpu", 2, False, False),
        ("load CPU %, round 1", "load_cpu", 1, False, False),
        ("load CPU %, round 2", "load_cpu", 2, False, False),
        ("other CPU %, round 1", "other_cpu", 1, False, False),
        ("other CPU %, round 2", "other_cpu", 2, False, False),
        *(
            [
                ("database backends' CPU %, round 1", "db_cpu", 1, False, False),
                ("database backends' CPU %, round 2", "db_cpu", 2, False, False),
            ]
            if a.database_url
            else []
        ),
        ("server RSS before round 1, kB", "rss_before_kb", 1, False, False),
        ("server RSS with all connected, round 1, kB", "rss_held_kb", 1, False, False),
    ]
    width = max(len(r[0]) for r in rows) + 2
    head = f"{'figure':<{width}}" + "".join(f"{n:>14}" for n in names)
    if len(names) == 2:
        head += f"{'thingshub/mosq':>16}{'target':>10}"
    print(head)
    print("-" * len(head))
    for label, key, i, flagged, with_ratio in rows:
        line = f"{label:<{width}}"
        vals = {}
        for n in names:
            vals[n] = median(by_server[n], f"{key}_{i}")
            flags = connect_flags(by_server[n], i, a) if flagged else ""
            line += f"{fmt(vals[n]) + (' ' + flags if flags else ''):>14}"
        if len(names) == 2 and with_ratio:
            m, t = vals["mosquitto"], vals["thingshub"]
            ratio = t / m if m and t is not None else None
            line += f"{fmt(ratio, 2):>16}"
            if key == "connects_per_s":
                ok = ratio is not None and ratio >= TARGET_CONNECT_RATIO
                line += (
                    f"{'>= ' + format(TARGET_CONNECT_RATIO, '.2f'):>10} {'ok' if ok else 'MISSED'}"
                )
        print(line)
    for n in names:
        for r in by_server[n]:
            for e in r.get("errors", []):
                print(f"  {n} run {r.get('run')}: ERROR {e}")
            for note in r.get("notes", []):
                print(f"  {n} run {r.get('run')}: {note}")
            for j, rr in enumerate(r.get("rounds", []), 1):
                for note in rr.get("notes", []):
                    print(f"  {n} run {r.get('run')} round {j}: {note}")
    reg = median(by_server.get("thingshub", []), "register_seconds")
    if reg:
        print(f"  (setup: {a.conns:,} devices registered through the API in {reg:.1f} s)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small counts, short runs: a smoke test")
    p.add_argument(
        "--tests", default=",".join(TESTS), help=f"comma list of {','.join(TESTS)} (all)"
    )
    p.add_argument(
        "--database-url",
        metavar="URL",
        help="run the platform on PostgreSQL: a scratch database is created on this server "
        "for each run and dropped after it (e.g. postgresql://postgres@127.0.0.1:5432/postgres)",
    )
    p.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="connects, commands, telemetry, thing, gateway: record the platform with py-spy (raw "
        "format) over each measured phase, into DIR (slows the server a little: quote "
        "unprofiled figures)",
    )
    p.add_argument(
        "--no-mosquitto", action="store_true", help="connects, telemetry: thingshub only"
    )
    p.add_argument("--runs", type=int, default=1, help="runs per server and test (median shown)")
    p.add_argument("--conns", type=int, help="connects: devices (default 10,000; --quick 500)")
    p.add_argument("--hold", type=float, help="connects: seconds held (default 5; --quick 1)")
    p.add_argument("--image-devices", type=int, help="image: devices (1,000; --quick 500)")
    p.add_argument("--rate", type=float, default=1000.0, help="image (a): offered updates/s")
    p.add_argument(
        "--seconds",
        type=float,
        help="image, commands, telemetry, thing, gateway: seconds measured (20; quick 5)",
    )
    p.add_argument("--window", type=int, default=1, help="image (b): updates in flight each (1)")
    p.add_argument(
        "--device-rate-cap",
        type=float,
        default=9.5,
        help="image (b): at most this many updates/s per device, under the platform's limit "
        f"of {DEVICE_RATE_LIMIT:g}/s (default 9.5)",
    )
    p.add_argument(
        "--drain",
        type=float,
        default=15.0,
        help="image, telemetry, thing, gateway: wait for replies, s (15)",
    )
    p.add_argument("--verify", type=int, default=50, help="image: devices checked via API (50)")
    p.add_argument("--cmd-devices", type=int, help="commands: devices (500; --quick 100)")
    p.add_argument(
        "--http-concurrency",
        help="commands (b): calls in flight, one HTTP connection each; a comma list runs "
        "(b) once per value, e.g. 64,128,256 (default 128; --quick 64)",
    )
    p.add_argument(
        "--answer-qos", type=int, choices=(0, 1), default=0, help="commands: QoS of answers (0)"
    )
    p.add_argument(
        "--gw-subs",
        type=int,
        help="gateway: sub-devices of the gateway, and direct devices (1,000; --quick 200)",
    )
    p.add_argument(
        "--gw-per-msg", type=int, default=50, help="gateway: sub-devices a message carries (50)"
    )
    p.add_argument(
        "--gw-window", type=int, default=20, help="gateway: the gateway's messages in flight (20)"
    )
    p.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=len(os.sched_getaffinity(0)) >= 2,
        help="pin server and load to their own CPUs (default on with 2+ CPUs)",
    )
    p.add_argument("--server-cpus", default="0", help="taskset CPU list for the server (0)")
    p.add_argument("--load-cpus", default="1", help="CPU list for the load generator (1)")
    p.add_argument("--mosquitto", default=servers.MOSQUITTO, help="mosquitto binary")
    add_setup_args(p)
    add_telemetry_args(p, "telemetry, thing, gateway")
    add_command_args(p)
    add_noise_args(p)
    a = p.parse_args(argv)
    check_args(p, a)
    quick = a.quick
    a.conns = a.conns or (500 if quick else 10_000)
    a.hold = a.hold if a.hold is not None else (1.0 if quick else 5.0)
    a.image_devices = a.image_devices or (500 if quick else 1_000)
    a.seconds = a.seconds or (5.0 if quick else 20.0)
    a.cmd_devices = a.cmd_devices or (100 if quick else 500)
    try:
        a.http_concurrency = [int(n) for n in (a.http_concurrency or "").split(",") if n] or [
            64 if quick else 128
        ]
    except ValueError:
        p.error("--http-concurrency takes whole numbers, e.g. 128 or 64,128,256")
    a.gw_subs = a.gw_subs or (200 if quick else 1_000)
    if a.gw_per_msg < 1 or a.gw_subs % a.gw_per_msg or a.gw_window < 1:
        p.error("--gw-per-msg must divide --gw-subs, and --gw-window be at least 1")
    a.tests = [t.strip() for t in a.tests.split(",") if t.strip()]
    unknown = set(a.tests) - set(TESTS)
    if unknown:
        p.error(f"unknown tests: {', '.join(sorted(unknown))}")
    if a.device_rate_cap <= 0 or a.window < 1:
        p.error("--device-rate-cap must be positive and --window at least 1")
    if min(a.http_concurrency) < 1:
        p.error("--http-concurrency must be positive")
    return a


def prepare(a: argparse.Namespace) -> None:
    """Pin ourselves, then what every benchmark's main does first (`start_main`)."""
    if a.pin:
        os.sched_setaffinity(0, servers.cpu_list(a.load_cpus))
    need = max(
        a.conns, a.image_devices, a.tel_devices, a.gw_subs, a.cmd_devices + max(a.http_concurrency)
    )
    start_main(need + 500)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    prepare(a)
    storage = (
        f"PostgreSQL ({urlsplit(a.database_url).netloc}, a scratch database per run)"
        if a.database_url
        else "SQLite in a fresh data dir"
    )
    env = {
        **servers.machine_info(),
        "pinning": (
            f"server on CPU {a.server_cpus}, load on CPU {a.load_cpus}" if a.pin else "not pinned"
        ),
        "storage": storage,
        "mosquitto": f"mosquitto {servers.mosquitto_version(a.mosquitto)}",
        "thingshub": " ".join(servers.platform_command(Path("DATA"), a.database_url)),
        "thingshub_src": str(a.src.resolve()) if a.src else "installed package",
        "packages": package_versions(),
    }
    print(f"ThingsHub platform benchmark, {env['date']}, git {env['git']}")
    print(f"machine: {env['cpu']}, {env['cpus']} CPUs, {env['kernel']}; {env['pinning']}")
    print(f"load: Python {env['python']}, uvloop {env['uvloop']}; storage: {storage}")
    print(f"thingshub from: {env['thingshub_src']}; {env['packages']}")
    data: dict[str, Any] = {"env": env, "args": {k: str(v) for k, v in vars(a).items()}}
    results: list[tuple[bool, bool]] = []  # (valid, the platform could not start) per test
    if "connects" in a.tests:
        by_server = paired_runs(
            "connects", a, a.conns, run_connects_thingshub, run_connects_mosquitto,
            describe_connects,
        )  # fmt: skip
        results.append(outcome(by_server))
        print_connects(by_server, a, env)
        data["connects"] = by_server
    if "image" in a.tests:
        runs = single_runs("image", a, a.image_devices, run_image)
        results.append(outcome({"thingshub": runs}))
        print_image(runs, a, env)
        data["image"] = runs
    if "commands" in a.tests:
        runs = single_runs("commands", a, a.cmd_devices, run_commands)
        results.append(outcome({"thingshub": runs}))
        print_commands(runs, a, env)
        data["commands"] = runs
    if "telemetry" in a.tests:
        by_server = paired_runs(
            "telemetry", a, a.tel_devices, run_telemetry_thingshub, run_telemetry_mosquitto
        )
        results.append(outcome(by_server))
        print_telemetry(by_server, a, env)
        data["telemetry"] = by_server
    if "thing" in a.tests:
        by_side = run_thing(a)
        results.append(outcome(by_side))
        print_thing(by_side, a, env)
        data["thing"] = by_side
    if "gateway" in a.tests:
        runs = single_runs("gateway", a, a.gw_subs, run_gateway)
        results.append(outcome({"thingshub": runs}))
        print_gateway(runs, a, env)
        data["gateway"] = runs
    print()
    print("flags: ! a run failed (error, lost reply, dead connection); L load generator above")
    print(f"       {FLAG_LOAD:.0f}% of its core (the figure may be the client's limit); N other")
    print("       processes used the machine; C the per-device rate cap was the limit (image).")
    if a.json:
        a.json.write_text(json.dumps(data, indent=2, default=str))
        progress(f"wrote {a.json}")
    if any(failed for _, failed in results):
        return 2
    return 0 if all(valid for valid, _ in results) else 1


Runs = dict[str, list[dict[str, Any]]]


def package_versions() -> str:
    """The platform's HTTP stack in this venv: the API's figures depend on it (uvicorn
    parses HTTP with httptools when it is installed, with the pure-Python h11 if not)."""
    out = []
    for name in ("uvicorn", "httptools", "fastapi", "starlette", "pydantic", "orjson"):
        try:
            out.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{name} not installed")
    return ", ".join(out)


def outcome(by_server: Runs) -> tuple[bool, bool]:
    """(every run valid, some platform run could not start) of one test."""
    runs = [r for rs in by_server.values() for r in rs]
    return all(r.get("valid") for r in runs), any(r.get("start_failed") for r in runs)


def single_runs(
    test: str, a: argparse.Namespace, devices: int, run: Callable[[argparse.Namespace], Any]
) -> list[dict[str, Any]]:
    """`--runs` runs of a platform-only test, each redone once if it was disturbed."""
    runs = []
    for i in range(a.runs):
        progress(f"[{test} {i + 1}/{a.runs}] thingshub: {devices:,} devices ...")
        out = attempt("thingshub", a, partial(run, a))
        out["run"] = i + 1
        runs.append(out)
    return runs


def paired_runs(
    test: str,
    a: argparse.Namespace,
    devices: int,
    run_thingshub: Callable[[argparse.Namespace, list[DeviceLogin]], dict[str, Any]],
    run_mosquitto: Callable[[argparse.Namespace, Sequence[DeviceLogin]], dict[str, Any]],
    describe: Callable[[dict[str, Any]], str] | None = None,
) -> Runs:
    """`--runs` runs of the platform, each followed by Mosquitto (unless --no-mosquitto)
    with the devices the platform registered, so both see the same logins. Interleaved,
    so drift on the machine hits both alike."""
    by_server: Runs = {"thingshub": []}
    if not a.no_mosquitto:
        by_server["mosquitto"] = []
    for i in range(a.runs):
        logins: list[DeviceLogin] = []
        progress(f"[{test} {i + 1}/{a.runs}] thingshub: {devices:,} devices ...")
        out = attempt("thingshub", a, partial(run_thingshub, a, logins))
        out["run"] = i + 1
        by_server["thingshub"].append(out)
        if describe is not None:
            progress(f"    thingshub: {describe(out)}")
        if a.no_mosquitto:
            continue
        if not logins:  # the platform did not get as far as registering
            logins = local_logins(devices)
        progress(f"[{test} {i + 1}/{a.runs}] mosquitto: {devices:,} devices ...")
        m = attempt("mosquitto", a, partial(run_mosquitto, a, logins))
        m["run"] = i + 1
        by_server["mosquitto"].append(m)
        if describe is not None:
            progress(f"    mosquitto: {describe(m)}")
    return by_server


def describe_connects(out: dict[str, Any]) -> str:
    if not out.get("rounds"):
        return "ERROR " + "; ".join(out.get("errors", []))
    parts = []
    for j, r in enumerate(out["rounds"], 1):
        text = (
            f"round {j}: {r['connects_per_s']:,.0f} conn/s, {r['connected']:,}/{r['count']:,} "
            f"connected, {r['alive']:,} alive, {r['bytes_per_conn']:,.0f} B/conn; server "
            f"{r['server_cpu_pct']:.0f}% load {r['load_cpu_pct']:.0f}% other "
            f"{r['other_cpu_pct']:.0f}%"
        )
        if r["error"]:
            text += f"; ERROR {r['error']}"
        if r["notes"]:
            text += "; " + "; ".join(r["notes"])
        parts.append(text)
    return "\n               ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
