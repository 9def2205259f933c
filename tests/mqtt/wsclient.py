"""A raw MQTT-over-WebSocket client for the tests: `RawClient` over the `websockets` library.

It sends exactly the frames a test asks for (a packet split across frames,
several packets in one frame, a text frame), which paho never does, and reads
the server's frames as one byte stream, as the MQTT spec says a receiver must.
"""

from __future__ import annotations

import socket

from websockets.exceptions import ConnectionClosed as WebSocketClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from tests.mqtt.clients import HOST, TIMEOUT, ConnectionClosed, RawClient, track
from thingshub.mqtt.codec import Reader


class WsRawClient(RawClient):
    """`ws://127.0.0.1:{port}{path}`, offering the subprotocol `mqtt` unless told
    otherwise. `send` puts the packets it is given in one frame, `frames` sends
    each chunk as a frame; `close_code` is the server's close code once closed."""

    def __init__(
        self,
        port: int,
        version: int = 5,
        *,
        subprotocols: list[str] | None = None,
        path: str = "/mqtt",
        max_queue: int | None = 16,
        rcvbuf: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.version = version
        offered = ["mqtt"] if subprotocols is None else subprotocols
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # a small window: a client that stops reading is felt soon
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(TIMEOUT)
        sock.connect((HOST, port))
        self.sock = sock
        self.ws: ClientConnection = connect(
            f"ws://{HOST}:{port}{path}",
            sock=sock,
            subprotocols=[Subprotocol(p) for p in offered] or None,
            max_size=None,
            max_queue=max_queue,
            open_timeout=TIMEOUT,
            # Closing waits this long for the server's close frame: a client that
            # stopped reading (its queue full) never takes it in, and waited 10 s.
            close_timeout=1,
            compression=None,
            additional_headers=headers,
        ).__enter__()  # as `with connect(...) as ws` would; close() ends it
        self.reader = Reader(version)
        self.closed = False
        self.close_code: int | None = None
        track(self)

    def send_bytes(self, data: bytes) -> None:
        self.ws.send(data)

    def frames(self, *chunks: bytes) -> None:
        """Each chunk as one binary frame, whatever MQTT packets it holds or cuts."""
        for chunk in chunks:
            self.ws.send(chunk)

    def read(self, timeout: float) -> bytes:
        try:
            data = self.ws.recv(timeout=timeout)
        except WebSocketClosed as exc:
            rcvd = self.ws.protocol.close_rcvd
            self.close_code = rcvd.code if rcvd is not None else None
            raise ConnectionClosed(f"closed by the server ({self.close_code})") from exc
        assert isinstance(data, bytes), f"a text frame from the server: {data!r}"
        return data

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.ws.close()
