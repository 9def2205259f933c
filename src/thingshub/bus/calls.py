"""Calls and messages to devices connected to other nodes of a cluster.

Rules:
- Where a device is: connected here (the node's own gateway) is always asked
  first and costs nothing more; otherwise the node the database records
  holding it (`DeviceRepo.holder`, written by the presence flush, so up to
  about a second behind), if that node is live (NodeService: its heartbeat
  within the lease) and not this one; otherwise offline.
- `Holders` keeps those answers briefly (`ttl` s for a holder, `offline_ttl`
  s for none), and learns sooner than the database from the presence events
  of the other nodes (`PresenceChanged` crosses between nodes; the bus names
  the node it came from): online there makes that node the holder, offline
  there ends only that node's holding (never another's, as presence does).
  A device's own presence changing here drops what was known, and so does
  the node named answering that it does not hold the device any more: then
  the database is asked again, and the node it names tried once.
- A synchronous operation of the command service (a call, a call sent
  without waiting, an attribute get, control values; thing-model calls and
  desired-value pushes are such calls) travels whole as one NATS request
  (`ClusterCalls.run`) and runs on the holder as its own (`here`), which
  records it and waits for the device. The reply carries the result or the
  error as raised there (class, message, protocol codes: bus/codec.py), so
  the HTTP answer is the one node's. The request waits the call's own
  timeout plus `MARGIN`, so a device's silence is the holder's 504.
- One-way messages services send to a device (`ClusterLink.send`: an image
  delta, an OTA inform, ...) go to the holder, which sends them with its
  gateway if the device is still connected there; the sender does not wait.
  `ClusterLink.is_online` is true for a device held elsewhere as `Holders`
  knows it. A device this node knows nothing of yet (it connected elsewhere
  before this node started, and was never asked about) is looked up in the
  background, and meanwhile counts as online for a link made with
  `unknown_online` (services that only guard a one-way message with it:
  the message goes, and the holder, if any, delivers it) and as offline for
  the others (the OTA rollout, which asks again on its next tick and must
  not count a device informed that is not there).
- NATS unreachable: operations on devices held elsewhere fail with
  `Unavailable` (503), devices held elsewhere count as offline for one-way
  messages (not sent); devices connected here are not affected.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from thingshub.bus import codec
from thingshub.bus.nats import NatsBus
from thingshub.core import commands as rules
from thingshub.core.errors import DeviceOffline, InvalidRequest, ThingsHubError
from thingshub.core.events import Event, PresenceChanged
from thingshub.core.messages import DeviceRef, Outbound
from thingshub.core.model import NodeInfo
from thingshub.core.ports import DeviceLink, DeviceRepo

log = logging.getLogger("thingshub.cluster")

Key = tuple[str, str]
LiveNodes = Callable[[], Awaitable[Iterable[NodeInfo]]]
Run = Callable[[rules.Forwarded], Awaitable[object]]

#: Seconds a forwarded operation may take beyond its own timeout.
MARGIN = 5.0
#: The ops of the requests between nodes (NatsBus.serve).
OP_CALL, OP_SEND = "device.call", "device.send"
#: Cached lookups at most (beyond, the cache starts again).
MAX_CACHED = 100_000


class Holders:
    """Which other node holds a device's connection (see the module's rules)."""

    def __init__(
        self,
        repo: DeviceRepo,
        bus: NatsBus,
        node_id: str,
        live: LiveNodes,
        *,
        ttl: float = 5.0,
        offline_ttl: float = 1.0,
    ) -> None:
        self.repo = repo
        self.bus = bus
        self.node_id = node_id
        self.live = live
        self.ttl = ttl
        self.offline_ttl = offline_ttl
        self._cache: dict[Key, tuple[str | None, float]] = {}
        self._live: tuple[frozenset[str], float] = (frozenset(), 0.0)
        self._looking: set[Key] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        bus.subscribe(self._on_event, [PresenceChanged])

    async def find(self, key: Key, *, fresh: bool = False) -> str | None:
        """The other live node holding the device (None: none does)."""
        now = time.monotonic()
        entry = self._cache.get(key)
        if not fresh and entry is not None and entry[0] is not None and entry[1] >= now:
            return entry[0]
        node = await self.repo.holder(*key)
        if node == self.node_id or (node is not None and node not in await self._live_nodes()):
            node = None
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[key] = (node, time.monotonic() + (self.ttl if node else self.offline_ttl))
        return node

    def known(self, key: Key) -> str | None:
        """The holder as last looked up, without waiting (a stale or missing
        answer is looked up again in the background)."""
        entry = self._cache.get(key)
        if (entry is None or entry[1] < time.monotonic()) and key not in self._looking:
            self._looking.add(key)
            self.spawn(self._look_up(key))
        return None if entry is None else entry[0]

    def has(self, key: Key) -> bool:
        """Whether anything is known of the device (fresh or not)."""
        return key in self._cache

    def forget(self, key: Key) -> None:
        self._cache.pop(key, None)

    async def _look_up(self, key: Key) -> None:
        try:
            await self.find(key, fresh=True)
        except Exception:
            log.warning("looking up the node holding %s/%s failed", *key, exc_info=True)
        finally:
            self._looking.discard(key)

    async def _live_nodes(self) -> frozenset[str]:
        nodes, until = self._live
        if until < time.monotonic():
            nodes = frozenset(n.id for n in await self.live())
            self._live = (nodes, time.monotonic() + 1.0)
        return nodes

    def _on_event(self, event: Event) -> None:
        if not isinstance(event, PresenceChanged):
            return
        key, origin = (event.product_id, event.name), self.bus.origin
        if origin is None:
            self._cache.pop(key, None)
        elif event.online:
            self._cache[key] = (origin, time.monotonic() + self.ttl)
        elif (entry := self._cache.get(key)) is not None and entry[0] == origin:
            self._cache[key] = (None, time.monotonic() + self.offline_ttl)

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class ClusterCalls:
    """`ports.RemoteCalls` over NATS, and the answering side of it on each node."""

    def __init__(self, nats: NatsBus, holders: Holders, local: DeviceLink) -> None:
        self.nats = nats
        self.holders = holders
        self.local = local
        #: Operations forwarded to other nodes, and one-way messages sent there.
        self.forwarded = 0
        self.messages = 0

    def serve(self, run: Run) -> None:
        """Answer the other nodes' operations (run by `run`, the command service's)
        and their one-way messages to devices connected here."""

        async def on_call(data: bytes) -> bytes:
            return await self._answer(data, run)

        self.nats.serve(OP_CALL, on_call)
        self.nats.serve(OP_SEND, self._deliver)

    # ------------------------------------------------------------ asking

    async def run(self, via: Key, offline: DeviceOffline, op: rules.Forwarded) -> object:
        node = await self.holders.find(via)
        timeout = MARGIN
        if op.op in (rules.CALL, rules.ATTRIBUTES_GET):
            timeout += op.seconds
        payload = codec.encode({"via": via, "op": op})
        for _attempt in range(2):
            if node is None:
                break
            self.forwarded += 1
            reply = codec.decode(await self.nats.request(node, OP_CALL, payload, timeout))
            if "moved" not in reply:
                if "error" in reply:
                    raise reply["error"]
                return reply["ok"]
            moved_from = node
            node = await self.holders.find(via, fresh=True)
            if node == moved_from:
                node = None
        raise offline

    async def send(self, node: str | None, ref: DeviceRef, message: Outbound) -> None:
        """A one-way message to a device held by `node` (None: look it up)."""
        key = (ref.product_id, ref.name)
        payload = codec.encode({"ref": ref, "message": message})
        try:
            for _attempt in range(2):
                if node is None:
                    node = await self.holders.find(key)
                    if node is None:
                        return
                self.messages += 1
                reply = codec.decode(await self.nats.request(node, OP_SEND, payload, MARGIN))
                if "moved" not in reply:
                    return
                self.holders.forget(key)
                node = None
        except ThingsHubError as exc:
            log.warning(
                "a %s for %s/%s was not delivered: %s", type(message).__name__, *key, exc.message
            )

    # ------------------------------------------------------------ answering

    async def _answer(self, data: bytes, run: Run) -> bytes:
        try:
            body = codec.decode(data)
            via, op = tuple(body["via"]), body["op"]
            if not isinstance(op, rules.Forwarded) or len(via) != 2:
                raise ValueError("not an operation")
        except (ValueError, KeyError, TypeError) as exc:
            return codec.encode({"error": InvalidRequest(f"a bad cluster request: {exc}")})
        if not self.local.is_online(*via):
            return codec.encode({"moved": True})
        try:
            return codec.encode({"ok": await run(op)})
        except ThingsHubError as exc:
            return codec.encode({"error": exc})
        except Exception:
            log.exception("an operation forwarded by another node failed")
            return codec.encode({"error": ThingsHubError("internal error")})

    async def _deliver(self, data: bytes) -> bytes:
        try:
            body = codec.decode(data)
            ref, message = body["ref"], body["message"]
            if not isinstance(ref, DeviceRef):
                raise ValueError("not a device")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignored a bad one-way message from another node: %s", exc)
            return codec.encode({"ok": False})
        if not self.local.is_online(ref.product_id, ref.name):
            return codec.encode({"moved": True})
        return codec.encode({"ok": self.local.send(ref, message)})


class ClusterLink:
    """The gateway of this node (`local`), reaching devices held by other nodes too."""

    def __init__(self, local: DeviceLink, calls: ClusterCalls, *, unknown_online: bool) -> None:
        self.local = local
        self.calls = calls
        self.holders = calls.holders
        self.unknown_online = unknown_online

    def send(self, ref: DeviceRef, message: Outbound) -> bool:
        if self.local.send(ref, message):
            return True
        if self.local.is_online(ref.product_id, ref.name) or not self.calls.nats.connected:
            return False  # here but not listening; or the other nodes are out of reach
        node = self.holders.known((ref.product_id, ref.name))
        self.holders.spawn(self.calls.send(node, ref, message))
        return True

    def is_online(self, product_id: str, name: str) -> bool:
        if self.local.is_online(product_id, name):
            return True
        if not self.calls.nats.connected:
            return False  # out of reach: the OTA rollout tries again on a later tick
        key = (product_id, name)
        if self.unknown_online and not self.holders.has(key):
            return True
        return self.holders.known(key) is not None

    def heard(self, ref: DeviceRef) -> bool:
        """As this node's gateway says for a device it holds; another node may hold it."""
        return self.local.heard(ref) or not self.local.is_online(ref.product_id, ref.name)

    def listens(self, ref: DeviceRef, filters: list[str], kind: type) -> bool:
        return self.local.listens(ref, filters, kind)
