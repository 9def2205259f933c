"""ThingsHub's MQTT server against Mosquitto: same load generator, same machine, one run.

    python bench/mqtt_broker.py [--only mosquitto|thingshub] [--quick] [--sustained 60]
                                [--json out.json] [--runs N] [--tests a0,a1,b0,b1,conns]
                                [--tls]

Why it is built this way (see bench/README.md for what each figure means):
- Both servers are measured in the same invocation, interleaved run by run, each run on a
  fresh server, so drift of a shared VM hits both alike and the ratio is what counts.
- The server is pinned to one core and the load to another (taskset), so the comparison
  is per core and neither steals the other's CPU. Each run reports the server's CPU, the
  load's CPU and what the rest of the machine used: a run whose load core was full says
  so (flag L), and a run disturbed by other processes is repeated (flag N if it stays so).
- Every run checks its messages (QoS 1: each exactly once; QoS 0: losses reported) and
  every step has a time limit, so a broken server fails its runs and never hangs this.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import statistics
import sys
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mqttload
import servers

SERVERS = ("mosquitto", "thingshub")
FLAG_LOAD = mqttload.FLAG_LOAD


@dataclass(frozen=True)
class Test:
    """One cell row of the table: how to run it and which number of the result it shows."""

    key: str
    label: str
    short: str
    unit: str
    higher_is_better: bool
    run: Callable[[servers.Server, argparse.Namespace], Coroutine[Any, Any, Any]]
    figure: Callable[[Any], float]
    cost: Callable[[Any], float]  # server CPU per message / per connect, in µs


def _tp(
    publishers: str, qos: int
) -> Callable[[servers.Server, argparse.Namespace], Coroutine[Any, Any, Any]]:
    def run(server: servers.Server, a: argparse.Namespace) -> Coroutine[Any, Any, Any]:
        one = publishers == "one"
        return mqttload.throughput(
            server.host,
            server.port,
            publishers=1 if one else a.publishers,
            per_publisher=a.messages if one else a.per_publisher,
            qos=qos,
            payload=a.payload,
            window=a.window if one else a.fanin_window,
            procs=a.procs,
            probe=server,
            limit=a.limit,
            strict=a.strict_parse,
        )

    return run


def _conns(server: servers.Server, a: argparse.Namespace) -> Coroutine[Any, Any, Any]:
    return mqttload.connections(
        server.host,
        server.port,
        count=a.conns,
        concurrency=a.conn_concurrency,
        hold=a.hold,
        procs=a.procs,
        probe=server,
        limit=a.limit,
    )


def _connect_cost(r: mqttload.ConnectionsResult) -> float:
    return r.server_cpu_pct / 100 * r.connect_seconds / max(1, r.connected) * 1e6


def tests(a: argparse.Namespace) -> dict[str, Test]:
    b = f"{a.publishers}x{a.per_publisher:,}"
    return {
        t.key: t
        for t in (
            Test("a0", f"A QoS0 1->1 ({a.messages:,} msgs), msg/s", "A QoS0", "msg/s", True,
                 _tp("one", 0), lambda r: r.rate, lambda r: r.server_us_per_msg),
            Test("a1", f"A QoS1 1->1 (window {a.window}), msg/s", "A QoS1", "msg/s", True,
                 _tp("one", 1), lambda r: r.rate, lambda r: r.server_us_per_msg),
            Test("b0", f"B QoS0 {b}->1 on #, msg/s", "B QoS0", "msg/s", True,
                 _tp("many", 0), lambda r: r.rate, lambda r: r.server_us_per_msg),
            Test("b1", f"B QoS1 {b}->1 on # (window {a.fanin_window}), msg/s", "B QoS1",
                 "msg/s", True,
                 _tp("many", 1), lambda r: r.rate, lambda r: r.server_us_per_msg),
            Test("conns", f"connects/s ({a.conns:,}, {a.conn_concurrency} at a time)",
                 "connect", "conn/s", True, _conns, lambda r: r.connects_per_s, _connect_cost),
            Test("idle", f"RSS per idle connection at {a.conns:,}, bytes", "idle", "B", False,
                 _conns, lambda r: r.bytes_per_conn, _connect_cost),
        )
    }  # fmt: skip


# ---------------------------------------------------------------------------- running


def start(name: str, a: argparse.Namespace) -> servers.Server:
    cpus = a.server_cpus if a.pin else None
    if name == "mosquitto":
        return servers.start_mosquitto(cpus, a.mosquitto, a.mosquitto_option)
    return servers.start_command("thingshub", a.thingshub_cmd, cpus)


def valid(test: str, r: Any) -> bool:
    """A run whose figure counts: no error, QoS 1 complete, every connection alive."""
    if r.error is not None:
        return False
    if test in ("a0", "b0"):
        return bool(r.received > 0 and r.duplicates == 0 and r.foreign == 0)
    return bool(r.complete)


def flags(test: str, r: Any, a: argparse.Namespace) -> str:
    f = ""
    if not valid(test, r):
        f += "!"
    elif getattr(r, "lost", 0):
        f += "~"
    if r.load_cpu_pct >= FLAG_LOAD and test != "idle":  # memory does not depend on speed
        f += "L"
    if r.other_cpu_pct > a.max_other:
        f += "N"
    return f


def wait_quiet(a: argparse.Namespace) -> None:
    """Before a run, wait (up to --wait-quiet s) for a quiet machine (`mqttload.wait_quiet`)."""
    mqttload.wait_quiet(a.wait_quiet, a.max_other, progress)


def run_one(name: str, key: str, a: argparse.Namespace, test: Test) -> dict[str, Any]:
    """Start a fresh server, run one test, stop it; repeat if the machine was busy."""
    best: dict[str, Any] | None = None
    for attempt in range(1 + a.noise_retries):
        if a.wait_quiet > 0:
            wait_quiet(a)
        try:
            server = start(name, a)
        except servers.ServerError as exc:
            return {"error": f"start: {exc}", "result": None}
        try:
            result = mqttload.run_loop(test.run(server, a))
            if not valid(key, result) or getattr(result, "lost", False):
                tail = server.log_tail(5).strip()
                if tail:
                    result.notes.append(f"server log ends: {tail!r}")
        finally:
            alive_at_end = server.alive()
            code = server.stop()
        if not alive_at_end:
            result.error = result.error or f"server died (exit {code}): {server.log_tail(5)}"
        elif code != 0:
            result.notes.append(f"server exit code {code} on SIGTERM")
        entry = {"result": result, "exit_code": code, "attempt": attempt + 1}
        if best is None or result.other_cpu_pct < best["result"].other_cpu_pct:
            best = entry
        if result.other_cpu_pct <= a.max_other or result.error or attempt == a.noise_retries:
            break
        progress(
            f"    {name} {key}: other processes used {result.other_cpu_pct:.0f}% of a core "
            "during the run; running it again"
        )
    assert best is not None
    return best


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def describe(key: str, r: Any) -> str:
    if r is None:
        return ""
    cpu = f"server {r.server_cpu_pct:.0f}% load {r.load_cpu_pct:.0f}% other {r.other_cpu_pct:.0f}%"
    if key in ("conns", "idle"):
        text = (
            f"{r.connects_per_s:,.0f} conn/s, {r.connected:,}/{r.count:,} connected, "
            f"{r.alive:,} alive after {r.hold_seconds:g} s, RSS {r.rss_before_kb:,} -> "
            f"{r.rss_held_kb:,} kB = {r.bytes_per_conn:,.0f} B/conn; {cpu}"
        )
    else:
        text = (
            f"{r.rate:,.0f} msg/s, {r.received:,}/{r.expected:,} received (lost {r.lost:,}, "
            f"dup {r.duplicates}, reordered {r.reordered}), {r.seconds:.2f} s; {cpu}; "
            f"{r.server_us_per_msg:.1f} us/msg"
        )
    if r.error:
        text += f"; ERROR {r.error}"
    if r.notes:
        text += "; " + "; ".join(r.notes)
    return text


def suite(a: argparse.Namespace, names: list[str]) -> tuple[list[dict[str, Any]], bool]:
    table = tests(a)
    keys = [k for k in a.tests if k in table]
    # "conns" and "idle" are two figures of one run: run it once when both are asked for.
    run_keys = [k for k in keys if not (k == "idle" and "conns" in keys)]
    runs: list[dict[str, Any]] = []
    ok = True
    total = len(run_keys) * a.runs * len(names)
    n = 0
    for key in run_keys:
        for i in range(a.runs):
            for name in names:
                n += 1
                entry = run_one(name, key, a, table[key])
                r = entry["result"]
                if r is None:
                    progress(f"[{n}/{total}] {name} {key} #{i + 1}: {entry['error']}")
                    ok = False
                    runs.append({"server": name, "test": key, "run": i + 1, **entry})
                    continue
                ok = ok and valid(key, r)
                progress(f"[{n}/{total}] {name} {key} #{i + 1}: {describe(key, r)}")
                for k in [key, "idle"] if key == "conns" and "idle" in keys else [key]:
                    runs.append(
                        {"server": name, "test": k, "run": i + 1, **entry, "flags": flags(k, r, a)}
                    )
    return runs, ok


def summarize(
    runs: list[dict[str, Any]], a: argparse.Namespace, names: list[str]
) -> list[dict[str, Any]]:
    table = tests(a)
    rows = []
    for key in [k for k in a.tests if k in table]:
        t = table[key]
        row: dict[str, Any] = {"test": key, "label": t.label, "short": t.short, "unit": t.unit,
                               "higher_is_better": t.higher_is_better}  # fmt: skip
        for name in names:
            mine = [x for x in runs if x["server"] == name and x["test"] == key]
            good = [
                x["result"] for x in mine if x["result"] is not None and valid(key, x["result"])
            ]
            row[name] = {
                "median": statistics.median(t.figure(r) for r in good) if good else None,
                "cost_us": statistics.median(t.cost(r) for r in good) if good else None,
                "runs": len(mine),
                "valid": len(good),
                "flags": "".join(sorted({c for x in mine for c in x.get("flags", "!")})),
                "lost": [
                    f"{x['result'].lost:,} of {x['result'].expected:,}"
                    for x in mine
                    if x["result"] is not None and getattr(x["result"], "lost", False)
                ],
                "errors": [
                    x["result"].error if x["result"] is not None else x.get("error")
                    for x in mine
                    if x["result"] is None or x["result"].error
                ],
            }
        m, th = row.get("mosquitto", {}).get("median"), row.get("thingshub", {}).get("median")
        row["ratio"] = th / m if m and th is not None else None
        mc, tc = row.get("mosquitto", {}).get("cost_us"), row.get("thingshub", {}).get("cost_us")
        row["cost_ratio"] = tc / mc if mc and tc is not None else None
        rows.append(row)
    return rows


def fmt(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def print_table(rows: list[dict[str, Any]], names: list[str], env: dict[str, Any]) -> None:
    print()
    print(f"MQTT servers, {env['date']}: {', '.join(env['servers'][n] for n in names)}")
    print(f"machine: {env['cpu']}, {env['cpus']} CPUs, {env['kernel']}; {env['pinning']}")
    print(f"load: Python {env['python']}, uvloop {env['uvloop']}; {env['runs']} run(s) per cell")
    print()
    width = max(len(r["label"]) for r in rows) + 2
    head = f"{'figure':<{width}}" + "".join(f"{n:>16}" for n in names)
    if len(names) == 2:
        head += f"{'thingshub/mosq':>16}"
    print(head)
    print("-" * len(head))
    for r in rows:
        line = f"{r['label']:<{width}}"
        for n in names:
            cell = r[n]
            line += f"{fmt(cell['median']) + (' ' + cell['flags'] if cell['flags'] else ''):>16}"
        if len(names) == 2:
            line += f"{fmt(r['ratio'], 2):>16}"
        print(line)
    print()
    print("server CPU per message or per connect, us (lower is better; does not depend on")
    print("which side was saturated):")
    for r in rows:
        if r["test"] == "idle":
            continue
        line = f"{r['short'] + (', us/connect' if r['test'] == 'conns' else ', us/msg'):<{width}}"
        for n in names:
            line += f"{fmt(r[n]['cost_us'], 1):>16}"
        if len(names) == 2:
            line += f"{fmt(r['cost_ratio'], 2):>16}"
        print(line)
    problems = [
        f"  {n} {r['short']}: "
        + "; ".join(
            f"{text} (x{count})" if count > 1 else text
            for text, count in Counter(
                [f"lost {x}" for x in r[n]["lost"]] + [f"error: {e}" for e in r[n]["errors"]]
            ).items()
        )
        for r in rows
        for n in names
        if r[n]["lost"] or r[n]["errors"]
    ]
    if problems:
        print()
        print("losses and errors (details per run above and in --json):")
        print("\n".join(dict.fromkeys(problems)))
    print()
    print("flags: ! a run failed (error, QoS 1 loss, dead connection); ~ QoS 0 messages lost;")
    print(f"       L load generator above {FLAG_LOAD:.0f}% of its core (the figure may be the")
    print("       client's limit, not the server's); N other processes used the machine.")
    print("ratios: thingshub / mosquitto; for RSS per connection lower is better.")
    sys.stdout.flush()


def run_sustained(a: argparse.Namespace, names: list[str]) -> tuple[list[dict[str, Any]], bool]:
    runs: list[dict[str, Any]] = []
    ok = True
    for name in names:
        if a.wait_quiet > 0:
            wait_quiet(a)
        try:
            server = start(name, a)
        except servers.ServerError as exc:
            progress(f"{name}: {exc}")
            runs.append({"server": name, "test": "sustained", "error": str(exc), "result": None})
            ok = False
            continue
        progress(f"{name}: sustained load for {a.sustained:g} s ...")
        try:
            r = mqttload.run_loop(
                mqttload.sustained(
                    server.host,
                    server.port,
                    seconds=a.sustained,
                    rate=a.rate,
                    publishers=a.publishers,
                    qos=a.sustained_qos,
                    payload=a.payload,
                    window=a.sustained_window,
                    procs=a.procs,
                    probe=server,
                )
            )
        finally:
            alive = server.alive()
            code = server.stop()
        if not alive:
            r.error = r.error or f"server died (exit {code})"
        ok = ok and bool(r.complete)
        runs.append({"server": name, "test": "sustained", "result": r, "exit_code": code})
    print()
    print(
        f"sustained load: {a.sustained:g} s, {a.rate:,} msg/s offered by {a.publishers} "
        f"publishers (QoS {a.sustained_qos}, {a.payload} B) -> 1 subscriber on #"
    )
    print(f"{'':<34}" + "".join(f"{x['server']:>16}" for x in runs))

    def row(label: str, get: Callable[[mqttload.SustainedResult], str]) -> None:
        print(
            f"{label:<34}"
            + "".join(f"{get(x['result']) if x['result'] else '-':>16}" for x in runs)
        )

    mb = 1024
    row("server RSS idle, MiB", lambda r: f"{r.rss_idle_kb / mb:.1f}")
    row("server RSS first second, MiB", lambda r: f"{r.rss_first_kb / mb:.1f}")
    row("server RSS last second, MiB", lambda r: f"{r.rss_last_kb / mb:.1f}")
    row("server RSS min, MiB", lambda r: f"{r.rss_min_kb / mb:.1f}")
    row("server RSS max, MiB", lambda r: f"{r.rss_max_kb / mb:.1f}")
    row("delivered msg/s mean", lambda r: f"{r.delivered_rate_mean:,.0f}")
    row(
        "delivered msg/s min..max",
        lambda r: f"{r.delivered_rate_min:,.0f}..{r.delivered_rate_max:,.0f}",
    )
    row("sent", lambda r: f"{r.sent:,}")
    row("received (unique)", lambda r: f"{r.received:,}")
    row("lost / duplicates", lambda r: f"{r.lost:,} / {r.duplicates:,}")
    row("max behind schedule, msgs/publ.", lambda r: f"{r.max_behind:,}")
    row("server CPU %", lambda r: f"{r.server_cpu_pct:.0f}")
    row(
        "server CPU per message, us",
        lambda r: (
            f"{r.server_cpu_pct * 1e4 / r.delivered_rate_mean:.1f}"
            if r.delivered_rate_mean
            else "-"
        ),
    )
    row("load CPU % / other CPU %", lambda r: f"{r.load_cpu_pct:.0f} / {r.other_cpu_pct:.0f}")
    row("complete", lambda r: "yes" if r.complete else "NO")
    for x in runs:
        r = x["result"]
        if r is not None and (r.error or r.notes):
            print(f"  {x['server']}: {r.error or ''} {'; '.join(r.notes)}")
    return runs, ok


# ------------------------------------------------------------------------------- setup


def environment(a: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    return {
        **servers.machine_info(),
        "runs": a.runs,
        "pinning": (
            f"server on CPU {a.server_cpus}, load on CPU {a.load_cpus}" if a.pin else "not pinned"
        ),
        "mosquitto_config": servers.mosquitto_config(0, a.mosquitto_option).splitlines()[1:],
        "servers": {
            "mosquitto": f"mosquitto {servers.mosquitto_version(a.mosquitto)}",
            "thingshub": f"thingshub ({a.thingshub_cmd})",
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--only", choices=SERVERS, help="measure one server (no ratios)")
    p.add_argument("--quick", action="store_true", help="small counts, one run: a smoke test")
    p.add_argument(
        "--sustained",
        type=float,
        metavar="SECONDS",
        help="instead of the suite: a fixed load for SECONDS, server RSS every second",
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="write every run and the summary here")
    p.add_argument("--runs", type=int, help="runs per cell, median shown (default 3; --quick 1)")
    p.add_argument(
        "--tests",
        default="a0,a1,b0,b1,conns,idle",
        help="comma list of a0,a1,b0,b1,conns,idle (default all)",
    )
    p.add_argument("--messages", type=int, help="shape A messages (default 100,000)")
    p.add_argument("--publishers", type=int, help="shape B publishers (default 200)")
    p.add_argument("--per-publisher", type=int, help="shape B messages each (default 500)")
    p.add_argument("--payload", type=int, default=100, help="payload bytes (default 100)")
    p.add_argument("--window", type=int, default=100, help="shape A QoS 1 in-flight (100)")
    p.add_argument(
        "--fanin-window",
        type=int,
        default=1,
        help="shape B QoS 1 in-flight per publisher (default 1: stop-and-wait, like devices)",
    )
    p.add_argument("--conns", type=int, help="idle connections (default 10,000)")
    p.add_argument("--conn-concurrency", type=int, default=100, help="connects at a time (100)")
    p.add_argument("--hold", type=float, help="seconds to hold idle connections (default 5)")
    p.add_argument("--rate", type=int, default=10_000, help="sustained offered msg/s (10,000)")
    p.add_argument("--sustained-qos", type=int, choices=(0, 1), default=1)
    p.add_argument(
        "--sustained-window",
        type=int,
        default=1,
        help="sustained QoS 1 in-flight per publisher (default 1)",
    )
    p.add_argument(
        "--procs",
        type=int,
        default=0,
        help="load worker processes besides the subscriber's (default 0: all in one)",
    )
    p.add_argument(
        "--strict-parse",
        action="store_true",
        help="subscriber parses every PUBLISH with the codec's Reader (slower)",
    )
    p.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=len(os.sched_getaffinity(0)) >= 2,
        help="pin server and load to their own CPUs (default on with 2+ CPUs)",
    )
    p.add_argument("--server-cpus", default="0", help="taskset CPU list for the server (0)")
    p.add_argument("--load-cpus", default="1", help="CPU list for the load generator (1)")
    p.add_argument(
        "--max-other",
        type=float,
        default=25.0,
        help="other processes' CPU (%% of a core) above which a run is redone",
    )
    p.add_argument("--noise-retries", type=int, default=2, help="redos of a disturbed run (2)")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=20.0,
        help="before each run, wait up to this many s for a quiet machine (20)",
    )
    p.add_argument("--limit", type=float, default=120.0, help="time limit of one run, s (120)")
    p.add_argument(
        "--thingshub-cmd",
        default=servers.DEFAULT_THINGSHUB_CMD,
        help="command starting our server; it must print its port, or contain "
        "{port} to get one (default: %(default)s)",
    )
    p.add_argument(
        "--tls",
        action="store_true",
        help="both servers and every client over TLS (a private CA made for the run;"
        " clients verify the server as devices do)",
    )
    p.add_argument("--mosquitto", default=servers.MOSQUITTO, help="mosquitto binary")
    p.add_argument(
        "--mosquitto-option",
        action="append",
        default=[],
        metavar="LINE",
        help="extra mosquitto.conf line, e.g. 'max_queued_messages 1000' (repeatable)",
    )
    a = p.parse_args(argv)  # fmt: skip
    quick = a.quick
    a.runs = a.runs or (1 if quick else 3)
    a.messages = a.messages or (20_000 if quick else 100_000)
    a.publishers = a.publishers or (50 if quick else 200)
    a.per_publisher = a.per_publisher or (200 if quick else 500)
    a.conns = a.conns or (1_000 if quick else 10_000)
    a.hold = a.hold if a.hold is not None else (1.0 if quick else 5.0)
    a.tests = [t.strip() for t in a.tests.split(",") if t.strip()]
    unknown = set(a.tests) - {"a0", "a1", "b0", "b1", "conns", "idle"}
    if unknown:
        p.error(f"unknown tests: {', '.join(sorted(unknown))}")
    return a


def prepare(a: argparse.Namespace) -> None:
    """Pin ourselves, allow enough sockets, and turn SIGTERM into a clean stop."""
    if a.pin:
        os.sched_setaffinity(0, servers.cpu_list(a.load_cpus))
    servers.raise_open_files(a.conns + a.publishers + 200)

    def stop(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> int:
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # keep the table and progress in order
    a = parse_args(argv)
    prepare(a)
    tls_dir = None
    if a.tls:
        tls_dir = servers.tls_files()
        os.environ[mqttload.TLS_CA_ENV] = str(tls_dir / "ca.pem")  # for the workers too
        a.mosquitto_option = servers.mosquitto_tls_lines(tls_dir) + a.mosquitto_option
        a.thingshub_cmd += servers.thingshub_tls_options(tls_dir)
    try:
        return _main(a)
    finally:
        if tls_dir is not None:
            shutil.rmtree(tls_dir, ignore_errors=True)


def _main(a: argparse.Namespace) -> int:
    names = [a.only] if a.only else list(SERVERS)
    env = environment(a, names)
    if "thingshub" in names:
        try:
            start("thingshub", a).stop()
        except servers.ServerError as exc:
            progress(f"thingshub cannot be started, so it is left out:\n  {exc}".rstrip())
            if a.only:
                return 2
            names.remove("thingshub")
            env["thingshub_missing"] = str(exc)
    if a.sustained:
        runs, ok = run_sustained(a, names)
        summary: list[dict[str, Any]] = []
    else:
        runs, ok = suite(a, names)
        summary = summarize(runs, a, names)
        print_table(summary, names, env)
    if "thingshub_missing" in env:
        print("\nthingshub was not measured: it could not be started (see above).")
    if a.json:
        data = {
            "env": env,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
            "summary": summary,
            "runs": [
                {**x, "result": x["result"].as_dict() if x.get("result") is not None else None}
                for x in runs
            ],
        }
        a.json.write_text(json.dumps(data, indent=2))
        progress(f"wrote {a.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
