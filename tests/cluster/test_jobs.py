"""Cluster-wide jobs (one node runs each at a time, another takes over) and the
unfinished calls a starting node fails."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import asyncpg

from tests.conftest import RunningPlatform
from thingshub.core.model import CommandRecord
from thingshub.services.jobs import Job

LEASE = 1.5  # node_lease: a node that does not hold a job tries every 0.5 s


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class Rounds:
    """Rounds of one job on several nodes: who ran each, from when to when."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, float, float]] = []
        self.busy: str | None = None

    def round_of(self, node: str) -> Callable[[], Any]:
        async def round() -> None:
            assert self.busy is None, f"{node} ran a round while {self.busy} was running one"
            self.busy = node
            start = time.monotonic()
            await asyncio.sleep(0.02)
            self.busy = None
            self.runs.append((node, start, time.monotonic()))

        return round

    def by(self, node: str) -> int:
        return sum(1 for n, _, _ in self.runs if n == node)


def start_job(node: RunningPlatform, rounds: Rounds, name: str) -> Job:
    p = node.platform
    assert p.jobs is not None
    job: Job = p.jobs.job("test-job", rounds.round_of(name), every=0.05)
    node.run(job.start())
    return job


def test_one_node_runs_a_job_and_another_takes_over_when_it_stops(
    node_factory: Callable[..., RunningPlatform],
) -> None:
    a = node_factory("a", node_lease=LEASE)
    b = node_factory("b", node_lease=LEASE)
    rounds = Rounds()
    job_a = start_job(a, rounds, "a")
    job_b = start_job(b, rounds, "b")
    wait_for(lambda: rounds.by("a") >= 10, 10, "rounds on a")
    assert job_a.holding and not job_b.holding and rounds.by("b") == 0
    # The services' own jobs: each held by exactly one node (the first one up).
    for job in ("retention", "ota"):
        assert [_service_job(n, job).holding for n in (a, b)] == [True, False], job

    stopped_at = time.monotonic()
    a.run(job_a.stop())
    wait_for(lambda: rounds.by("b") >= 3, LEASE + 2, "b taking the job over")
    assert job_b.taken == 1 and [holds(job_a), holds(job_b)] == [False, True]
    assert rounds.runs[-1][1] - stopped_at < LEASE  # within the lease
    node_factory.stop(a)  # type: ignore[attr-defined]
    wait_for(lambda: _service_job(b, "ota").holding, LEASE + 2, "b taking the OTA job over")
    wait_for(lambda: _service_job(b, "retention").holding, LEASE + 2, "b taking retention")
    b.run(job_b.stop())


def holds(job: Job) -> bool:
    return job.holding


def _service_job(node: RunningPlatform, name: str) -> Job:
    p = node.platform
    job: Job = p.ota.job if name == "ota" else p.retention.job
    return job


def test_a_holder_whose_lock_connection_dies_stops_and_another_takes_over(
    node_factory: Callable[..., RunningPlatform], pg_url: str
) -> None:
    a = node_factory("a", node_lease=LEASE)
    b = node_factory("b", node_lease=LEASE)
    rounds = Rounds()
    job_a = start_job(a, rounds, "a")
    job_b = start_job(b, rounds, "b")
    wait_for(lambda: rounds.by("a") >= 3, 10, "rounds on a")

    pid = a.call(a.platform.storage.locks._conn.get_server_pid)
    a.run(_terminate(pg_url, pid))
    wait_for(lambda: rounds.by("b") >= 5, LEASE + 2, "b taking the job over")
    # a noticed before its next round, and runs none while b holds the job.
    assert not job_a.holding
    ran_on_a = rounds.by("a")
    wait_for(lambda: rounds.by("b") >= 15, 10, "more rounds on b")
    assert rounds.by("a") == ran_on_a and job_b.holding
    a.run(job_a.stop())
    b.run(job_b.stop())


async def _terminate(url: str, pid: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


def test_a_starting_node_fails_only_the_calls_no_live_node_waits_for(
    node_factory: Callable[..., RunningPlatform],
) -> None:
    a = node_factory("a", node_lease=LEASE)
    b = node_factory("b", node_lease=LEASE)
    http = a.http()
    assert http.post("/api/v1/products", json={"id": "p1", "name": "P"}).status_code == 201
    assert http.post("/api/v1/products/p1/devices", json={"name": "d1"}).status_code == 201
    record = CommandRecord("x", "p1", "d1", "onenet", "command", b"on", "sent", 1, sent_at=1)
    commands = a.platform.storage.commands
    for cmd_id, node in (("of-b", "b"), ("of-c", "c"), ("of-gone", "gone"), ("of-none", None)):
        a.run(commands.add(replace(record, cmd_id=cmd_id, node=node)))

    c = node_factory("c", node_lease=LEASE)  # its own, a dead node's, no node's: failed
    listed = http.get("/api/v1/products/p1/devices/d1/commands").json()["items"]
    statuses = {r["cmd_id"]: r["status"] for r in listed}
    assert statuses == {"of-b": "sent", "of-c": "failed", "of-gone": "failed", "of-none": "failed"}
    assert b.platform.nodes is not None and c.platform.commands.node == "c"
