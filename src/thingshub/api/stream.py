"""The live stream: `GET /api/v1/stream` (WebSocket), what happens as it happens.

Rules (the README's HTTP API):
- The API key comes as `Authorization: Bearer <key>` or `?key=`; a missing,
  wrong or revoked key is refused at the handshake with HTTP 401 (a JSON
  body), never after accepting. Every role may watch; a key limited to
  products gets only their messages (asking for another product is a
  stream of nothing, as for a product that does not exist). Revoking a key
  closes its streams at once (close code 1008).
- Filters: `product`, `device` (a device name), `kinds` (comma list of
  telemetry, attributes, event, presence, image, command, ota, desired); unknown
  kinds are a 400 at the handshake.
- Each message is `{"kind", "product_id", "device", "ts", "data"}`; telemetry
  is one message per reported time, events one message per event.
- A client that reads too slowly loses messages, never the server's memory:
  each client has a bounded queue; when it overflows, the oldest messages
  are dropped and the client gets `{"kind": "dropped", "count": N}` before
  the next message it receives.
- A client that stops reading is disconnected (close code 1008), so that it
  holds neither memory nor a file descriptor (docs/operations.md, "Limits
  against hostile input"): when its unsent backlog passes `max_backlog`
  bytes (1 MiB; messages are counted by their encoded size, so 64 KB
  telemetry counts as such), or when a message has waited `stall_timeout`
  seconds (30) for the connection to take it. The close never waits on the
  peer (websocket.py aborts a connection that does not read).
- Each message is encoded once, whatever the number of clients.
- The hub listens to the bus only while at least one client is connected, so
  with nobody watching the platform builds no stream events at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect

from thingshub.api.security import presented_key
from thingshub.api.served import served
from thingshub.api.streamhub import KINDS, REVOKED, TOO_SLOW, Client

log = logging.getLogger("thingshub.stream")

router = APIRouter(tags=["stream"])


@router.websocket("/api/v1/stream")
async def stream(
    websocket: WebSocket,
    product: str | None = None,
    device: str | None = None,
    kinds: str | None = None,
    key: str | None = None,
) -> None:
    """Live events as JSON messages (see the module's rules)."""
    platform = served(websocket.scope)
    caller = platform.ctx.keys.authenticate(
        presented_key(websocket.headers.get("authorization"), key)
    )
    if caller is None:
        await websocket.send_denial_response(
            JSONResponse(
                {"error": "a valid API key is required (Authorization: Bearer <key> or ?key=)"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        )
        return
    wanted = set(KINDS) if not kinds else {k.strip() for k in kinds.split(",") if k.strip()}
    unknown = wanted - KINDS
    if unknown or not wanted:
        await websocket.send_denial_response(
            JSONResponse(
                {
                    "error": f"unknown kinds: {', '.join(sorted(unknown)) or '(none given)'}; "
                    f"known: {', '.join(sorted(KINDS))}"
                },
                status_code=400,
            )
        )
        return
    hub = platform.stream
    client = Client(product, device, wanted, hub.limits.max_backlog, caller.products, caller.key_id)
    await websocket.accept()
    hub.join(client)
    reader = asyncio.get_running_loop().create_task(_drain(websocket))
    try:
        reason = await _pump(websocket, client, reader, hub.limits.stall_timeout)
        if client.revoked:
            await websocket.close(REVOKED, "the API key was revoked")
        elif reason is not None:
            hub.too_slow[reason] += 1
            log.info("stream client %s dropped: it does not read (%s)", websocket.client, reason)
            await websocket.close(TOO_SLOW, "the client does not read its messages")
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the client went away
    finally:
        hub.leave(client)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader


async def _pump(
    websocket: WebSocket, client: Client, reader: asyncio.Task[None], stall_timeout: float
) -> str | None:
    """Send the client's messages until it goes away (None) or must be dropped
    for not reading ("backlog" or "stalled")."""
    loop = asyncio.get_running_loop()
    while not reader.done():
        waiter = loop.create_task(client.wake.wait())
        done, _ = await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            return None
        client.wake.clear()
        if client.revoked:
            return None
        while client.queue or client.overflowed:
            if client.overflowed:
                return "backlog"
            if client.dropped:
                text = orjson.dumps({"kind": "dropped", "count": client.dropped}).decode()
                client.dropped = 0
            else:
                text = client.take()
            try:
                # While this waits, `put` ends it early once the backlog overflows.
                async with asyncio.timeout(stall_timeout) as client.sending:
                    await websocket.send_text(text)
            except TimeoutError:
                return "backlog" if client.overflowed else "stalled"
            finally:
                client.sending = None
    return None


async def _drain(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, to notice when it goes away."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            await websocket.receive_text()
