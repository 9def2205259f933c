"""The `commands` test of `platform_bench.py`: OneNET synchronous commands over HTTP.

Applications call `POST /api/v1/products/bench/devices/{name}/commands?timeout=S`; the
platform publishes the body on `$sys/bench/{name}/cmd/request/{cmd_id}`, the device
answers on `.../cmd/response/{cmd_id}`, and the HTTP call returns the answer. Both ends
are simulated in this process, on the load core: the devices are `CommandDevice`s on
the lean MQTT client, the applications one HTTP/1.1 client.

Why it is built this way (bench/README.md says what each figure means):
- Every call is checked end to end. The body of call j is `c{j}`; a device answers
  `{its name}|{cmd_id}|{body}`; the caller requires HTTP 200, `response_text` equal to
  `{the device it called}|{the cmd_id returned}|c{j}`, and `response` (base64) equal to
  the same bytes. A call routed to the wrong device, or answered with another call's id
  or body, is caught. Afterwards the records of a sample of devices are read back
  through the API: each must be `answered`, and their ids must be exactly those the
  calls returned.
- The HTTP client is our own by default (`RawHttp`): keep-alive HTTP/1.1, one request
  at a time per connection, requests formatted with `%` and answers parsed by
  Content-Length. httpx (`--http-client httpx`, for a cross-check) costs the client
  several times more CPU per call than the server spends on its HTTP layer, so at
  saturation the load core, not the platform, would set the figure.
- (a) is open loop: call j is started at t0 + j/rate whether or not earlier calls have
  returned, and its latency runs from that scheduled instant. A slow server shows as
  latency, never as a lower offered rate. (b) is closed loop: `--http-concurrency`
  calls in flight, each answered call starts the next.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import itertools
import statistics
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, cast

import httpx
import orjson

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
    open_devices,
    percentile,
    progress,
    py_spy,
    quiet,
    register,
)
from thingshub.mqtt.codec import CodecError, PubAck, Publish, encode_publish

TARGET_CALLS_PER_S = 2_000.0
TARGET_P99_MS = 25.0
#: The platform refuses OneNET answers of 1024 bytes or more; ours stay far below.
MAX_ANSWER = 1024


# ---------------------------------------------------------------------- devices


class CommandDevice(mqttload.Conn):
    """A device that answers every command request at once.

    It is subscribed to `$sys/bench/{name}/cmd/request/+`. The request `{cmd_id}` with
    body B is answered with `{name}|{cmd_id}|B` on `.../cmd/response/{cmd_id}`, at QoS
    `qos` (0 by default: a device does not need the PUBACK, the HTTP caller is the
    witness). All the answers to one chunk read go out in one write.
    """

    def __init__(self, name: str, qos: int) -> None:
        super().__init__()
        self.name = name
        self._name = name.encode()
        self.request_prefix = f"$sys/{PRODUCT}/{name}/cmd/request/"
        self.response_prefix = f"$sys/{PRODUCT}/{name}/cmd/response/".encode()
        self.qos = qos
        self.requests = 0
        self.acks = 0
        self.foreign = 0  # PUBLISHes on any other topic
        self._sent = 0

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        out: list[bytes] = []
        prefix, cut = self.request_prefix, len(self.request_prefix)
        try:
            while (p := reader.next_packet()) is not None:
                if type(p) is Publish:
                    if not p.topic.startswith(prefix):
                        self.foreign += 1
                        continue
                    cmd_id = p.topic[cut:].encode()
                    answer = b"%s|%s|%s" % (self._name, cmd_id, p.payload)
                    pid = None
                    if self.qos:
                        pid = packet_id(self._sent)
                        self._sent += 1
                    out.append(
                        encode_publish(
                            self.response_prefix + cmd_id, answer, self.qos, False, False, pid,
                            VERSION,
                        )
                    )  # fmt: skip
                    self.requests += 1
                elif type(p) is PubAck:
                    self.acks += 1
                else:
                    self.control(p)
        except CodecError as exc:
            self.fail(f"undecodable bytes from the server: {exc}")
        if out:
            self.write(b"".join(out))


async def connect_command_devices(
    server: servers.PlatformServer, logins: Sequence[DeviceLogin], qos: int, concurrency: int
) -> list[CommandDevice]:
    """Log every device in with its token and subscribe it to its `cmd/request/+`."""

    def factory(name: str) -> Callable[[], CommandDevice]:
        return lambda: CommandDevice(name, qos)

    return await open_devices(
        server.host,
        server.port,
        [factory(d.name) for d in logins],
        [d.name for d in logins],
        [(PRODUCT, d.token) for d in logins],
        concurrency,
        lambda i: [f"$sys/{PRODUCT}/{logins[i].name}/cmd/request/+"],
    )


# ------------------------------------------------------------------ HTTP clients


class Http(Protocol):
    """What a mode needs from an HTTP client: POST bytes, get (status, body) back."""

    waited: int  # calls that found no free connection and queued in the client
    reopened: int  # idle connections the server closed, replaced

    async def open(self) -> None: ...

    async def post(self, path: bytes, body: bytes) -> tuple[int, bytes]: ...

    async def close(self) -> None: ...


class HttpConn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time.

    It parses only what the platform sends: a status line, headers with a
    Content-Length, and that many bytes of body. Anything else (a chunked body, bytes
    nobody asked for, a closed connection) fails the call rather than being guessed at.
    """

    def __init__(self, on_lost: Callable[[HttpConn], None] | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False
        self.on_lost = on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def request(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        fut: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        if self.closed or self.transport is None:
            fut.set_exception(LoadError("HTTP connection closed"))
            return fut
        self.waiter = fut
        self.transport.write(data)
        return fut

    def _fail(self, why: str) -> None:
        self.closed = True
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            w.set_exception(LoadError(why))
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buf[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            self._fail(f"HTTP answer without Content-Length: {head[:200]!r}")
            return
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop > 0 else len(head)])
        total = end + 4 + length
        if len(buf) < total:
            return
        if len(buf) > total:
            self._fail("bytes after an HTTP answer, with one request in flight")
            return
        status = int(buf[9:12])
        body = bytes(buf[end + 4 : total])
        buf.clear()
        w, self.waiter = self.waiter, None
        if w is None:
            self._fail("an HTTP answer nobody asked for")
        elif not w.done():
            w.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            why = exc or "closed by the server during a call"
            w.set_exception(LoadError(f"HTTP connection lost: {why}"))
        if self.on_lost is not None:
            self.on_lost(self)


class RawHttp:
    """A pool of `size` `HttpConn`s to the platform's API, opened up front.

    A call takes the free connection that has waited longest, or queues (FIFO) for the
    next one freed; `waited` counts the calls that queued, so a pool too small for the
    offered load shows. Taking the oldest keeps every connection in use: uvicorn closes
    a keep-alive connection idle for 5 s, and a pool that always took the newest left
    its others idle that long under a light load (35 calls of 12,500 failed so). A
    connection the server closes while idle is replaced, as a browser or httpx would;
    one closed during a call fails the call (a POST is not retried).
    """

    def __init__(self, server: servers.PlatformServer, size: int) -> None:
        self.host, self.port, self.size = server.host, server.http_port, size
        self.head = (
            b"host: %s:%d\r\nauthorization: Bearer %s\r\n"
            b"content-type: application/octet-stream\r\n"
            % (server.host.encode(), server.http_port, server.api_key.encode())
        )
        self.idle: deque[HttpConn] = deque()
        self.conns: list[HttpConn] = []
        self.queue: deque[asyncio.Future[HttpConn]] = deque()
        self.waited = 0
        self.reopened = 0
        self.closing = False
        self._reopening: set[asyncio.Task[None]] = set()

    async def _connect(self) -> HttpConn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: HttpConn(self._lost), self.host, self.port)
        self.conns.append(conn)
        return conn

    async def open(self) -> None:
        try:
            async with asyncio.timeout(30):
                made = await asyncio.gather(*(self._connect() for _ in range(self.size)))
        except (OSError, TimeoutError) as exc:
            raise LoadError(f"cannot open {self.size} HTTP connections: {exc!r}") from None
        self.idle.extend(made)

    def _lost(self, conn: HttpConn) -> None:
        if conn in self.idle and not self.closing:
            self.idle.remove(conn)
            task = asyncio.get_running_loop().create_task(self._replace())
            self._reopening.add(task)
            task.add_done_callback(self._reopening.discard)

    async def _replace(self) -> None:
        try:
            conn = await self._connect()
        except OSError:
            return  # the pool shrinks; calls that find it empty queue and are counted
        self.reopened += 1
        self._release(conn)

    def _release(self, conn: HttpConn) -> None:
        if conn.closed:
            return
        if self.queue:
            self.queue.popleft().set_result(conn)
        else:
            self.idle.append(conn)

    async def post(self, path: bytes, body: bytes) -> tuple[int, bytes]:
        if self.idle:
            conn = self.idle.popleft()
        else:
            self.waited += 1
            fut: asyncio.Future[HttpConn] = asyncio.get_running_loop().create_future()
            self.queue.append(fut)
            conn = await fut
        data = b"POST %s HTTP/1.1\r\n%scontent-length: %d\r\n\r\n%s" % (
            path, self.head, len(body), body,
        )  # fmt: skip
        try:
            return await conn.request(data)
        finally:
            self._release(conn)

    async def close(self) -> None:
        self.closing = True
        for c in self.conns:
            if c.transport is not None:
                c.transport.close()
        await asyncio.sleep(0)


class HttpxHttp:
    """httpx.AsyncClient with `size` pooled connections, for cross-checking `RawHttp`."""

    def __init__(self, server: servers.PlatformServer, size: int) -> None:
        self.size = size
        self.client = api(server, size)
        self.client.headers["content-type"] = "application/octet-stream"
        self.waited = 0  # httpx queues inside its pool and does not say
        self.reopened = 0  # nor does it say when it replaces a connection

    async def open(self) -> None:
        """Open every pooled connection before the clock starts."""
        try:
            await asyncio.gather(*(self.client.get("/healthz") for _ in range(self.size)))
        except httpx.HTTPError as exc:
            raise LoadError(f"cannot reach the API: {exc!r}") from None

    async def post(self, path: bytes, body: bytes) -> tuple[int, bytes]:
        try:
            r = await self.client.post(path.decode(), content=body)
        except httpx.HTTPError as exc:
            raise LoadError(f"{type(exc).__name__}: {exc}") from None
        return r.status_code, r.content

    async def close(self) -> None:
        await self.client.aclose()


def http_client(kind: str, server: servers.PlatformServer, size: int) -> Http:
    return RawHttp(server, size) if kind == "raw" else HttpxHttp(server, size)


# ------------------------------------------------------------------------ calls


@dataclass
class CallStats:
    """What the calls of one mode got back."""

    started: int = 0
    ok: int = 0
    failed: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # start -> answer read, s
    window_end: float = float("inf")
    in_window: int = 0  # answered by window_end
    t_last: float = 0.0

    def fail(self, kind: str, detail: str) -> None:
        self.failed += 1
        self.failures[kind] += 1
        if len(self.examples) < 5:
            self.examples.append(detail)


class Caller:
    """Makes call j to device j mod D and checks its answer (module docstring).

    `cmd_ids[i]` collects the ids of device i's answered calls, for the record check.
    """

    def __init__(self, http: Http, names: Sequence[str], timeout: int) -> None:
        self.http = http
        self.names = list(names)
        self.paths = [
            f"/api/v1/products/{PRODUCT}/devices/{n}/commands?timeout={timeout}".encode()
            for n in names
        ]
        self.cmd_ids: list[list[str]] = [[] for _ in names]

    async def call(self, j: int, t_start: float, st: CallStats) -> None:
        i = j % len(self.names)
        body = b"c%d" % j
        st.started += 1
        try:
            status, raw = await self.http.post(self.paths[i], body)
        except LoadError as exc:
            st.fail("connection", str(exc))
            return
        t = now()
        if status != 200:
            st.fail(f"HTTP {status}", f"{self.names[i]} c{j}: HTTP {status} {raw[:200]!r}")
            return
        try:
            doc = orjson.loads(raw)
            cmd_id, text, b64 = doc["cmd_id"], doc["response_text"], doc["response"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            st.fail("unreadable answer", f"{self.names[i]} c{j}: {raw[:200]!r}")
            return
        expected = f"{self.names[i]}|{cmd_id}|c{j}"
        if text != expected or base64.b64decode(b64) != expected.encode():
            st.fail("wrong answer", f"{self.names[i]} c{j}: got {text!r}, want {expected!r}")
            return
        st.ok += 1
        st.latencies.append(t - t_start)
        st.t_last = t
        if t <= st.window_end:
            st.in_window += 1
        self.cmd_ids[i].append(cmd_id)


@dataclass
class CommandsResult:
    """One mode: calls made, answered right, how fast, and at what CPU."""

    mode: str  # "fixed" (offered rate) or "saturation"
    devices: int
    seconds: float
    http_client: str
    offered_rate: float = 0.0
    connections: int = 0  # HTTP connections (fixed: the pool; saturation: calls in flight)
    started: int = 0
    ok: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    waited_for_connection: int = 0
    rate: float = 0.0  # calls answered right per second
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    mean_ms: float = 0.0
    max_lag_ms: float = 0.0  # fixed: how late the load started calls, at worst
    server_cpu_pct: float = 0.0
    load_cpu_pct: float = 0.0
    other_cpu_pct: float = 0.0
    db_cpu_pct: float = 0.0
    server_us_per_call: float = 0.0
    load_us_per_call: float = 0.0
    db_us_per_call: float = 0.0
    rss_kb: int = 0
    lost_devices: int = 0
    complete: bool = False
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def finish_commands(
    res: CommandsResult,
    st: CallStats,
    snap0: Snapshot,
    snap1: Snapshot,
    calls: int,
    devices: Sequence[CommandDevice],
    http: Http,
    probe: mqttload.ServerProbe,
) -> CommandsResult:
    """Fill the result; `complete` iff every call started was answered right. CPU per
    call divides the CPU between the snapshots by `calls`, those made meanwhile."""
    cpu = Cpu.between(snap0, snap1)
    res.started, res.ok, res.failed = st.started, st.ok, st.failed
    res.failures, res.examples = dict(st.failures), list(st.examples)
    res.waited_for_connection = http.waited
    if http.reopened:
        res.notes.append(
            f"{http.reopened} idle HTTP connections closed by the server were replaced"
        )
    lat = sorted(st.latencies)
    if lat:
        res.p50_ms, res.p95_ms = 1e3 * percentile(lat, 50), 1e3 * percentile(lat, 95)
        res.p90_ms = 1e3 * percentile(lat, 90)
        res.p99_ms, res.max_ms = 1e3 * percentile(lat, 99), 1e3 * lat[-1]
        res.mean_ms = 1e3 * statistics.fmean(lat)
    res.server_cpu_pct, res.load_cpu_pct = cpu.server_pct, cpu.load_pct
    res.other_cpu_pct, res.db_cpu_pct = cpu.other_pct, cpu.helpers_pct
    n = max(1, calls)
    res.server_us_per_call = 1e6 * cpu.server_s / n
    res.load_us_per_call = 1e4 * cpu.load_pct * (snap1.t - snap0.t) / n
    res.db_us_per_call = 1e6 * cpu.helpers_s / n
    res.rss_kb = probe.rss_kb()
    res.lost_devices = sum(1 for d in devices if d.lost.done())
    foreign = sum(d.foreign for d in devices)
    if res.lost_devices:
        res.notes.append(f"{res.lost_devices} devices lost their connection")
    if foreign:
        res.notes.append(f"{foreign} PUBLISHes to devices on topics they did not ask for")
    if res.failed:
        res.notes.append(f"{res.failed:,} calls failed: {dict(st.failures)}")
    if res.load_cpu_pct >= FLAG_LOAD:
        res.notes.append(
            f"the load generator used {res.load_cpu_pct:.0f}% of its core: the figure may be "
            "its limit, not the platform's"
        )
    res.complete = (
        res.error is None
        and res.failed == 0
        and res.ok == res.started
        and res.started > 0
        and res.lost_devices == 0
        and foreign == 0
    )
    return res


async def commands_fixed(
    devices: Sequence[CommandDevice],
    a: argparse.Namespace,
    server: servers.PlatformServer,
    helpers: mqttload.CpuProbe | None,
    caller_out: list[Caller],
) -> CommandsResult:
    """An offered load of `--cmd-rate` calls/s for `--seconds`: call j starts at
    t0 + j/rate on a pool of `--http-pool` connections (open loop)."""
    rate, seconds = a.cmd_rate, a.seconds
    res = CommandsResult(
        "fixed", len(devices), seconds, a.http_client, offered_rate=rate, connections=a.http_pool
    )
    http = http_client(a.http_client, server, a.http_pool)
    await http.open()
    caller = Caller(http, [d.name for d in devices], a.cmd_timeout)
    caller_out.append(caller)
    st = CallStats()
    total = int(rate * seconds)
    tasks: set[asyncio.Task[None]] = set()
    gc.collect()
    gc.freeze()
    try:
        with py_spy(a.py_spy, server.pid, "commands-fixed", seconds):
            snap0 = Snapshot.take(server, helpers)
            t0 = snap0.t
            sent = 0
            next_check = t0 + 0.5
            while sent < total:
                t = now()
                due = min(total, int((t - t0) * rate) + 1)
                if due > sent:
                    res.max_lag_ms = max(res.max_lag_ms, 1e3 * (t - t0 - sent / rate))
                    for j in range(sent, due):
                        task = asyncio.create_task(caller.call(j, t0 + j / rate, st))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    sent = due
                if t >= next_check:
                    next_check = t + 0.5
                    if not server.alive():
                        res.error = "server died"
                        break
                await asyncio.sleep(max(0.0, t0 + sent / rate - now()))
            if tasks:
                await asyncio.wait(tasks, timeout=a.cmd_timeout + 5)
            snap1 = Snapshot.take(server, helpers)
        for task in tasks:
            task.cancel()
    finally:
        gc.unfreeze()
        await http.close()
    res.rate = st.ok / max(1e-9, (st.t_last or now()) - t0)
    finish_commands(res, st, snap0, snap1, st.started, devices, http, server)
    if tasks:
        res.error = f"{len(tasks)} calls still running {a.cmd_timeout + 5} s after the last start"
        res.complete = False
    if res.max_lag_ms > 50:
        res.notes.append(f"the load started calls up to {res.max_lag_ms:.0f} ms late")
    return res


async def commands_saturation(
    devices: Sequence[CommandDevice],
    a: argparse.Namespace,
    server: servers.PlatformServer,
    helpers: mqttload.CpuProbe | None,
    caller_out: list[Caller],
    first: int,
    n: int,
) -> CommandsResult:
    """`n` calls in flight for `--seconds`, each answered call starting the next; the
    rate is what was answered right within those seconds. Call numbers go on from
    `first`, so every call of the run has its own body."""
    seconds = a.seconds
    res = CommandsResult("saturation", len(devices), seconds, a.http_client, connections=n)
    http = http_client(a.http_client, server, n)
    await http.open()
    caller = Caller(http, [d.name for d in devices], a.cmd_timeout)
    caller_out.append(caller)
    st = CallStats()
    numbers = itertools.count(first)
    gc.collect()
    gc.freeze()
    try:
        with py_spy(a.py_spy, server.pid, "commands-saturation", seconds):
            snap0 = Snapshot.take(server, helpers)
            t0 = snap0.t
            st.window_end = stop_at = t0 + seconds

            async def worker() -> None:
                while now() < stop_at:
                    await caller.call(next(numbers), now(), st)

            workers = [asyncio.create_task(worker()) for _ in range(n)]
            while now() < stop_at:
                await asyncio.sleep(min(0.5, max(0.0, stop_at - now())))
                if not server.alive():
                    res.error = "server died"
                    break
            snap1 = Snapshot.take(server, helpers)
        _, pending = await asyncio.wait(workers, timeout=a.cmd_timeout + 5)
        for w in pending:
            w.cancel()
        if pending:
            res.error = f"{len(pending)} calls still running {a.cmd_timeout + 5} s after the end"
    finally:
        gc.unfreeze()
        await http.close()
    res.rate = st.in_window / seconds
    finish_commands(res, st, snap0, snap1, st.in_window, devices, http, server)
    return res


async def verify_records(
    server: servers.PlatformServer, callers: Sequence[Caller], sample: int
) -> dict[str, Any]:
    """Read the command records of a sample of devices through the API: each must be
    `answered`, and their ids must be exactly those the calls to that device returned."""
    names = callers[0].names if callers else []
    step = max(1, len(names) // max(1, sample))
    chosen = list(range(len(names)))[::step][:sample]
    bad: list[str] = []
    records = 0
    try:
        async with api(server, 4) as http, asyncio.timeout(60):
            for i in chosen:
                want = [c for caller in callers for c in caller.cmd_ids[i]]
                got: dict[str, str] = {}
                cursor: str | None = None
                while True:
                    params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
                    r = await http.get(
                        f"/api/v1/products/{PRODUCT}/devices/{names[i]}/commands", params=params
                    )
                    if r.status_code != 200:
                        bad.append(f"{names[i]}: HTTP {r.status_code} {r.text[:100]}")
                        break
                    page = r.json()
                    got.update((x["cmd_id"], x["status"]) for x in page["items"])
                    cursor = page.get("next")
                    if not cursor:
                        break
                records += len(got)
                statuses = Counter(got.values())
                if set(got) != set(want) or statuses != Counter({"answered": len(want)}):
                    bad.append(
                        f"{names[i]}: {len(got)} records {dict(statuses)}, {len(want)} calls "
                        f"answered; {len(set(want) - set(got))} of their ids missing"
                    )
    except TimeoutError:
        bad.append("the checks took more than 60 s")
    except httpx.HTTPError as exc:
        bad.append(f"{type(exc).__name__}: {exc}")
    return {"checked": len(chosen), "records": records, "bad": bad}


def run_commands(a: argparse.Namespace) -> dict[str, Any]:
    """One platform: register and connect the devices, fixed rate, saturation, then
    check a sample of command records through the API."""
    run = PlatformRun(a)
    with run as server:

        async def go() -> dict[str, Any]:
            logins, reg_s = await register(
                server, a.cmd_devices, a.register_concurrency, a.limit * 5
            )
            progress(f"    registered {len(logins):,} devices in {reg_s:.1f} s")
            devices = await connect_command_devices(
                server, logins, a.answer_qos, a.conn_concurrency
            )
            out: dict[str, Any] = {"register_seconds": reg_s}
            modes: list[CommandsResult] = []
            callers: list[Caller] = []
            try:
                for n in [0, *a.http_concurrency]:  # 0: the fixed rate
                    await quiet(a)
                    if not n:
                        r = await commands_fixed(devices, a, server, run.helpers, callers)
                    else:
                        first = sum(m.started for m in modes)
                        r = await commands_saturation(
                            devices, a, server, run.helpers, callers, first, n
                        )
                    progress(f"    {describe_commands(r)}")
                    modes.append(r)
                    if r.error:
                        break
                out["modes"] = [m.as_dict() for m in modes]
                out["verify"] = await verify_records(server, callers, a.cmd_verify)
            finally:
                mqttload.close_all(devices)
                await asyncio.sleep(0.1)
            out["device_requests"] = sum(d.requests for d in devices)
            wanted = 1 + len(a.http_concurrency)
            modes_ok = len(modes) == wanted and all(m.complete for m in modes)
            out["valid"] = modes_ok and not out["verify"]["bad"]
            out["other_max"] = max((m.other_cpu_pct for m in modes), default=0.0)
            out["errors"] = [e for m in modes for e in [m.error] if e]
            return out

        result = mqttload.run_loop(go())
    return exit_noted(result, run)


# ----------------------------------------------------------------------- report


def describe_commands(r: CommandsResult) -> str:
    what = r.mode + (f" ({r.connections} in flight)" if r.mode == "saturation" else "")
    text = (
        f"{what}: {r.rate:,.0f} calls/s, {r.ok:,} of {r.started:,} answered right; latency "
        f"p50 {r.p50_ms:.1f} p95 {r.p95_ms:.1f} p99 {r.p99_ms:.1f} max {r.max_ms:.1f} ms; "
        f"server {r.server_cpu_pct:.0f}% load {r.load_cpu_pct:.0f}% other "
        f"{r.other_cpu_pct:.0f}%; {r.server_us_per_call:.0f} us/call"
    )
    if r.db_cpu_pct:
        text += f"; database {r.db_cpu_pct:.0f}% = {r.db_us_per_call:.0f} us/call"
    if r.error:
        text += f"; ERROR {r.error}"
    if r.notes:
        text += "; " + "; ".join(r.notes)
    return text


def print_commands(runs: list[dict[str, Any]], a: argparse.Namespace, env: dict[str, Any]) -> None:
    print()
    print(
        f"commands: {a.cmd_devices:,} devices (token login) subscribed to their "
        f"cmd/request/+, answering at once (QoS {a.answer_qos}); applications call "
        f"POST .../commands?timeout={a.cmd_timeout} ({a.http_client} HTTP/1.1 client, "
        f"keep-alive); " + env["storage"]
    )
    good = [r for r in runs if r.get("modes")]
    if not good:
        for r in runs:
            print(f"  ERROR {'; '.join(r.get('errors', []))}")
        return
    good.sort(key=lambda r: r["modes"][-1]["rate"])
    run = good[len(good) // 2]  # the median run by the last mode's rate
    fixed = next((m for m in run["modes"] if m["mode"] == "fixed"), None)
    sats = [m for m in run["modes"] if m["mode"] == "saturation"]

    def row(label: str, value: str, target: str = "") -> None:
        print(f"{label:<58}{value:>20}  {target}")

    def flags(m: dict[str, Any]) -> str:
        f = " !" if not m["complete"] else ""
        f += " L" if m["load_cpu_pct"] >= FLAG_LOAD else ""
        return f + (" N" if m["other_cpu_pct"] > a.max_other else "")

    def cpu_rows(m: dict[str, Any]) -> None:
        row(
            "    server / load / other CPU %",
            f"{m['server_cpu_pct']:.0f} / {m['load_cpu_pct']:.0f} / {m['other_cpu_pct']:.0f}",
        )
        row(
            "    CPU per call, us: server / load generator",
            f"{m['server_us_per_call']:.0f} / {m['load_us_per_call']:.0f}",
        )
        if a.database_url:
            row(
                "    PostgreSQL backends: CPU %, us per call",
                f"{m['db_cpu_pct']:.0f} / {m['db_us_per_call']:.0f}",
            )
        row("    server RSS at the end, MB", f"{m['rss_kb'] / 1024:,.0f}")

    print()
    row("figure", "thingshub", "target")
    print("-" * 94)
    if fixed:
        row(
            f"(a) offered {fixed['offered_rate']:,.0f} calls/s for {fixed['seconds']:g} s: "
            "achieved/s",
            f"{fixed['rate']:,.0f}{flags(fixed)}",
        )
        row("    latency p50 / p95 ms", f"{fixed['p50_ms']:.1f} / {fixed['p95_ms']:.1f}")
        ok = fixed["p99_ms"] < TARGET_P99_MS and fixed["complete"]
        row(
            "    latency p99 / max ms",
            f"{fixed['p99_ms']:.1f} / {fixed['max_ms']:.1f}",
            f"p99 < {TARGET_P99_MS:g} {'ok' if ok else 'MISSED'}",
        )
        row(
            "    answered right / failed / queued for a connection",
            f"{fixed['ok']:,} / {fixed['failed']:,} / {fixed['waited_for_connection']:,}",
        )
        cpu_rows(fixed)
    for sat in sats:
        ok = sat["rate"] >= TARGET_CALLS_PER_S and sat["complete"]
        row(
            f"(b) saturation, {sat['connections']} calls in flight: calls/s",
            f"{sat['rate']:,.0f}{flags(sat)}",
            f">= {TARGET_CALLS_PER_S:,.0f} {'ok' if ok else 'MISSED'}",
        )
        row(
            "    latency p50 / p99 / max ms",
            f"{sat['p50_ms']:.1f} / {sat['p99_ms']:.1f} / {sat['max_ms']:.1f}",
        )
        row("    answered right / failed", f"{sat['ok']:,} / {sat['failed']:,}")
        cpu_rows(sat)
    v = run.get("verify")
    if v:
        row(
            "records checked through the API (all answered, same ids)",
            f"{v['checked'] - len(v['bad'])}/{v['checked']} ok ({v['records']:,} records)",
        )
        for b in v["bad"][:10]:
            print(f"    MISMATCH {b}")
    for note in run.get("notes", []):
        print(f"  {note}")
    for m in run["modes"]:
        what = m["mode"] + (f" {m['connections']}" if m["mode"] == "saturation" else "")
        for note in m["notes"]:
            print(f"  {what}: {note}")
        for ex in m["examples"]:
            print(f"  {what}: e.g. {ex}")
        if m["error"]:
            print(f"  {what}: ERROR {m['error']}")
    print(f"  (setup: {a.cmd_devices:,} devices registered in {run['register_seconds']:.1f} s)")
