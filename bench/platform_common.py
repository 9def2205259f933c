"""What the platform benchmarks share: a platform per run, registration, the API client,
the scratch database, noise handling, percentiles.

Why a module of its own: `platform_bench.py` (the command line and the connects test),
`platform_image.py`, `platform_commands.py` and `platform_telemetry.py` all start
`thingshub serve` the same way, register devices the same way and judge a run's noise
the same way; one copy of that code keeps their figures comparable.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import math
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx

import mqttload
import servers
from mqttload import LoadError, now
from thingshub.dialects.onenet.token import make_token

FLAG_LOAD = mqttload.FLAG_LOAD
PRODUCT = "bench"
C = TypeVar("C", bound=mqttload.Conn)
HTTP_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0  # the platform flushes its writes on SIGTERM
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_CONNECTIONS_RE = re.compile(r"^thingshub_mqtt_connections\s+(\S+)$", re.MULTILINE)


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------ setup


class ScratchDatabase:
    """A PostgreSQL database of its own for one server run, dropped afterwards.

    Why: the platform migrates its schema and keeps its devices in the database; a fresh
    one per run makes every first round really cold, and leaves the databases already
    on that server untouched. `base_url` names the server and a database to connect to
    for CREATE/DROP (e.g. `postgres`).
    """

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.name = f"thingshub_bench_{os.getpid()}_{secrets.token_hex(3)}"
        parts = urlsplit(base_url)
        self.url = urlunsplit((parts.scheme, parts.netloc, f"/{self.name}", parts.query, ""))

    async def _execute(self, sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.base_url, timeout=10)
        try:
            await conn.execute(sql, timeout=60)
        finally:
            await conn.close(timeout=10)

    async def create(self) -> str:
        await self._execute(f'CREATE DATABASE "{self.name}"')
        return self.url

    async def drop(self) -> None:
        # WITH (FORCE): a server that did not stop cleanly may still hold connections.
        await self._execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class DatabaseCpu:
    """CPU time of the PostgreSQL backends serving one database, read from /proc.

    Why: on PostgreSQL part of the platform's work runs in other processes, which
    `Cpu.between` would otherwise count as noise (other %). Backends are found by their
    process title (`postgres: ... USER DBNAME HOST(PORT) STATE`); the pool opens them
    lazily and may close them, so each call looks again and keeps the last reading of
    backends that have gone. PostgreSQL's shared processes (WAL writer, checkpointer)
    serve every database and are left out. The backends are not pinned: they run on
    whichever core is free, often the load's.
    """

    def __init__(self, dbname: str) -> None:
        self.needle = f" {dbname} ".encode()
        self.seen: dict[int, float] = {}

    def cpu_seconds(self) -> float:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    title = f.read(300)
                if not title.startswith(b"postgres: ") or self.needle not in title:
                    continue
                with open(f"/proc/{entry.name}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            rest = stat[stat.rindex(")") + 2 :].split()
            self.seen[int(entry.name)] = (int(rest[11]) + int(rest[12])) / _CLK_TCK
        return sum(self.seen.values())


@dataclass(frozen=True)
class DeviceLogin:
    """A registered device and its two logins: the OneNET token, and the ThingsPanel
    user name and password that registration shows once (empty for `local_logins`)."""

    name: str
    key: str
    token: str
    username: str = ""
    password: str = ""


def api(server: servers.PlatformServer, limit: int = 100) -> httpx.AsyncClient:
    """An HTTP client for the platform's API, with its key and `limit` connections."""
    return httpx.AsyncClient(
        base_url=server.http_url,
        headers={"Authorization": f"Bearer {server.api_key}"},
        timeout=HTTP_TIMEOUT,
        limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
    )


async def register(
    server: servers.PlatformServer,
    count: int,
    concurrency: int,
    limit: float,
    product: dict[str, Any] | None = None,
) -> tuple[list[DeviceLogin], float]:
    """Create product `bench` and `count` devices through the API; returns them and the time.
    `product` adds fields to the product's body (e.g. its `thing_model`).

    Setup, not a figure: `concurrency` requests at a time keep it short. Tokens are made
    here with the platform's own `make_token`, as a device computes its own, valid 2 days;
    the ThingsPanel user name and password are those the platform answered.
    """
    names = [f"dev{i:06d}" for i in range(count)]
    keys: list[str] = [""] * count
    users: list[tuple[str, str]] = [("", "")] * count
    todo = iter(range(count))
    t0 = now()
    try:
        async with api(server, concurrency) as http, asyncio.timeout(limit):
            r = await http.post(
                "/api/v1/products", json={"id": PRODUCT, "name": "benchmark", **(product or {})}
            )
            if r.status_code != 201:
                raise LoadError(f"creating the product: HTTP {r.status_code} {r.text[:200]}")

            async def worker() -> None:
                for i in todo:
                    r = await http.post(
                        f"/api/v1/products/{PRODUCT}/devices", json={"name": names[i]}
                    )
                    if r.status_code != 201:
                        raise LoadError(
                            f"registering {names[i]}: HTTP {r.status_code} {r.text[:200]}"
                        )
                    body = r.json()
                    keys[i] = body["key"]
                    users[i] = (body["username"], body["password"])

            await asyncio.gather(*(worker() for _ in range(concurrency)))
    except TimeoutError:
        raise LoadError(f"registering {count:,} devices took more than {limit:g} s") from None
    except httpx.HTTPError as exc:
        raise LoadError(f"registering devices: {type(exc).__name__}: {exc}") from None
    seconds = now() - t0
    expiry = int(time.time()) + 2 * 86400
    logins = [
        DeviceLogin(n, k, make_token(k, PRODUCT, n, expiry), *u)
        for n, k, u in zip(names, keys, users, strict=True)
    ]
    return logins, seconds


def local_logins(count: int) -> list[DeviceLogin]:
    """Devices made up here, for mosquitto when the platform could not register any."""
    expiry = int(time.time()) + 2 * 86400
    out = []
    for i in range(count):
        name, key = f"dev{i:06d}", base64.b64encode(secrets.token_bytes(32)).decode()
        token = make_token(key, PRODUCT, name, expiry)
        out.append(DeviceLogin(name, key, token, name, token))
    return out


async def server_connections(server: servers.PlatformServer) -> int | None:
    """Open MQTT connections, from the platform's /metrics (None if unreadable)."""
    try:
        async with api(server, 1) as http:
            r = await http.get("/metrics")
    except httpx.HTTPError:
        return None
    m = _CONNECTIONS_RE.search(r.text)
    return int(float(m.group(1))) if m else None


async def wait_disconnected(server: servers.PlatformServer, limit: float = 30.0) -> bool:
    """Wait until the platform has let every connection go (its metric reads 0)."""
    deadline = now() + limit
    while now() < deadline:
        if await server_connections(server) == 0:
            return True
        await asyncio.sleep(0.2)
    return False


async def quiet(a: argparse.Namespace) -> float:
    """`mqttload.wait_quiet` in a thread, so open connections keep being served meanwhile."""
    if a.wait_quiet <= 0:
        return 0.0
    return await asyncio.to_thread(mqttload.wait_quiet, a.wait_quiet, a.max_other, progress)


async def open_devices(
    host: str,
    port: int,
    factories: Sequence[Callable[[], C]],
    ids: Sequence[str],
    logins: Sequence[tuple[str, str]],
    concurrency: int,
    filters: Callable[[int], list[str]] | None = None,
    qos: int = 0,
) -> list[C]:
    """Connect device i with `ids[i]` and `logins[i]`, then SUBSCRIBE it to `filters(i)`
    in one packet; returns the connections in the order of `ids`. Any failure closes them
    all and raises `LoadError`: a benchmark on a partial fleet would mislead.

    keepalive is 600 s: the idle phases (waits for a quiet machine) must not leave a
    device owing the server a PINGREQ.
    """
    made: list[C | None] = [None] * len(ids)

    def keep(i: int) -> Callable[[], C]:
        def make() -> C:
            conn = factories[i]()
            made[i] = conn
            return conn

        return make

    conns, errors = await mqttload.connect_many(
        [keep(i) for i in range(len(ids))],
        host,
        port,
        ids,
        keepalive=600,
        concurrency=concurrency,
        logins=logins,
    )
    if errors:
        mqttload.close_all(conns)
        raise LoadError(f"{len(errors)} devices could not connect, e.g. {errors[0]}")
    ordered = [c for c in made if c is not None]
    if filters is None:
        return ordered
    sem = asyncio.Semaphore(concurrency)

    async def sub(i: int, conn: C) -> None:
        async with sem:
            await mqttload.subscribe_many(conn, filters(i), qos)

    try:
        await asyncio.gather(*(sub(i, c) for i, c in enumerate(ordered)))
    except LoadError:
        mqttload.close_all(ordered)
        raise
    return ordered


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank) of already sorted values."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def exit_noted(out: dict[str, Any], run: PlatformRun) -> dict[str, Any]:
    """Keep the platform's exit code; anything but 0 on SIGTERM is a bug worth seeing."""
    out["exit_code"] = run.exit_code
    if run.exit_code not in (0, None):
        out.setdefault("notes", []).append(f"thingshub exit code {run.exit_code} on SIGTERM")
    return out


# ---------------------------------------------------------------------- running


class PlatformRun(contextlib.AbstractContextManager[servers.PlatformServer]):
    """`thingshub serve` on its own scratch database (if PostgreSQL), stopped and dropped
    on exit whatever happens; a non-zero exit code on SIGTERM is reported."""

    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.db = ScratchDatabase(a.database_url) if a.database_url else None
        self.helpers = DatabaseCpu(self.db.name) if self.db is not None else None
        self.server: servers.PlatformServer | None = None
        self.exit_code: int | None = None

    def __enter__(self) -> servers.PlatformServer:
        url = None
        if self.db is not None:
            try:
                url = mqttload.run_loop(self.db.create())
            except Exception as exc:
                raise servers.ServerError(f"cannot create a scratch database: {exc}") from exc
        try:
            self.server = servers.start_platform(
                self.a.server_cpus if self.a.pin else None, url, timeout=60, src=self.a.src
            )
        except BaseException:
            self._drop()
            raise
        return self.server

    def __exit__(self, *exc: object) -> None:
        try:
            if self.server is not None:
                alive = self.server.alive()
                tail = self.server.log_tail(5)
                self.exit_code = self.server.stop(STOP_TIMEOUT)
                if not alive:
                    progress(f"    thingshub died (exit {self.exit_code}): {tail}")
                elif self.exit_code != 0:
                    progress(f"    thingshub exit code {self.exit_code} on SIGTERM: {tail}")
        finally:
            self._drop()

    def _drop(self) -> None:
        if self.db is not None:
            try:
                mqttload.run_loop(self.db.drop())
            except Exception as exc:
                progress(f"    could not drop scratch database {self.db.name}: {exc}")


@contextlib.contextmanager
def py_spy(out_dir: Path | None, pid: int, label: str, seconds: float) -> Iterator[None]:
    """Record the server with py-spy over one measured phase (`--py-spy DIR`).

    Why in the benchmark: a profile is only worth reading if it was taken under the
    load the figure was measured with. The raw format (`-f raw`: one line per stack and
    its count) is what bench/README.md's percentages are computed from
    (`pyspy_summary.py`). `--gil` keeps only samples of a thread holding the GIL: the
    server's Python work. Without it, threads blocked in C (the SQLite thread waiting
    for work, uvloop in epoll) count as busy, and a third of the samples were such
    waits. What runs without the GIL (SQLite's own C code, fsync) is left out.
    py-spy pauses the server for each sample (100 a second) and runs on the load's
    core, where it counts as "other" CPU: a profiled run's figures are a little lower
    than an unprofiled one's, so quote figures from runs without `--py-spy`.
    """
    if out_dir is None:
        yield
        return
    tool = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{label}-{pid}.txt"
    argv = [tool, "record", "-p", str(pid), "-o", str(path), "-f", "raw"]
    argv += ["-d", str(max(1, math.ceil(seconds))), "--gil"]
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except OSError as exc:
        progress(f"    py-spy could not start: {exc}")
        yield
        return
    try:
        yield
    finally:
        try:
            _, err = proc.communicate(timeout=seconds + 15)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if path.exists():
            progress(f"    py-spy profile of the server: {path}")
        else:
            progress(f"    py-spy wrote nothing: {err.decode(errors='replace')[-300:]}")


def attempt(name: str, a: argparse.Namespace, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one server's test, again (up to --noise-retries) if other processes disturbed
    it; the quietest attempt is kept. An error is kept as it is."""
    best: dict[str, Any] | None = None
    for n in range(1 + a.noise_retries):
        try:
            out = run()
        except servers.ServerError as exc:
            out = {"valid": False, "errors": [str(exc)], "other_max": 0.0, "start_failed": True}
        except LoadError as exc:
            out = {"valid": False, "errors": [str(exc)], "other_max": 0.0}
        out["attempt"] = n + 1
        if best is None or out["other_max"] < best["other_max"]:
            best = out
        if out["errors"] or out["other_max"] <= a.max_other or n == a.noise_retries:
            break
        progress(
            f"    {name}: other processes used {out['other_max']:.0f}% of a core during the run; "
            "running it again"
        )
    assert best is not None
    return best


def median(runs: Sequence[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get("valid") and key in r]
    return statistics.median(values) if values else None


def fmt(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


# ------------------------------------------------------------------ command line


#: The PostgreSQL server the cluster benchmarks make their scratch databases on.
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def add_database_arg(p: argparse.ArgumentParser, what: str) -> None:
    """`--database-url`: the PostgreSQL server (admin URL) for `what`."""
    p.add_argument(
        "--database-url", default=ADMIN_URL, help=f"PostgreSQL server (admin URL) for {what}"
    )


def add_setup_args(p: argparse.ArgumentParser) -> None:
    """Options every platform benchmark takes: the report file, the code under test, and
    how fast the setup registers and connects devices (setup, not a figure)."""
    p.add_argument("--json", type=Path, metavar="PATH", help="write every run and the summary here")
    p.add_argument(
        "--src",
        type=Path,
        metavar="DIR",
        help="run the platform from this source dir (PYTHONPATH) instead of the installed "
        "package, e.g. a commit: mkdir /tmp/h && git archive HEAD src | tar -x -C /tmp/h; "
        "--src /tmp/h/src",
    )
    p.add_argument("--conn-concurrency", type=int, default=100, help="connects at a time (100)")
    p.add_argument(
        "--register-concurrency", type=int, default=32, help="API requests at a time (32)"
    )


def add_telemetry_args(p: argparse.ArgumentParser, tests: str) -> None:
    """The telemetry load's options; `tests` names the tests that use them, for the help."""
    p.add_argument("--tel-devices", type=int, help=f"{tests}: devices (1,000; --quick 200)")
    p.add_argument(
        "--tel-window", type=int, default=4, help=f"{tests}: messages in flight per device (4)"
    )
    p.add_argument(
        "--tel-warmup", type=float, help=f"{tests}: load before the window, s (2; --quick 1)"
    )
    p.add_argument(
        "--tel-verify", type=int, default=50, help=f"{tests}: devices read back via API (50)"
    )


def add_command_args(p: argparse.ArgumentParser) -> None:
    """The command calls' options, shared so that the single-node and the cross-node
    round trips are measured with the same client and checked the same way."""
    p.add_argument("--cmd-rate", type=float, default=500.0, help="commands: calls/s offered (500)")
    p.add_argument("--cmd-timeout", type=int, default=10, help="commands: ?timeout= of a call")
    p.add_argument("--http-pool", type=int, default=64, help="commands: HTTP connections (64)")
    p.add_argument(
        "--http-client",
        choices=("raw", "httpx"),
        default="raw",
        help="commands: our keep-alive HTTP/1.1 client (raw, default) or httpx",
    )
    p.add_argument("--cmd-verify", type=int, default=10, help="commands: records checked (10)")


def add_noise_args(p: argparse.ArgumentParser) -> None:
    """How a run judges and waits out other processes (`attempt`, `quiet`), and the time
    limit of one phase."""
    p.add_argument(
        "--max-other",
        type=float,
        default=25.0,
        help="other processes' CPU (%% of a core) above which a run is redone (25)",
    )
    p.add_argument("--noise-retries", type=int, default=1, help="redos of a disturbed run (1)")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=20.0,
        help="before each measured phase, wait up to this many s for a quiet machine (20)",
    )
    p.add_argument("--limit", type=float, default=120.0, help="time limit of one phase, s (120)")


def check_args(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """The checks both command lines make; `p.error` exits with the parser's usage."""
    a.tel_devices = a.tel_devices or (200 if a.quick else 1_000)
    a.tel_warmup = a.tel_warmup if a.tel_warmup is not None else (1.0 if a.quick else 2.0)
    if a.tel_window < 1 or a.http_pool < 1 or a.cmd_rate <= 0:
        p.error("--tel-window, --http-pool and --cmd-rate must be positive")
    if not 1 <= a.cmd_timeout <= 30:
        p.error("--cmd-timeout must be between 1 and 30 (the platform's range)")
    if a.database_url and not a.database_url.startswith(("postgresql://", "postgres://")):
        p.error("--database-url must be a postgresql:// URL")


def start_main(open_files: int) -> None:
    """What a benchmark's main does first: print lines as they come (the runs are long),
    allow `open_files` sockets, and turn SIGTERM into a clean stop (servers stopped,
    scratch databases dropped)."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    servers.raise_open_files(open_files)

    def stop(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


# ---------------------------------------------------------------------- report


def runs_flags(
    runs: Sequence[dict[str, Any]],
    max_other: float,
    load_key: str = "load_cpu_pct",
    other_key: str = "other_cpu_pct",
) -> str:
    """The flags of a figure's runs: ! a run invalid, L the load generator saturated,
    N other processes above `max_other` (bench/README.md reads them the same way)."""
    f = "!" if any(not r.get("valid") for r in runs) else ""
    f += "L" if any(r.get(load_key, 0) >= FLAG_LOAD for r in runs) else ""
    return f + ("N" if any(r.get(other_key, 0) > max_other for r in runs) else "")


def run_notes(r: dict[str, Any], max_other: float, verified: str) -> list[str]:
    """One run's verdict in words: INVALID, L, N, its errors and notes, and how many of
    the checks read back through the API held (`verified` names what was checked)."""
    out = [] if r.get("valid") else ["INVALID"]
    if r.get("load_cpu_pct", 0) >= FLAG_LOAD:
        out.append("L (load generator saturated)")
    if r.get("other_cpu_pct", 0) > max_other:
        out.append(f"N (other processes {r['other_cpu_pct']:.0f}%)")
    out += r.get("errors", []) + r.get("notes", []) + r.get("examples", [])[:3]
    v = r.get("verify") or {}
    if v:
        out.append(f"{verified} {v['checked'] - len(v['bad'])}/{v['checked']} ok")
        out += v["bad"][:3]
    return out
