"""Durable QoS 1 telemetry in process: the server's own work per message, without sockets.

    PYTHONPATH=SRC .venv/bin/python bench/ingest_harness.py [MESSAGES] [--devices N]
        [--window W] [--shape telemetry|gateway] [--cg PREFIX] [--trace]
    PYTHONPATH=SRC valgrind --tool=callgrind --instr-atstart=no \\
        --callgrind-out-file=/tmp/cg/out .venv/bin/python bench/ingest_harness.py 20000 \\
        --cg /tmp/cg/out

The whole platform starts (`Platform.start`, SQLite in a scratch data dir, as
`platform_bench.py` serves it); N devices (200) of product `bench` are registered
through the device service and log in with their ThingsPanel user name and
password: a `Connection` of the MQTT server gets a fake transport (no socket)
and the CONNECT's bytes. Then each device keeps W (10) QoS 1 PUBLISHes of
`devices/telemetry` in flight, as `platform_bench.py --tests telemetry` does:
`{"temperature": k.5, "humidity": h, "switch": true|false}`, 3 points. As its
PUBACKs are written to the fake transport (the server's one write per connection
and loop turn), the device sends as many new messages in one `data_received`,
on the next loop turn. So the path is the real one: codec -> machine ->
gateway -> dialect -> ingest -> group-commit writer (SQLite's thread, one
transaction and one commit per batch) -> PUBACK, with batches formed as under
the bench's load.

`--shape gateway`: one gateway connection instead, each message 50 sub-devices'
3 values (150 points, as `--tests gateway`), 20 in flight; figures per point too.
`--shape thing`: the devices log in with their OneNET token and post the 10 typed
properties of `platform_thing.py` on `$sys/{pid}/{name}/thing/property/post`
(OneJSON, a time per value), checked against that product model; nobody subscribes
to the replies, so they are not built (`DeviceLink.heard`). `--shape tp10`: the same 10 values on
`devices/telemetry`, its ThingsPanel counterpart (per point, the issue's comparison).

It prints the process CPU per message (noisy on a shared machine), the batches
the writer formed, and with `--cg PREFIX` under callgrind (instrumentation off
until asked for) the instructions executed per message over the measured
messages (after a warmup of a fifth): a count that does not depend on the
machine's load. With `--trace`, tracemalloc's peak and the allocations per
message.

`SRC` may be the tree before issue 21 (`git archive REV src | tar -x -C DIR`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).parent))
from login_harness import Counter, FakeTransport, connect_bytes
from platform_thing import BASE_MS, KEYS, thing_model, values
from thingshub.app import Platform
from thingshub.cli import serve
from thingshub.config import Settings
from thingshub.dialects.onenet.token import make_token
from thingshub.mqtt.codec import encode_publish
from thingshub.mqtt.server.connection import Connection

P = argparse.ArgumentParser()
P.add_argument("messages", type=int, nargs="?", default=20_000)
P.add_argument("--devices", type=int, default=200)
P.add_argument("--window", type=int, default=10)
P.add_argument("--shape", choices=("telemetry", "gateway", "thing", "tp10"), default="telemetry")
P.add_argument("--cg")
P.add_argument("--trace", action="store_true")
P.add_argument("--gc", action="store_true", help="count the collections and their time")
P.add_argument("--gc-threshold", type=int, nargs="+", help="instead of serve's")
P.add_argument("--cycles", action="store_true", help="count what only the collector frees")
ARGS = P.parse_args()
if ARGS.shape == "gateway" and "--window" not in sys.argv:
    ARGS.window = 20
SUBS = 1000 if ARGS.shape == "gateway" else 0
PER_MSG = 50
POINTS = {"telemetry": 3, "gateway": 3 * PER_MSG, "thing": len(KEYS), "tp10": len(KEYS)}
_KEYS = [k.encode() for k in KEYS]


class Device(FakeTransport):
    """A device's side of the fake socket: counts PUBACKs, sends the next messages."""

    def __init__(self, port: int, index: int, run: Run) -> None:
        super().__init__(port)
        self.index = index
        self.run = run
        self.conn: Connection | None = None
        self.k = 0
        self.acked = 0
        self.connected = False
        self.packets: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self.connected:
            self.out.append(data)
            return
        n = data.count(b"\x40\x02")  # PUBACKs of 3.1.1; nothing else is written here
        self.acked += n
        self.run.acked(n)
        if self.run.sending:
            self.run.loop.call_soon(self.send, n)

    def send(self, n: int) -> None:
        assert self.conn is not None
        k, packets = self.k, self.packets
        if k + n <= len(packets):  # encoded before the count started: the device's work
            data = b"".join(packets[k : k + n])
        else:
            data = b"".join(self.run.message(self, k + i) for i in range(n))
        self.k += n
        self.run.sent += n
        self.conn.data_received(data)


class Run:
    def __init__(self, loop: asyncio.AbstractEventLoop, total: int) -> None:
        self.loop = loop
        self.total = total
        self.sent = 0
        self.done = 0
        self.sending = True
        self.marks: dict[int, asyncio.Future[None]] = {}

    def acked(self, n: int) -> None:
        before = self.done
        self.done += n
        for mark, fut in list(self.marks.items()):
            if before < mark <= self.done and not fut.done():
                fut.set_result(None)
        if self.done >= self.total:
            self.sending = False

    def at(self, count: int) -> asyncio.Future[None]:
        fut = self.loop.create_future()
        if self.done >= count:
            fut.set_result(None)
        self.marks[count] = fut
        return fut

    def message(self, dev: Device, k: int) -> bytes:
        pid = k % 65535 + 1
        if ARGS.shape == "telemetry":
            payload = b'{"temperature": %d.5, "humidity": %.2f, "switch": %s}' % (
                k, dev.index % 100 + 0.25, b"true" if k % 2 == 0 else b"false",
            )  # fmt: skip
            return encode_publish(b"devices/telemetry", payload, 1, False, False, pid, 4)
        if ARGS.shape == "tp10":
            kvs = zip(_KEYS, values(k, dev.index), strict=True)
            body = b",".join(b'"%s":%s' % kv for kv in kvs)
            return encode_publish(b"devices/telemetry", b"{%s}" % body, 1, False, False, pid, 4)
        if ARGS.shape == "thing":
            at = b"%d" % (BASE_MS + k)
            params = b",".join(
                b'"%s":{"value":%s,"time":%s}' % (key, v, at)
                for key, v in zip(_KEYS, values(k, dev.index), strict=True)
            )
            payload = b'{"id":"%d","version":"1.0","params":{%s}}' % (k + 1, params)
            topic = b"$sys/bench/dev%06d/thing/property/post" % dev.index
            return encode_publish(topic, payload, 1, False, False, pid, 4)
        group = k % (SUBS // PER_MSG)
        subs = ", ".join(
            f'"s{s:05d}": {{"temperature": {k}.5, "humidity": {s % 100}.25, '
            f'"switch": {"true" if k % 2 == 0 else "false"}}}'
            for s in range(group * PER_MSG, (group + 1) * PER_MSG)
        )
        payload = f'{{"sub_device_data": {{{subs}}}}}'.encode()
        return encode_publish(b"gateway/telemetry", payload, 1, False, False, pid, 4)


GC: dict[int, list[float]] = {}
_gc_t0 = [0.0]


def _gc_callback(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_t0[0] = time.thread_time()
        return
    entry = GC.setdefault(info["generation"], [0, 0.0, 0])
    entry[0] += 1
    entry[1] += time.thread_time() - _gc_t0[0]


async def main() -> None:
    tmp = tempfile.mkdtemp(prefix="ingest-harness-")
    settings = Settings(data_dir=Path(tmp), mqtt_port=0, http_port=0, console=False)
    p = Platform(settings)
    await p.start()
    cg = Counter(ARGS.cg)
    loop = asyncio.get_running_loop()
    try:
        assert p.devices is not None and p.broker is not None
        await p.devices.create_product("bench", "bench")
        logins = []
        if ARGS.shape == "thing":
            assert p.things is not None
            await p.things.set_model("bench", thing_model())
        if ARGS.shape != "gateway":
            expiry = int(time.time()) + 86400
            for i in range(ARGS.devices):
                created = await p.devices.create_device("bench", f"dev{i:06d}")
                d = created.device
                if ARGS.shape == "thing":
                    token = make_token(d.key, "bench", d.name, expiry)
                    logins.append(connect_bytes(d.name, "bench", token))
                else:
                    logins.append(connect_bytes(d.name, d.username, created.password))
        else:
            created = await p.devices.create_device("bench", "gw000000")
            gw = created.device
            logins.append(connect_bytes(gw.name, gw.username, created.password))
            for s in range(SUBS):
                await p.devices.create_device(
                    "bench", f"sub{s:06d}", gateway=("bench", "gw000000"), sub_address=f"s{s:05d}"
                )
        total = ARGS.messages
        warm = total // 5
        run = Run(loop, warm + total)
        devs: list[Device] = []
        for i, login in enumerate(logins):
            dev = Device(40000 + i, i, run)
            c = Connection(p.broker)
            dev.conn = c
            c.connection_made(dev)  # type: ignore[arg-type]
            c.data_received(login)
            devs.append(dev)
        while not all(d.out for d in devs):  # noqa: ASYNC110 - a CONNACK has no event
            await asyncio.sleep(0.01)
        assert all(d.out[0][:4] == b" \x02\x00\x00" for d in devs), "a login was refused"
        per_device = (warm + total) // len(devs) + 4 * ARGS.window
        for d in devs:
            d.connected = True
            d.packets = [run.message(d, k) for k in range(per_device)]
        serve.started()  # what `thingshub serve` does once ready: the collector's settings
        if ARGS.gc_threshold:
            gc.set_threshold(*ARGS.gc_threshold)
        writer = p.storage.writer if hasattr(p.storage, "writer") else None  # type: ignore[union-attr]
        for d in devs:
            d.send(ARGS.window)
        await run.at(warm)
        stats0 = (writer.stats.batches, writer.stats.writes) if writer else (0, 0)
        if ARGS.trace:
            tracemalloc.start()
        if ARGS.gc:
            gc.callbacks.append(_gc_callback)
        if ARGS.cycles:
            gc.collect()
            gc.disable()
        cg.start()
        c0, t0 = time.process_time(), time.perf_counter()
        await run.at(warm + total)
        c1, t1 = time.process_time(), time.perf_counter()
        cg.stop("message", total)
        if ARGS.cg:
            print(f"  ({POINTS[ARGS.shape]} points a message)", flush=True)
        if ARGS.cycles:
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            kinds = collections.Counter(type(o).__qualname__ for o in gc.garbage)
            print(f"  in cycles: {len(gc.garbage) / total:.1f} objects a message")
            for kind, n in kinds.most_common(12):
                print(f"    {n / total:6.2f} {kind}")
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
        if ARGS.gc:
            gc.callbacks.remove(_gc_callback)
            for gen, (n, secs, _walked) in sorted(GC.items()):
                print(
                    f"  gc generation {gen}: {n} collections, {secs * 1e3:.0f} ms, "
                    f"{secs / total * 1e6:.1f} us a message"
                )
        if ARGS.trace:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            print(f"  tracemalloc: peak {peak / 1e6:.1f} MB while measuring")
        points = POINTS[ARGS.shape]
        print(
            f"{total:,} messages ({points} points each): {(c1 - c0) / total * 1e6:.1f} us CPU "
            f"a message, {(c1 - c0) / total / points * 1e6:.2f} a point; "
            f"{total / (t1 - t0):,.0f} msgs/s wall",
            flush=True,
        )
        if writer:
            b, w = writer.stats.batches - stats0[0], writer.stats.writes - stats0[1]
            print(f"  writer: {b} batches, {w / max(b, 1):.0f} writes each", flush=True)
        assert p.ingest is not None and p.things is not None
        stored = p.ingest.stored_points + p.things.stored_points
        print(f"  stored: {stored:,} points in all (warmup included)", flush=True)
        run.sending = False
        await asyncio.sleep(0.5)
    finally:
        await p.stop()


uvloop.run(main())
