"""API keys in a dict (see storage.py's rules): the reference of the SQL `keys` table."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import replace

from thingshub.core.errors import AlreadyExists
from thingshub.core.model import ApiKey


class MemoryApiKeys:
    def __init__(self) -> None:
        self._keys: dict[str, ApiKey] = {}

    async def add(self, key: ApiKey) -> None:
        if key.id in self._keys:
            raise AlreadyExists(f"API key {key.id!r} already exists")
        self._keys[key.id] = key

    async def list(self) -> builtins.list[ApiKey]:
        return [self._keys[i] for i in sorted(self._keys)]

    async def delete(self, key_id: str) -> bool:
        return self._keys.pop(key_id, None) is not None

    async def touch(self, used: Mapping[str, int]) -> None:
        for key_id, ts in used.items():
            key = self._keys.get(key_id)
            if key is not None and (key.last_used_at is None or key.last_used_at < ts):
                self._keys[key_id] = replace(key, last_used_at=ts)
