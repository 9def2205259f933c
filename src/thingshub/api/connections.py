"""The HTTP listener's own limits, enforced per connection before any request exists.

Rules (docs/operations.md, "Limits against hostile input"):
- A connection must send a complete request head within `head_timeout`
  seconds (15 by default) of being accepted, and a keep-alive connection
  within `head_timeout` of the first byte of its next request (until that
  byte, uvicorn's keep-alive timeout closes it). Otherwise it is closed:
  uvicorn alone waits for a head forever.
- At most `max_connections` HTTP connections (WebSocket ones included) are
  open at once. One more is answered 503 and closed at once, so that the
  HTTP side can never use up the file descriptors the MQTT listener needs;
  uvicorn's own `limit_concurrency` answers 503 only after reading a head,
  holding the socket meanwhile.
- The count is uvicorn's own set of live connections: a connection enters
  it when accepted and leaves it when its socket is closed, including after
  an upgrade to WebSocket (the WebSocket protocol takes its place).
- The cap is also kept below half the process's file descriptor limit,
  whatever the setting says, for the same reason.
- A connection closed after an answer given before the request's body was
  all read (a 401 or 413, see guard.py) closes gently: the answer is sent
  and the sending side shut (over TLS, which has no half-close, it stays
  open), then what the client still sends is read and dropped for at most
  `LINGER_SECONDS` or `LINGER_BYTES`. Closing at once
  with unread bytes would reset the connection, and a reset can destroy the
  answer before the client reads it.
- Every answer's header names are written in their canonical case
  (`Content-Length`, `Content-Type`, `WWW-Authenticate`), as most servers
  write them: uvicorn writes them lower-case, and some device SDKs (OneNET's
  C SDK) look names up case-sensitively. Names are case-insensitive in HTTP,
  so no client can mind; only the head is rewritten, never a body, and a
  `100 Continue` before the head passes as it is.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import resource
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("thingshub.http")

#: Seconds a connection has to send a complete request head.
HEAD_TIMEOUT = 15.0
#: HTTP connections open at once, at most.
MAX_CONNECTIONS = 2000
#: How long, and how much of an unwanted body, a closing connection still reads.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024

_BUSY = b'{"error":"too many HTTP connections; try again later"}'
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(_BUSY)).encode() + b"\r\n"
    b"Connection: close\r\n\r\n" + _BUSY
)
#: Names whose canonical case is not each word capitalised.
_SPECIAL_NAMES = {
    b"www-authenticate": b"WWW-Authenticate",
    b"etag": b"ETag",
    b"content-md5": b"Content-MD5",
    b"te": b"TE",
}


@functools.lru_cache(maxsize=512)  # an application answers with few distinct names
def canonical_name(name: bytes) -> bytes:
    """`content-length` -> `Content-Length` (see the module rules)."""
    special = _SPECIAL_NAMES.get(name.lower())
    return special or b"-".join(word.capitalize() for word in name.split(b"-"))


def canonical_head(data: bytes) -> bytes:
    """`data` (a response head, perhaps followed by body bytes) with its header
    names in canonical case; the status line and everything after the head unchanged."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return data
    lines = data[:end].split(b"\r\n")
    for i in range(1, len(lines)):
        name, colon, value = lines[i].partition(b":")
        lines[i] = canonical_name(name) + colon + value
    return b"\r\n".join(lines) + data[end:]


def connection_cap(configured: int) -> int:
    """The cap in force: the setting, but at most half the file descriptor limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or configured <= soft // 2:
        return configured
    capped = max(soft // 2, 1)
    log.warning(
        "max_http_connections %d is more than half the open-file limit (%d): using %d",
        configured,
        soft,
        capped,
    )
    return capped


def limited_protocol(
    max_connections: int = MAX_CONNECTIONS, head_timeout: float = HEAD_TIMEOUT
) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP/1.1 protocol with these limits (give the class as `http=`)."""

    class LimitedHttpProtocol(HttpToolsProtocol):
        _refused = False
        _head_timer: asyncio.TimerHandle | None = None
        _linger_left = -1  # bytes still read and dropped while closing; -1: not closing

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= max_connections:
                self._refused = True
                transport.write(BUSY_RESPONSE)
                transport.close()
                return
            super().connection_made(transport)
            self._arm_head_timer()

        def data_received(self, data: bytes) -> None:
            if self._linger_left >= 0:
                self._linger_left -= len(data)
                if self._linger_left < 0:
                    self.transport.close()
            elif not self._refused:
                super().data_received(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._refused:
                return
            self._cancel_head_timer()
            super().connection_lost(exc)
            # The cycle's transport calls back `close_after_answer`: a reference
            # cycle through this protocol that only the cyclic collector's oldest
            # generation would free (~10 KB a connection; see the module rules).
            # The app task may still hold the cycle; it no longer reaches here.
            self.cycle = None  # type: ignore[assignment]

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._head_timer is None:
                self._arm_head_timer()

        def on_headers_complete(self) -> None:
            self._cancel_head_timer()
            super().on_headers_complete()
            cycle = self.cycle
            if cycle is not None and cycle.transport is self.transport:
                answer = _AnswerTransport(self.transport, self.close_after_answer)
                cycle.transport = answer  # type: ignore[assignment]

        def send_400_response(self, msg: str) -> None:
            transport = self.transport  # uvicorn writes this answer itself, head and body
            self.transport = _AnswerTransport(transport, transport.close)  # type: ignore[assignment]
            try:
                super().send_400_response(msg)
            finally:
                self.transport = transport

        def close_after_answer(self) -> None:
            """Close, lingering if the request's body is still coming (see the rules)."""
            transport = self.transport
            if transport.is_closing():
                return
            if self.cycle is None or not self.cycle.more_body:
                transport.close()
                return
            if transport.can_write_eof():  # TLS cannot half-close: it lingers all the same
                transport.write_eof()
            self._linger_left = LINGER_BYTES
            self.flow.resume_reading()
            self.loop.call_later(LINGER_SECONDS, transport.close)

        def eof_received(self) -> None:
            if self._linger_left >= 0:
                self.transport.close()

        def _arm_head_timer(self) -> None:
            self._head_timer = self.loop.call_later(head_timeout, self._head_timed_out)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return LimitedHttpProtocol


class _AnswerTransport:
    """What one answer is written to: the connection's transport, except that
    the head is written in canonical case and closing calls `close` (for a
    request cycle, `close_after_answer`)."""

    def __init__(self, transport: asyncio.Transport, close: Callable[[], None]) -> None:
        self._transport = transport
        self._close = close
        self._head_written = False

    def write(self, data: bytes) -> None:
        if not self._head_written and not data.startswith(b"HTTP/1.1 1"):  # not 100 Continue
            self._head_written = True
            data = canonical_head(data)
        self._transport.write(data)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._close()


def uvicorn_limits(max_connections: int, head_timeout: float) -> dict[str, Any]:
    """The uvicorn.Config arguments that put these limits in force."""
    return {"http": limited_protocol(connection_cap(max_connections), head_timeout)}
