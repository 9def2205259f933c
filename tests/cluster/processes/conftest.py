"""Fixtures of the multi-process cluster tests (harness.py has the machinery).

- `nats`: a private NATS server for the test, on a free loopback port, which
  the test may stop and start again (never the machine's shared one).
- `cluster`: `cluster(lease=3.0)` makes the test's `Cluster` (nodes are added
  and started by the test) on the test's PostgreSQL schema and `nats`. At
  the end every node still running is stopped cleanly (exit code 0), and a
  node that logged an ERROR or a traceback fails the test, as the in-process
  fixture `fail_on_logged_errors` does, unless the test is marked
  `allow_logged_errors`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster.processes.harness import Cluster, NatsServer


@pytest.fixture
def nats() -> Iterator[NatsServer]:
    server = NatsServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(
    request: pytest.FixtureRequest, tmp_path: Path, pg_url: str, nats: NatsServer
) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(lease: float = 3.0) -> Cluster:
        c = Cluster(tmp_path, pg_url, nats, lease, secrets.token_urlsafe(24))
        made.append(c)
        return c

    yield make
    errors = [line for c in made for line in c.stop()]
    if errors and not request.node.get_closest_marker("allow_logged_errors"):
        pytest.fail("nodes logged errors:\n" + "\n".join(errors), pytrace=False)
