"""The HTTP listener: uvicorn on the platform's loop, plain or over TLS.

Rules:
- uvicorn runs in the platform's event loop; its own signal handling is off,
  because the platform owns SIGINT/SIGTERM.
- The platform binds the socket (so that a taken port is its one-line
  error); `HttpServer` listens on it through its own `create_server`, which
  gives a TLS handshake `handshake_timeout` seconds (the HTTP head timeout):
  uvicorn's own leaves asyncio's 60 s default.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Generator

import uvicorn


class HttpServer(uvicorn.Server):
    """uvicorn on our loop, without its signal handling (ours owns the signals), and
    listening through our own `create_server`: uvicorn's gives TLS handshakes
    asyncio's 60 s default, and a client that never finishes one would hold a
    file descriptor that long, outside the connection cap (which counts a
    connection once its handshake is done)."""

    def __init__(
        self, config: uvicorn.Config, tls: ssl.SSLContext | None, handshake_timeout: float
    ) -> None:
        super().__init__(config)
        #: HTTPS with this context; uvicorn's own ssl options stay unused.
        self.tls = tls
        self.handshake_timeout = handshake_timeout
        #: True once the sockets accept (uvicorn's `started` comes before that here).
        self.listening = False

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the platform handles signals itself

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])  # the lifespan (the console), no listener
        config = self.config
        tls = self.tls

        def protocol() -> asyncio.Protocol:  # as uvicorn's own startup makes them
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )

        loop = asyncio.get_running_loop()
        for sock in sockets or []:
            server = await loop.create_server(
                protocol,
                sock=sock,
                ssl=tls,
                ssl_handshake_timeout=self.handshake_timeout if tls is not None else None,
                backlog=config.backlog,
            )
            self.servers.append(server)
        self.listening = True
