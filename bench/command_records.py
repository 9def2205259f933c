"""The database's cost of command records on PostgreSQL: the writer's backend CPU a call.

What it does: on a fresh database of `--database-url` (an admin URL; the scratch
database is dropped at the end), one product and 100 devices, then as the cluster
bench's node does: 10 calls one at a time (the warm-up), then `--rounds` rounds of
`--per` calls whose records are added together and finished together
(`CommandRepo.add`, `CommandRepo.finish`: two group-commit batches a round). It
prints the CPU the writer's PostgreSQL backend used per call, every 1,000 rounds
and in all. `--generic` replaces the writer's `plan_cache_mode = force_custom_plan`
with nothing (the server's default: a generic plan after five executions), to show
what that setting is for.

    .venv/bin/python bench/command_records.py
    .venv/bin/python bench/command_records.py --generic
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.storage.support import command, device, product  # noqa: E402

from thingshub.storage.postgres import PostgresStorage  # noqa: E402
from thingshub.storage.postgres import writes as pg_writes  # noqa: E402

_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / _TCK


async def run(a: argparse.Namespace) -> None:
    if a.generic:
        pg_writes.PLAN_EACH_BATCH = "SELECT 1"
    name = f"thingshub_records_{os.getpid()}"
    base = a.database_url.rsplit("/", 1)[0]
    admin = await asyncpg.connect(a.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    s = PostgresStorage(f"{base}/{name}")
    try:
        await s.open()
        await s.products.add(product("p1"))
        for i in range(100):
            await s.devices.add(device("p1", f"d{i:03d}"))
        pid = s._runner.conn.get_server_pid()
        for w in range(10):
            await s.commands.add(command(f"w{w}", name="d000"))
            await s.commands.finish(f"w{w}", "answered", 1, b"ok")
        start, began, calls = cpu_seconds(pid), time.perf_counter(), 0
        mark, marked = start, 0
        for r in range(a.rounds):
            ids = [(f"c{r}-{k}", f"d{(r * a.per + k) % 100:03d}") for k in range(a.per)]
            await asyncio.gather(*(s.commands.add(command(c, name=d)) for c, d in ids))
            await asyncio.gather(*(s.commands.finish(c, "answered", 1, b"ok") for c, _ in ids))
            calls += a.per
            if (r + 1) % 1000 == 0:
                now = cpu_seconds(pid)
                cost = 1e6 * (now - mark) / (calls - marked)
                print(f"  calls {marked}-{calls}: {cost:.0f} us/call")
                mark, marked = now, calls
        used = cpu_seconds(pid) - start
        wall = time.perf_counter() - began
        plans = "generic plans allowed" if a.generic else "planned each batch"
        print(
            f"{plans}: {calls} calls, writer backend {1e6 * used / calls:.0f} us/call, {wall:.1f} s"
        )
    finally:
        await s.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--rounds", type=int, default=3000)
    p.add_argument("--per", type=int, default=3, help="calls a round (3)")
    p.add_argument("--generic", action="store_true", help="without the writer's setting")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
