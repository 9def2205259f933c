"""Products and devices: registration, lookup, deletion.

Rules:
- Product ids, device names and device numbers are identifiers
  (core/names.py); a device number defaults to the device name when that is
  free, and otherwise to the name prefixed with the product id. `response`
  is never a device number: its topics would be everyone's answer topics.
- Secrets are made here and returned once, in `CreatedDevice`; only the key
  and the password's keyed hash are stored.
- A product that still has devices cannot be deleted (409).
- Deleting a device announces `DeviceDeleted`, so its connections are closed
  and its credentials stop working at once, here and in other processes.
- Lookups for logins go through a bounded cache, dropped on deletion (the
  event reaches every node) and, in a cluster, on any change made on another
  node (services/coherence.py).
- Lists are paged with a cursor: the last key (core/cursors.py).
- A device may be created under a gateway (core/topology.py's rules, checked
  against what is stored while holding `tree_lock`, which every change of
  the tree holds, so two changes never judge the same tree). A message for a
  sub-device is routed through its top gateway (`route`). Deleting a
  gateway unbinds its children, each announced as `TopologyChanged`.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace

from thingshub.core import cursors, names, topology
from thingshub.core.errors import AlreadyExists, Conflict, InvalidRequest, NotFound
from thingshub.core.events import DeviceDeleted, Event, TopologyChanged
from thingshub.core.model import Device, DeviceLookup, Page, Product
from thingshub.core.ports import Clock, EventBus, Storage
from thingshub.core.products import check_settings
from thingshub.services import credentials
from thingshub.services.coherence import CacheSync
from thingshub.services.ota_tasks import device_names as names_shown

MAX_PAGE = 1000
MAX_TAGS = 64
MAX_TAG_KEY = 64
MAX_TAG_VALUE = 256
#: Device numbers that would make a device's ThingsPanel topics those of every
#: device's answers (`devices/command/response/+`).
RESERVED_NUMBERS = frozenset({"response"})


#: How a login names a device, also its key in the cache:
#: ("d", product id, name) or ("u", user name).
@dataclass(frozen=True, slots=True)
class CreatedDevice:
    device: Device
    password: str  # shown once


def encode_cursor(key: str) -> str:
    return cursors.key(key)


def decode_cursor(cursor: str | None) -> str | None:
    return cursors.after_key(cursor)


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")
    return limit


def check_tags(tags: object) -> dict[str, str]:
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise InvalidRequest("tags must be an object of string values")
    if len(tags) > MAX_TAGS:
        raise InvalidRequest(f"at most {MAX_TAGS} tags")
    out: dict[str, str] = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_TAG_KEY:
            raise InvalidRequest(f"tag keys are 1 to {MAX_TAG_KEY} characters")
        if not isinstance(value, str) or len(value) > MAX_TAG_VALUE:
            raise InvalidRequest(
                f"tag {key!r} must be a string of at most {MAX_TAG_VALUE} characters"
            )
        out[key] = value
    return out


class _Lru:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[object, Device] = OrderedDict()

    def get(self, key: object) -> Device | None:
        device = self._items.get(key)
        if device is not None:
            self._items.move_to_end(key)
        return device

    def put(self, key: object, device: Device) -> None:
        self._items[key] = device
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def drop(self, key: object) -> None:
        self._items.pop(key, None)


class DeviceService:
    def __init__(
        self, storage: Storage, clock: Clock, bus: EventBus, pepper: str, cache_size: int = 200_000
    ) -> None:
        self.storage = storage
        self.clock = clock
        self.bus = bus
        self.pepper = pepper
        self._cache = _Lru(cache_size)
        #: Held by every change of the device tree (see the module's rules).
        self.tree_lock = asyncio.Lock()
        #: The other nodes' caches, told of each device changed here.
        self.sync = CacheSync("device", self._changed_elsewhere)
        bus.subscribe(self._on_event, [DeviceDeleted, TopologyChanged])

    # ------------------------------------------------------------ products

    async def create_product(
        self, product_id: str | None, name: object, gateway_auto_register: object = True
    ) -> Product:
        check_settings({"name": name, "gateway_auto_register": gateway_auto_register})
        assert isinstance(name, str) and isinstance(gateway_auto_register, bool)  # checked
        pid = names.check("id", product_id) if product_id is not None else None
        if pid is None:
            pid = credentials.new_product_id()
        product = Product(
            pid, name, self.clock.now_ms(), gateway_auto_register=gateway_auto_register
        )
        await self.storage.products.add(product)
        return product

    async def get_product(self, product_id: str) -> Product:
        product = await self.storage.products.get(product_id)
        if product is None:
            raise NotFound(f"product {product_id!r} does not exist")
        return product

    async def set_retention(self, product_id: str, days: object) -> Product:
        """Keep telemetry and events of the product's devices `days` days (None: forever)."""
        return await self.update_product(product_id, {"retention_days": days})

    async def update_product(self, product_id: str, changes: Mapping[str, object]) -> Product:
        """Change some of the product's settings (PRODUCT_SETTINGS; the others stay);
        every one is checked before any is stored."""
        if not await self.storage.products.update(product_id, check_settings(changes)):
            raise NotFound(f"product {product_id!r} does not exist")
        return await self.get_product(product_id)

    async def list_products(self, limit: int = 100, cursor: str | None = None) -> Page[Product]:
        check_limit(limit)
        items = await self.storage.products.list(limit + 1, decode_cursor(cursor))
        more = len(items) > limit
        items = items[:limit]
        return Page(items, encode_cursor(items[-1].id) if more else None)

    async def delete_product(self, product_id: str) -> None:
        await self.get_product(product_id)
        count = await self.storage.devices.count(product_id)
        if count:
            raise Conflict(f"product {product_id!r} still has {count} device(s); delete them first")
        await self.storage.products.delete(product_id)

    # ------------------------------------------------------------ devices

    async def create_device(
        self,
        product_id: str,
        name: object,
        device_number: object = None,
        tags: object = None,
        access_token: object = None,
        gateway: tuple[str, str] | None = None,
        sub_address: object = None,
    ) -> CreatedDevice:
        """Register a device; `access_token`: True for a generated ThingsPanel access
        token, a string for that one (unique on the server), None for none;
        `gateway` (product id, name) and `sub_address`: its place in a tree."""
        if gateway is None and sub_address is not None:
            raise InvalidRequest("a sub_address needs a gateway")
        if gateway is None:
            return await self._create(product_id, name, device_number, tags, access_token)
        async with self.tree_lock:
            address = None if sub_address is None else topology.check_address(sub_address)
            await self.check_child((product_id, str(name)), gateway, 1, None)
            created = await self._create(
                product_id, name, device_number, tags, access_token, gateway, address
            )
        device = created.device
        now = self.clock.now_ms()
        self.bus.publish(
            TopologyChanged(device.product_id, device.name, gateway, address, None, now)
        )
        return created

    async def _create(
        self,
        product_id: str,
        name: object,
        device_number: object,
        tags: object,
        access_token: object,
        gateway: tuple[str, str] | None = None,
        sub_address: str | None = None,
    ) -> CreatedDevice:
        await self.get_product(product_id)
        dev_name = names.check("name", name)
        tag_map = check_tags(tags)
        token = credentials.check_access_token(access_token)
        if device_number is None:
            number = dev_name
            if number in RESERVED_NUMBERS or await self.storage.devices.by_number(number):
                number = f"{product_id}.{dev_name}"[: names.MAX_LENGTH]
        else:
            number = names.check("device_number", device_number)
            if number in RESERVED_NUMBERS:
                raise InvalidRequest(f"device_number {number!r} is reserved")
        password = credentials.new_password()
        device = Device(
            product_id=product_id,
            name=dev_name,
            device_number=number,
            key=credentials.new_device_key(),
            username=credentials.new_username(),
            password_hash=credentials.hash_password(self.pepper, password),
            created_at=self.clock.now_ms(),
            tags=tag_map,
            access_token=token,
            gateway=gateway,
            sub_address=sub_address,
        )
        for _ in range(3):
            try:
                await self.storage.devices.add(device)
                break
            except AlreadyExists as exc:
                if not exc.message.startswith("username "):
                    raise
                # A random user name collided (astronomically unlikely): draw again.
                device = _with_username(device, credentials.new_username())
        else:  # pragma: no cover
            raise Conflict("could not allocate a unique user name")
        self._remember(device)
        return CreatedDevice(device, password)

    async def get_device(self, product_id: str, name: str) -> Device:
        device = await self.find_device(product_id, name)
        if device is None:
            await self.get_product(product_id)
            raise NotFound(f"device {name!r} does not exist in product {product_id!r}")
        return device

    # ------------------------------------------------------------ the tree

    async def chain(self, device: Device) -> list[topology.Link]:
        """The device and its gateways up to the top one (cut past MAX_DEPTH + 1
        links, which only a tree broken outside these rules can have)."""
        links = [
            topology.Link((device.product_id, device.name), device.gateway, device.sub_address)
        ]
        current = device
        while current.gateway is not None and len(links) <= topology.MAX_DEPTH:
            parent = await self.find_device(*current.gateway)
            if parent is None:  # deleted meanwhile: its children are being unbound
                break
            links.append(
                topology.Link((parent.product_id, parent.name), parent.gateway, parent.sub_address)
            )
            current = parent
        return links

    async def route(
        self, device: Device, *, addressed: bool = True
    ) -> tuple[Device, tuple[str, ...]]:
        """The device holding the connection that reaches `device` (itself, or its
        top gateway) and the addresses leading from it down to `device` (none
        when the protocol names it by its ids: not `addressed`)."""
        if device.gateway is None:
            return device, ()
        top, path = topology.route(await self.chain(device), addressed=addressed)
        return await self.get_device(*top), path

    async def check_child(
        self,
        device: tuple[str, str],
        gateway: tuple[str, str],
        height: int,
        current: Device | None,
    ) -> Device:
        """The gateway, if `device` (whose subtree is `height` deep; `current`: as
        stored, None for a new one) may become its child;
        InvalidRequest (a rule of the tree) or NotFound (no such gateway) otherwise; the
        store refuses an address a sibling has (AlreadyExists). Hold `tree_lock`."""
        parent = await self.find_device(*gateway)
        if parent is None:
            raise NotFound(f"gateway {gateway[1]!r} of product {gateway[0]!r} does not exist")
        ancestors = [link.key for link in await self.chain(parent)]
        children = await self.storage.devices.count_children(*gateway)
        if current is not None and current.gateway == gateway:
            children -= 1  # it is one already
        topology.check_binding(device, gateway, ancestors, height, children)
        return parent

    def remember(self, device: Device) -> None:
        """A device changed (its place in the tree, say): the cache holds the new value."""
        self._cache.put(("d", device.product_id, device.name), device)
        self._cache.drop(("u", device.username))
        if device.access_token is not None:
            self._cache.drop(("t", device.access_token))

    def cached(self, lookup: DeviceLookup) -> Device | None:
        """The device a login names, if it is in the cache (no I/O)."""
        return self._cache.get(lookup)

    async def lookup(self, lookup: DeviceLookup) -> Device | None:
        """The device a login names, from the cache or the store."""
        if lookup[0] == "d":
            return await self.find_device(lookup[1], lookup[2])
        if lookup[0] == "t":
            return await self.find_by_access_token(lookup[1])
        return await self.find_by_username(lookup[1])

    async def find_by_access_token(self, token: str) -> Device | None:
        key = ("t", token)
        device = self._cache.get(key)
        if device is None:
            device = await self.storage.devices.by_access_token(token)
            if device is not None:
                self._cache.put(key, device)
        return device

    async def find_device(self, product_id: str, name: str) -> Device | None:
        key = ("d", product_id, name)
        device = self._cache.get(key)
        if device is None:
            device = await self.storage.devices.get(product_id, name)
            if device is not None:
                self._cache.put(key, device)
        return device

    async def numbers(self, product_id: str, names: list[str] | None) -> dict[str, str]:
        """name -> device number of the named devices (None: all the product's);
        NotFound naming those that do not exist."""
        out: dict[str, str] = {}
        if names is None:
            cursor = None
            while True:
                page = await self.list_devices(product_id, 1000, cursor)
                out.update((d.name, d.device_number) for d in page.items)
                if page.next is None:
                    return out
                cursor = page.next
        missing = []
        for name in names:
            device = await self.find_device(product_id, name)
            if device is None:
                missing.append(name)
            else:
                out[name] = device.device_number
        if missing:
            raise NotFound(f"{names_shown(missing)} not found in product {product_id!r}")
        return out

    async def find_by_username(self, username: str) -> Device | None:
        key = ("u", username)
        device = self._cache.get(key)
        if device is None:
            device = await self.storage.devices.by_username(username)
            if device is not None:
                self._cache.put(key, device)
        return device

    async def warm_cache(self) -> int:
        """Load devices into the login cache (as many as it holds), so that the
        first logins after a start need no database round trip. Returns how many."""
        loaded = 0
        capacity = self._cache.capacity // 2  # two entries a device
        after_product: str | None = None
        while loaded < capacity:
            products = await self.storage.products.list(1000, after_product)
            for product in products:
                after: str | None = None
                while loaded < capacity:
                    devices = await self.storage.devices.list(product.id, 1000, after)
                    for device in devices:
                        self._remember(device)
                    loaded += len(devices)
                    if len(devices) < 1000:
                        break
                    after = devices[-1].name
            if len(products) < 1000:
                break
            after_product = products[-1].id
        return loaded

    def _remember(self, device: Device) -> None:
        self._cache.put(("d", device.product_id, device.name), device)
        self._cache.put(("u", device.username), device)
        if device.access_token is not None:
            self._cache.put(("t", device.access_token), device)

    def password_matches(self, device: Device, password: str) -> bool:
        return credentials.password_matches(self.pepper, password, device.password_hash)

    async def list_devices(
        self,
        product_id: str,
        limit: int = 100,
        cursor: str | None = None,
        search: str | None = None,
    ) -> Page[Device]:
        check_limit(limit)
        await self.get_product(product_id)
        items = await self.storage.devices.list(
            product_id, limit + 1, decode_cursor(cursor), search or None
        )
        more = len(items) > limit
        items = items[:limit]
        return Page(items, encode_cursor(items[-1].name) if more else None)

    async def count_devices(self, product_id: str) -> int:
        """How many devices a product has (one indexed count in the store)."""
        await self.get_product(product_id)
        return await self.storage.devices.count(product_id)

    async def update_tags(self, product_id: str, name: str, patch: object) -> Device:
        """Merge a tags patch into a device's tags: a string sets a tag, null removes it."""
        if not isinstance(patch, Mapping):
            raise InvalidRequest("tags must be an object of string values (null removes a tag)")
        device = await self.get_device(product_id, name)
        merged = dict(device.tags)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        tags = check_tags(merged)
        if not await self.storage.devices.set_tags(product_id, name, tags):
            raise NotFound(f"device {name!r} does not exist in product {product_id!r}")
        updated = replace(device, tags=tags)
        self.remember(updated)
        self.sync.changed(product_id, name)
        return updated

    async def delete_device(self, product_id: str, name: str) -> Device:
        device = await self.get_device(product_id, name)
        async with self.tree_lock:
            children = await self.storage.devices.children(
                product_id, name, topology.MAX_CHILDREN + 1
            )
            await self.storage.devices.delete(product_id, name)
        self.bus.publish(
            DeviceDeleted(
                product_id, name, device.device_number, device.username, device.access_token
            )
        )
        now = self.clock.now_ms()
        if device.gateway is not None:  # its gateway has one child less (topo/change)
            self.bus.publish(TopologyChanged(product_id, name, None, None, device.gateway, now))
        for child in children:  # unbound with it
            event = TopologyChanged(
                child.product_id, child.name, None, None, (product_id, name), now
            )
            self.bus.publish(event)
        return device

    def _changed_elsewhere(self, key: list[str]) -> None:
        """Another node changed the device: the next lookup reads it again."""
        if len(key) != 2:
            return
        device = self._cache.get(("d", key[0], key[1]))
        self._cache.drop(("d", key[0], key[1]))
        if device is not None:
            self._cache.drop(("u", device.username))
            if device.access_token is not None:
                self._cache.drop(("t", device.access_token))

    def _on_event(self, event: Event) -> None:
        if isinstance(event, TopologyChanged):
            # The next lookup reads the device's new place (here or in another process).
            self._cache.drop(("d", event.product_id, event.name))
        elif isinstance(event, DeviceDeleted):
            self._cache.drop(("d", event.product_id, event.name))
            self._cache.drop(("u", event.username))
            if event.access_token is not None:
                self._cache.drop(("t", event.access_token))


def _with_username(device: Device, username: str) -> Device:
    return replace(device, username=username)
