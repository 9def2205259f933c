"""Fixtures of the multi-process cluster tests (harness.py has the machinery).

- `nats`: a private NATS server for the test, on a free loopback port, which
  the test may stop and start again (never the machine's shared one).
- `cluster`: `cluster(lease=3.0)` makes the test's `Cluster` (nodes are added
  and started by the test) on the test's PostgreSQL schema and `nats`. At
  the end every node still running is stopped cleanly (exit code 0), and a
  node that logged an ERROR or a traceback fails the test, as the in-process
  fixture `fail_on_logged_errors` does, unless the test is marked
  `allow_logged_errors`.
- `three_nodes`: nodes n1, n2, n3 shared by the tests of a session (of each
  xdist worker), on a schema and a NATS server of their own, for tests that
  neither stop nodes nor NATS: starting three processes is most of such a
  test's time. Each test uses a product of its own. Errors logged fail the
  session's last test that used it. Their ids are s1, s2, s3 (`Cluster.all`):
  node ids are held by locks of the whole database, which the other tests'
  clusters share (in other schemas) while this one lives.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster.processes.harness import Cluster, NatsServer
from tests.conftest import _admin


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
    errors = [line for c in made for line in c.stop()]  # every node stopped, then judged
    if errors and not request.node.get_closest_marker("allow_logged_errors"):
        pytest.fail("nodes logged errors:\n" + "\n".join(errors), pytrace=False)


@pytest.fixture(scope="session")
def three_nodes(pg_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    schema = f"t_{secrets.token_hex(6)}"
    asyncio.run(_admin(pg_database, f'CREATE SCHEMA "{schema}"'))
    nats = NatsServer()
    nats.start()
    root = tmp_path_factory.mktemp("cluster")
    c = Cluster(root, f"{pg_database}?search_path={schema}", nats, 3.0, secrets.token_urlsafe(24))
    try:
        c.start("s1", "s2", "s3")
        yield c
        errors = c.stop()
        if errors:
            pytest.fail("nodes logged errors:\n" + "\n".join(errors), pytrace=False)
    finally:
        c.stop()
        nats.stop()
