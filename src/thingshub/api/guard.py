"""What every HTTP request passes before the application sees it (pure ASGI).

Rules (docs/operations.md, "Limits against hostile input"):
- Under `/api/` the API key is checked first, before one byte of the body is
  read: a missing or wrong key is 401 whatever the body. (The live stream is
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
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from thingshub.api.security import UNAUTHORIZED, key_matches, presented_key
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


class _Limit:
    __slots__ = ("bytes",)

    def __init__(self, size: int) -> None:
        self.bytes = size


def allow_body(scope: Scope, size: int) -> None:
    """Let this request's body be up to `size` bytes (call before reading it)."""
    limit = scope.get(_LIMIT)
    if isinstance(limit, _Limit):
        limit.bytes = size


def _declared_length(headers: Headers) -> int:
    length = headers.get("content-length", "")
    return int(length) if length.isdigit() else 0


def _announces_body(headers: Headers) -> bool:
    length = headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in headers


class RequestGuard:
    """Key first under /api, and no draining of unread bodies."""

    def __init__(self, app: ASGIApp, api_key: str, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        body_pending = _announces_body(headers)
        path: str = scope["path"]
        api = path.startswith(API_PREFIX) or path == "/api"
        if api and not key_matches(self.api_key, presented_key(headers.get("authorization"))):
            await _unauthorized(send, close=body_pending)
            return
        if not body_pending:
            await self.app(scope, receive, send)
            return
        limit = _Limit(self.max_body if api else -1)
        scope[_LIMIT] = limit
        declared = _declared_length(headers)
        received = 0

        async def receive_tracked() -> Message:
            nonlocal body_pending, received
            if limit.bytes >= 0 and declared > limit.bytes:
                raise _too_large(limit.bytes)
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_pending = False
            if message["type"] == "http.request" and limit.bytes >= 0:
                received += len(message.get("body", b""))
                if received > limit.bytes:
                    raise _too_large(limit.bytes)
            return message

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and body_pending:
                message = {
                    **message,
                    "headers": [
                        *(h for h in message.get("headers", []) if h[0].lower() != b"connection"),
                        (b"connection", b"close"),
                    ],
                }
            await send(message)

        await self.app(scope, receive_tracked, send_closing)


async def _unauthorized(send: Send, *, close: bool) -> None:
    body = dumps({"error": UNAUTHORIZED})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", b"Bearer"),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})
