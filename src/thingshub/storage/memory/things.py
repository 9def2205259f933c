"""Thing models and desired values in dicts (see storage.py's rules).

Rules:
- A model goes with its product, desired values with their device: the
  product and device repositories drop them on delete (they share the dicts).
- Documents and values are kept as the JSON text the SQL backends store,
  so what comes back is a fresh object.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any

from thingshub.core.model import DesiredValue, Device, Product, StoredModel
from thingshub.storage import common

Key = tuple[str, str]
#: product id -> (JSON text, revision, updated_at)
Models = dict[str, tuple[str, int, int]]
#: device -> identifier -> (JSON text, version, ts)
Desired = dict[Key, dict[str, tuple[str, int, int]]]


class MemoryThingModels:
    def __init__(self, products: dict[str, Product], models: Models) -> None:
        self._products = products
        self._models = models

    async def get(self, product_id: str) -> StoredModel | None:
        found = self._models.get(product_id)
        if found is None:
            return None
        text, revision, updated_at = found
        return StoredModel(product_id, common.load_document(text), revision, updated_at)

    async def put(self, product_id: str, document: Mapping[str, Any], now_ms: int) -> StoredModel:
        if product_id not in self._products:
            raise common.product_missing(product_id)
        text = common.dump_json(dict(document))
        revision = self._models.get(product_id, ("", 0, 0))[1] + 1
        self._models[product_id] = (text, revision, now_ms)
        return StoredModel(product_id, common.load_document(text), revision, now_ms)

    async def delete(self, product_id: str) -> bool:
        return self._models.pop(product_id, None) is not None


class MemoryDesired:
    def __init__(self, devices: dict[Key, Device], desired: Desired) -> None:
        self._devices = devices
        self._desired = desired

    async def get(self, product_id: str, name: str) -> dict[str, DesiredValue]:
        stored = self._desired.get((product_id, name), {})
        return {k: DesiredValue(common.decode_value(t), v, ts) for k, (t, v, ts) in stored.items()}

    async def change(
        self, product_id: str, name: str, changes: Mapping[str, object | None], now_ms: int
    ) -> dict[str, DesiredValue | None]:
        key = (product_id, name)
        if key not in self._devices:
            raise common.device_missing(product_id, name)
        texts = {k: None if v is None else common.dump_json(v) for k, v in changes.items()}
        stored = self._desired.setdefault(key, {})
        out: dict[str, DesiredValue | None] = {}
        for identifier, text in texts.items():
            if text is None:
                stored.pop(identifier, None)
                out[identifier] = None
                continue
            version = stored[identifier][1] + 1 if identifier in stored else 1
            stored[identifier] = (text, version, now_ms)
            out[identifier] = DesiredValue(common.decode_value(text), version, now_ms)
        if not stored:
            del self._desired[key]
        return out

    async def delete_versions(
        self, product_id: str, name: str, versions: Mapping[str, int | None]
    ) -> builtins.list[str]:
        stored = self._desired.get((product_id, name), {})
        gone = [k for k, v in versions.items() if k in stored and (v is None or stored[k][1] == v)]
        for identifier in gone:
            del stored[identifier]
        return gone
