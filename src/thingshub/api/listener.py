"""The HTTP listener: uvicorn on the platform's loop, plain or over TLS.

Rules:
- uvicorn runs in the platform's event loop; its own signal handling is off,
  because the platform owns SIGINT/SIGTERM.
- The platform binds the socket (so that a taken port is its one-line
  error); `HttpServer` listens on it through its own `create_server`, which
  gives a TLS handshake `handshake_timeout` seconds (the HTTP head timeout):
  uvicorn's own leaves asyncio's 60 s default.
- Stopping is prompt: `exit()` wakes the main loop at once (uvicorn's polls
  every 0.1 s), and a shutdown with no connection and no task open skips
  uvicorn's 0.1 s pause for connections to close. A platform stops in a few
  milliseconds instead of ~150 (a test suite starts and stops ~1,000).
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
        self._exit = asyncio.Event()

    def exit(self) -> None:
        """Stop serving now (uvicorn's `should_exit`, and the main loop woken)."""
        self.should_exit = True
        self._exit.set()

    async def main_loop(self) -> None:
        """uvicorn's: a tick every 0.1 s (the Date header, the request limit), but
        woken by `exit()` at once."""
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864_000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit.wait(), 0.1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        state = self.server_state
        if not state.connections and not state.tasks:
            for server in self.servers:
                server.close()
            await asyncio.sleep(0)  # a connection accepted as the listener closed
        if state.connections or state.tasks:
            await super().shutdown(sockets)  # asks each to close, and waits for them
            return
        for sock in sockets or []:
            sock.close()
        for server in self.servers:
            await server.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()

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
