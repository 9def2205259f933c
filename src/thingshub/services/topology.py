"""Gateways and their sub-devices: binding, listing, and what gateways say about their tree.

Rules (the tree's own rules are core/topology.py's):
- The API binds a device to a gateway, moves it, or unbinds it; a gateway
  registers new sub-devices by address (`devices/register`). Every change
  holds DeviceService.tree_lock, is judged against what is stored, and is
  announced as `TopologyChanged` (the live stream's `topology`).
- A device moved or unbound is no longer reached through its old gateway:
  it goes offline unless connected itself (on whichever node of a cluster
  holds that gateway: the change's event reaches every node).
- Addresses are resolved level by level among a node's children; the
  children of a gateway are cached by address (at most `cache_size`
  gateways) and forgotten at any change of the tree or any deletion. A
  message's paths are resolved in one call (`resolve_all`), awaiting only
  to fetch children not cached.
- A gateway may bind a device itself (OneNET's `sub/topo/add`, its
  credentials proven first) unless another gateway has it (Conflict), and
  unbind its own child (`sub/topo/delete`); binding a child again and
  unbinding a device without a gateway change nothing. Such changes are
  marked `by_gateway`: the gateway is not told of them again.
- Registration: each new address becomes a child, named
  `{gateway name}-{address}` (`:` as `_`), in the product its entry names
  if that exists, else in the gateway's. An address that is a child already
  is `exists`; a name that is taken or invalid, or a rule of the tree
  broken, is INVALID_PARAM. Entries are judged one by one. A gateway whose
  product sets `gateway_auto_register` false is refused whole (status
  "fail", nothing created), as an unreadable request is.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace

from thingshub.core import cursors, names, topology
from thingshub.core.errors import AlreadyExists, Conflict, InvalidRequest, NotFound
from thingshub.core.events import DeviceDeleted, Event, TopologyChanged
from thingshub.core.messages import (
    DeviceRef,
    RegisterResult,
    SubRegisterReply,
    SubRegisterRequest,
)
from thingshub.core.model import Device, Page
from thingshub.core.ports import Clock, DeviceLink, EventBus
from thingshub.services.devices import DeviceService
from thingshub.services.presence import PresenceService
from thingshub.services.products import check_limit

Key = tuple[str, str]

EXISTS = "exists"
INVALID_PARAM = "INVALID_PARAM"


class TopologyService:
    def __init__(
        self,
        devices: DeviceService,
        presence: PresenceService,
        link: DeviceLink,
        clock: Clock,
        bus: EventBus,
        cache_size: int = 10_000,
    ) -> None:
        self.devices = devices
        self.storage = devices.storage
        self.presence = presence
        self.link = link
        self.clock = clock
        self.bus = bus
        self.cache_size = cache_size
        #: gateway -> its children's keys by address
        self._children: OrderedDict[Key, dict[str, Key]] = OrderedDict()
        #: gateway -> the fetch of its children under way (`_fetch`)
        self._fetching: dict[Key, asyncio.Task[dict[str, Key]]] = {}
        #: counts the cache's invalidations: a fetch that saw one keeps its result out
        self._changes = 0
        bus.subscribe(self._on_event, [TopologyChanged, DeviceDeleted])

    # ------------------------------------------------------------ the API

    async def bind(
        self, product_id: str, name: str, gateway: Key, sub_address: object = None
    ) -> Device:
        """Make the device a child of `gateway` (moving it from another one)."""
        address = None if sub_address is None else topology.check_address(sub_address)
        async with self.devices.tree_lock:
            device = await self.devices.get_device(product_id, name)
            height = await self._height((product_id, name))
            await self.devices.check_child((product_id, name), gateway, height, device)
            return await self._move(device, gateway, address)

    async def unbind(self, product_id: str, name: str) -> None:
        """The device no longer has a gateway (nothing to do if it had none)."""
        async with self.devices.tree_lock:
            device = await self.devices.get_device(product_id, name)
            if device.gateway is not None:
                await self._move(device, None, None)

    async def sub_devices(
        self, product_id: str, name: str, limit: int = 100, cursor: str | None = None
    ) -> Page[Device]:
        check_limit(limit)
        await self.devices.get_device(product_id, name)
        after = cursors.after_pair(cursor)
        items = await self.storage.devices.children(product_id, name, limit + 1, after)
        more = len(items) > limit
        items = items[:limit]
        last = items[-1] if items else None
        return Page(items, cursors.pair(last.product_id, last.name) if more and last else None)

    async def adopt(self, gateway: Key, key: Key) -> None:
        """The gateway binds the device itself (see the module's rules)."""
        async with self.devices.tree_lock:
            device = await self.devices.get_device(*key)
            if device.gateway == gateway:
                return
            if device.gateway is not None:
                raise Conflict(f"{key[0]}/{key[1]} is a sub-device of another gateway")
            height = await self._height(key)
            await self.devices.check_child(key, gateway, height, device)
            await self._move(device, gateway, None, by_gateway=True)

    async def release(self, gateway: Key, key: Key) -> None:
        """The gateway unbinds its own child (see the module's rules)."""
        async with self.devices.tree_lock:
            device = await self.devices.get_device(*key)
            if device.gateway is None:
                return
            if device.gateway != gateway:
                raise Conflict(f"{key[0]}/{key[1]} is a sub-device of another gateway")
            await self._move(device, None, None, by_gateway=True)

    async def below(self, device: Device, top: Key) -> bool:
        """Whether `device` is in the tree under `top` (at any level)."""
        if device.gateway is None:
            return False
        return any(link.key == top for link in (await self.devices.chain(device))[1:])

    async def _move(
        self,
        device: Device,
        gateway: Key | None,
        address: str | None,
        *,
        by_gateway: bool = False,
    ) -> Device:
        if not await self.storage.devices.set_gateway(
            device.product_id, device.name, gateway, address
        ):
            raise NotFound(
                f"device {device.name!r} does not exist in product {device.product_id!r}"
            )
        moved = replace(device, gateway=gateway, sub_address=address)
        self.devices.remember(moved)
        event = TopologyChanged(
            device.product_id,
            device.name,
            gateway,
            address,
            device.gateway,
            self.clock.now_ms(),
            by_gateway,
        )
        self.bus.publish(event)
        return moved

    async def _height(self, key: Key) -> int:
        """How many levels deep the device's subtree is (1: no children), counted
        no further than one past the deepest allowed."""
        level, height = [key], 1
        while height <= topology.MAX_DEPTH:
            below: list[Key] = []
            for parent in level:
                children = await self.storage.devices.children(*parent, topology.MAX_CHILDREN)
                below += [(c.product_id, c.name) for c in children]
            if not below:
                break
            level, height = below, height + 1
        return height

    # ------------------------------------------------------------ addresses

    async def child(self, gateway: Key, address: str) -> Key | None:
        """The child of `gateway` at `address`, if it has one."""
        children = self._children.get(gateway)
        if children is None:
            children = await self._fetch(gateway)
        else:
            self._children.move_to_end(gateway)
        return children.get(address)

    async def _fetch(self, gateway: Key) -> dict[str, Key]:
        """A gateway's children from the store, one fetch at a time: the messages in
        flight when they are not cached (a gateway's first messages, those after a
        change) wait for the same fetch, where each fetched all of them (20 fetches
        of 1,000 children at a gateway's start, 20 messages in flight). A waiter
        cancelled leaves the fetch to the others (shield)."""
        task = self._fetching.get(gateway)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(gateway))
            task.add_done_callback(
                _retrieve
            )  # a failure with every waiter gone is not "never retrieved"
            self._fetching[gateway] = task
        return await asyncio.shield(task)

    async def _load(self, gateway: Key) -> dict[str, Key]:
        changes = self._changes
        try:
            found = await self.storage.devices.children(*gateway, topology.MAX_CHILDREN)
        finally:
            if self._fetching.get(gateway) is asyncio.current_task():
                del self._fetching[gateway]
        children = {c.sub_address: (c.product_id, c.name) for c in found if c.sub_address}
        if changes == self._changes:  # else the tree changed meanwhile: not cached
            self._children[gateway] = children
            while len(self._children) > self.cache_size:
                self._children.popitem(last=False)
        return children

    async def resolve(self, top: Key, path: tuple[str, ...]) -> Key | None:
        """The device at `path` below `top`, level by level; None if an address is unknown."""
        return (await self.resolve_all(top, (path,)))[0]

    async def resolve_all(self, top: Key, paths: Sequence[tuple[str, ...]]) -> list[Key | None]:
        """`resolve` of each path below `top` (a gateway's message): one call a
        message, a level whose children are cached read in place (`child`
        awaited only to fetch them), not two coroutines a path."""
        out: list[Key | None] = []
        cache = self._children
        for path in paths:
            current: Key | None = top
            for address in path:
                assert current is not None
                children = cache.get(current)
                if children is None:
                    current = await self.child(current, address)
                else:
                    cache.move_to_end(current)
                    current = children.get(address)
                if current is None:
                    break
            out.append(current)
        return out

    def _on_event(self, event: Event) -> None:
        if isinstance(event, TopologyChanged):
            if event.gateway != event.previous:  # made here or on another node
                self.presence.detach(event.product_id, event.name)
            for gateway in (event.gateway, event.previous):
                if gateway is not None:
                    self._children.pop(gateway, None)
                    self._fetching.pop(gateway, None)  # a fetch after this one is new
        else:  # a deleted device may have been anyone's child
            self._children.clear()
            self._fetching.clear()
        self._changes += 1

    # ------------------------------------------------------------ devices/register

    async def register(self, ref: DeviceRef, request: SubRegisterRequest) -> None:
        """A gateway registers sub-devices; answered with each address's fate."""
        if request.problem is not None:
            self.link.send(ref, SubRegisterReply(False, request.problem))
            return
        gateway = await self.devices.find_device(ref.product_id, ref.name)
        if gateway is None:
            return  # deleted meanwhile; its connection is being closed
        product = await self.storage.products.get(gateway.product_id)
        if product is not None and not product.gateway_auto_register:
            why = (
                f"product {gateway.product_id!r} does not let its gateways register"
                " sub-devices (gateway_auto_register is false)"
            )
            self.link.send(ref, SubRegisterReply(False, why))
            return
        results = [RegisterResult(a, INVALID_PARAM, why) for a, why in request.invalid]
        for entry in request.registers:
            results.append(await self._register(gateway, entry.sub_address, entry.model))
        self.link.send(ref, SubRegisterReply(True, "success", tuple(results)))

    async def _register(self, gateway: Device, address: str, model: str | None) -> RegisterResult:
        key = (gateway.product_id, gateway.name)
        if await self.child(key, address) is not None:
            return RegisterResult(address, EXISTS, "the address is a sub-device of this gateway")
        product_id = gateway.product_id
        if (
            model is not None
            and names.is_valid(model)
            and await self.storage.products.get(model) is not None
        ):
            product_id = model
        name = f"{gateway.name}-{address.replace(':', '_')}"
        if not names.is_valid(name):
            why = f"the sub-device's name {name!r} would be longer than {names.MAX_LENGTH}"
            return RegisterResult(address, INVALID_PARAM, why)
        try:
            created = await self.devices.create_device(
                product_id, name, gateway=key, sub_address=address
            )
        except AlreadyExists as exc:
            if "sub_address" in exc.message:  # registered meanwhile
                return RegisterResult(address, EXISTS, exc.message)
            return RegisterResult(address, INVALID_PARAM, exc.message)
        except InvalidRequest as exc:
            return RegisterResult(address, INVALID_PARAM, exc.message)
        return RegisterResult(address, "", f"created as {created.device.name!r} in {product_id!r}")


def _retrieve(task: asyncio.Task[dict[str, Key]]) -> None:
    if not task.cancelled():
        task.exception()
