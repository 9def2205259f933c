"""Fixtures shared by every test.

- `fail_on_logged_errors` (autouse): a test fails when anything under the
  `thingshub` loggers, or an event loop's exception handler, logged an error
  during it. A background task that died must not pass silently.
- `pg_database` / `pg_url`: the PostgreSQL server of `THINGSHUB_TEST_PG_URL`
  (an admin URL, default `postgresql://postgres@127.0.0.1:5432/postgres`).
  The session gets its own database `thingshub_test_<random>`, dropped after
  the session by a process of its own, and every test its own schema in it
  (through `?search_path=`), so each test starts from an empty store. An
  unreachable server fails the tests: CI guarantees it is up, so a skip would
  only hide a broken setup.
- `platform` runs every test that uses it twice: on SQLite and on PostgreSQL.
- `broker_factory`: a real `Broker` listening on a loopback port, running on
  its own event loop in a background thread, so blocking clients (paho-mqtt,
  raw sockets) can talk to it from the test's thread.
- Hypothesis runs without deadlines: a deadline is a timing assertion, which
  fails on a loaded machine for no fault of the code (speed is bench/'s).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import secrets
import ssl
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
import pytest
from hypothesis import HealthCheck, settings

from thingshub.mqtt.hooks import Hooks
from thingshub.mqtt.server import Broker, BrokerConfig
from thingshub.startup import raise_open_file_limit

T = TypeVar("T")

settings.register_profile("thingshub", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("thingshub")


class _ErrorCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def fail_on_logged_errors(request: pytest.FixtureRequest) -> Iterator[_ErrorCollector]:
    collector = _ErrorCollector()
    loggers = [logging.getLogger("thingshub"), logging.getLogger("asyncio")]
    for lg in loggers:
        lg.addHandler(collector)
    try:
        yield collector
    finally:
        for lg in loggers:
            lg.removeHandler(collector)
    if collector.records and not request.node.get_closest_marker("allow_logged_errors"):
        lines = [f"{r.name}: {r.getMessage()}" for r in collector.records]
        pytest.fail("errors were logged during the test:\n" + "\n".join(lines))


@pytest.fixture(autouse=True)
def _close_mqtt_clients() -> Iterator[None]:
    """Close every client tests/mqtt/clients.py made, even when a test failed half-way,
    so no paho thread or socket outlives its test (an unclosed socket would fail a
    later test through its ResourceWarning, since warnings are errors)."""
    yield
    from tests.mqtt.clients import close_all

    close_all()


@functools.cache
def default_tls() -> ssl.SSLContext:
    """httpx's default TLS context, made once: httpx makes one for every client
    (loading the CA bundle, 30-70 ms), and the tests make thousands of clients."""
    return ssl.create_default_context()


def pytest_configure(config: pytest.Config) -> None:
    # Tests hold hundreds of sockets at once (both ends in one process), as the
    # server does in production: the same raise `serve` makes.
    raise_open_file_limit()
    config.addinivalue_line(
        "markers", "allow_logged_errors: the test provokes errors that are logged on purpose"
    )


PG_ENV = "THINGSHUB_TEST_PG_URL"
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return f"{parts.scheme}://{host}:{parts.port or 5432}{parts.path}"


async def _admin(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """The URL of a database made for this test session."""
    admin = os.environ.get(PG_ENV, PG_DEFAULT)
    name = f"thingshub_test_{secrets.token_hex(4)}"
    try:
        asyncio.run(_admin(admin, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL at {_redacted(admin)} is not usable ({exc!r}); the storage tests "
            f"need it: start it, or point {PG_ENV} at an admin URL",
            pytrace=False,
        )
    try:
        yield urlsplit(admin)._replace(path=f"/{name}", query="").geturl()
    finally:
        _drop_later(admin, name)


_DROP = """
import asyncio, sys
import asyncpg

async def drop(admin, name):
    conn = await asyncpg.connect(admin, timeout=30)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', timeout=600)
    finally:
        await conn.close()

asyncio.run(drop(sys.argv[1], sys.argv[2]))
"""


def _drop_later(admin: str, name: str) -> None:
    """Drop the session's database in a process that outlives the session.

    Why not wait for it: by the end a session's database holds a schema of
    migrated tables for each of hundreds of tests, and DROP DATABASE (its files,
    its checkpoint) took 40 to 60 s, during which the session's last test stood
    in teardown. The name is the session's own, so nothing waits on the drop."""
    devnull = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    os.posix_spawn(
        sys.executable,
        [sys.executable, "-c", _DROP, admin, name],
        dict(os.environ),
        file_actions=devnull,
        setsid=True,
    )


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """A URL whose tables live in a new, empty schema of the session's database."""
    schema = f"t_{secrets.token_hex(6)}"
    asyncio.run(_admin(pg_database, f'CREATE SCHEMA "{schema}"'))
    return f"{pg_database}?search_path={schema}"


class OnLoop:
    """Something running on an event loop in a background thread: `call` and `run`
    execute code on that loop from the test's thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def call(self, fn: Callable[[], T], timeout: float = 5.0) -> T:
        """Run `fn()` on the loop and return its result."""
        fut: Future[T] = Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return fut.result(timeout)

    def run(self, coro: Any, timeout: float = 10.0) -> Any:
        """Run a coroutine on the loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


def serve_in_thread(
    name: str, start: Callable[[], Awaitable[Any]], stop: Callable[[], Awaitable[Any]]
) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    """Run `start()` on a new loop in a daemon thread, keep the loop running until
    it is stopped (`loop.call_soon_threadsafe(loop.stop)`), then run `stop()`.
    Returns once `start()` has finished; re-raises what it raised.

    Ready is only said from inside `run_forever`: a `loop.stop` that arrived while
    `run_until_complete(boot())` was still winding down would end that call instead,
    and the loop would then run for ever (a test stopping its server at once waited
    out the join's timeout, 10 or 30 s, and left the server running)."""
    loop = asyncio.new_event_loop()
    ready: Future[None] = Future()

    def serve() -> None:
        asyncio.set_event_loop(loop)

        async def boot() -> BaseException | None:
            try:
                await start()
            except BaseException as exc:
                await stop()
                return exc
            return None

        failed = loop.run_until_complete(boot())
        if failed is not None:
            ready.set_exception(failed)
        else:
            loop.call_soon(ready.set_result, None)
            loop.run_forever()
            loop.run_until_complete(stop())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    thread = threading.Thread(target=serve, name=name, daemon=True)
    thread.start()
    ready.result(30)
    return loop, thread


class RunningBroker(OnLoop):
    """A broker on a loop in a background thread."""

    def __init__(self, broker: Broker, loop: asyncio.AbstractEventLoop, port: int) -> None:
        super().__init__(loop)
        self.broker = broker
        self.port = port
        self.host = "127.0.0.1"

    @property
    def stats(self) -> Any:
        return self.call(lambda: self.broker.stats)


@pytest.fixture
def broker_factory() -> Iterator[Callable[..., RunningBroker]]:
    started: list[tuple[RunningBroker, threading.Thread]] = []

    def start(hooks: Hooks | None = None, config: BrokerConfig | None = None) -> RunningBroker:
        broker = Broker(hooks, config)
        ports: list[int] = []

        async def boot() -> None:
            ports.append(await broker.start("127.0.0.1", 0))

        loop, thread = serve_in_thread("broker", boot, broker.stop)
        running = RunningBroker(broker, loop, ports[0])
        started.append((running, thread))
        return running

    yield start
    for running, thread in started:
        running.loop.call_soon_threadsafe(running.loop.stop)
        thread.join(10)


@pytest.fixture
def broker(broker_factory: Callable[..., RunningBroker]) -> RunningBroker:
    """An open broker with default limits."""
    return broker_factory()


# ---------------------------------------------------------------- the whole platform


class RunningPlatform(OnLoop):
    """`thingshub serve` in-process: a Platform on a loop in a background thread."""

    def __init__(self, platform: Any, loop: asyncio.AbstractEventLoop, data_dir: Any) -> None:
        super().__init__(loop)
        self.platform = platform
        self.data_dir = data_dir
        self.host = "127.0.0.1"
        self.clients: list[Any] = []

    @property
    def mqtt_port(self) -> int:
        return int(self.platform.mqtt_port)

    @property
    def http_port(self) -> int:
        return int(self.platform.http_port)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def api_key(self) -> str:
        return str(self.platform.api_key)

    def http(self, api_key: str | None = None, *, authorized: bool = True) -> Any:
        """An httpx client of the API (with the API key, another key, or none)."""
        import httpx

        headers = {"Authorization": f"Bearer {api_key or self.api_key}"} if authorized else {}
        client = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=10, verify=default_tls()
        )
        self.clients.append(client)  # closed when the platform stops
        return client


def _start_platform(
    settings: Any, dialects: Any = None
) -> tuple[RunningPlatform, threading.Thread]:
    from thingshub.app import Platform

    platform = Platform(settings, dialects)
    loop, thread = serve_in_thread("platform", platform.start, platform.stop)
    return RunningPlatform(platform, loop, settings.data_dir), thread


@pytest.fixture
def platform_factory(tmp_path: Any) -> Iterator[Callable[..., RunningPlatform]]:
    """Start platforms on free ports; each is stopped (cleanly) at the end of the test.

    `platform_factory(data_dir=..., database_url=..., dialects=..., **settings)`
    (`dialects`: a registry of device protocols, the default one if absent); a
    platform can also be stopped early with `stop(p)` to test restarts.
    """
    from thingshub.config import Settings

    running: list[tuple[RunningPlatform, threading.Thread]] = []

    def start(dialects: Any = None, **overrides: Any) -> RunningPlatform:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "mqtt_port": 0,
            "http_port": 0,
            "log_level": "warning",
            "console": False,  # NiceGUI is process-wide: tests/console runs it in `serve`
        }
        values.update(overrides)
        p, thread = _start_platform(Settings(**values), dialects)
        running.append((p, thread))
        return p

    start.stop = lambda p: _stop(p, running)  # type: ignore[attr-defined]
    yield start
    for p, _ in list(running):
        _stop(p, running)


def _stop(p: RunningPlatform, running: list[tuple[RunningPlatform, threading.Thread]]) -> None:
    for item in running:
        if item[0] is p:
            for client in p.clients:
                client.close()
            p.loop.call_soon_threadsafe(p.loop.stop)
            item[1].join(30)
            running.remove(item)
            return


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None (SQLite in the data dir) or the URL of a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def platform(
    platform_factory: Callable[..., RunningPlatform], database_url: str | None
) -> RunningPlatform:
    """ThingsHub in a temporary data dir, on free ports, on SQLite and on PostgreSQL."""
    return platform_factory(database_url=database_url)


@dataclass
class Registered:
    """A device registered through the API, with the secrets shown at creation."""

    product_id: str
    name: str
    device_number: str
    key: str
    username: str
    password: str


@pytest.fixture
def register(platform: RunningPlatform) -> Callable[..., Registered]:
    """register(pid, name, **fields) -> Registered: creates the product if needed."""
    api = platform.http()

    def make(product_id: str = "p1", name: str = "d1", **fields: object) -> Registered:
        api.post("/api/v1/products", json={"id": product_id, "name": product_id})
        r = api.post(f"/api/v1/products/{product_id}/devices", json={"name": name, **fields})
        assert r.status_code == 201, r.text
        d = r.json()
        return Registered(
            product_id, name, d["device_number"], d["key"], d["username"], d["password"]
        )

    return make
