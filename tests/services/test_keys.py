"""KeyService: keys made, checked from memory, revoked at once; when each was
last used noted in memory and written in batches. Memory storage, fake clock."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import replace

import pytest

from thingshub.core.access import ADMIN, OPERATOR, READER, SERVE, Principal
from thingshub.core.errors import InvalidRequest, NotFound
from thingshub.core.model import ApiKey, Product
from thingshub.services.clock import FakeClock
from thingshub.services.keys import KeyService, hash_secret
from thingshub.storage.memory import MemoryStorage

SERVE_KEY = "the-serve-key"
T0 = 1_700_000_000_000


async def service(storage: MemoryStorage | None = None) -> tuple[KeyService, FakeClock]:
    storage = storage or MemoryStorage()
    await storage.products.add(Product("p1", "P1", T0))
    await storage.products.add(Product("p2", "P2", T0))
    clock = FakeClock(T0)
    keys = KeyService(storage.api_keys, storage.products, clock, SERVE_KEY)
    await keys.start()
    return keys, clock


async def test_the_serve_key_is_an_admin_of_everything_and_no_stored_key() -> None:
    keys, _ = await service()
    assert keys.authenticate(SERVE_KEY) is SERVE
    assert keys.list() == []
    for wrong in (None, "", "the-serve-ke", "the-serve-key ", "thk_", "thk_abc", "thk__x", "x_y"):
        assert keys.authenticate(wrong) is None, wrong
    await keys.stop()


async def test_a_key_is_its_id_and_secret_and_only_the_hash_is_kept() -> None:
    keys, _ = await service()
    key, text = await keys.create("ci", OPERATOR, ["p2", "p1", "p2"])
    prefix, key_id, secret = text.split("_", 2)
    assert (prefix, key_id) == ("thk", key.id) and len(secret) == 43
    assert key.secret_hash == hashlib.sha256(secret.encode()).hexdigest() == hash_secret(secret)
    assert secret not in repr(key) and key.products == ("p1", "p2")
    assert keys.authenticate(text) == Principal(OPERATOR, frozenset({"p1", "p2"}), key.id)
    assert keys.authenticate(text[:-1] + ("A" if text[-1] != "A" else "B")) is None
    assert keys.authenticate(f"thk_ffffffffffff_{secret}") is None  # no such id
    everywhere, _ = await keys.create("all", READER, None)
    assert everywhere.products is None
    assert [k.id for k in keys.list()] == sorted([key.id, everywhere.id])
    assert keys.get(key.id) == replace(key, last_used_at=T0)  # it was used just now
    assert keys.get(everywhere.id) == everywhere and keys.get("nope") is None
    await keys.stop()


async def test_bad_keys_are_refused_before_anything_is_stored() -> None:
    keys, _ = await service()
    for name, role, products, sentence in (
        ("  ", READER, None, "name"),
        ("x" * 101, READER, None, "name"),
        ("ok", "root", None, "role must be one of reader, operator, admin"),
        ("ok", READER, [], "products lists 1-1000"),
    ):
        with pytest.raises(InvalidRequest, match=sentence):
            await keys.create(name, role, products)
    with pytest.raises(NotFound, match="product 'gone' does not exist"):
        await keys.create("ok", READER, ["p1", "gone"])
    assert keys.list() == []
    await keys.stop()


async def test_revoked_keys_fail_at_once_and_stay_revoked() -> None:
    storage = MemoryStorage()
    keys, _ = await service(storage)
    key, text = await keys.create("old", ADMIN, None)
    assert await keys.revoke(key.id) is True
    assert keys.authenticate(text) is None
    assert await keys.revoke(key.id) is False
    await keys.stop()
    again = KeyService(storage.api_keys, storage.products, FakeClock(T0), SERVE_KEY)
    await again.start()
    assert again.authenticate(text) is None and again.list() == []
    await again.stop()


async def test_uses_are_noted_in_memory_and_written_in_a_batch() -> None:
    storage = MemoryStorage()
    keys, clock = await service(storage)
    _, text = await keys.create("app", READER, None)
    assert keys.list()[0].last_used_at is None
    clock.advance(5)
    keys.authenticate(text)
    assert keys.list()[0].last_used_at == T0 + 5  # shown before it is written
    assert (await storage.api_keys.list())[0].last_used_at is None  # no write per request
    await keys.flush()
    assert (await storage.api_keys.list())[0].last_used_at == T0 + 5
    await keys.flush()  # nothing noted since: no write
    clock.advance(5)
    keys.authenticate(text)
    await keys.stop()  # stopping writes what is noted
    assert (await storage.api_keys.list())[0].last_used_at == T0 + 10


class _Failing:
    """A key repository whose `touch` fails once (a database that went away)."""

    def __init__(self, inner: MemoryStorage) -> None:
        self.inner = inner.api_keys
        self.fail = True

    async def add(self, key: ApiKey) -> None:
        await self.inner.add(key)

    async def list(self) -> list[ApiKey]:
        return await self.inner.list()

    async def delete(self, key_id: str) -> bool:
        return await self.inner.delete(key_id)

    async def touch(self, used: Mapping[str, int]) -> None:
        if self.fail:
            self.fail = False
            raise OSError("the database went away")
        await self.inner.touch(used)


async def test_a_failed_write_of_uses_keeps_them_for_the_next() -> None:
    storage = MemoryStorage()
    await storage.products.add(Product("p1", "P1", T0))
    clock = FakeClock(T0)
    repo = _Failing(storage)
    keys = KeyService(repo, storage.products, clock, SERVE_KEY, flush_every=3600)
    await keys.start()
    _, text = await keys.create("app", READER, None)
    keys.authenticate(text)
    with pytest.raises(OSError):
        await keys.flush()
    clock.advance(7)
    keys.authenticate(text)  # a newer use while the write failed
    await keys.flush()
    assert (await storage.api_keys.list())[0].last_used_at == T0 + 7
    assert keys.list()[0].last_used_at == T0 + 7
    await keys.stop()
