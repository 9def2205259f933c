"""Products and devices: registration, lookup, deletion.

Rules:
- Product ids, device names and device numbers are identifiers
  (core/names.py); a device number defaults to the device name when that is
  free, and otherwise to the name prefixed with the product id. `response`
  is never a device number: its topics would be everyone's answer topics.
- Secrets are made here and returned once, in `CreatedDevice`; only the key
  and the password's keyed hash are stored.
- Products are made, changed and deleted by the base class
  (services/products.py).
- Deleting a device announces `DeviceDeleted`, so its connections are closed
  and its credentials stop working at once, here and in other processes.
- Lookups for logins go through a bounded cache, dropped on deletion (the
  event reaches every node) and, in a cluster, on any change made on another
  node (services/coherence.py); a device registered on another node is put
  into it from that node's news (services/device_news.py).
- A device found carries its product's OneNET access key (`product_key`),
  so that a login checks a token against both keys without another lookup.
- Dynamic registration (field-protocols §5.4) creates a device with the key
  the device chose (base64 of at most 32 bytes) or a new one, or returns
  the device of that name if it exists.
- Lists are paged with a cursor: the last key (core/cursors.py).
- A device may be created under a gateway (core/topology.py's rules, checked
  against what is stored while holding `tree_lock`, which every change of
  the tree holds, so two changes never judge the same tree). A message for a
  sub-device is routed through its top gateway (`route`). Deleting a
  gateway unbinds its children, each announced as `TopologyChanged`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, replace

from thingshub.core import names, topology
from thingshub.core.errors import AlreadyExists, Conflict, Forbidden, InvalidRequest, NotFound
from thingshub.core.events import DeviceDeleted, Event, TopologyChanged
from thingshub.core.model import Device, DeviceLookup, Page
from thingshub.core.ports import Clock, EventBus, Storage
from thingshub.services import credentials
from thingshub.services.coherence import CacheSync
from thingshub.services.device_news import DeviceNews
from thingshub.services.login_cache import LoginCache
from thingshub.services.ota_tasks import device_names as names_shown
from thingshub.services.products import (
    ProductOps,
    check_limit,
    decode_cursor,
    encode_cursor,
)

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


class DeviceService(ProductOps):
    def __init__(
        self, storage: Storage, clock: Clock, bus: EventBus, pepper: str, cache_size: int = 200_000
    ) -> None:
        self.storage = storage
        self.clock = clock
        self.bus = bus
        self.pepper = pepper
        self._cache = LoginCache(cache_size)
        self._product_keys: dict[str, str | None] = {}  # product id -> its access key
        #: Held by every change of the device tree (see the module's rules).
        self.tree_lock = asyncio.Lock()
        #: The other nodes' caches, told of each device changed here.
        self.sync = CacheSync("device", self._changed_elsewhere)
        #: The other nodes' login caches, given each device registered here.
        self.news = DeviceNews(clock, self._created_elsewhere)
        bus.subscribe(self._on_event, [DeviceDeleted, TopologyChanged])

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
        key: str | None = None,
    ) -> CreatedDevice:
        product = await self.get_product(product_id)
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
            key=key if key is not None else credentials.new_device_key(),
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
        self._product_keys[product_id] = product.access_key
        device = replace(device, product_key=product.access_key)
        self._remember(device)
        self.news.created(device)
        return CreatedDevice(device, password)

    async def register_itself(
        self, product_id: str, name: object, key: object = None
    ) -> tuple[Device, bool]:
        """Dynamic registration: the device of that name (created with `key`, or
        a new key, if it does not exist yet) and whether it was created."""
        product = await self.get_product(product_id)
        if not product.dynamic_registration:
            raise Forbidden(f"product {product_id!r} does not allow dynamic registration")
        chosen = None if key is None else credentials.check_device_key(key)
        dev_name = names.check("name", name)
        found = await self.find_device(product_id, dev_name)
        if found is not None:
            return found, False
        try:
            created = await self._create(product_id, dev_name, None, None, None, key=chosen)
        except AlreadyExists:  # registered meanwhile by another request
            return await self.get_device(product_id, dev_name), False
        return created.device, True

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
        self.news.changed(("d", device.product_id, device.name))
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
            device = await self._keyed(await self.storage.devices.by_access_token(token))
            if device is not None:
                self._cache.put(key, device)
        return device

    async def find_device(self, product_id: str, name: str) -> Device | None:
        key = ("d", product_id, name)
        device = self._cache.get(key)
        if device is None:
            device = await self._keyed(await self.storage.devices.get(product_id, name))
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
            device = await self._keyed(await self.storage.devices.by_username(username))
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
                self._product_keys[product.id] = product.access_key
                after: str | None = None
                while loaded < capacity:
                    devices = await self.storage.devices.list(product.id, 1000, after)
                    for device in devices:
                        self._remember(replace(device, product_key=product.access_key))
                    loaded += len(devices)
                    if len(devices) < 1000:
                        break
                    after = devices[-1].name
            if len(products) < 1000:
                break
            after_product = products[-1].id
        return loaded

    async def _keyed(self, device: Device | None) -> Device | None:
        """The device with its product's access key (read once a product)."""
        if device is None:
            return None
        pid = device.product_id
        if pid not in self._product_keys:
            product = await self.storage.products.get(pid)
            self._product_keys[pid] = product.access_key if product is not None else None
        return replace(device, product_key=self._product_keys[pid])

    def _remember(self, device: Device) -> None:
        self._cache.put(("d", device.product_id, device.name), device)
        self._cache.put(("u", device.username), device)
        if device.access_token is not None:
            self._cache.put(("t", device.access_token), device)

    async def versions(self, product_id: str, name: str) -> tuple[str | None, str | None]:
        """The (f_version, s_version) the device reported to OneNET's OTA API."""
        return await self.storage.devices.versions(product_id, name) or (None, None)

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
        """Another node changed the device (or, a key of one part, the product's
        access key): the next lookup reads it again."""
        self.news.changed(("p", key[0]) if len(key) == 1 else ("d", *key))
        if len(key) == 1:
            self._product_keys.pop(key[0], None)
            self._cache.drop_product(key[0])
            return
        if len(key) != 2:
            return
        device = self._cache.get(("d", key[0], key[1]))
        self._cache.drop(("d", key[0], key[1]))
        if device is not None:
            self._cache.drop(("u", device.username))
            if device.access_token is not None:
                self._cache.drop(("t", device.access_token))

    def _created_elsewhere(self, device: Device) -> None:
        """Another node registered the device (news older than a change heard
        since are not given): the cache holds it, unless the product's access
        key known here is another."""
        known = self._product_keys.get(device.product_id, device.product_key)
        if known == device.product_key:
            self._remember(device)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, TopologyChanged):
            # The next lookup reads the device's new place (here or in another process).
            self.news.changed(("d", event.product_id, event.name))
            self._cache.drop(("d", event.product_id, event.name))
        elif isinstance(event, DeviceDeleted):
            self.news.changed(("u", event.username))
            self._cache.drop(("d", event.product_id, event.name))
            self._cache.drop(("u", event.username))
            if event.access_token is not None:
                self._cache.drop(("t", event.access_token))


def _with_username(device: Device, username: str) -> Device:
    return replace(device, username=username)
