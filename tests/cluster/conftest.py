"""Fixtures of the cluster tests: nodes on one PostgreSQL database and one NATS.

- `nats_url`: the NATS server of `THINGSHUB_TEST_NATS_URL` (default
  nats://127.0.0.1:4222, which CI starts). Every test's cluster gets its own
  cluster id (kept in its own database schema), so tests share the server
  without hearing each other.
- `node_factory(node_id, **settings)`: a node of the test's cluster, in this
  process (a Platform on its own loop and thread), on free ports.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import RunningPlatform

NATS_ENV = "THINGSHUB_TEST_NATS_URL"
NATS_DEFAULT = "nats://127.0.0.1:4222"


@pytest.fixture(scope="session")
def nats_url() -> str:
    url = os.environ.get(NATS_ENV, NATS_DEFAULT)
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 4222), 3).close()
    except OSError as exc:
        pytest.fail(
            f"NATS at {url} is not reachable ({exc}); the cluster tests need it: start it"
            f" (.ci/run does), or point {NATS_ENV} at one",
            pytrace=False,
        )
    return url


@pytest.fixture
def node_factory(
    platform_factory: Callable[..., RunningPlatform], pg_url: str, nats_url: str, tmp_path: Any
) -> Callable[..., RunningPlatform]:
    def start(node_id: str, **overrides: Any) -> RunningPlatform:
        values: dict[str, Any] = {
            "data_dir": tmp_path / node_id,
            "database_url": pg_url,
            "nats_url": nats_url,
            "node_id": node_id,
        }
        values.update(overrides)
        return platform_factory(**values)

    start.stop = platform_factory.stop  # type: ignore[attr-defined]
    return start
