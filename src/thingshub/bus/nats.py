"""The event bus and the messages between the nodes of a cluster, over NATS.

Rules:
- Every subject starts with `th.<cluster id>.` (the id is kept in the
  database), so clusters and test runs can share one NATS server:
  `out` carries a node's events and broadcasts to every other node (framed,
  bus/frames.py), `node.<node>.<op>` requests to one node, `wants` which
  events a node wants.
  A node id's dots become `~` in a subject (a dot separates tokens).
- Events are dispatched in this process first (`LocalBus`, synchronously),
  then relayed to the other nodes, but only events of kinds some other node
  listens for: each node announces the kinds it wants when they change and
  every `ANNOUNCE_S` seconds, and an announcement is forgotten after three of
  those. Most telemetry therefore never leaves its node unless a live stream
  elsewhere asks for it. A node heard of for the first time (or again after
  forgetting it) is answered at once, so a node joining learns what the
  others want without waiting. The connection is made with `no_echo`, so a node
  never hears its own events or broadcasts.
- Relaying never blocks the publisher: events and broadcasts queue and one
  task sends them, in the order they were made, in one message (bus/frames.py)
  per flush. A flush follows the previous one by at least `FLUSH_GAP_S`, so
  that a storm of them (a login and its presence per connect) travels in a
  few messages, each one write here and one message to handle on every other
  node, not two per connect; an event waits at most that long. While NATS
  is unreachable they are dropped (counted in `dropped`, as `relayed` counts
  those sent): the live stream is best effort, durable data is in the
  database. Broadcasts are heard in the order they were sent.
- `request` fails at once with `Unavailable` (HTTP 503) while NATS is
  unreachable or no node answers on the subject, and after `timeout`.
  Handlers given to `serve` run each request in a task of its own, so a call
  waiting on a slow device never holds up the next.
- nats-py reconnects by itself, forever; subscriptions survive reconnects.
- While an event of another node is dispatched, `origin` names that node
  (handlers run synchronously), for those who must know where it happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import nats
import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg

from thingshub.bus import frames, wire
from thingshub.bus.local import Handler, LocalBus
from thingshub.core.errors import Unavailable
from thingshub.core.events import Event

log = logging.getLogger("thingshub.bus")

#: How often a node says which events it wants (and the others forget it after 3).
ANNOUNCE_S = 2.0

#: Pauses before asking again a subject nobody answers (see `_request`).
NO_RESPONDERS_RETRY = (0.02, 0.1)

#: The least time between two flushes of the relay queue (see the module's rules).
FLUSH_GAP_S = 0.005

#: How long a node waits at start for NATS to answer.
CONNECT_TIMEOUT = 5.0

RequestHandler = Callable[[bytes], Awaitable[bytes]]
BroadcastHandler = Callable[[bytes], None]


def node_token(node_id: str) -> str:
    """A node id as one subject token."""
    return node_id.replace(".", "~")


class NatsBus:
    def __init__(self, url: str, cluster_id: str, node_id: str) -> None:
        self.url = url
        self.node_id = node_id
        self.prefix = f"th.{cluster_id}"
        self.local = LocalBus()
        self.nc: Client | None = None
        #: Events and broadcasts sent to NATS, and those dropped while it was unreachable.
        self.relayed = 0
        self.dropped = 0
        self._queue: list[frames.Frame] = []
        self._flushing = False
        self._flushed_at = 0.0  # loop time of the last flush
        self._remote: dict[str, tuple[frozenset[str], float]] = {}
        self._served: dict[str, RequestHandler] = {}
        self._broadcasts: dict[str, list[BroadcastHandler]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._announcer: asyncio.Task[None] | None = None
        self._announced: frozenset[str] | None = None
        self._closing = False
        #: While an event of another node is dispatched here: that node's id.
        self.origin: str | None = None

    # ------------------------------------------------------------ life

    async def start(self) -> None:
        """Connect (raising `Unavailable` if NATS cannot be reached) and subscribe."""
        nc = Client()
        try:
            # nats-py retries the first connection as long as any reconnect
            # (forever here): a server absent at start is waited for only so long.
            await asyncio.wait_for(
                nc.connect(
                    self.url,
                    name=f"thingshub {self.node_id}",
                    no_echo=True,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    connect_timeout=5,
                    error_cb=self._error,
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                ),
                CONNECT_TIMEOUT,
            )
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            await nc.close()
            raise Unavailable(f"cannot reach NATS at {self.url}: {exc or 'no answer'}") from exc
        self.nc = nc
        await self.nc.subscribe(f"{self.prefix}.out", cb=self._on_out)
        await self.nc.subscribe(f"{self.prefix}.wants", cb=self._on_wants)
        for op in self._served:
            await self._subscribe_op(op)
        # The server has every subscription once this returns: a request from
        # another node right after start finds its responder.
        await self.nc.flush()
        self._announcer = asyncio.get_running_loop().create_task(self._announce_loop())

    async def stop(self) -> None:
        self._closing = True
        if self._announcer is not None:
            self._announcer.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self.nc is not None:
            try:
                if self.nc.is_connected:
                    await self._flush()
                    await asyncio.wait_for(self.nc.drain(), 5)
            except Exception:  # leaving anyway
                log.debug("draining the NATS connection", exc_info=True)
            # Closing ends nats-py's own tasks (reconnecting, flushing), also when
            # NATS is away and draining was impossible.
            with contextlib.suppress(Exception):
                await self.nc.close()
            self.nc = None

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def _error(self, exc: Exception) -> None:
        log.debug("NATS: %s", exc)

    async def _disconnected(self) -> None:
        if self._closing:
            return
        log.warning("lost the connection to NATS at %s; reconnecting", self.url)

    async def _reconnected(self) -> None:
        log.warning("connected to NATS at %s again", self.url)
        self._announced = None  # say again what this node wants

    # ------------------------------------------------------------ events

    def publish(self, event: Event) -> None:
        self.local.publish(event)
        if not self._relayed(event.kind):
            return
        try:
            data = wire.encode(event, self.node_id)
        except TypeError:
            log.exception("event %s cannot be relayed", event.kind)
            return
        self._queue.append((frames.EVENT, event.kind, data))
        self._kick()

    def subscribe(self, handler: Handler, kinds: Iterable[type]) -> Callable[[], None]:
        unsubscribe = self.local.subscribe(handler, kinds)
        self._kick_announce()

        def undo() -> None:
            unsubscribe()
            self._kick_announce()

        return undo

    def wants(self, kind: type) -> bool:
        return self.local.wants(kind) or self._relayed(getattr(kind, "kind", ""))

    def handler_count(self) -> int:
        return self.local.handler_count()

    def _relayed(self, kind: str) -> bool:
        now = time.monotonic()
        return any(kind in kinds and now < until for kinds, until in self._remote.values())

    async def _on_out(self, msg: Msg) -> None:
        """Another node's events and broadcasts, in the order it made them."""
        try:
            for kind, name, payload in frames.unpack(msg.data):
                if kind == frames.EVENT:
                    self._on_event(payload)
                else:
                    self._on_broadcast(name, payload)
        except ValueError as exc:
            log.warning("ignored the rest of a message on %s: %s", msg.subject, exc)

    def _on_event(self, data: bytes) -> None:
        try:
            event, node = wire.decode(data)
        except ValueError:
            log.warning("ignored an event from another node that is not one: %r", data[:100])
            return
        self.origin = node
        try:
            self.local.publish(event)
        finally:
            self.origin = None

    # ------------------------------------------------------------ interest

    def _wanted(self) -> frozenset[str]:
        return frozenset(kind for kind, name in wire.KINDS.items() if self.local.wants(name))

    def _kick_announce(self) -> None:
        if self.nc is not None and self._wanted() != self._announced:
            self._spawn(self._announce())

    async def _announce(self) -> None:
        wanted = self._wanted()
        self._announced = wanted
        if self.connected:
            assert self.nc is not None
            body = orjson.dumps({"node": self.node_id, "kinds": sorted(wanted)})
            await self.nc.publish(f"{self.prefix}.wants", body)

    async def _announce_loop(self) -> None:
        while True:
            try:
                await self._announce()
            except Exception:
                log.debug("announcing wanted events failed", exc_info=True)
            await asyncio.sleep(ANNOUNCE_S)

    async def _on_wants(self, msg: Msg) -> None:
        try:
            body = orjson.loads(msg.data)
            node, kinds = str(body["node"]), frozenset(str(k) for k in body["kinds"])
        except (ValueError, KeyError, TypeError):
            return
        now = time.monotonic()
        known = self._remote.get(node)
        if known is None or known[1] < now:  # joining: tell it at once what this one wants
            self._announced = None
            self._kick_announce()
        self._remote[node] = (kinds, now + 3 * ANNOUNCE_S)

    # ------------------------------------------------------------ requests

    def serve(self, op: str, handler: RequestHandler) -> None:
        """Answer requests to this node for `op` (before or after `start`)."""
        self._served[op] = handler
        if self.nc is not None:
            self._spawn(self._subscribe_op(op))

    async def _subscribe_op(self, op: str) -> None:
        assert self.nc is not None
        handler = self._served[op]

        async def on_request(msg: Msg) -> None:
            self._spawn(self._answer(handler, msg))

        await self.nc.subscribe(
            f"{self.prefix}.node.{node_token(self.node_id)}.{op}", cb=on_request
        )

    async def _answer(self, handler: RequestHandler, msg: Msg) -> None:
        try:
            reply = await handler(msg.data)
        except Exception:
            log.exception("a cluster request on %s failed", msg.subject)
            return
        if msg.reply and self.connected:
            await msg.respond(reply)

    async def request(self, node_id: str, op: str, payload: bytes, timeout: float) -> bytes:
        """Ask node `node_id`; its answer, or `Unavailable`."""
        if not self.connected:
            raise Unavailable(
                "the cluster's message service (NATS) is unreachable: devices connected"
                " to other nodes cannot be reached now"
            )
        assert self.nc is not None
        subject = f"{self.prefix}.node.{node_token(node_id)}.{op}"
        try:
            msg = await self._request(subject, payload, timeout)
        except nats.errors.NoRespondersError:
            raise Unavailable(f"node {node_id!r} of the cluster does not answer") from None
        except (nats.errors.TimeoutError, TimeoutError):
            raise Unavailable(
                f"node {node_id!r} of the cluster did not answer within {timeout:g} s"
            ) from None
        except nats.errors.Error as exc:
            raise Unavailable(f"the cluster's message service failed: {exc}") from exc
        return bytes(msg.data)

    async def _request(self, subject: str, payload: bytes, timeout: float) -> Msg:
        """A request, asked again after `NO_RESPONDERS_RETRY` while nobody answers:
        the server says so at once, and a node that has just started or
        reconnected may be a moment from being heard (seen on a node that
        had just flushed its subscriptions)."""
        assert self.nc is not None
        for wait in NO_RESPONDERS_RETRY:
            try:
                return await self.nc.request(subject, payload, timeout=timeout)
            except nats.errors.NoRespondersError:
                await asyncio.sleep(wait)
        return await self.nc.request(subject, payload, timeout=timeout)

    # ------------------------------------------------------------ broadcasts

    def broadcast(self, topic: str, payload: bytes) -> None:
        """Tell every other node (best effort, like events)."""
        self._queue.append((frames.BROADCAST, topic, payload))
        self._kick()

    def on_broadcast(self, topic: str, handler: BroadcastHandler) -> None:
        self._broadcasts.setdefault(topic, []).append(handler)

    def _on_broadcast(self, topic: str, data: bytes) -> None:
        for handler in self._broadcasts.get(topic, ()):
            try:
                handler(data)
            except Exception:
                log.exception("a handler of cluster broadcast %s failed", topic)

    # ------------------------------------------------------------ the relay queue

    def _kick(self) -> None:
        if not self._flushing:
            self._flushing = True
            self._spawn(self._flush())

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                wait = self._flushed_at + FLUSH_GAP_S - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._flushed_at = loop.time()
                queue, self._queue = self._queue, []
                if not self.connected:
                    self.dropped += len(queue)
                    continue
                assert self.nc is not None
                for message in frames.pack(queue, self.nc.max_payload):
                    await self.nc.publish(f"{self.prefix}.out", message)
                self.relayed += len(queue)
        except Exception:
            log.warning("relaying to the cluster failed", exc_info=True)
        finally:
            self._flushing = False

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
