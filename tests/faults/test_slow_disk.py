"""A slow database: PostgreSQL behind a TCP proxy that holds every chunk of bytes,
each way, for `DELAY` seconds (real bytes, really delayed: every commit takes
at least two delays).

The promises (README, "Failure behaviour"): publishers are held to what the
database takes (backpressure: no PUBACK before its write, so a publisher's
window of unacknowledged messages is all the server holds for it), memory
stays bounded, and every acknowledged message is stored.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.conftest import RunningPlatform
from tests.faults.publisher import Publisher
from tests.faults.test_postgres_away import _stored
from tests.mqtt.clients import wait_until

DELAY = 0.02


class SlowProxy:
    """Forwards 127.0.0.1:<port> to `target`, each chunk `delay` seconds late."""

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target, self.delay = target, delay
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(5)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self) -> asyncio.Server:
        return await asyncio.start_server(self._client, "127.0.0.1", 0)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()  # else its collection warns (unclosed), in whichever test runs then


@pytest.fixture
def slow_pg(pg_url: str) -> Iterator[str]:
    """The URL of this test's database, through the slow proxy."""
    parts = urlsplit(pg_url)
    proxy = SlowProxy((parts.hostname or "127.0.0.1", parts.port or 5432), DELAY)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    slowed = urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))
    try:
        yield slowed
    finally:
        proxy.close()


def test_a_slow_database_holds_publishers_and_loses_nothing(
    slow_pg: str, pg_url: str, platform_factory: Callable[..., RunningPlatform]
) -> None:
    p = platform_factory(database_url=slow_pg)
    api = p.http()
    api.post("/api/v1/products", json={"id": "p", "name": "p"})
    publishers = []
    for i in range(4):
        d = api.post("/api/v1/products/p/devices", json={"name": f"d{i}"}).json()
        pub = Publisher(p.mqtt_port, d["username"], d["password"], f"k{i}", version=4 + i % 2)
        publishers.append(pub)
    started = time.monotonic()
    for pub in publishers:
        pub.start()
    waiting = []
    try:
        for _ in range(30):  # 3 s of load, sampled
            waiting.append(p.call(lambda: p.platform.broker.waiting_acks))
            time.sleep(0.1)
        wait_until(lambda: all(len(x.acked) > 20 for x in publishers), 20, "acknowledgements")
    finally:
        for pub in publishers:
            pub.stop()
    # The delay bites: a commit takes two delays at least, and holds at most
    # the publishers' windows.
    commits = (time.monotonic() - started) / (2 * DELAY)
    assert sum(len(x.acked) for x in publishers) <= commits * 4 * 10
    # Held to the database's pace: the server holds no more than the publishers'
    # windows (10 each) of messages waiting for their write.
    assert max(waiting) <= 4 * 10, waiting
    for i, pub in enumerate(publishers):
        assert pub.error is None, pub.error
        assert not pub.closed and pub.codes == []
        missing = set(pub.acked) - asyncio.run(_stored(pg_url, [f"k{i}"]))[f"k{i}"]
        assert not missing, f"{len(missing)} acknowledged messages of d{i} were not stored"
