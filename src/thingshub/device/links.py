"""The connections under the device client: TCP or TLS (an asyncio protocol) and WebSocket.

Rules:
- A link moves bytes: what arrives is cut into packets by the codec and
  handed to its `Receiver` (the client) in order; `write` sends bytes; `lost`
  completes once the connection is gone, whoever ended it.
- MQTT over WebSocket offers the subprotocol `mqtt`, sends binary frames
  (what is written in one loop turn goes in one frame) and reads the frames
  as one byte stream, as the MQTT spec asks (docs/protocols.md section 1.6).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

from thingshub.mqtt.codec import MQTT_3_1_1, CodecError, Packet, Reader

log = logging.getLogger("thingshub.device")


class Receiver(Protocol):
    client_id: str

    def packet(self, link: Link, packet: Packet) -> None: ...


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the server is and how to reach it, read from a URL."""

    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        defaults = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883, "ssl": 8883, "ws": 80, "wss": 443}
        if parts.scheme not in defaults or not parts.hostname:
            raise ValueError(
                f"{url!r} is not a server URL: use mqtt://host:port, mqtts://host:port, "
                "ws://host:port/mqtt or wss://host:port/mqtt"
            )
        scheme = {"tcp": "mqtt", "ssl": "mqtts"}.get(parts.scheme, parts.scheme)
        return cls(scheme, parts.hostname, parts.port or defaults[parts.scheme], parts.path)

    @property
    def secure(self) -> bool:
        return self.scheme in ("mqtts", "wss")


class Link(asyncio.Protocol):
    """One connection: bytes in go to the client, `write` sends bytes out."""

    def __init__(self, client: Receiver) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.reader = Reader(MQTT_3_1_1)
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (packet := self.reader.next_packet()) is not None:
                self.client.packet(self, packet)
        except CodecError as exc:
            log.warning("device %s: bad bytes from the server: %s", self.client.client_id, exc)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        elif not self.lost.done():
            self.lost.set_result(None)


class WsLink(Link):
    """The same over a WebSocket (`websockets`): binary frames, one byte stream."""

    ws: Any = None

    async def open(self, url: str, context: ssl.SSLContext | None, timeout: float) -> None:
        from websockets.asyncio.client import connect
        from websockets.typing import Subprotocol

        self.ws = await connect(
            url,
            subprotocols=[Subprotocol("mqtt")],
            ssl=context,
            open_timeout=timeout,
            compression=None,
            max_size=None,
        )
        self.outbox = bytearray()
        self.ready = asyncio.Event()
        self._sender = asyncio.create_task(self._send())
        self.tasks = [asyncio.create_task(self._read()), self._sender]

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                if isinstance(frame, bytes):
                    self.data_received(frame)
        except Exception as exc:
            log.debug("device %s: websocket ended: %r", self.client.client_id, exc)
        finally:
            self._sender.cancel()  # nothing more to send: it would wait for ever
            self.connection_lost(None)

    async def _send(self) -> None:
        try:
            while True:
                await self.ready.wait()
                self.ready.clear()
                data, self.outbox = bytes(self.outbox), bytearray()
                if data:
                    await self.ws.send(data)
        except Exception as exc:
            log.debug("device %s: websocket send ended: %r", self.client.client_id, exc)
            self.connection_lost(None)

    def write(self, data: bytes) -> None:
        if not self.lost.done():
            self.outbox += data
            self.ready.set()

    def close(self) -> None:
        async def finish() -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 2)
            for task in self.tasks:
                task.cancel()
            self.connection_lost(None)

        self.tasks.append(asyncio.get_running_loop().create_task(finish()))
