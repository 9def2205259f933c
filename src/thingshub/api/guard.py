"""What every HTTP request passes before the application sees it (pure ASGI).

Rules (docs/operations.md, "Limits against hostile input"):
- Under `/api/` the API key is checked first, before one byte of the body is
  read: a missing, wrong or revoked key is 401 whatever the body. The key's
  `Principal` (its role and products, services/keys.py) goes in the ASGI
  scope for the route to check its role against (roles.py). (The live stream is
  a WebSocket: it checks the key at its handshake. The console, the OTA
  download, `/healthz`, `/metrics` and the docs need no key.)
- A response that starts before the request's body was read to its end
  carries `Connection: close` and ends the connection: otherwise the server
  would go on reading (and dropping) the rest of a body nobody wants, for as
  long as the client cares to send it.
- A body under `/api` is at most `max_body` bytes (1 MiB): 413 as soon as a
  declared Content-Length or the bytes received pass it, whether or not the
  body is chunked. A route that streams a larger body (the firmware upload)
  raises its own request's limit with `allow_body` before reading.
- A body that stalls (no piece of it for `body_timeout` seconds, the HTTP
  head timeout) is 408 and the connection closes: a client trickling a body,
  or stopping half-way, holds a connection no longer than one sending its
  head slowly.
- An exception no handler took is a 500 JSON answer and the connection stays
  open (errors.py); one raised after the answer started ends the connection.
- Every request is counted and timed (metrics.py), the 401s and 500s of this
  layer included.
- All of this is one ASGI layer with one `send` wrapper: each layer costs
  every request a call and a closure, and they were a tenth of a command's
  server time as three.
"""

from __future__ import annotations

import asyncio
import time

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from thingshub.api.errors import answer_unexpected
from thingshub.api.roles import PRINCIPAL
from thingshub.api.security import UNAUTHORIZED, presented_key
from thingshub.api.served import served
from thingshub.core.jsontext import dumps

API_PREFIX = "/api/"
#: The largest request body under /api, unless a route allows more (1 MiB).
MAX_BODY = 1024 * 1024
_LIMIT = "thingshub.max_body"


def _too_large(limit: int) -> HTTPException:
    """What `receive` raises past the limit, ending whatever reads the body: the
    framework's HTTPException, which FastAPI's body parsing lets through as it
    is (it would turn one of ours into a 400)."""
    return HTTPException(413, f"the request body is larger than the limit of {limit} bytes")


class _Body:
    """A request's body as the guard follows it: the limit, and whether some is unread."""

    __slots__ = ("limit", "pending")

    def __init__(self, limit: int, pending: bool) -> None:
        self.limit = limit
        self.pending = pending


def allow_body(scope: Scope, size: int) -> None:
    """Let this request's body be up to `size` bytes (call before reading it)."""
    body = scope.get(_LIMIT)
    if isinstance(body, _Body):
        body.limit = size


def _declared_length(headers: Headers) -> int:
    length = headers.get("content-length", "")
    return int(length) if length.isdigit() else 0


def _announces_body(headers: Headers) -> bool:
    length = headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in headers


class RequestGuard:
    """Metrics, the key first under /api, no draining of unread bodies, a 500
    for the unexpected: the rules at the top, in one layer."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        platform = served(scope)  # its keys, metrics and body timeout (served.py)
        headers = Headers(scope=scope)
        path: str = scope["path"]
        api = path.startswith(API_PREFIX) or path == "/api"
        body = _Body(self.max_body if api else -1, _announces_body(headers))
        status = 0  # until the answer starts

        async def send_tracked(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if body.pending:
                    message = _closing(message)
            await send(message)

        try:
            if api:
                # The key's Principal, or None: in memory, no I/O (services/keys.py).
                caller = platform.ctx.keys.authenticate(presented_key(headers.get("authorization")))
                if caller is None:
                    await _unauthorized(send_tracked)
                    return
                scope[PRINCIPAL] = caller
            if body.pending:
                scope[_LIMIT] = body
                timeout = platform.ctx.body_timeout
                counted = _counting(receive, body, _declared_length(headers), timeout)
                await self.app(scope, counted, send_tracked)
            else:
                await self.app(scope, receive, send_tracked)
        except Exception as exc:
            if status:
                raise  # half an answer is out: only closing the connection ends it
            await answer_unexpected(scope, receive, send_tracked, exc)
        finally:
            platform.metrics.observe(scope, status or 500, time.perf_counter() - started)


def _closing(start: Message) -> Message:
    """The answer's start with `Connection: close` (and no other `Connection`)."""
    kept = [h for h in start.get("headers", []) if h[0].lower() != b"connection"]
    return {**start, "headers": [*kept, (b"connection", b"close")]}


def _counting(receive: Receive, body: _Body, declared: int, timeout: float) -> Receive:
    """`receive`, counting the body against its limit, noting when it was all
    read, and giving up on a piece that does not come within `timeout`."""
    received = 0

    async def receive_counted() -> Message:
        nonlocal received
        if body.limit >= 0 and declared > body.limit:
            raise _too_large(body.limit)
        try:
            message = await asyncio.wait_for(receive(), timeout)
        except TimeoutError:
            raise HTTPException(
                408, f"the request body stalled: nothing of it came for {timeout:g} s"
            ) from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            body.pending = False
        if message["type"] == "http.request" and body.limit >= 0:
            received += len(message.get("body", b""))
            if received > body.limit:
                raise _too_large(body.limit)
        return message

    return receive_counted


async def _unauthorized(send: Send) -> None:
    """401 before the body is read (send adds `Connection: close` if one is coming)."""
    content = dumps({"error": UNAUTHORIZED})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
        (b"www-authenticate", b"Bearer"),
    ]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": content})
