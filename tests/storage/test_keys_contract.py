"""The API keys' storage contract over memory, SQLite and PostgreSQL: added, listed by
id with their products (or none: every product), deleted, `last_used_at` only
moving forward, and kept across a restart."""

from __future__ import annotations

import pytest

from tests.storage.support import Backend
from thingshub.core.errors import AlreadyExists
from thingshub.core.model import ApiKey
from thingshub.core.ports import Storage

T0 = 1_700_000_000_000


def key(key_id: str, products: tuple[str, ...] | None = None, role: str = "reader") -> ApiKey:
    return ApiKey(key_id, f"key {key_id}", role, products, "ab" * 32, T0)


def test_keys_are_added_listed_and_deleted(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        assert await s.api_keys.list() == []
        await s.api_keys.add(key("b2", ("p1", "p2"), "operator"))
        await s.api_keys.add(key("a1"))
        with pytest.raises(AlreadyExists):
            await s.api_keys.add(key("a1", role="admin"))
        assert await s.api_keys.list() == [key("a1"), key("b2", ("p1", "p2"), "operator")]
        assert await s.api_keys.delete("a1") is True
        assert await s.api_keys.delete("a1") is False
        assert await s.api_keys.list() == [key("b2", ("p1", "p2"), "operator")]

    backend.run(scenario)


def test_last_used_only_moves_forward(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.api_keys.add(key("a1"))
        await s.api_keys.add(key("b2"))
        await s.api_keys.touch({})
        await s.api_keys.touch({"a1": T0 + 50, "gone": T0 + 1})
        await s.api_keys.touch({"a1": T0 + 20, "b2": T0 + 30})  # a1: an older batch
        found = {k.id: k.last_used_at for k in await s.api_keys.list()}
        assert found == {"a1": T0 + 50, "b2": T0 + 30}

    backend.run(scenario)


def test_keys_survive_a_restart(durable_backend: Backend) -> None:
    async def write(s: Storage) -> None:
        await s.api_keys.add(key("a1", ("p1",), "admin"))
        await s.api_keys.touch({"a1": T0 + 9})

    async def read(s: Storage) -> list[ApiKey]:
        return await s.api_keys.list()

    durable_backend.run(write)
    stored = durable_backend.run(read)
    assert stored == [ApiKey("a1", "key a1", "admin", ("p1",), "ab" * 32, T0, T0 + 9)]
