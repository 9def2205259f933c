"""The login cache of services/devices.py: devices by how logins name them.

Rules:
- Keys are ("d", product id, name), ("u", user name) and ("t", access
  token); at most `capacity` entries, the least recently used dropped first.
- A device held carries its product's access key (`product_key`): a new key
  is put into every device of that product held here (`rekey`), and a key
  changed on another node drops them (`drop_product`), so that the next
  lookup reads it again.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

from thingshub.core.model import Device


class LoginCache:
    """Devices by how logins name them, least recently used dropped first."""

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

    def rekey(self, product_id: str, product_key: str | None) -> None:
        """The devices of a product now carry this product key."""
        for key, device in self._items.items():
            if device.product_id == product_id:
                self._items[key] = replace(device, product_key=product_key)

    def drop_product(self, product_id: str) -> None:
        """Forget the devices of a product (its access key changed elsewhere)."""
        for key in [k for k, d in self._items.items() if d.product_id == product_id]:
            del self._items[key]
