"""Telemetry ingest through the storage's group-commit writer, at full speed.

What it does:
- Opens a fresh store (SQLite: a new file, WAL, synchronous=FULL; PostgreSQL: a new
  schema in the database of `--pg-url`, dropped at the end), makes one product and
  `--devices` devices.
- Every device is a coroutine that appends one message of `--keys` numeric points
  (`TelemetryRepo.append`, as the ingest service does per MQTT message) and waits for it
  to be durable before it sends the next, with `--window` messages in flight (1 = a
  QoS 1 device waiting for each PUBACK).
- After `--warmup` seconds it measures for `--seconds`: points/s and messages/s made
  durable, commits/s (writer batches) and messages per commit, the latency of an append
  (submit to durable: p50/p99/max), and this process's CPU (% of one core; the SQLite
  work runs on this process's threads, PostgreSQL's in the server).
- `--compare-pg-insert` instead times the two ways of writing a batch of points on
  PostgreSQL (one `unnest` statement that also upserts `latest`, which the storage
  uses, against COPY through `copy_records_to_table` plus the statements COPY needs
  around it), for batches of 50 to 3,000 points.

    .venv/bin/python bench/storage_ingest.py                      # SQLite and PostgreSQL
    .venv/bin/python bench/storage_ingest.py --backend sqlite --devices 5000 --seconds 30
    .venv/bin/python bench/storage_ingest.py --compare-pg-insert

It prints one line per backend; nothing else runs meanwhile, so these are the storage's
own figures, not those of the whole platform (MQTT server and devices share the CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from thingshub.core.model import Device, Point, Product
from thingshub.core.ports import Storage
from thingshub.storage.postgres import PostgresStorage
from thingshub.storage.sqlite import SqliteStorage

DEFAULT_PG = os.environ.get(
    "THINGSHUB_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
T0 = 1_700_000_000_000


async def fill(storage: Storage, devices: int) -> list[str]:
    await storage.products.add(Product("bench", "bench", T0))
    names = [f"dev{i:06d}" for i in range(devices)]
    for name in names:
        await storage.devices.add(
            Device("bench", name, f"n-{name}", "a2V5" * 11, f"u-{name}", "0" * 64, T0)
        )
    return names


async def measure(
    storage: SqliteStorage | PostgresStorage, args: argparse.Namespace
) -> dict[str, float]:
    names = await fill(storage, args.devices)
    keys = [f"k{i}" for i in range(args.keys)]
    writer = storage.writer
    if args.max_batch:
        writer.max_batch = args.max_batch
    state = {"measuring": False, "stop": False}
    done = {"messages": 0}
    latencies: list[float] = []

    async def device(name: str, lane: int) -> None:
        ts = T0 + lane
        while not state["stop"]:
            ts += 1000
            points = [Point(k, ts, (ts // 1000 + i) % 1000 / 10) for i, k in enumerate(keys)]
            started = time.perf_counter()
            await storage.telemetry.append("bench", name, points)
            if state["measuring"]:
                done["messages"] += 1
                latencies.append(time.perf_counter() - started)

    tasks = [
        asyncio.create_task(device(name, lane)) for name in names for lane in range(args.window)
    ]
    await asyncio.sleep(args.warmup)
    batches0, writes0 = writer.stats.batches, writer.stats.writes
    cpu0, wall0 = time.process_time(), time.perf_counter()
    state["measuring"] = True
    await asyncio.sleep(args.seconds)
    state["measuring"] = False
    cpu1, wall1 = time.process_time(), time.perf_counter()
    batches, writes = writer.stats.batches - batches0, writer.stats.writes - writes0
    state["stop"] = True
    await asyncio.gather(*tasks)
    elapsed = wall1 - wall0
    latencies.sort()
    return {
        "points/s": done["messages"] * len(keys) / elapsed,
        "msgs/s": done["messages"] / elapsed,
        "commits/s": batches / elapsed,
        "msgs/commit": writes / batches if batches else 0.0,
        "p50 ms": statistics.median(latencies) * 1000 if latencies else 0.0,
        "p99 ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else 0.0,
        "max ms": latencies[-1] * 1000 if latencies else 0.0,
        "cpu %": (cpu1 - cpu0) / elapsed * 100,
        "failed": writer.stats.failed_batches,
    }


def report(backend: str, args: argparse.Namespace, figures: dict[str, float]) -> None:
    print(
        f"{backend:10s} {args.devices} devices x {args.keys} keys, window {args.window}:"
        f" {figures['points/s']:9,.0f} points/s  {figures['msgs/s']:8,.0f} msgs/s"
        f"  {figures['commits/s']:6.1f} commits/s  {figures['msgs/commit']:6.0f} msgs/commit"
        f"  latency p50 {figures['p50 ms']:.1f} p99 {figures['p99 ms']:.1f}"
        f" max {figures['max ms']:.1f} ms  cpu {figures['cpu %']:.0f}%"
        + (f"  FAILED BATCHES {figures['failed']:.0f}" if figures["failed"] else ""),
        flush=True,
    )


async def run_sqlite(args: argparse.Namespace) -> None:
    directory = Path(tempfile.mkdtemp(prefix="thingshub-bench-", dir=args.sqlite_dir))
    try:
        storage = SqliteStorage(directory / "bench.db")
        await storage.open()
        try:
            figures = await measure(storage, args)
        finally:
            await storage.close()
        size = await asyncio.to_thread(_size, directory)
        report("SQLite", args, figures)
        print(f"{'':10s} database files: {size:.0f} MiB", flush=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _size(directory: Path) -> float:
    return sum(f.stat().st_size for f in directory.iterdir()) / 2**20


@contextlib.asynccontextmanager
async def pg_schema(url: str) -> Any:
    """A URL whose tables live in a new schema, dropped afterwards."""
    schema = f"bench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        parts = urlsplit(url)
        query = "&".join(q for q in (parts.query, f"search_path={schema}") if q)
        yield parts._replace(query=query).geturl(), schema
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


async def run_postgres(args: argparse.Namespace) -> None:
    async with pg_schema(args.pg_url) as (url, _):
        storage = PostgresStorage(url)
        await storage.open()
        try:
            figures = await measure(storage, args)
        finally:
            await storage.close()
        report("PostgreSQL", args, figures)


# ------------------------------------------------------------------ unnest against COPY

_CTE = """
WITH added AS (
    INSERT INTO points (device_id, key, ts, num, value)
    SELECT u.device_id, u.key, u.ts, u.num, u.value
    FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::float8[], $5::text[])
        WITH ORDINALITY AS u(device_id, key, ts, num, value, n)
    ORDER BY u.n
    RETURNING device_id, key, ts, seq, value
)
INSERT INTO latest AS l (device_id, key, ts, seq, value)
SELECT DISTINCT ON (device_id, key) device_id, key, ts, seq, value FROM added
ORDER BY device_id, key, ts DESC, seq DESC
ON CONFLICT (device_id, key) DO UPDATE
    SET ts = excluded.ts, seq = excluded.seq, value = excluded.value
    WHERE excluded.ts >= l.ts
"""
_UPSERT = """
INSERT INTO latest AS l (device_id, key, ts, seq, value)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::text[])
ON CONFLICT (device_id, key) DO UPDATE
    SET ts = excluded.ts, seq = excluded.seq, value = excluded.value
    WHERE excluded.ts >= l.ts
"""


async def compare_pg_insert(args: argparse.Namespace) -> None:
    async with pg_schema(args.pg_url) as (url, _):
        storage = PostgresStorage(url)
        await storage.open()
        try:
            await fill(storage, args.devices)
        finally:
            await storage.close()
        conn = await asyncpg.connect(url)
        try:
            ids = [r[0] for r in await conn.fetch("SELECT id FROM devices ORDER BY id")]
            await conn.execute("ALTER TABLE points ALTER COLUMN seq SET GENERATED BY DEFAULT")
            seq_name = await conn.fetchval("SELECT pg_get_serial_sequence('points', 'seq')")
            print("PostgreSQL: one batch of points (+ latest), ms per batch (median of runs)")
            ts = T0
            for size in (50, 300, 1000, 3000):
                timings: dict[str, list[float]] = {"unnest": [], "copy": []}
                for run in range(args.runs):
                    for method in ("unnest", "copy") if run % 2 else ("copy", "unnest"):
                        ts += 1000
                        rows = [
                            (ids[(i // 3) % len(ids)], f"k{i % 3}", ts, i / 10, str(i / 10))
                            for i in range(size)
                        ]
                        started = time.perf_counter()
                        async with conn.transaction():
                            if method == "unnest":
                                await conn.execute(_CTE, *map(list, zip(*rows, strict=True)))
                            else:
                                await _copy(conn, rows, seq_name)
                        timings[method].append(time.perf_counter() - started)
                medians = {m: statistics.median(t) * 1000 for m, t in timings.items()}
                print(
                    f"  {size:5d} points: unnest {medians['unnest']:6.2f} ms"
                    f"  copy {medians['copy']:6.2f} ms"
                    f"  ({size / medians['unnest'] * 1000:9,.0f} vs"
                    f" {size / medians['copy'] * 1000:9,.0f} points/s, synchronous commit each)",
                    flush=True,
                )
        finally:
            await conn.close()


async def _copy(conn: Any, rows: list[tuple[Any, ...]], seq_name: str) -> None:
    """What COPY needs: the seqs first (for `latest`), the COPY, then the upsert."""
    seqs = await conn.fetchval(
        "SELECT array_agg(nextval($1::regclass)) FROM generate_series(1, $2)", seq_name, len(rows)
    )
    records = [(*row, seq) for row, seq in zip(rows, seqs, strict=True)]
    await conn.copy_records_to_table(
        "points", records=records, columns=["device_id", "key", "ts", "num", "value", "seq"]
    )
    newest: dict[tuple[int, str], tuple[Any, ...]] = {}
    for r in records:
        newest[(r[0], r[1])] = r
    latest = list(newest.values())
    await conn.execute(
        _UPSERT,
        [r[0] for r in latest],
        [r[1] for r in latest],
        [r[2] for r in latest],
        [r[5] for r in latest],
        [r[4] for r in latest],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=3, help="points per message")
    parser.add_argument("--window", type=int, default=1, help="messages in flight per device")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--max-batch", type=int, default=0, help="writer batch cap (0: default)")
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--sqlite-dir", default=None, help="where the SQLite file goes")
    parser.add_argument("--compare-pg-insert", action="store_true")
    parser.add_argument("--runs", type=int, default=15, help="runs per size (compare mode)")
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    loop_factory = None
    if not args.no_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            loop_factory = uvloop.new_event_loop

    async def everything() -> None:
        if args.compare_pg_insert:
            await compare_pg_insert(args)
            return
        if args.backend in ("sqlite", "both"):
            await run_sqlite(args)
        if args.backend in ("postgres", "both"):
            await run_postgres(args)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(everything())
    return 0


if __name__ == "__main__":
    sys.exit(main())
