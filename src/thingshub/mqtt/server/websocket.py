"""MQTT over WebSocket: the server's `Connection`, unchanged, behind an ASGI WebSocket.

Rules (MQTT 3.1.1 and 5.0, section 6):
- `MqttWebSocket` is a plain ASGI application (no web framework here): the
  platform mounts it at `/mqtt` on its HTTP port, so the scheme, `ws://` or
  `wss://`, is the HTTP port's. Everything else is the TCP listener's: the
  same `Connection` judges the same packets with the same logins, topic
  rights, limits, timers and takeover, because it cannot tell the difference.
- The client must offer the subprotocol `mqtt` [MQTT-6.0.0-3], as Mosquitto,
  EMQX and HiveMQ also require; one that does not is refused at the
  handshake with HTTP 400 and a sentence saying why (403 without one where
  the server cannot send a body), never accepted to speak something else.
  The subprotocol chosen is always `mqtt` [MQTT-6.0.0-4].
- The MQTT bytes travel in binary frames as one stream: a packet may span
  frames and a frame may hold several packets [MQTT-6.0.0-2]; the codec's
  reader cuts them out as it does from TCP. A text frame is a protocol error
  [MQTT-6.0.0-1]: the connection is closed with close code 1003 (a connected
  5.0 client first gets DISCONNECT 0x82, as for any protocol error).
- What goes out leaves one binary frame per flush of the connection (whole
  packets, coalesced in one loop turn), several flushes joined while the
  client is behind, up to `FRAME_BYTES` per frame unless a single flush is
  larger.
- `WebSocketTransport` is the asyncio transport the connection sees, with
  exactly what `Connection` uses (the rest is asyncio's NotImplementedError):
  write, close, abort, pause/resume_reading, the write buffer's size and
  limits, no write_eof, `peername` (the WebSocket client's
  address, which the login throttle goes by). Backpressure holds both ways:
  paused reading stops taking messages from the server (which then stops
  reading the socket); output waiting beyond the high-water mark while the
  server's `send` waits for the client pauses the connection's writing until
  it is down to the low-water mark. Output that the socket takes counts as
  sent, as with a socket transport (so a shutdown's DISCONNECT still leaves).
- Closing either side closes the other. The connection closing sends its
  pending output and a close frame (1000), aborting drops the output
  (1008: a protocol error before CONNECT, one connection too many, a client
  not reading at shutdown). The WebSocket ending, however it ends, is the
  connection's `connection_lost`, exactly once, and nothing is delivered
  after the connection closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from thingshub.mqtt.codec.reasons import ReasonCode

if TYPE_CHECKING:
    from thingshub.mqtt.server.connection import Connection

Scope = MutableMapping[str, Any]
Event = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Event]]
Send = Callable[[Event], Awaitable[None]]

#: The one WebSocket subprotocol of MQTT.
SUBPROTOCOL = "mqtt"
#: Close codes (RFC 6455 section 7.4.1).
NORMAL = 1000
UNSUPPORTED_DATA = 1003
DROPPED = 1008
#: Output joined into one frame at most, while the client is behind.
FRAME_BYTES = 64 * 1024
#: asyncio's default write buffer limits, until the connection sets its own.
_HIGH = 64 * 1024

_REFUSAL = b'MQTT over WebSocket needs the subprotocol "mqtt" (Sec-WebSocket-Protocol: mqtt)\n'


@dataclass(slots=True)
class WebSocketStats:
    """What the endpoint counts; its connections are also among the server's."""

    connections: int = 0  # open now
    connections_total: int = 0
    refused_subprotocol: int = 0
    text_frames: int = 0


class MqttWebSocket:
    """The ASGI application of `/mqtt`: one MQTT connection per accepted WebSocket.

    `new_connection` makes the connection (`Broker.connection`): the server
    counts, limits and closes it as any other.
    """

    def __init__(self, new_connection: Callable[[], Connection]) -> None:
        self._new_connection = new_connection
        self.stats = WebSocketStats()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return  # gone before the handshake
        stats = self.stats
        if SUBPROTOCOL not in (scope.get("subprotocols") or ()):
            stats.refused_subprotocol += 1
            with contextlib.suppress(OSError):
                await _refuse(scope, send)
            return
        try:
            await send({"type": "websocket.accept", "subprotocol": SUBPROTOCOL})
        except OSError:
            return  # gone during the handshake
        stats.connections += 1
        stats.connections_total += 1
        try:
            await WebSocketTransport(send, scope, stats).run(self._new_connection(), receive)
        finally:
            stats.connections -= 1


async def _refuse(scope: Scope, send: Send) -> None:
    if "websocket.http.response" in (scope.get("extensions") or {}):
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(_REFUSAL)).encode()),
        ]
        await send({"type": "websocket.http.response.start", "status": 400, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": _REFUSAL})
    else:
        await send({"type": "websocket.close", "code": DROPPED})  # 403 at the handshake


class WebSocketTransport(asyncio.Transport):
    """An ASGI WebSocket as the asyncio transport of one `Connection` (see the rules)."""

    __slots__ = (
        "_code",
        "_high",
        "_hint",
        "_loop",
        "_lost",
        "_low",
        "_out",
        "_protocol",
        "_pump",
        "_reading",
        "_send",
        "_sending",
        "_size",
        "_stats",
        "_wake",
        "_writing_paused",
    )

    def __init__(self, send: Send, scope: Scope, stats: WebSocketStats) -> None:
        client, server = scope.get("client"), scope.get("server")
        super().__init__(
            {
                "peername": tuple(client) if client else None,
                "sockname": tuple(server) if server else None,
            }
        )
        self._loop = asyncio.get_running_loop()
        self._send = send
        self._stats = stats
        self._protocol: Connection | None = None
        self._out: deque[bytes] = deque()
        self._size = 0  # bytes written and not yet handed to the server
        self._high = _HIGH
        self._low = _HIGH // 4
        self._writing_paused = False
        #: The pump is inside the server's `send`: when anything else runs
        #: meanwhile, the send is waiting for the client to read.
        self._sending = False
        #: While reading is paused: what resuming resolves.
        self._reading: asyncio.Future[None] | None = None
        #: While the pump has nothing to send: what the next write resolves.
        self._wake: asyncio.Future[None] | None = None
        self._pump: asyncio.Task[None] | None = None
        #: Once closing: the close frame's code.
        self._code: int | None = None
        #: The close code the next close or abort uses instead of its own.
        self._hint: int | None = None
        self._lost = False

    async def run(self, protocol: Connection, receive: Receive) -> None:
        """Run the connection until the WebSocket ends."""
        self._protocol = protocol
        self._pump = self._loop.create_task(self._write_out())
        protocol.connection_made(self)
        try:
            await self._read_in(protocol, receive)
        finally:
            self._connection_lost()
            pump = self._pump
            if pump is not None and not pump.done():
                pump.cancel()  # nothing it would send can arrive any more
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    # ------------------------------------------------------------ reading

    async def _read_in(self, protocol: Connection, receive: Receive) -> None:
        while True:
            if self._reading is not None:
                await self._resumed()
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                data = message.get("bytes")
                if data is None:
                    self._text_frame(protocol)
                    continue
                if self._reading is not None:  # paused while we waited for it: hold it
                    await self._resumed()
                if data and self._code is None and not self._lost:
                    protocol.data_received(data)
            elif kind == "websocket.disconnect":
                return

    async def _resumed(self) -> None:
        """Return once reading is not paused (at once, usually)."""
        while self._reading is not None:
            await self._reading

    def _text_frame(self, protocol: Connection) -> None:
        self._stats.text_frames += 1
        if self._code is None and not self._lost:
            self._hint = UNSUPPORTED_DATA
            protocol.protocol_error(
                ReasonCode.PROTOCOL_ERROR, "a text frame (MQTT travels in binary frames)"
            )

    def pause_reading(self) -> None:
        if self._reading is None and self._code is None and not self._lost:
            self._reading = self._loop.create_future()

    def resume_reading(self) -> None:
        waiting = self._reading
        if waiting is not None:
            self._reading = None
            if not waiting.done():
                waiting.set_result(None)

    # ------------------------------------------------------------ writing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._code is not None or self._lost or not data:
            return
        self._out.append(bytes(data))
        self._size += len(data)
        if self._sending and not self._writing_paused and self._size > self._high:
            self._writing_paused = True
            assert self._protocol is not None
            self._protocol.pause_writing()
        self._wake_pump()

    def _wake_pump(self) -> None:
        wake = self._wake
        if wake is not None:
            self._wake = None
            if not wake.done():
                wake.set_result(None)

    async def _write_out(self) -> None:
        """Send what is written, in order, then the close frame once closing."""
        out = self._out
        send = self._send
        try:
            while True:
                if not out:
                    if self._code is not None:
                        break
                    self._wake = self._loop.create_future()
                    await self._wake
                    continue
                data = _take(out)
                self._sending = True
                try:
                    await send({"type": "websocket.send", "bytes": data})
                finally:
                    self._sending = False
                self._size -= len(data)
                if self._writing_paused and self._size <= self._low and not self._lost:
                    self._writing_paused = False
                    assert self._protocol is not None
                    self._protocol.resume_writing()
            await send({"type": "websocket.close", "code": self._code})
        except OSError:  # the client is gone
            self._connection_lost()

    def get_write_buffer_size(self) -> int:
        """What the client is not taking: what is written, while a send waits.

        The server's `send` returns at once while its socket takes data, so
        anything else runs during one only when the client is behind; until
        then what is written leaves with the pump's next turn, as a socket
        transport's write leaves at once.
        """
        return self._size if self._sending else 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = _HIGH if high is None else high
        self._low = self._high // 4 if low is None else low

    def can_write_eof(self) -> bool:
        return False  # a WebSocket does not half-close: the close frame ends both ways

    # ------------------------------------------------------------ closing

    def close(self) -> None:
        """Send what is written, then the close frame."""
        if self._code is None and not self._lost:
            self._code = self._hint or NORMAL
            self.resume_reading()  # read (and drop) until the close completes
            self._wake_pump()

    def abort(self) -> None:
        """Drop what is written and send the close frame now."""
        if self._lost:
            return
        self._out.clear()
        self._size = 0
        if self._code is None:
            self._code = self._hint or DROPPED
            self.resume_reading()
        if self._wake is not None:
            self._wake_pump()  # idle: it sends the close frame next
        elif self._pump is not None and not self._pump.done():
            # Waiting for the client to read: give up on it, close at once.
            self._pump.cancel()
            self._pump = self._loop.create_task(self._write_out())

    def _connection_lost(self) -> None:
        if self._lost:
            return
        self._lost = True
        self._out.clear()
        self._size = 0
        self.resume_reading()  # the reader goes on to the disconnect
        if self._protocol is not None:
            self._protocol.connection_lost(None)


def _take(out: deque[bytes]) -> bytes:
    """The next frame: the oldest flush, joined with those after it up to `FRAME_BYTES`."""
    first = out.popleft()
    if not out or len(first) + len(out[0]) > FRAME_BYTES:
        return first
    parts = [first]
    size = len(first)
    while out and size + len(out[0]) <= FRAME_BYTES:
        chunk = out.popleft()
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)
