"""The bare MQTT server's connects and window-1 messages, counted in instructions.

    .venv/bin/python bench/connect_harness.py --src SRC [--conns N] [--messages M]
        [--publishers P] [--cg DIR] [--pyspy FILE] [--strace]

`thingshub broker --host 127.0.0.1 --port 0 --max-queued 1000000` (the command
`bench/mqtt_broker.py` measures) runs from the tree SRC under callgrind with its
instrumentation off; this process is the clients, over real sockets, natively.
Instrumentation is on only while a phase runs, so each figure is the server's
own instructions (Python, uvloop, the C library; not the kernel's) for:

- connect: N clients (10,000) connect, 100 in progress at a time, each with a
  clean-session 3.1.1 CONNECT (client id `bench-idle-<i>`, keepalive 60) and
  held open once its CONNACK arrived, as `mqtt_broker.py --tests conns`;
- disconnect: each of them sends DISCONNECT and the server closes it;
- message: P publishers (200) on `bench/p/<i>` and one subscriber on `#` at
  QoS 1; each publisher keeps one 100-byte QoS 1 PUBLISH in flight (window 1),
  the subscriber acknowledges each delivery: PUBLISH in, PUBACK out, PUBLISH
  out, PUBACK in, M messages (20,000) after a warmup of a tenth, as
  `mqtt_broker.py --tests b1`.

Why: on the shared 2-core machine the bench's connects/s move by 20% between
runs of one tree, and a 5% difference between trees cannot be told apart from
the machine's load. Instruction counts do not depend on the load: the same
tree counts within 0.5% run after run (messages within 1.5%: how many packets
one read brings, and whether a publisher is held by backpressure, follow the
timing; `--publishers 100` keeps the subscriber's queue under its window). The
server's timer sweep (every 0.5 s, over every connection) is left out: under
callgrind a phase lasts 50 times as long, so it would run 50 times as often as
in the bench; `login_harness.py` counts it per connection.

Before the phases, 200 clients connect and disconnect (a warmup: the first
connects import and cache what later ones reuse). `SRC` may be any tree since
7fdb9da (`git archive REV src | tar -x -C DIR`). `--cg DIR` keeps callgrind's
dumps there (for callgrind_annotate); `--pyspy FILE` runs the server natively
under `py-spy record --native` instead, phases repeated to give it samples.
`--strace` runs it natively and counts its system calls instead (`strace -c
-f` attached while a phase runs; the tables kept in DIR); with `--src
mosquitto` the same load goes to Mosquitto (the config of `mqtt_broker.py`),
for its system calls a message or a connect beside ours.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import uvloop

import servers

BROKER_ARGS = ["broker", "--host", "127.0.0.1", "--port", "0", "--max-queued", "1000000"]
AT_ONCE = 100
WARMUP = 200
PAYLOAD = b"x" * 100
DISCONNECT = b"\xe0\x00"
CONNACK = b"\x20\x02\x00\x00"


def _str(s: bytes) -> bytes:
    return len(s).to_bytes(2, "big") + s


def _packet(first: int, body: bytes) -> bytes:
    n, length = len(body), bytearray()
    while True:
        n, digit = divmod(n, 128)
        length.append(digit | (0x80 if n else 0))
        if not n:
            return bytes([first]) + bytes(length) + body


def connect_bytes(client_id: str) -> bytes:
    """MQTT 3.1.1 CONNECT, clean session, keepalive 60, no login (as mqttload's)."""
    return _packet(0x10, _str(b"MQTT") + bytes([4, 0x02, 0, 60]) + _str(client_id.encode()))


def publish_bytes(topic: bytes, packet_id: int) -> bytes:
    return _packet(0x32, _str(topic) + packet_id.to_bytes(2, "big") + PAYLOAD)


# ---------------------------------------------------------------------- the server


def serve() -> None:
    """Runs under valgrind: the tree's own `thingshub broker`, its sweeper idle."""
    from thingshub.mqtt.server.broker import Broker

    async def no_sweep(self: Broker) -> None:
        return None

    Broker._sweep = no_sweep  # type: ignore[method-assign]
    sys.argv = ["thingshub", *BROKER_ARGS]
    from thingshub.cli import main

    profile = os.environ.get("CONNECT_HARNESS_PROFILE")
    if not profile:
        main()
        return
    import cProfile  # call counts per function, for comparing two trees

    prof = cProfile.Profile()
    prof.enable()
    try:
        main()
    finally:
        prof.disable()
        prof.dump_stats(profile)


class Server:
    """The broker subprocess; `measure` brackets a phase with callgrind's controls."""

    def __init__(
        self, src: str, cg_dir: str | None, pyspy: str | None, strace: bool = False
    ) -> None:
        self.dir = cg_dir or tempfile.mkdtemp(prefix="connect-harness-")
        os.makedirs(self.dir, exist_ok=True)
        self.prefix = os.path.join(self.dir, "cg.out")
        for old in glob.glob(f"{self.prefix}*"):
            os.remove(old)
        env = dict(os.environ, PYTHONPATH=src)
        cmd = [sys.executable, __file__, "--serve"]
        self.pyspy = pyspy
        self.strace = strace
        self.tracer: subprocess.Popen[bytes] | None = None
        if src == "mosquitto":  # the same load on Mosquitto, as mqtt_broker.py runs it
            self.port = servers.free_port()
            conf = os.path.join(self.dir, "mosquitto.conf")
            Path(conf).write_text(servers.mosquitto_config(self.port))
            self.proc = subprocess.Popen([servers.MOSQUITTO, "-c", conf])
            deadline = time.monotonic() + 10
            while not servers._can_connect(servers.HOST, self.port):
                if time.monotonic() > deadline:
                    raise SystemExit("mosquitto did not start")
                time.sleep(0.05)
            self.pid = str(self.proc.pid)
            return
        if strace:
            pass  # natively: strace attaches while a phase runs
        elif pyspy:
            spy = str(Path(sys.executable).parent / "py-spy")
            cmd = [spy, "record", "--native", "-r", "250", "-f", "raw", "-o", pyspy, "--", *cmd]
        else:
            cmd = [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={self.prefix}",
                *cmd,
            ]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode()
            match = re.search(r"ready on [\d.]+:(\d+)", line)
            if match:
                self.port = int(match.group(1))
                break
        else:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise SystemExit(f"the server did not start: {err}")
        self.pid = self._valgrind_pid()

    def _valgrind_pid(self) -> str:
        return str(self.proc.pid)

    def _control(self, *args: str) -> None:
        if self.pyspy or self.strace:
            return
        subprocess.run(["callgrind_control", *args, self.pid], capture_output=True, check=True)

    def start(self) -> None:
        if self.strace:
            self.counts = os.path.join(self.dir, "strace.out")
            trace = ["strace", "-c", "-f", "-o", self.counts, "-p", self.pid]
            self.tracer = subprocess.Popen(trace, stderr=subprocess.PIPE)
            assert self.tracer.stderr is not None
            self.tracer.stderr.readline()  # "strace: Process N attached"
            return
        self._control("-z")
        self._control("-i", "on")

    def stop(self, label: str) -> tuple[int, int]:
        """Instructions since `start`, and those of them in the cyclic garbage
        collector (0, 0 under py-spy). The collector runs every 50,000
        allocations, over whatever is young: whether a phase contains one of
        its passes moves a phase's count by a few percent, so it is given apart."""
        if self.tracer is not None:
            self.tracer.send_signal(2)
            self.tracer.wait(60)
            self.tracer = None
            return self._syscalls(label), 0
        if self.pyspy:
            return 0, 0
        self._control("-i", "off")
        self._control("-d", label)
        newest = max(glob.glob(f"{self.prefix}.*"), key=lambda f: int(f.rsplit(".", 1)[1]))
        kept = os.path.join(self.dir, f"{label}.cg")
        shutil.copy(newest, kept)
        total = next(
            int(line.split()[1])
            for line in Path(newest).read_text().splitlines()
            if line.startswith("totals:")
        )
        annotate = ["callgrind_annotate", "--inclusive=yes", kept]
        table = subprocess.run(annotate, capture_output=True, text=True, check=True).stdout
        gc = next(
            (int(line.split()[0].replace(",", "")) for line in table.splitlines()
             if re.search(r":gc_collect_main\b", line)),
            0,
        )  # fmt: skip
        return total, gc

    def _syscalls(self, label: str) -> int:
        """System calls since `start`, by name, kept as `label`.strace; their total."""
        kept = os.path.join(self.dir, f"{label}.strace")
        shutil.copy(self.counts, kept)
        for line in Path(kept).read_text().splitlines():
            fields = line.split()
            if fields and fields[-1] == "total":
                return int(fields[3])
        raise SystemExit(f"no total in {kept}")  # unreachable in practice

    def end(self) -> None:
        pid = self.proc.pid
        if self.pyspy:  # stop its child: py-spy writes its samples when that exits
            pid = int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])
        os.kill(pid, 2)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---------------------------------------------------------------------- the clients


class Client(asyncio.Protocol):
    """One raw MQTT client: waits for CONNACK, counts PUBACKs, acknowledges PUBLISHes."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.connack: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.on_packet: Callable[[int, bytes], None] = self._connack

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        while len(buf) >= 2:
            n, mult, i = 0, 1, 1
            while True:
                if i >= len(buf):
                    self.buf = buf
                    return
                b = buf[i]
                n += (b & 0x7F) * mult
                mult *= 128
                i += 1
                if not b & 0x80:
                    break
            if len(buf) < i + n:
                break
            self.on_packet(buf[0], buf[i : i + n])
            buf = buf[i + n :]
        self.buf = buf

    def _connack(self, first: int, body: bytes) -> None:
        if not self.connack.done():
            self.connack.set_result(bytes([first, len(body)]) + body)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.connack.done():
            self.connack.set_exception(ConnectionError("closed before CONNACK"))


async def open_client(loop: asyncio.AbstractEventLoop, port: int, client_id: str) -> Client:
    _, client = await loop.create_connection(Client, "127.0.0.1", port)
    assert client.transport is not None
    client.transport.write(connect_bytes(client_id))
    ack = await client.connack
    if ack != CONNACK:
        raise SystemExit(f"{client_id}: CONNACK {ack.hex()}")
    return client


async def connect_many(port: int, ids: list[str]) -> list[Client]:
    """Connect every id, `AT_ONCE` in progress at a time; all held open."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(AT_ONCE)

    async def one(cid: str) -> Client:
        async with gate:
            return await open_client(loop, port, cid)

    return list(await asyncio.gather(*(one(c) for c in ids)))


async def disconnect_all(clients: list[Client]) -> None:
    for c in clients:
        assert c.transport is not None
        c.transport.write(DISCONNECT)
    await asyncio.gather(*(c.closed for c in clients))
    for c in clients:
        assert c.transport is not None
        c.transport.close()


class FanIn:
    """P publishers at window 1 on `bench/p/<i>`, one subscriber on `#` at QoS 1."""

    def __init__(self, sub: Client, pubs: list[Client]) -> None:
        self.sub, self.pubs = sub, pubs
        self.topics = [f"bench/p/{i}".encode() for i in range(len(pubs))]
        self.ids = [0] * len(pubs)
        self.left = [0] * len(pubs)
        self.to_receive = 0
        self.done: asyncio.Future[None] | None = None
        sub.on_packet = self._delivered
        for i, p in enumerate(pubs):
            p.on_packet = self._acked(i)

    def _send(self, i: int) -> None:
        self.ids[i] = self.ids[i] % 65535 + 1
        transport = self.pubs[i].transport
        assert transport is not None
        transport.write(publish_bytes(self.topics[i], self.ids[i]))

    def _acked(self, i: int) -> Callable[[int, bytes], None]:
        def on_packet(first: int, body: bytes) -> None:
            assert first >> 4 == 4, first  # PUBACK
            self.left[i] -= 1
            if self.left[i] > 0:
                self._send(i)
            self._check()

        return on_packet

    def _delivered(self, first: int, body: bytes) -> None:
        if first >> 4 == 9:  # SUBACK
            assert self.done is not None
            self.done.set_result(None)
            return
        assert first >> 4 == 3 and first & 0x06 == 2, first  # PUBLISH QoS 1
        n = int.from_bytes(body[:2], "big")
        packet_id = body[2 + n : 4 + n]
        assert self.sub.transport is not None
        self.sub.transport.write(b"\x40\x02" + packet_id)
        self.to_receive -= 1
        self._check()

    def _check(self) -> None:
        if self.to_receive == 0 and not any(self.left) and self.done and not self.done.done():
            self.done.set_result(None)

    async def subscribe(self) -> None:
        self.done = asyncio.get_running_loop().create_future()
        assert self.sub.transport is not None
        self.sub.transport.write(_packet(0x82, b"\x00\x01" + _str(b"#") + b"\x01"))
        await self.done

    async def run(self, messages: int) -> None:
        per, extra = divmod(messages, len(self.pubs))
        self.left = [per + (1 if i < extra else 0) for i in range(len(self.pubs))]
        self.to_receive = messages
        self.done = asyncio.get_running_loop().create_future()
        for i, n in enumerate(self.left):
            if n:
                self._send(i)
        await self.done


async def phases(a: argparse.Namespace, server: Server) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    port = server.port
    out: dict[str, float] = {}
    rounds = 5 if a.pyspy else 1

    async def settle() -> None:
        await asyncio.sleep(0.5)  # the server's last turns: it has no timer left to run

    warm = await connect_many(port, [f"warm-{i}" for i in range(WARMUP)])
    await disconnect_all(warm)
    await settle()
    for r in range(rounds if "connect" in a.phases else 0):
        ids = [f"bench-idle-{i}" for i in range(a.conns)]
        server.start()
        clients = await connect_many(port, ids)
        await settle()
        total, gc = server.stop(f"connect{r}")
        out["connect"], out["connect_gc"] = total / a.conns, gc / a.conns
        server.start()
        await disconnect_all(clients)
        await settle()
        total, gc = server.stop(f"disconnect{r}")
        out["disconnect"], out["disconnect_gc"] = total / a.conns, gc / a.conns
    if "message" not in a.phases:
        return out
    sub = await open_client(loop, port, "bench-sub")
    pubs = await connect_many(port, [f"bench-pub-{i}" for i in range(a.publishers)])
    fan = FanIn(sub, pubs)
    await fan.subscribe()
    await fan.run(max(a.publishers, a.messages // 10))
    await settle()
    for r in range(rounds):
        server.start()
        await fan.run(a.messages)
        await settle()
        total, gc = server.stop(f"message{r}")
        out["message"], out["message_gc"] = total / a.messages, gc / a.messages
    await disconnect_all([sub, *pubs])
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--src", required=True, help="the tree's src directory")
    p.add_argument("--conns", type=int, default=10_000)
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--publishers", type=int, default=200)
    p.add_argument("--phases", default="connect,message", help="connect, message or both")
    p.add_argument("--cg", help="directory for callgrind's dumps (default a temporary one)")
    p.add_argument("--pyspy", help="py-spy --native raw output instead of callgrind")
    p.add_argument(
        "--strace",
        action="store_true",
        help="count the server's system calls (strace -c -f) instead of its instructions",
    )
    a = p.parse_args()
    if a.src == "mosquitto" and not a.strace:
        p.error("--src mosquitto counts only system calls (--strace)")
    src = a.src if a.src == "mosquitto" else os.path.abspath(a.src)
    server = Server(src, a.cg, a.pyspy, a.strace)
    try:
        out = uvloop.run(phases(a, server))
    finally:
        server.end()
    if a.pyspy:
        print(f"{src}: py-spy samples in {a.pyspy}")
        return
    if a.strace:
        print(f"{src} (strace's tables in {server.dir}), system calls:")
        for key in ("connect", "disconnect", "message"):
            if key in out:
                print(f"  a {key}: {out[key]:.2f}", flush=True)
        return
    print(f"{src} (callgrind's dumps in {server.dir}), instructions:")
    for key in ("connect", "disconnect", "message"):
        if key in out:
            print(
                f"  a {key}: {out[key]:,.0f}, of which the collector {out[key + '_gc']:,.0f}",
                flush=True,
            )


if __name__ == "__main__":
    if "--serve" in sys.argv:
        serve()
    else:
        main()
