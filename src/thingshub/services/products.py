"""Products: DeviceService's part that makes, changes, lists and deletes them.

Rules:
- Product ids are identifiers (core/names.py); settings are checked by
  core/products.py, every one before any is stored.
- A product that still has devices cannot be deleted (409).
- Each product has a OneNET access key (32 random bytes, base64), shown
  only when the product is made and when it is rotated. A rotation
  replaces it at once: here, in the login cache, and on the other nodes of
  a cluster (told through the device cache's `CacheSync`, with the product
  id alone as the key).
- Lists are paged with a cursor: the last key (core/cursors.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from thingshub.core import cursors, names
from thingshub.core.errors import Conflict, InvalidRequest, NotFound
from thingshub.core.model import Page, Product
from thingshub.core.ports import Clock, Storage
from thingshub.core.products import check_settings
from thingshub.services import credentials
from thingshub.services.coherence import CacheSync
from thingshub.services.login_cache import LoginCache

MAX_PAGE = 1000


def encode_cursor(key: str) -> str:
    return cursors.key(key)


def decode_cursor(cursor: str | None) -> str | None:
    return cursors.after_key(cursor)


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")
    return limit


class ProductOps:
    """DeviceService's products (its constructor sets what is declared here)."""

    storage: Storage
    clock: Clock
    sync: CacheSync
    _cache: LoginCache
    _product_keys: dict[str, str | None]  # product id -> its access key

    async def create_product(
        self,
        product_id: str | None,
        name: object,
        gateway_auto_register: object = True,
        dynamic_registration: object = False,
    ) -> Product:
        settings = {
            "name": name,
            "gateway_auto_register": gateway_auto_register,
            "dynamic_registration": dynamic_registration,
        }
        check_settings(settings)
        assert isinstance(name, str) and isinstance(gateway_auto_register, bool)  # checked
        assert isinstance(dynamic_registration, bool)
        pid = names.check("id", product_id) if product_id is not None else None
        if pid is None:
            pid = credentials.new_product_id()
        product = Product(
            pid,
            name,
            self.clock.now_ms(),
            gateway_auto_register=gateway_auto_register,
            dynamic_registration=dynamic_registration,
            access_key=credentials.new_device_key(),
        )
        await self.storage.products.add(product)
        self._product_keys[pid] = product.access_key
        return product

    async def rotate_access_key(self, product_id: str) -> str:
        """Give the product a new access key; the old one stops working at once."""
        key = credentials.new_device_key()
        if not await self.storage.products.update(product_id, {"access_key": key}):
            raise NotFound(f"product {product_id!r} does not exist")
        self._product_keys[product_id] = key
        self._cache.rekey(product_id, key)
        self.sync.changed(product_id)
        return key

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
        self._product_keys.pop(product_id, None)
        self.sync.changed(product_id)  # a product made again with this id has a new key
