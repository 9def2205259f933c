"""Who is online, and when each device was last heard from.

Rules:
- A device is online while it has a connection. It holds one at a time
  (the MQTT server closes the older one when it logs in again), and
  connections are ordered by their sequence number: a connection makes the
  device online and becomes its holder unless a newer one already is; only
  the holder's close makes it offline, so a late close of an older
  connection never hides a newer one. Each transition is announced as
  `PresenceChanged` and recorded.
- A sub-device has no connection of its own: it is online once data for it
  arrives through a gateway's connection (`reached`, naming the device
  holding that connection), and offline when that connection closes or it
  leaves the tree (`detach`); its activity is that data's arrival.
- Activity is reported coarsely by the gateway (about once a second per
  device at most), never per packet.
- A gateway's report reaches its sub-devices at one reading of the clock
  (`reached_all`); one already reached through that gateway only has its
  activity noted (`_heard`), folded into its state before anything reads or
  changes the state (and at the latest by the next flush): the same state,
  records and announcements as `reached` each, without a `Presence` and a
  `PresenceUpdate` per sub-device and message.
- In a cluster (`node` set), each device's row names the node holding it. A
  device that logged in on another node (`handed_over`) leaves this one
  without an announcement (it is online there): its offline is recorded
  under this node's name, which never overrides the other node's online, and
  its sub-devices, reached through that connection, go offline here. A node
  stopping cleanly releases what is still recorded under its name
  (`stop`), each device announced offline, before it leaves the cluster.
- Writes are batched: changes collect in memory and are flushed in one
  transaction every `flush_interval` seconds and at shutdown. Reads prefer
  the in-memory state, so they are never behind the truth. While the
  database is away the changes wait in memory (one per device, the newest)
  and the flush is retried; the outage is a warning as it starts and ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from thingshub.core.errors import Unavailable
from thingshub.core.events import PresenceChanged
from thingshub.core.model import Presence, PresenceUpdate
from thingshub.core.ports import Clock, DeviceRepo, EventBus
from thingshub.services.background import Retries, cancel

log = logging.getLogger("thingshub.presence")

Key = tuple[str, str]


class PresenceService:
    def __init__(
        self,
        repo: DeviceRepo,
        clock: Clock,
        bus: EventBus,
        flush_interval: float = 1.0,
        *,
        node: str | None = None,
    ) -> None:
        self.repo = repo
        #: The cluster node this process is, recorded as holding its devices.
        self.node = node
        self.clock = clock
        self.bus = bus
        self.flush_interval = flush_interval
        #: device -> sequence number of the connection holding it
        self._connections: dict[Key, int] = {}
        #: sub-device -> the connected device it was reached through, and back
        self._via: dict[Key, Key] = {}
        self._reached: dict[Key, set[Key]] = {}
        self._state: dict[Key, Presence] = {}
        self._pending: dict[Key, PresenceUpdate] = {}
        #: sub-device -> when data last arrived through the gateway it was already
        #: reached through (`reached_all`), not yet in `_state` (`_fold`)
        self._heard: dict[Key, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._own_only = False

    def connected(self, product_id: str, name: str, seq: int) -> None:
        """The device's connection number `seq` was accepted."""
        if self._heard:
            self._fold((product_id, name))
        key = (product_id, name)
        holder = self._connections.get(key)
        if holder is not None and holder > seq:
            return  # a newer connection holds it already
        self._connections[key] = seq
        if holder is None:
            self._set(key, online=True, activity=self.clock.now_ms(), transition=True)

    def disconnected(self, product_id: str, name: str, seq: int) -> None:
        """The device's connection number `seq` closed."""
        if self._heard:
            self._fold()
        key = (product_id, name)
        if self._connections.get(key) != seq:
            return  # not the holder: a newer connection holds the device, or none
        del self._connections[key]
        self._set(key, online=False, activity=None, transition=True)
        self._drop_reached(key)

    def handed_over(self, product_id: str, name: str, seq: int) -> None:
        """The device's connection number `seq` was closed because the device
        logged in on another node: it is not offline, only not held here."""
        if self._heard:
            self._fold()
        key = (product_id, name)
        if self._connections.get(key) != seq:
            return
        del self._connections[key]
        old = self._state.pop(key, None)
        last = old.last_activity if old is not None else None
        self._pending[key] = PresenceUpdate(
            product_id, name, False, last, self.clock.now_ms(), self.node
        )
        self._drop_reached(key)

    def _drop_reached(self, key: Key) -> None:
        """The sub-devices reached through `key`'s connection go offline with it."""
        for sub in sorted(self._reached.pop(key, ())):
            del self._via[sub]
            if sub not in self._connections:
                self._set(sub, online=False, activity=None, transition=True)

    def reached(self, product_id: str, name: str, via: Key) -> None:
        """Data for the sub-device arrived through the connection of `via`."""
        if self._heard:
            self._fold((product_id, name))
        key = (product_id, name)
        if via not in self._connections or key == via:
            return
        self._reach(key, via, None)

    def _reach(self, key: Key, via: Key, now: int | None) -> None:
        """`key` reached through `via`'s connection (connected, not `key`), heard
        `now` (None: read the clock)."""
        previous = self._via.get(key)
        if previous != via:
            if previous is not None:
                self._reached[previous].discard(key)
            self._via[key] = via
            self._reached.setdefault(via, set()).add(key)
        online = previous is not None or key in self._connections
        self._set(key, online=True, activity=now, transition=not online, heard=now is None)

    def reached_all(self, keys: Iterable[Key], via: Key) -> None:
        """`reached` for each of the sub-devices of one report through `via`'s
        connection, heard at one reading of the clock (the module's rules)."""
        if via not in self._connections:
            return
        now = self.clock.now_ms()
        through, heard = self._via, self._heard
        for key in keys:
            if through.get(key) == via:  # reached through it already: activity only
                if heard.get(key, now) <= now:
                    heard[key] = now
            elif key != via:
                self._reach(key, via, now)

    def _fold(self, key: Key | None = None) -> None:
        """The activity noted by `reached_all` into the state (and its record): of
        `key` (what reads or changes one device's state), or of every device."""
        if key is not None:
            when = self._heard.pop(key, None)
            if when is not None:
                self._set(key, online=True, activity=when, transition=False)
            return
        heard, self._heard = self._heard, {}
        for each, when in heard.items():
            self._set(each, online=True, activity=when, transition=False)

    def detach(self, product_id: str, name: str) -> None:
        """The sub-device left its gateway's tree: offline unless it is connected itself."""
        if self._heard:
            self._fold((product_id, name))
        key = (product_id, name)
        via = self._via.pop(key, None)
        if via is None:
            return
        self._reached[via].discard(key)
        if key not in self._connections:
            self._set(key, online=False, activity=None, transition=True)

    def touch(self, product_id: str, name: str, when_ms: int) -> None:
        if self._heard:
            self._fold((product_id, name))
        key = (product_id, name)
        if key in self._connections:
            self._set(key, online=True, activity=when_ms, transition=False)

    def forget(self, product_id: str, name: str) -> None:
        """The device was deleted: drop its state without recording anything."""
        if self._heard:
            self._fold()
        key = (product_id, name)
        self._connections.pop(key, None)
        self._state.pop(key, None)
        self._pending.pop(key, None)
        via = self._via.pop(key, None)
        if via is not None:
            self._reached[via].discard(key)
        self._drop_reached(key)

    def is_online(self, product_id: str, name: str) -> bool:
        key = (product_id, name)
        return key in self._connections or key in self._via

    def is_connected(self, product_id: str, name: str) -> bool:
        """Whether the device holds a connection of its own (a sub-device never does)."""
        return (product_id, name) in self._connections

    def online_count(self, product_id: str | None = None) -> int:
        """Devices connected to this process now (of one product, or of all)."""
        if product_id is None:
            return len(self._connections)
        return sum(1 for pid, _ in self._connections if pid == product_id)

    def _set(
        self,
        key: Key,
        *,
        online: bool,
        activity: int | None,
        transition: bool,
        heard: bool = False,
    ) -> None:
        """`heard`: the activity is now (one clock reading for both)."""
        now = self.clock.now_ms()
        if heard:
            activity = now
        old = self._state.get(key)
        last = activity if activity is not None else (old.last_activity if old else None)
        if old is not None and old.last_activity is not None and last is not None:
            last = max(last, old.last_activity)
        changed_at = now if transition else (old.changed_at if old else now)
        if (
            old is not None
            and old.online == online
            and old.last_activity == last
            and old.changed_at == changed_at
        ):
            return  # nothing new (compared before a Presence is made)
        self._state[key] = Presence(online, last, changed_at)
        self._pending[key] = PresenceUpdate(
            key[0], key[1], online, last, changed_at or now, self.node
        )
        if transition:
            self.bus.publish(PresenceChanged(key[0], key[1], online, now))

    async def get(self, product_id: str, name: str) -> Presence:
        if self._heard:
            self._fold((product_id, name))
        key = (product_id, name)
        state = self._state.get(key)
        if state is not None:
            return state
        stored = await self.repo.presence(product_id, name)
        return stored if stored is not None else Presence(False)

    async def get_many(self, keys: list[Key]) -> dict[Key, Presence]:
        if self._heard:
            for key in keys:
                self._fold(key)
        missing = [k for k in keys if k not in self._state]
        stored = await self.repo.presence_many(missing) if missing else {}
        return {k: self._state.get(k) or stored.get(k) or Presence(False) for k in keys}

    async def flush(self) -> None:
        if self._heard:
            self._fold()
        if not self._pending:
            return
        batch = list(self._pending.values())
        self._pending.clear()
        try:
            await self.repo.set_presence(batch)
        except Exception:
            # Keep what failed, unless a newer change for the device arrived meanwhile.
            for update in batch:
                self._pending.setdefault((update.product_id, update.name), update)
            raise
        # Offline devices need no memory once recorded.
        for update in batch:
            key = (update.product_id, update.name)
            if not update.online and not self.is_online(*key) and key not in self._pending:
                self._state.pop(key, None)

    async def start(self, *, own_only: bool = False) -> None:
        """Devices recorded online by the last run are offline now: every one (a
        single process), or with `own_only` (a node of a cluster) only those this
        node held, each announced, so the other nodes' devices stay as they are."""
        self._own_only = own_only and self.node is not None
        if self._own_only:
            await self.release()
        else:
            await self.repo.mark_all_offline(self.clock.now_ms())
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def release(self, node: str | None = None) -> list[Key]:
        """Record offline every device held by `node` (this one by default: its
        leftovers), each announced; the devices released."""
        now = self.clock.now_ms()
        node = node or self.node
        assert node is not None, "a node of a cluster"
        released = await self.repo.release_node(node, now)
        for product_id, name in released:
            self.bus.publish(PresenceChanged(product_id, name, False, now))
        return released

    async def _run(self) -> None:
        retries = Retries(log, "recording presence")
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self.flush()
            except Exception as exc:
                retries.failed(exc)
            else:
                retries.succeeded()

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
        try:
            await self.flush()
        except Unavailable as exc:
            # Stopping goes on (the next start records every device offline anyway).
            log.warning("presence not recorded at stop: %s", exc.message)
        if self._own_only:  # nothing stays recorded under a node leaving the cluster
            await self.release()
