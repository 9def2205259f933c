"""A raw MQTT-over-WebSocket client for the tests: our codec over the `websockets` library.

It sends exactly the frames a test asks for (a packet split across frames,
several packets in one frame, a text frame), which paho never does, and reads
the server's frames as one byte stream, as the MQTT spec says a receiver must.
"""

from __future__ import annotations

import socket
import time
from typing import TypeVar

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from tests.mqtt.clients import track
from thingshub.mqtt.codec import Connack, Connect, Packet, Reader, encode

TIMEOUT = 5.0

P = TypeVar("P")


class WsRawClient:
    """`ws://127.0.0.1:{port}{path}` with the subprotocol `mqtt` (unless told otherwise)."""

    def __init__(
        self,
        port: int,
        version: int = 5,
        *,
        subprotocols: list[str] | None = None,
        path: str = "/mqtt",
        max_queue: int | None = 16,
        rcvbuf: int | None = None,
    ) -> None:
        self.version = version
        offered = ["mqtt"] if subprotocols is None else subprotocols
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # a small window: a client that stops reading is felt soon
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(TIMEOUT)
        sock.connect(("127.0.0.1", port))
        self.ws: ClientConnection = connect(
            f"ws://127.0.0.1:{port}{path}",
            sock=sock,
            subprotocols=[Subprotocol(p) for p in offered] or None,
            max_size=None,
            max_queue=max_queue,
            open_timeout=TIMEOUT,
            compression=None,
        ).__enter__()  # as `with connect(...) as ws` would; close() ends it
        track(self)
        self.reader = Reader(version)
        #: The close code the server sent, once the connection has ended.
        self.close_code: int | None = None

    def send(self, *packets: Packet) -> None:
        """Each packet in a frame of its own."""
        for packet in packets:
            self.ws.send(encode(packet, self.version))

    def frames(self, *chunks: bytes) -> None:
        """Each chunk as one binary frame, whatever MQTT packets it holds or cuts."""
        for chunk in chunks:
            self.ws.send(chunk)

    def connect(
        self, client_id: str = "ws", username: str | None = None, password: bytes | None = None
    ) -> Connack:
        """CONNECT (keepalive 0) in one frame; the CONNACK, whatever its code."""
        self.send(Connect(client_id, self.version, True, 0, username, password))
        return self.expect(Connack)

    def recv(self, timeout: float = TIMEOUT) -> Packet:
        """The next packet; TimeoutError, or ConnectionClosed once the server closed."""
        deadline = time.monotonic() + timeout
        while True:
            packet = self.reader.next_packet()
            if packet is not None:
                return packet
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no packet from the server within {timeout}s")
            try:
                data = self.ws.recv(timeout=remaining)
            except ConnectionClosed:
                rcvd = self.ws.protocol.close_rcvd
                self.close_code = rcvd.code if rcvd is not None else None
                raise
            except TimeoutError:
                continue
            assert isinstance(data, bytes), f"a text frame from the server: {data!r}"
            self.reader.feed(data)

    def expect(self, kind: type[P], timeout: float = TIMEOUT) -> P:
        packet = self.recv(timeout)
        assert isinstance(packet, kind), f"expected {kind.__name__}, got {packet!r}"
        return packet

    def wait_closed(self, timeout: float = TIMEOUT) -> list[Packet]:
        """Read until the server closes; the packets it sent first (close code in `close_code`)."""
        packets: list[Packet] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                packets.append(self.recv(max(deadline - time.monotonic(), 0.001)))
            except ConnectionClosed:
                return packets
            except TimeoutError as exc:
                raise AssertionError(
                    f"connection still open after {timeout}s; received {packets!r}"
                ) from exc

    def close(self) -> None:
        self.ws.close()
