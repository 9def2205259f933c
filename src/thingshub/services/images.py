"""Device images: updates and queries from devices and applications.

Rules:
- The rules themselves (validation, merge, delta, metadata, versions,
  limits) are core/shadow.py; this module orders and stores their results.
  What a device sends arrives checked by its dialect, and what it is told
  leaves as neutral messages (accepted, rejected with a code, delta,
  snapshot) that its dialect words.
- One update at a time per device (KeyedLocks); documents are cached and
  written through; in a cluster each write drops the document from the
  other nodes' caches (services/coherence.py). The store checks the
  version (`save(..., expected)`), so two writers, here or in another
  process, never both win: the loser reloads and applies its update again
  (an update that named a version then fails with 165, as the rule says).
- A device's update is acknowledged (QoS 1 PUBACK) only once stored; the
  refusal of a bad update is told to the device, and the PUBACK still goes
  out (the message was handled).
- A device may send at most `rate` updates per second (burst `burst`);
  beyond that its updates are rejected with 128 "unspecified error" and a
  detail saying so, and cost the server almost nothing.
- Every accepted change is announced as `ImageChanged`; a non-empty delta is
  pushed to the device when an application changes desired, and right after
  the device subscribes to its delta topic.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any

from thingshub.core import shadow
from thingshub.core.errors import Conflict, NotFound, VersionConflict
from thingshub.core.events import DeviceDeleted, Event, ImageChanged
from thingshub.core.messages import (
    DeviceRef,
    ImageAccepted,
    ImageDelta,
    ImageGetRequest,
    ImageRejected,
    ImageSnapshot,
    ImageUpdateRefused,
    ImageUpdateRequest,
)
from thingshub.core.model import StoredImage
from thingshub.core.ports import Clock, DeviceLink, EventBus, ImageRepo
from thingshub.core.ratelimit import RateLimiter
from thingshub.services.coherence import CacheSync
from thingshub.services.devices import DeviceService
from thingshub.services.locks import KeyedLocks
from thingshub.services.presence import PresenceService

log = logging.getLogger("thingshub.images")

Key = tuple[str, str]
_ABSENT = object()
#: Attempts at saving one update when other writers keep winning.
MAX_ATTEMPTS = 5


class ImageService:
    def __init__(
        self,
        repo: ImageRepo,
        devices: DeviceService,
        presence: PresenceService,
        link: DeviceLink,
        clock: Clock,
        bus: EventBus,
        *,
        rate: float = 10.0,
        burst: float = 20.0,
        cache_size: int = 50_000,
    ) -> None:
        self.repo = repo
        self.devices = devices
        self.presence = presence
        self.link = link
        self.clock = clock
        self.bus = bus
        self.limiter = RateLimiter(rate, burst)
        self._locks = KeyedLocks()
        self._cache: OrderedDict[Key, shadow.Image] = OrderedDict()
        self._cache_size = cache_size
        self._tasks: set[asyncio.Task[None]] = set()
        self.rate_limited = 0
        #: The other nodes' caches, told of each image written here.
        self.sync = CacheSync("image", lambda key: self._cache.pop((key[0], key[-1]), None))
        bus.subscribe(self._on_event, [DeviceDeleted])

    # ------------------------------------------------------------ from devices

    async def device_update(self, ref: DeviceRef, message: ImageUpdateRequest) -> None:
        if not self._allowed(ref, message.update.id):
            return
        now_ms = self.clock.now_ms()
        try:
            applied = await self._apply(ref.product_id, ref.name, message.update, now_ms)
        except shadow.ImageError as exc:
            self._reject(ref, message.update.id, exc.err_code, exc.message)
            return
        except NotFound:
            self._reject(ref, message.update.id, 128, "the device no longer exists")
            return
        self.link.send(ref, ImageAccepted(applied))
        if applied.image.delta():
            self.link.send(ref, ImageDelta(applied.image))

    async def device_refused_update(self, ref: DeviceRef, message: ImageUpdateRefused) -> None:
        if self._allowed(ref, message.request_id):
            self._reject(ref, message.request_id, message.error.err_code, message.error.message)

    def _allowed(self, ref: DeviceRef, request_id: shadow.RequestId) -> bool:
        """Within the device's update rate; if not, the update is rejected with 128."""
        if self.limiter.allow((ref.product_id, ref.name), self.clock.monotonic_ms() / 1000):
            return True
        self.rate_limited += 1
        detail = f"too many updates: at most {self.limiter.rate:g} per second"
        self._reject(ref, request_id, 128, detail)
        return False

    def _reject(self, ref: DeviceRef, request_id: shadow.RequestId, code: int, detail: str) -> None:
        self.link.send(ref, ImageRejected("update", request_id, code, detail))

    async def device_get(self, ref: DeviceRef, message: ImageGetRequest) -> None:
        image = await self._load(ref.product_id, ref.name)
        if image is None:
            self.link.send(ref, ImageRejected("get", message.request_id, 167))
        else:
            self.link.send(ref, ImageSnapshot(message.request_id, image))

    def device_subscribed(self, ref: DeviceRef, filters: list[str]) -> None:
        """After SUBACK: push the pending delta if the device now listens for it."""
        if self.link.listens(ref, filters, ImageDelta):
            task = asyncio.get_running_loop().create_task(self._push_delta(ref))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _push_delta(self, ref: DeviceRef) -> None:
        try:
            image = await self._load(ref.product_id, ref.name)
        except Exception:
            log.exception("loading the image of %s/%s failed", ref.product_id, ref.name)
            return
        if image is not None and image.delta():
            self.link.send(ref, ImageDelta(image))

    # ------------------------------------------------------------ from applications

    async def document(self, product_id: str, name: str) -> dict[str, Any]:
        """The whole image document of the HTTP API (system properties, tags, properties)."""
        device = await self.devices.get_device(product_id, name)
        image = await self._load(product_id, name)
        if image is None:
            raise _not_exists(product_id, name)
        return await self._document(device.product_id, device.name, image)

    async def create(self, product_id: str, name: str) -> dict[str, Any]:
        """An empty image (version 1); 166 if the device already has one."""
        await self.devices.get_device(product_id, name)
        now_ms = self.clock.now_ms()
        async with self._locks((product_id, name)):
            if await self._load(product_id, name) is not None:
                raise _existed(product_id, name)
            image = shadow.empty_image(now_ms // 1000)
            try:
                await self.repo.save(
                    product_id, name, StoredImage(image.stored(), image.version), 0
                )
            except VersionConflict:
                self._cache.pop((product_id, name), None)
                raise _existed(product_id, name) from None
            self._remember((product_id, name), image)
        self._announce(product_id, name, image, now_ms)
        return await self._document(product_id, name, image)

    async def patch(
        self,
        product_id: str,
        name: str,
        desired: object = _ABSENT,
        tags: object = _ABSENT,
        version: object = None,
    ) -> dict[str, Any]:
        """Change desired (same rules as a device's update) and/or tags.

        Tags are not properties: a tags-only change touches neither version nor
        timestamp, and does not create the image."""
        device = await self.devices.get_device(product_id, name)
        if desired is _ABSENT and tags is _ABSENT:
            raise shadow.ImageError(164, "the patch holds neither desired nor tags")
        update = None
        if desired is not _ABSENT:
            update = shadow.update_from_patch(desired, version)  # validate before any change
        if tags is not _ABSENT:
            await self.devices.update_tags(product_id, name, tags)
        if update is None:
            return await self._document(product_id, name, await self._load(product_id, name))
        applied = await self._apply(product_id, name, update, self.clock.now_ms())
        if applied.image.delta() and self.link.is_online(product_id, name):
            ref = DeviceRef(product_id, name, device.device_number)
            self.link.send(ref, ImageDelta(applied.image))
        return await self._document(product_id, name, applied.image)

    # ------------------------------------------------------------ core

    async def _apply(
        self, product_id: str, name: str, update: shadow.Update, now_ms: int
    ) -> shadow.Applied:
        key = (product_id, name)
        async with self._locks(key):
            for _ in range(MAX_ATTEMPTS):
                current = await self._load(product_id, name)
                applied = shadow.apply_update(current, update, now_ms // 1000)
                image = applied.image
                try:
                    await self.repo.save(
                        product_id,
                        name,
                        StoredImage(image.stored(), image.version),
                        current.version if current is not None else 0,
                    )
                except VersionConflict:
                    # Someone else (another process) wrote first: start again from theirs.
                    self._cache.pop(key, None)
                    continue
                self._remember(key, image)
                break
            else:
                raise shadow.ImageError(128, "the image is being changed too often to update")
        self._announce(product_id, name, image, now_ms)
        return applied

    async def _load(self, product_id: str, name: str) -> shadow.Image | None:
        key = (product_id, name)
        image = self._cache.get(key)
        if image is not None:
            self._cache.move_to_end(key)
            return image
        stored = await self.repo.get(product_id, name)
        if stored is None:
            return None
        image = shadow.Image.from_stored(stored.document)
        self._remember(key, image)
        return image

    def _remember(self, key: Key, image: shadow.Image) -> None:
        self._cache[key] = image
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _announce(self, product_id: str, name: str, image: shadow.Image, now_ms: int) -> None:
        state = image.properties()["state"]
        self.sync.changed(product_id, name)
        self.bus.publish(ImageChanged(product_id, name, image.version, state, now_ms))

    async def _document(
        self, product_id: str, name: str, image: shadow.Image | None
    ) -> dict[str, Any]:
        """The document of the HTTP API; without `properties` while there is no image."""
        device = await self.devices.get_device(product_id, name)
        presence = await self.presence.get(product_id, name)
        created = device.created_at // 1000
        document: dict[str, Any] = {
            "deviceId": device.name,
            "createTime": created,
            "status": device.status,
            "statusReason": "created",
            "statusUpdateTime": created,
            "connectionState": "online" if presence.online else "offline",
            "lastActivityTime": (
                presence.last_activity // 1000 if presence.last_activity is not None else None
            ),
            "tags": dict(device.tags),
        }
        if image is not None:
            document["properties"] = image.properties()
        return document

    def _on_event(self, event: Event) -> None:
        if isinstance(event, DeviceDeleted):
            self._cache.pop((event.product_id, event.name), None)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()


def _not_exists(product_id: str, name: str) -> NotFound:
    return NotFound(
        f"device {name!r} of product {product_id!r} has no image",
        err_code=167,
        err_msg=shadow.ERR_MSG[167],
    )


def _existed(product_id: str, name: str) -> Conflict:
    return Conflict(
        f"device {name!r} of product {product_id!r} already has an image",
        err_code=166,
        err_msg=shadow.ERR_MSG[166],
    )
