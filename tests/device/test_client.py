"""`MqttClient`, the SDK's own MQTT client, on its edges: a login refused by the real
platform, keepalive pings the platform answers, and — against a scripted server of a
few lines (a real socket speaking the project's codec, told per connection what to
do) — a server that goes silent, one that hangs up before CONNACK, one that refuses a
later login, QoS 1 and 2 deliveries acknowledged, and a QoS 1 publish left unacknowledged
sent again with DUP after the reconnect."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import RunningPlatform
from tests.device.conftest import register
from tests.mqtt.clients import stream_packets, until
from thingshub.device.client import LoginRefused, MqttClient, NotConnected
from thingshub.mqtt.codec import (
    MQTT_3_1_1,
    Connack,
    Connect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    Suback,
    Subscribe,
    encode,
    encode_ack,
)

Script = Callable[[int, AsyncIterator[Packet], asyncio.StreamWriter], Awaitable[None]]


class ScriptedServer:
    """Listens on a free port; the n-th connection (from 0) is handed to `script`,
    and every packet received is recorded in `seen` as (connection, packet)."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.seen: list[tuple[int, Packet]] = []
        self.server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> ScriptedServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self._handlers):  # the connections still open end before the loop
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"mqtt://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, stream: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = self.connections
        self.connections += 1
        me = asyncio.current_task()
        assert me is not None
        self._handlers.add(me)
        me.add_done_callback(self._handlers.discard)

        async def recorded() -> AsyncIterator[Packet]:
            async for packet in stream_packets(stream):
                self.seen.append((n, packet))
                yield packet

        try:
            await self.script(n, recorded(), writer)
        except asyncio.CancelledError:
            pass  # ended by __aexit__: a cancelled handler would be logged by asyncio
        finally:
            writer.close()


def connack(code: int = 0) -> bytes:
    return encode(Connack(code), MQTT_3_1_1)


def client(url: str, **options: Any) -> MqttClient:
    options.setdefault("backoff", (0.05, 0.2))
    return MqttClient(url, "c1", **options)


# ------------------------------------------------------------------ the real platform


def test_a_refused_first_login_ends_the_client(hub: RunningPlatform) -> None:
    creds = register(hub, "p1", "d1")

    async def scenario() -> None:
        c = MqttClient(
            f"mqtt://127.0.0.1:{hub.mqtt_port}",
            "tp-x",
            username=creds.username,
            password="wrong",
            backoff=(0.05, 0.2),
        )
        with pytest.raises(LoginRefused) as refused:
            await c.start()
        assert refused.value.code in (4, 5)
        assert c.closing and c.connects == 0
        with pytest.raises(NotConnected, match="closed"):
            await c.publish("t", "x")
        await c.close()

    asyncio.run(scenario())


def test_keepalive_pings_are_answered_by_the_platform(hub: RunningPlatform) -> None:
    creds = register(hub, "p1", "d1")

    async def scenario() -> None:
        c = MqttClient(
            f"mqtt://127.0.0.1:{hub.mqtt_port}",
            f"tp-{creds.device_number}",
            username=creds.username,
            password=lambda: creds.password,  # asked at every connect
            keepalive=1,
        )
        await c.start()
        await asyncio.sleep(2.2)  # three pings (every 0.75 s), each answered
        assert c.connected.is_set() and c.connects == 1
        await c.close()
        assert c.closing and not c.connected.is_set()

    asyncio.run(scenario())


# ------------------------------------------------------------------ a scripted server


def test_a_silent_server_is_left_and_the_client_reconnects() -> None:
    async def script(n: int, incoming: AsyncIterator[Packet], writer: asyncio.StreamWriter) -> None:
        async for packet in incoming:
            if isinstance(packet, Connect):
                writer.write(connack())
            elif isinstance(packet, PingReq) and n > 0:
                writer.write(encode(PingResp(), MQTT_3_1_1))
            # the first connection answers no PINGREQ: the client must give up on it

    async def scenario() -> None:
        async with ScriptedServer(script) as server:
            c = client(server.url, keepalive=1)
            lost: list[int] = []
            c.on_disconnect.append(lambda: lost.append(c.connects))
            await c.start()
            await until(lambda: c.connects == 2, "a second connection", timeout=5)
            assert lost == [1]
            pings = [n for n, p in server.seen if isinstance(p, PingReq)]
            assert pings.count(0) == 1  # one unanswered PINGREQ, then the drop
            await asyncio.sleep(1.7)  # the second connection's pings are answered
            assert c.connects == 2 and c.connected.is_set()
            await c.close()

    asyncio.run(scenario())


def test_hangups_before_connack_and_a_later_refusal_are_retried() -> None:
    async def script(n: int, incoming: AsyncIterator[Packet], writer: asyncio.StreamWriter) -> None:
        async for packet in incoming:
            if isinstance(packet, Connect):
                if n in (1, 2):
                    return  # hang up before CONNACK
                writer.write(connack(3 if n == 3 else 0))  # 3: server unavailable

    async def scenario() -> None:
        async with ScriptedServer(script) as server:
            c = client(server.url)
            await c.start()
            assert c.connects == 1
            c.drop()  # as a network loss would
            await until(lambda: c.connects == 2, "the reconnect after three failures")
            assert server.connections == 5  # 1 and 2 hung up, 3 refused, 4 accepted
            await c.close()

            # Nobody listening: `start` of a fresh client keeps trying; `wait_connected`
            # says so once its time is up.
            quiet = client("mqtt://127.0.0.1:1")
            quiet.run_in_background()
            with pytest.raises(NotConnected, match="not connected within"):
                await quiet.publish("t", b"x", timeout=0.2)
            assert quiet.connects == 0
            assert await quiet.subscribe("t/#") == []  # remembered for the connect
            assert quiet.subscriptions == {"t/#": 1}
            await quiet.close()

    asyncio.run(scenario())


@pytest.mark.allow_logged_errors  # the handler that fails, on purpose
def test_deliveries_at_every_qos_are_acknowledged(caplog: pytest.LogCaptureFixture) -> None:
    got: list[tuple[str, bytes]] = []

    async def script(n: int, incoming: AsyncIterator[Packet], writer: asyncio.StreamWriter) -> None:
        async for packet in incoming:
            if isinstance(packet, Connect):
                writer.write(connack())
            elif isinstance(packet, Subscribe):
                writer.write(encode(Suback(packet.packet_id, [1, 0x80]), MQTT_3_1_1))
                writer.write(encode(Publish("a/0", b"zero"), MQTT_3_1_1))
                writer.write(encode(Publish("a/1", b"one", 1, packet_id=7), MQTT_3_1_1))
                writer.write(encode(Publish("a/2", b"two", 2, packet_id=8), MQTT_3_1_1))
                writer.write(encode(Publish("boom", b"!", 0), MQTT_3_1_1))
            elif isinstance(packet, PubAck) and packet.type == PacketType.PUBREC:
                writer.write(encode_ack(PacketType.PUBREL, packet.packet_id))

    def on_message(topic: str, payload: bytes) -> None:
        if topic == "boom":
            raise ValueError("a handler's own bug")
        got.append((topic, payload))

    async def scenario() -> None:
        async with ScriptedServer(script) as server:
            c = client(server.url, on_message=on_message)
            await c.start()
            with caplog.at_level(logging.WARNING, "thingshub.device"):
                assert await c.subscribe("a/#", "no/#") == [1, 0x80]
            assert "subscription refused: no/#" in caplog.text
            await until(
                lambda: any(
                    isinstance(p, PubAck) and p.type == PacketType.PUBCOMP for _, p in server.seen
                ),
                "PUBCOMP",
            )
            assert got == [("a/0", b"zero"), ("a/1", b"one"), ("a/2", b"two")]
            acks = [(p.type, p.packet_id) for _, p in server.seen if isinstance(p, PubAck)]
            assert acks == [
                (PacketType.PUBACK, 7),
                (PacketType.PUBREC, 8),
                (PacketType.PUBCOMP, 8),
            ]
            assert "handling boom failed" in caplog.text
            assert c.connected.is_set()  # a handler's failure costs no connection
            await c.close()

    asyncio.run(scenario())


def test_an_unacknowledged_qos1_publish_is_sent_again_after_a_reconnect() -> None:
    async def script(n: int, incoming: AsyncIterator[Packet], writer: asyncio.StreamWriter) -> None:
        async for packet in incoming:
            if isinstance(packet, Connect):
                writer.write(connack())
            elif isinstance(packet, Subscribe):
                writer.write(encode(Suback(packet.packet_id, [1]), MQTT_3_1_1))
            elif isinstance(packet, Publish) and packet.packet_id is not None:
                if n == 0:
                    return  # hang up without PUBACK
                writer.write(encode_ack(PacketType.PUBACK, packet.packet_id))

    async def scenario() -> None:
        async with ScriptedServer(script) as server:
            c = client(server.url)
            await c.start()
            await c.subscribe("cmd/#")
            await c.publish("up", b"stored?", qos=1, timeout=10)
            assert c.connects == 2
            sent = [(n, p) for n, p in server.seen if isinstance(p, Publish)]
            assert [(n, p.payload, p.dup) for n, p in sent] == [
                (0, b"stored?", False),
                (1, b"stored?", True),
            ]
            subscribed = [n for n, p in server.seen if isinstance(p, Subscribe)]
            assert subscribed == [0, 1]  # subscribed again before the message was resent
            await c.close()

    asyncio.run(scenario())


def test_a_qos1_publish_nobody_acknowledges_times_out() -> None:
    async def script(n: int, incoming: AsyncIterator[Packet], writer: asyncio.StreamWriter) -> None:
        async for packet in incoming:
            if isinstance(packet, Connect):
                writer.write(connack())

    async def scenario() -> None:
        async with ScriptedServer(script) as server:
            c = client(server.url, keepalive=0)
            await c.start()
            with pytest.raises(NotConnected, match="no acknowledgement within"):
                await c.publish("up", b"x", qos=1, timeout=0.3)
            assert c._unacked == {}  # given up: not sent again after a reconnect
            # A publisher cancelled while it waits (a fleet closing): `close` fails its
            # acknowledgement, and nothing is logged about it.
            waiting = asyncio.create_task(c.publish("up", b"z", qos=1, timeout=10))
            await asyncio.sleep(0.05)
            waiting.cancel()
            await asyncio.sleep(0)
            await c.close()
            assert waiting.cancelled()
            assert c.closing

    asyncio.run(scenario())


def test_bad_bytes_from_the_server_end_the_connection_not_the_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def script(n: int, incoming: AsyncIterator[Packet], writer: asyncio.StreamWriter) -> None:
        async for packet in incoming:
            if isinstance(packet, Connect):
                writer.write(connack())
                if n == 0:
                    writer.write(b"\x00\x00")  # packet type 0 is reserved

    async def scenario() -> None:
        async with ScriptedServer(script) as server:
            c = client(server.url)
            with caplog.at_level(logging.WARNING, "thingshub.device"):
                await c.start()
                await until(lambda: c.connects == 2, "the reconnect")
            assert "bad bytes from the server" in caplog.text
            await c.publish("up", b"fine")
            await c.close()

    asyncio.run(scenario())
