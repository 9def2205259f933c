"""The WebSocket side of the HTTP server: uvicorn's, minus waiting on peers that do not read.

Rules:
- A connection we close is gone within `close_timeout` seconds (10), read or
  not. uvicorn closes a WebSocket with `transport.close()`, which first
  flushes what is buffered; a peer that never reads never lets it flush,
  and the file descriptor stays taken for as long as the peer likes. Here
  every way a connection ends (the application closes it or returns, the
  keepalive ping goes unanswered) aborts the transport if it has not
  closed by then.
- A close while writing is paused (the peer has not read what was sent, so
  the transport's buffer is past its high-water mark) aborts at once: the
  close frame would only queue behind everything the peer is not reading,
  and waiting for buffer space would block the application forever.
- Everything else is uvicorn's protocol unchanged; tests/api/test_stream.py
  checks both rules over real sockets against the uvicorn this runs on.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class WebSocketProtocol(WebSocketsSansIOProtocol):
    async def send(self, message: Any) -> None:
        if (
            message["type"] == "websocket.close"
            and self.handshake_complete
            and not self.disconnected
            and not self.writable.is_set()
        ):
            self.transport.abort()  # connection_lost follows, and tells the application
            return
        await super().send(message)
        if self.close_timer is not None:  # a close frame was sent: wait that long, no longer
            self.close_timer.cancel()
            self.close_timer = self.loop.call_later(self.close_timeout, self.transport.abort)

    async def run_asgi(self) -> None:
        await super().run_asgi()
        if not self.disconnected:  # closing, perhaps behind what the peer does not read
            self.loop.call_later(self.close_timeout, self.transport.abort)

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()
        self.transport.abort()  # the peer did not answer a ping: it reads nothing
