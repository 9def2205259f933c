"""Device logins in process: the server's own work per login, without sockets or noise.

    PYTHONPATH=SRC .venv/bin/python bench/login_harness.py [N] [ROUNDS] [--trace]
    PYTHONPATH=SRC valgrind --tool=callgrind --instr-atstart=no \\
        --callgrind-out-file=/tmp/cg/out .venv/bin/python bench/login_harness.py 2000 1 \\
        --cg /tmp/cg/out

The whole platform starts (`Platform.start`, SQLite in a scratch data dir, as
`platform_bench.py` serves it); N devices of product `bench` are registered
through the device service, each with a OneNET token. Then, ROUNDS times, every
device logs in: a `Connection` of the MQTT server gets a fake transport (no
socket) and the CONNECT's bytes, 100 at a time, until each has its CONNACK;
then each sends DISCONNECT and its transport is lost.

It prints, per round, the process CPU per login and per close, and the RSS
grown per connected device. Why: on a shared 2-core machine `platform_bench.py`'s
connect figures move by 20% between runs of one tree. With `--cg PREFIX` under
callgrind (instrumentation off until asked for) it prints instead the
instructions executed per login, per close, and in the work the platform does
once a second that a connect burst pays for (the keepalive sweep, the activity
sample, the presence flush): counts that do not depend on the machine's load.
With `--trace`, tracemalloc's bytes per connected device (all, and the source
tree's own).

`SRC` may be any tree since 7fdb9da (`git archive REV src | tar -x -C DIR`).
"""

from __future__ import annotations

import asyncio
import gc
import glob
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import uvloop

from thingshub.app import Platform
from thingshub.config import Settings
from thingshub.mqtt.server.connection import Connection

try:
    from thingshub.dialects.onenet.token import make_token
except ImportError:  # 7fdb9da: one module
    from thingshub.dialects.onenet import make_token  # type: ignore[no-redef]

ARGS = [a for a in sys.argv[1:] if a.isdigit()] if __name__ == "__main__" else []
N = int(ARGS[0]) if ARGS else 2000
ROUNDS = int(ARGS[1]) if len(ARGS) > 1 else 3
TRACE = "--trace" in sys.argv
CG = sys.argv[sys.argv.index("--cg") + 1] if "--cg" in sys.argv else None
AT_ONCE = 100


def _str(s: bytes) -> bytes:
    return len(s).to_bytes(2, "big") + s


def connect_bytes(client_id: str, user: str, password: str) -> bytes:
    """MQTT 3.1.1 CONNECT, clean session, keepalive 60, user name and password."""
    body = _str(b"MQTT") + bytes([4, 0xC2]) + (60).to_bytes(2, "big")
    body += _str(client_id.encode()) + _str(user.encode()) + _str(password.encode())
    n, length = len(body), bytearray()
    while True:
        n, digit = divmod(n, 128)
        length.append(digit | (0x80 if n else 0))
        if not n:
            return b"\x10" + bytes(length) + body


class FakeTransport:
    def __init__(self, port: int) -> None:
        self.port = port
        self.out: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            os.getppid()  # a system call, as getpeername is
            return ("127.0.0.1", self.port)
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Counter:
    """Callgrind's instruction count between `start` and `stop` (`--cg`), else nothing."""

    def __init__(self, prefix: str | None) -> None:
        self.prefix = prefix
        self.pid = str(os.getpid())

    def _control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, self.pid], capture_output=True, check=False)

    def start(self) -> None:
        if self.prefix:
            self._control("-z")
            self._control("-i", "on")

    def stop(self, label: str, per: int) -> None:
        if not self.prefix:
            return
        self._control("-i", "off")
        self._control("-d", label)
        newest = max(glob.glob(f"{self.prefix}.*"), key=lambda f: int(f.rsplit(".", 1)[1]))
        total = next(
            int(line.split()[1])
            for line in Path(newest).read_text().splitlines()
            if line.startswith("totals:")
        )
        print(f"  {label}: {total / per:,.0f} instructions each", flush=True)


async def main() -> None:
    tmp = tempfile.mkdtemp(prefix="login-harness-")
    settings = Settings(data_dir=Path(tmp), mqtt_port=0, http_port=0, console=False)
    p = Platform(settings)
    await p.start()
    cg = Counter(CG)
    try:
        assert p.devices is not None and p.broker is not None and p.presence is not None
        assert p.gateway is not None
        await p.devices.create_product("bench", "bench")
        logins = []
        expiry = int(time.time()) + 2 * 86400
        for i in range(N):
            name = f"dev{i:06d}"
            created = await p.devices.create_device("bench", name)
            token = make_token(created.device.key, "bench", name, expiry)
            logins.append(connect_bytes(name, "bench", token))
        broker, gateway = p.broker, p.gateway
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000)  # as `thingshub serve` does once started
        for r in range(1, ROUNDS + 1):
            await asyncio.sleep(1.5)  # the last round's presence is written
            gc.collect()
            if TRACE:
                tracemalloc.start()
                snap0 = tracemalloc.take_snapshot()
            rss0 = rss_kb()
            conns: list[tuple[Connection, FakeTransport]] = []
            cg.start()
            c0 = time.process_time()
            for start in range(0, N, AT_ONCE):
                batch = []
                for i in range(start, min(N, start + AT_ONCE)):
                    t = FakeTransport(40000 + i % 20000)
                    c = Connection(broker)
                    c.connection_made(t)  # type: ignore[arg-type]
                    c.data_received(logins[i])
                    batch.append((c, t))
                while not all(t.out for _, t in batch):  # noqa: ASYNC110 - a CONNACK has no event
                    await asyncio.sleep(0)
                conns.extend(batch)
            c1 = time.process_time()
            cg.stop(f"login{r}", N)
            if CG:  # once a second in the server: what a burst of N connects pays for
                cg.start()
                now = broker.loop.time()
                for conn in list(broker._connections):
                    if hasattr(conn, "check_timeout"):  # 7fdb9da swept inline
                        conn.check_timeout(now)
                cg.stop(f"sweep{r}", N)
                cg.start()
                now_ms = gateway.clock.now_ms()
                for client, idle in broker.activity():
                    ref = client.principal
                    p.presence.touch(ref.product_id, ref.name, now_ms - int(idle * 1000))
                cg.stop(f"activity{r}", N)
                cg.start()
                await p.presence.flush()
                cg.stop(f"presence-flush{r}", N)
            refused = sum(1 for _, t in conns if t.out[0][:4] != b" \x02\x00\x00")
            gc.collect()
            rss1 = rss_kb()
            if TRACE:
                stats = tracemalloc.take_snapshot().compare_to(snap0, "filename")
                tracemalloc.stop()
                everything = sum(s.size_diff for s in stats)
                own = sum(s.size_diff for s in stats if "thingshub" in str(s.traceback))
                print(
                    f"  tracemalloc: {everything / N:,.0f} B a device, {own / N:,.0f} thingshub's"
                )
            cg.start()
            d0 = time.process_time()
            for c, _ in conns:
                c.data_received(b"\xe0\x00")
                c.connection_lost(None)
            await asyncio.sleep(0)
            d1 = time.process_time()
            cg.stop(f"close{r}", N)
            print(
                f"round {r}: {(c1 - c0) / N * 1e6:.1f} us a login, {(d1 - d0) / N * 1e6:.1f} us "
                f"a close, RSS {(rss1 - rss0) * 1024 / N:,.0f} B a device, refused {refused}",
                flush=True,
            )
    finally:
        await p.stop()


if __name__ == "__main__":
    uvloop.run(main())
