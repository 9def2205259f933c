"""The storage contract: every backend (memory, SQLite, PostgreSQL) passes the same tests.

The rules tested are those of core/ports.py and storage/common.py: unique
fields clash with AlreadyExists naming the field (by priority name, device
number, user name), lookups return None, lists are keyset pages in byte
order, search is a plain case-insensitive substring, presence batches skip
unknown devices, settings are set once; images are saved against an
expected version (exactly one of two racing writers wins), command records
page newest first, and both go with their device.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import string
from dataclasses import replace

import pytest

from tests.storage.support import Backend, command, device, image, product
from thingshub.core.errors import AlreadyExists, Conflict, NotFound, VersionConflict
from thingshub.core.model import Presence, PresenceUpdate, Product, StoredImage
from thingshub.core.ports import Storage


async def add_devices(s: Storage, pid: str, names: list[str]) -> None:
    for name in names:
        await s.devices.add(device(pid, name))


# ------------------------------------------------------------------ products


def test_product_add_get(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        p = Product("p1", "Ünïcode 'name' \"quoted\"", 1_700_000_000_000)
        await s.products.add(p)
        assert await s.products.get("p1") == p
        assert await s.products.get("P1") is None
        assert await s.products.get("nope") is None

    backend.run(scenario)


def test_product_id_clash(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1", "first"))
        with pytest.raises(AlreadyExists, match="product 'p1' already exists"):
            await s.products.add(product("p1", "second"))
        assert (await s.products.get("p1")) == product("p1", "first")

    backend.run(scenario)


def test_product_list_pages_in_byte_order(backend: Backend) -> None:
    ids = ["b", "A", "a", "B", "-x", ".y", "_z", "0", "9a", "Z.z", "a-b", "a.b", "aa"]

    async def scenario(s: Storage) -> None:
        for pid in ids:
            await s.products.add(product(pid))
        seen: list[str] = []
        after: str | None = None
        pages = 0
        while True:
            page = await s.products.list(4, after)
            assert len(page) <= 4
            seen += [p.id for p in page]
            pages += 1
            if len(page) < 4:
                break
            after = page[-1].id
        assert seen == sorted(ids)  # Python's order is code point order, like bytes
        assert pages == 4
        assert await s.products.list(0) == []
        assert await s.products.list(100, "zzz") == []
        assert [p.id for p in await s.products.list(2, "a")] == ["a-b", "a.b"]

    backend.run(scenario)


def test_product_delete(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.products.add(product("p2"))
        await s.devices.add(device("p1", "d1"))
        with pytest.raises(Conflict, match="'p1' still has devices"):
            await s.products.delete("p1")
        assert await s.products.get("p1") is not None
        assert await s.devices.get("p1", "d1") is not None  # nothing cascaded
        assert await s.products.delete("p2") is True
        assert await s.products.delete("p2") is False
        assert await s.products.get("p2") is None
        assert await s.devices.delete("p1", "d1") is True
        assert await s.products.delete("p1") is True
        assert await s.products.list(10) == []

    backend.run(scenario)


# ------------------------------------------------------------------ devices


def test_device_roundtrip_and_lookups(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        tags = {"room": "kitchen", "ünï": "😀 \"q\" 'x' \\ %_", "empty": ""}
        d = replace(device("p1", "d1", "N-1", "alice", tags), status="disabled")
        await s.devices.add(d)
        got = await s.devices.get("p1", "d1")
        assert got == d
        assert got is not None and dict(got.tags) == tags
        assert await s.devices.by_number("N-1") == d
        assert await s.devices.by_username("alice") == d
        assert await s.devices.get("p1", "D1") is None
        assert await s.devices.get("p2", "d1") is None
        assert await s.devices.by_number("n-1") is None
        assert await s.devices.by_username("Alice") is None
        plain = device("p1", "d2")
        await s.devices.add(plain)
        got2 = await s.devices.get("p1", "d2")
        assert got2 == plain and got2 is not None and got2.status == "enabled"

    backend.run(scenario)


def test_stored_values_are_copies(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        tags = {"a": "1"}
        await s.devices.add(device("p1", "d1", tags=tags))
        tags["a"] = "changed"
        got = await s.devices.get("p1", "d1")
        assert got is not None and dict(got.tags) == {"a": "1"}
        assert isinstance(got.tags, dict)
        got.tags["a"] = "changed too"
        again = await s.devices.get("p1", "d1")
        assert again is not None and dict(again.tags) == {"a": "1"}

    backend.run(scenario)


def test_device_needs_its_product(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        with pytest.raises(NotFound, match="product 'ghost' does not exist"):
            await s.devices.add(device("ghost", "d1"))
        assert await s.devices.get("ghost", "d1") is None
        assert await s.devices.count("ghost") == 0

    backend.run(scenario)


def test_device_name_clash_in_product(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.products.add(product("p2"))
        await s.devices.add(device("p1", "x", "n1", "u1"))
        with pytest.raises(AlreadyExists) as info:
            await s.devices.add(device("p1", "x", "n2", "u2"))
        assert info.value.message == "device name 'x' already exists in product 'p1'"
        await s.devices.add(device("p2", "x", "n3", "u3"))  # same name, other product
        assert await s.devices.count("p1") == 1
        assert await s.devices.by_number("n2") is None
        assert await s.devices.by_username("u2") is None

    backend.run(scenario)


def test_device_number_clash_is_global(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.products.add(product("p2"))
        await s.devices.add(device("p1", "a", "n1", "u1"))
        with pytest.raises(AlreadyExists) as info:
            await s.devices.add(device("p2", "b", "n1", "u2"))
        assert info.value.message == "device_number 'n1' already exists"
        assert await s.devices.get("p2", "b") is None
        assert await s.devices.by_username("u2") is None

    backend.run(scenario)


def test_username_clash_is_global(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.products.add(product("p2"))
        await s.devices.add(device("p1", "a", "n1", "u1"))
        with pytest.raises(AlreadyExists) as info:
            await s.devices.add(device("p2", "b", "n2", "u1"))
        assert info.value.message == "username 'u1' already exists"
        assert await s.devices.get("p2", "b") is None
        assert await s.devices.by_number("n2") is None

    backend.run(scenario)


def test_clash_priority_name_then_number_then_username(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.devices.add(device("p1", "a", "n1", "u1"))
        await s.devices.add(device("p1", "b", "n2", "u2"))
        cases = [
            (device("p1", "a", "n2", "u2"), "device name 'a'"),
            (device("p1", "a", "n1", "u1"), "device name 'a'"),
            (device("p1", "c", "n1", "u2"), "device_number 'n1'"),
            (device("p1", "c", "n2", "u1"), "device_number 'n2'"),
            (device("ghost", "c", "n9", "u1"), "username 'u1'"),  # clash before missing product
        ]
        for candidate, start in cases:
            with pytest.raises(AlreadyExists) as info:
                await s.devices.add(candidate)
            assert info.value.message.startswith(start), candidate
        assert await s.devices.count("p1") == 2

    backend.run(scenario)


def test_concurrent_adds_one_wins(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        results = await asyncio.gather(
            *(s.devices.add(device("p1", "same", f"n{i}", f"u{i}")) for i in range(6)),
            return_exceptions=True,
        )
        assert sum(r is None for r in results) == 1
        assert all(isinstance(r, AlreadyExists) for r in results if r is not None)
        assert await s.devices.count("p1") == 1

    backend.run(scenario)


def test_device_count_and_delete(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.products.add(product("p2"))
        await add_devices(s, "p1", ["a", "b", "c"])
        await add_devices(s, "p2", ["a"])
        assert await s.devices.count("p1") == 3
        assert await s.devices.count("p2") == 1
        assert await s.devices.count("p3") == 0
        await s.devices.set_presence([PresenceUpdate("p1", "b", True, 5, 5)])
        assert await s.devices.delete("p1", "b") is True
        assert await s.devices.delete("p1", "b") is False
        assert await s.devices.delete("p9", "a") is False
        assert await s.devices.count("p1") == 2
        assert await s.devices.get("p1", "b") is None
        assert await s.devices.by_number("p1.b") is None
        assert await s.devices.by_username("user-p1-b") is None
        assert await s.devices.presence("p1", "b") is None
        assert await s.devices.mark_all_offline(10) == 0  # its presence went with it
        # Its name, number and user name are free again; presence starts afresh.
        await s.devices.add(device("p1", "b"))
        assert await s.devices.presence("p1", "b") == Presence(False)
        assert await s.devices.get("p2", "a") is not None

    backend.run(scenario)


def test_device_list_pages(backend: Backend) -> None:
    names = [f"dev-{i:02d}" for i in range(23)] + ["A", "Z", "_u", "a.b"]

    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.products.add(product("p2"))
        await add_devices(s, "p1", names[::-1])
        await add_devices(s, "p2", ["dev-00", "zz"])
        seen: list[str] = []
        after: str | None = None
        pages = 0
        while True:
            page = await s.devices.list("p1", 5, after)
            assert all(d.product_id == "p1" for d in page)
            seen += [d.name for d in page]
            pages += 1
            if len(page) < 5:
                break
            after = page[-1].name
        assert seen == sorted(names)
        assert pages == 6
        first = (await s.devices.list("p1", 1))[0]
        assert first == device("p1", "A")
        assert await s.devices.list("p1", 0) == []
        assert await s.devices.list("p3", 10) == []
        assert [d.name for d in await s.devices.list("p1", 3, "dev-20")] == ["dev-21", "dev-22"]
        assert [d.name for d in await s.devices.list("p1", 3, "Z")] == ["_u", "a.b", "dev-00"]

    backend.run(scenario)


def test_device_search(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.products.add(product("p2"))
        specs = [
            ("Kitchen-Lamp", "SN-0001"),
            ("kitchen.fan", "sn-0002"),
            ("garage", "KITCH-9"),
            ("a_b", "x1"),
            ("axb", "x2"),
            ("c100%", "x3"),
            ("c1000", "x4"),
            ("k", "x5"),
        ]
        for name, number in specs:
            await s.devices.add(device("p1", name, number))
        await s.devices.add(device("p2", "kitchen-other", "other-1"))

        async def names(search: str, after: str | None = None, limit: int = 100) -> list[str]:
            return [d.name for d in await s.devices.list("p1", limit, after, search)]

        assert await names("kitch") == ["Kitchen-Lamp", "garage", "kitchen.fan"]
        assert await names("KITCHEN") == ["Kitchen-Lamp", "kitchen.fan"]
        assert await names("sn-") == ["Kitchen-Lamp", "kitchen.fan"]
        assert await names("-LAMP") == ["Kitchen-Lamp"]
        # LIKE's wildcards are plain characters here.
        assert await names("_") == ["a_b"]
        assert await names("%") == ["c100%"]
        assert await names("0%") == ["c100%"]
        assert await names("a%b") == []
        assert await names("\\") == []
        assert await names("[a]") == []
        assert await names("*") == []
        assert await names(".") == ["kitchen.fan"]
        # Only ASCII letters fold: the Kelvin sign is not a "k".
        assert await names("\u212a") == []
        assert await names("K") == ["Kitchen-Lamp", "garage", "k", "kitchen.fan"]
        # Search pages like the plain list.
        assert await names("k", limit=2) == ["Kitchen-Lamp", "garage"]
        assert await names("k", after="garage", limit=2) == ["k", "kitchen.fan"]
        assert await names("k", after="kitchen.fan") == []
        assert await names("no-such-thing") == []
        assert len(await names("")) == len(specs)  # empty search: no filter

    backend.run(scenario)


# ------------------------------------------------------------------ presence


def test_presence_defaults(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.devices.add(device("p1", "d1"))
        assert await s.devices.presence("p1", "d1") == Presence(False, None, None)
        assert await s.devices.presence("p1", "nope") is None
        assert await s.devices.presence_many([]) == {}
        assert await s.devices.presence_many([("p1", "nope")]) == {}

    backend.run(scenario)


def test_set_presence_batch(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.products.add(product("p2"))
        await add_devices(s, "p1", ["a", "b", "c", "d"])
        await add_devices(s, "p2", ["a"])
        await s.devices.set_presence([])
        await s.devices.set_presence(
            [
                PresenceUpdate("p1", "b", True, 100, 90),
                PresenceUpdate("p1", "ghost", True, 100, 90),  # unknown: skipped
                PresenceUpdate("p1", "a", True, 50, 40),
                PresenceUpdate("p9", "a", True, 1, 1),  # unknown product: skipped
                PresenceUpdate("p2", "a", False, None, 30),
                PresenceUpdate("p1", "a", False, 60, 55),  # later in the batch: wins
            ]
        )
        assert await s.devices.presence("p1", "a") == Presence(False, 60, 55)
        assert await s.devices.presence("p1", "b") == Presence(True, 100, 90)
        assert await s.devices.presence("p2", "a") == Presence(False, None, 30)
        assert await s.devices.presence("p1", "ghost") is None
        assert await s.devices.get("p1", "ghost") is None
        # A second batch overwrites.
        await s.devices.set_presence([PresenceUpdate("p1", "b", True, 150, 90)])
        assert await s.devices.presence("p1", "b") == Presence(True, 150, 90)
        many = await s.devices.presence_many(
            [("p1", "a"), ("p1", "b"), ("p1", "c"), ("p1", "ghost"), ("p2", "a"), ("p1", "b")]
        )
        assert many == {
            ("p1", "a"): Presence(False, 60, 55),
            ("p1", "b"): Presence(True, 150, 90),
            ("p1", "c"): Presence(False),
            ("p2", "a"): Presence(False, None, 30),
        }

    backend.run(scenario)


def test_presence_many_large(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await add_devices(s, "p1", [f"d{i}" for i in range(0, 1200, 100)])
        await s.devices.set_presence(
            [PresenceUpdate("p1", f"d{i}", True, i, i) for i in range(0, 1200, 200)]
        )
        keys = [("p1", f"d{i}") for i in range(1200)]
        many = await s.devices.presence_many(keys)
        assert len(many) == 12
        assert many[("p1", "d200")] == Presence(True, 200, 200)
        assert many[("p1", "d100")] == Presence(False)

    backend.run(scenario)


def test_mark_all_offline(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await add_devices(s, "p1", ["a", "b", "c", "d"])
        await s.devices.set_presence(
            [
                PresenceUpdate("p1", "a", True, 100, 10),
                PresenceUpdate("p1", "b", True, None, 20),
                PresenceUpdate("p1", "c", False, 70, 30),
            ]
        )
        assert await s.devices.mark_all_offline(1000) == 2
        assert await s.devices.presence_many([("p1", n) for n in "abcd"]) == {
            ("p1", "a"): Presence(False, 100, 1000),
            ("p1", "b"): Presence(False, None, 1000),
            ("p1", "c"): Presence(False, 70, 30),  # already offline: untouched
            ("p1", "d"): Presence(False),
        }
        assert await s.devices.mark_all_offline(2000) == 0
        assert await s.devices.presence("p1", "a") == Presence(False, 100, 1000)

    backend.run(scenario)


def test_the_node_holding_a_device(backend: Backend) -> None:
    """Cluster presence: the holder is recorded, an offline update of another node
    leaves the device online where it is, and a node's devices are released."""

    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await add_devices(s, "p1", ["a", "b", "c"])
        assert await s.devices.holder("p1", "a") is None
        await s.devices.set_presence(
            [
                PresenceUpdate("p1", "a", True, 100, 10, "n1"),
                PresenceUpdate("p1", "b", True, 100, 10, "n1"),
                PresenceUpdate("p1", "c", True, 100, 10, "n2"),
            ]
        )
        assert await s.devices.holder("p1", "a") == "n1"
        # "a" moved to n2: its online there wins, n1's late offline changes nothing.
        await s.devices.set_presence([PresenceUpdate("p1", "a", True, 200, 20, "n2")])
        await s.devices.set_presence([PresenceUpdate("p1", "a", False, 150, 30, "n1")])
        assert await s.devices.holder("p1", "a") == "n2"
        assert await s.devices.presence("p1", "a") == Presence(True, 200, 20)
        # The holder's own offline applies.
        await s.devices.set_presence([PresenceUpdate("p1", "c", False, 300, 40, "n2")])
        assert await s.devices.holder("p1", "c") is None
        assert await s.devices.presence("p1", "c") == Presence(False, 300, 40)
        assert await s.devices.release_node("n1", 500) == [("p1", "b")]
        assert await s.devices.presence("p1", "b") == Presence(False, 100, 500)
        assert await s.devices.holder("p1", "a") == "n2"
        assert await s.devices.release_node("n1", 600) == []
        assert await s.devices.release_node("n2", 700) == [("p1", "a")]
        assert await s.devices.holder("p1", "a") is None

    backend.run(scenario)


# ------------------------------------------------------------------ settings


def test_settings(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        assert await s.settings.get("pepper") is None
        assert await s.settings.set_if_absent("pepper", "first") == "first"
        assert await s.settings.set_if_absent("pepper", "second") == "first"
        assert await s.settings.get("pepper") == "first"
        assert await s.settings.set_if_absent("other", "") == ""
        assert await s.settings.get("other") == ""
        values = await asyncio.gather(
            *(s.settings.set_if_absent("race", f"v{i}") for i in range(8))
        )
        assert len(set(values)) == 1
        assert await s.settings.get("race") == values[0]

    backend.run(scenario)


def test_cancelled_batch_is_all_or_nothing(backend: Backend) -> None:
    names = [f"d{i:03d}" for i in range(50)]
    keys = [("p1", n) for n in names]

    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await add_devices(s, "p1", names)
        for k in range(10):  # cancel at different points of the transaction
            batch = [PresenceUpdate("p1", n, True, k, k) for n in names]
            task = asyncio.create_task(s.devices.set_presence(batch))
            for _ in range(k):
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            # Never half a batch: all devices got presence k, or none did.
            states = set((await s.devices.presence_many(keys)).values())
            assert len(states) == 1, (k, states)
            # The store is still usable, and not stuck in a transaction.
            await s.devices.set_presence([PresenceUpdate("p1", n, False, -1, -1) for n in names])
            assert set((await s.devices.presence_many(keys)).values()) == {Presence(False, -1, -1)}
            await s.settings.set_if_absent(f"after-{k}", "ok")
            assert await s.settings.get(f"after-{k}") == "ok"

    backend.run(scenario)


def test_list_and_search_agree_with_a_model(backend: Backend) -> None:
    """Random names and searches: every backend pages and filters like plain Python."""
    rng = random.Random(20240601)
    alphabet = "aAbBkK019_.-%"
    names = sorted({"".join(rng.choices(alphabet, k=rng.randint(1, 6))) for _ in range(150)})
    numbers = {n: f"N{i}-{rng.choice(['x', 'X', 'k%', 'B_'])}" for i, n in enumerate(names)}
    searches = [
        "",
        "a",
        "A",
        "k%",
        "b_",
        "_",
        "%",
        "-",
        ".",
        "x",
        "n1",
        "0",
        "ab",
        "Kb",
        "9.",
        "zz",
    ]

    def model(search: str, after: str | None, limit: int) -> list[str]:
        fold = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
        out = [
            n
            for n in names
            if (after is None or n > after)
            and (
                search.translate(fold) in n.translate(fold)
                or search.translate(fold) in numbers[n].translate(fold)
            )
        ]
        return out[:limit]

    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        for n in names:
            await s.devices.add(device("p1", n, numbers[n]))
        for search in searches:
            after: str | None = None
            limit = rng.randint(1, 40)
            while True:
                got = [d.name for d in await s.devices.list("p1", limit, after, search or None)]
                assert got == model(search, after, limit), (search, after, limit)
                if len(got) < limit:
                    break
                after = got[-1]

    backend.run(scenario)


# ------------------------------------------------------------------ tags


def test_set_tags(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.devices.add(device("p1", "d1", tags={"old": "1", "keep": "no"}))
        await s.devices.add(device("p1", "d2", tags={"other": "x"}))
        tags = {"building": "43", "ünï": '😀 "q"', "": ""}
        assert await s.devices.set_tags("p1", "d1", tags) is True
        tags["building"] = "changed after the call"
        got = await s.devices.get("p1", "d1")
        assert got is not None
        assert dict(got.tags) == {"building": "43", "ünï": '😀 "q"', "": ""}  # replaced
        assert got == replace(device("p1", "d1"), tags=got.tags)  # nothing else changed
        assert await s.devices.by_username("user-p1-d1") == got
        other = await s.devices.get("p1", "d2")
        assert other is not None and dict(other.tags) == {"other": "x"}
        assert await s.devices.set_tags("p1", "d1", {}) is True
        cleared = await s.devices.get("p1", "d1")
        assert cleared is not None and dict(cleared.tags) == {}
        assert await s.devices.set_tags("p1", "ghost", {"a": "b"}) is False
        assert await s.devices.set_tags("p9", "d1", {"a": "b"}) is False
        assert await s.devices.get("p1", "ghost") is None

    backend.run(scenario)


# ------------------------------------------------------------------ images


def test_image_create_then_update(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.devices.add(device("p1", "d1"))
        assert await s.images.get("p1", "d1") is None
        assert await s.images.get("p1", "ghost") is None
        await s.images.save("p1", "d1", image(1, temp=20), 0)
        assert await s.images.get("p1", "d1") == image(1, temp=20)
        await s.images.save("p1", "d1", image(2, temp=21), 1)
        await s.images.save("p1", "d1", image(7, temp=22), 2)  # any higher version
        assert await s.images.get("p1", "d1") == image(7, temp=22)
        assert await s.images.get("p1", "D1") is None

    backend.run(scenario)


def test_image_document_reads_back_exactly(backend: Backend) -> None:
    document: dict[str, object] = {
        "zeta": 1,
        "alpha": {"z": [1, 2.5, "x", None, True, {"b": 1, "a": 2}], "a": {}},
        "ünïcode": "😀 \"q\" 'x' \\ \u0000 end",
        "big": 4503599627370496,
        "neg": -4503599627370496,
        "float": 0.1,
        "empty": [],
        "Aa": False,
    }

    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.devices.add(device("p1", "d1"))
        saved = dict(document)
        await s.images.save("p1", "d1", StoredImage(saved, 3), 0)
        saved["zeta"] = "changed after the call"
        got = await s.images.get("p1", "d1")
        assert got is not None and got.version == 3
        assert got.document == document
        assert type(got.document) is dict
        # Key order is kept, at every level: the document is stored as written.
        assert list(got.document) == list(document)
        alpha = got.document["alpha"]
        assert isinstance(alpha, dict) and list(alpha) == ["z", "a"]
        assert alpha["z"][-1] == {"b": 1, "a": 2} and list(alpha["z"][-1]) == ["b", "a"]
        # What comes back is a copy.
        alpha["a"] = "mutated by the reader"
        again = await s.images.get("p1", "d1")
        assert again is not None and again.document == document

    backend.run(scenario)


def test_image_create_twice(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.devices.add(device("p1", "d1"))
        await s.images.save("p1", "d1", image(1, first=True), 0)
        with pytest.raises(VersionConflict, match="already has an image"):
            await s.images.save("p1", "d1", image(1, second=True), 0)
        assert await s.images.get("p1", "d1") == image(1, first=True)

    backend.run(scenario)


def test_image_stale_version(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.devices.add(device("p1", "d1"))
        await s.devices.add(device("p1", "d2"))
        with pytest.raises(VersionConflict, match="has no image"):
            await s.images.save("p1", "d2", image(2), 1)
        assert await s.images.get("p1", "d2") is None
        await s.images.save("p1", "d1", image(1, a=1), 0)
        await s.images.save("p1", "d1", image(2, a=2), 1)
        for expected in (1, 3):
            with pytest.raises(VersionConflict, match=f"at version 2, not {expected}"):
                await s.images.save("p1", "d1", image(expected + 1, a=0), expected)
        assert await s.images.get("p1", "d1") == image(2, a=2)

    backend.run(scenario)


def test_image_of_a_missing_device(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        for expected in (0, 1):
            with pytest.raises(NotFound, match="device 'ghost' does not exist in product 'p1'"):
                await s.images.save("p1", "ghost", image(expected + 1), expected)
            with pytest.raises(NotFound):
                await s.images.save("p9", "d1", image(expected + 1), expected)
        assert await s.images.get("p1", "ghost") is None
        assert await s.devices.get("p1", "ghost") is None

    backend.run(scenario)


def test_image_save_must_move_the_version_forward(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.devices.add(device("p1", "d1"))
        for version, expected in ((0, 0), (1, 1), (1, 2), (1, -1)):
            with pytest.raises(ValueError, match="must increase the version"):
                await s.images.save("p1", "d1", image(version), expected)
        with pytest.raises(TypeError):  # not JSON: refused before anything is written
            await s.images.save("p1", "d1", StoredImage({"x": object()}, 1), 0)
        with pytest.raises(TypeError):
            await s.images.save("p1", "d1", StoredImage({"x": {1, 2}}, 1), 0)
        assert await s.images.get("p1", "d1") is None

    backend.run(scenario)


def test_image_racing_writers_one_wins(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.devices.add(device("p1", "d1"))
        for expected in (0, 1, 2):  # racing creations, then racing updates
            results = await asyncio.gather(
                *(
                    s.images.save("p1", "d1", image(expected + 1, writer=i), expected)
                    for i in range(8)
                ),
                return_exceptions=True,
            )
            winners = [i for i, r in enumerate(results) if r is None]
            assert len(winners) == 1, results
            assert all(isinstance(r, VersionConflict) for r in results if r is not None)
            assert await s.images.get("p1", "d1") == image(expected + 1, writer=winners[0])

    backend.run(scenario)


def test_image_saves_of_one_device_apply_in_order(backend: Backend) -> None:
    """Saves submitted together still see each other: 0→1→2→3 all succeed."""

    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.devices.add(device("p1", "d1"))
        await s.devices.add(device("p1", "d2"))
        results = await asyncio.gather(
            *(s.images.save("p1", "d1", image(v + 1, step=v), v) for v in range(3)),
            s.images.save("p1", "d2", image(1), 0),
            s.images.save("p1", "d1", image(9), 1),  # stale by then
            return_exceptions=True,
        )
        assert results[:4] == [None] * 4
        assert isinstance(results[4], VersionConflict)
        assert await s.images.get("p1", "d1") == image(3, step=2)
        assert await s.images.get("p1", "d2") == image(1)

    backend.run(scenario)


def test_image_goes_with_its_device(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.devices.add(device("p1", "d1"))
        await s.devices.add(device("p1", "d2"))
        await s.images.save("p1", "d1", image(1, a=1), 0)
        await s.images.save("p1", "d1", image(2, a=2), 1)
        await s.images.save("p1", "d2", image(1, b=1), 0)
        assert await s.devices.delete("p1", "d1") is True
        assert await s.images.get("p1", "d1") is None
        assert await s.images.get("p1", "d2") == image(1, b=1)
        with pytest.raises(NotFound):
            await s.images.save("p1", "d1", image(3), 2)
        await s.devices.add(device("p1", "d1"))  # a new device starts without an image
        assert await s.images.get("p1", "d1") is None
        await s.images.save("p1", "d1", image(1, fresh=True), 0)
        assert await s.images.get("p1", "d1") == image(1, fresh=True)
        # Tags live on the device: changing them leaves the image alone.
        assert await s.devices.set_tags("p1", "d1", {"t": "1"}) is True
        assert await s.images.get("p1", "d1") == image(1, fresh=True)

    backend.run(scenario)


# ------------------------------------------------------------------ command records


def test_command_add_get(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.devices.add(device("p1", "d1"))
        plain = command("c-1", request=b"\x00\x01binary\xff" * 50)
        full = replace(
            command("c-2", created_at=5),
            family="thingspanel",
            kind="attributes_set",
            status="answered",
            answered_at=9,
            response=b"",
            detail="ünï 😀",
        )
        await s.commands.add(plain)
        await s.commands.add(full)
        assert await s.commands.get("c-1") == plain
        got = await s.commands.get("c-2")
        assert got == full and got is not None and got.response == b""
        assert await s.commands.get("C-1") is None
        assert await s.commands.get("nope") is None

    backend.run(scenario)


def test_command_add_refusals(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.devices.add(device("p1", "d1"))
        await s.devices.add(device("p1", "d2"))
        await s.commands.add(command("c-1"))
        with pytest.raises(AlreadyExists, match="command id 'c-1' already exists"):
            await s.commands.add(command("c-1", name="d2", created_at=7))
        with pytest.raises(AlreadyExists):  # the id clash is reported first
            await s.commands.add(command("c-1", name="ghost"))
        with pytest.raises(NotFound, match="device 'ghost' does not exist in product 'p1'"):
            await s.commands.add(command("c-2", name="ghost"))
        assert await s.commands.get("c-1") == command("c-1")
        assert await s.commands.get("c-2") is None
        assert await s.commands.list("p1", "d2", 10) == []

    backend.run(scenario)


def test_command_finish(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.devices.add(device("p1", "d1"))
        await s.commands.add(command("c-1"))
        await s.commands.add(command("c-2"))
        await s.commands.add(command("c-3"))
        assert await s.commands.finish("c-1", "answered", 50, b"\x00ok") is True
        assert await s.commands.finish("c-2", "timeout", None, None) is True
        assert await s.commands.finish("c-3", "rejected", 60, b"", "over 1024 bytes") is True
        assert await s.commands.get("c-1") == replace(
            command("c-1"), status="answered", answered_at=50, response=b"\x00ok"
        )
        assert await s.commands.get("c-2") == replace(command("c-2"), status="timeout")
        assert await s.commands.get("c-3") == replace(
            command("c-3"),
            status="rejected",
            answered_at=60,
            response=b"",
            detail="over 1024 bytes",
        )
        assert await s.commands.finish("ghost", "answered", 1, b"x") is False
        assert await s.commands.get("ghost") is None
        # Finishing again overwrites (the services decide what is late or a duplicate).
        assert await s.commands.finish("c-2", "failed", 70, None, "gone") is True
        got = await s.commands.get("c-2")
        assert got is not None and (got.status, got.answered_at, got.detail) == (
            "failed",
            70,
            "gone",
        )

    backend.run(scenario)


def test_command_add_then_finish_together(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.devices.add(device("p1", "d1"))
        results = await asyncio.gather(
            s.commands.finish("c-1", "answered", 5, b"early"),  # before its record: False
            s.commands.add(command("c-1")),
            s.commands.finish("c-1", "answered", 6, b"late"),
        )
        assert list(results) == [False, None, True]
        got = await s.commands.get("c-1")
        assert got is not None and got.response == b"late"

    backend.run(scenario)


def test_commands_list_newest_first(backend: Backend) -> None:
    # (created_at, cmd_id): equal times are ordered by cmd_id, descending.
    specs = [(100, "q"), (300, "b"), (200, "z"), (200, "c"), (200, "m"), (300, "a"), (50, "x")]
    specs += [(400 + i, f"k{i:02d}") for i in range(9)]

    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.devices.add(device("p1", "d1"))
        await s.devices.add(device("p1", "d2"))
        rng = random.Random(7)
        shuffled = specs[:]
        rng.shuffle(shuffled)
        for created_at, cmd_id in shuffled:
            await s.commands.add(command(cmd_id, created_at=created_at))
        await s.commands.add(command("other", name="d2", created_at=250))
        expected = sorted(specs, reverse=True)
        for limit in (1, 3, 4, 100):
            seen: list[tuple[int, str]] = []
            before: tuple[int, str] | None = None
            while True:
                page = await s.commands.list("p1", "d1", limit, before)
                assert len(page) <= limit
                assert all(r.name == "d1" for r in page)
                seen += [(r.created_at, r.cmd_id) for r in page]
                if len(page) < limit:
                    break
                before = (page[-1].created_at, page[-1].cmd_id)
            assert seen == expected, limit
        assert [r.cmd_id for r in await s.commands.list("p1", "d1", 3, (200, "m"))] == [
            "c",
            "q",
            "x",
        ]
        assert [r.cmd_id for r in await s.commands.list("p1", "d1", 2, (200, "zz"))] == [
            "z",
            "m",
        ]
        first = (await s.commands.list("p1", "d1", 1))[0]
        assert first == command("k08", created_at=408)
        assert await s.commands.list("p1", "d1", 0) == []
        assert await s.commands.list("p1", "d1", 5, (50, "x")) == []
        assert await s.commands.list("p1", "ghost", 5) == []
        assert [r.cmd_id for r in await s.commands.list("p1", "d2", 5)] == ["other"]

    backend.run(scenario)


def test_commands_go_with_their_device(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.devices.add(device("p1", "d1"))
        await s.devices.add(device("p1", "d2"))
        await s.commands.add(command("c-1"))
        await s.commands.add(command("c-2", created_at=2))
        await s.commands.add(command("c-3", name="d2"))
        assert await s.devices.delete("p1", "d1") is True
        assert await s.commands.get("c-1") is None
        assert await s.commands.finish("c-2", "answered", 1, b"") is False
        assert await s.commands.get("c-3") == command("c-3", name="d2")
        await s.devices.add(device("p1", "d1"))
        assert await s.commands.list("p1", "d1", 10) == []
        await s.commands.add(command("c-1"))  # the id is free again
        assert await s.commands.get("c-1") == command("c-1")

    backend.run(scenario)


def test_fail_unfinished(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.devices.add(device("p1", "d1"))
        for i, status in enumerate(["sent", "answered", "sent", "timeout", "failed", "rejected"]):
            await s.commands.add(command(f"c-{i}", status=status))
        await s.commands.finish("c-1", "answered", 11, b"yes")
        assert await s.commands.fail_unfinished(1000) == 2
        for i in (0, 2):
            assert await s.commands.get(f"c-{i}") == replace(
                command(f"c-{i}"), status="failed", answered_at=1000, detail="server restarted"
            )
        assert await s.commands.get("c-1") == replace(
            command("c-1", status="sent"), status="answered", answered_at=11, response=b"yes"
        )
        for i, status in ((3, "timeout"), (4, "failed"), (5, "rejected")):
            assert await s.commands.get(f"c-{i}") == command(f"c-{i}", status=status)
        assert await s.commands.fail_unfinished(2000) == 0

    backend.run(scenario)


def test_fail_unfinished_spares_the_calls_of_live_nodes(backend: Backend) -> None:
    """A record names the node that sent it; a cluster's node starting fails its
    own unfinished calls and those of nodes not kept (dead, stopped, none)."""

    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.devices.add(device("p1", "d1"))
        for cmd_id, node in (("mine", "n1"), ("live", "n2"), ("dead", "n3"), ("none", None)):
            await s.commands.add(replace(command(cmd_id), node=node))
        assert await s.commands.get("live") == replace(command("live"), node="n2")
        if backend.kind == "sqlite":  # one process: it keeps nobody's
            assert await s.commands.fail_unfinished(1000) == 4
            return
        assert await s.commands.fail_unfinished(1000, ["n2"]) == 3
        statuses = {c: (await s.commands.get(c)).status for c in ("mine", "live", "dead", "none")}  # type: ignore[union-attr]
        assert statuses == {"mine": "failed", "live": "sent", "dead": "failed", "none": "failed"}
        assert await s.commands.fail_unfinished(2000) == 1

    backend.run(scenario)


def test_presence_of_a_device_deleted_meanwhile_is_skipped(pg_url: str) -> None:
    """PostgreSQL: a device deleted by another transaction between the presence
    query's EXISTS and its foreign key check fails the batch once; the write is
    tried again at once and skips it, so the other devices' presence is not held
    back (it used to be logged as an error and left to the next flush)."""
    import asyncpg

    from thingshub.storage.postgres import PostgresStorage

    async def scenario() -> None:
        s = PostgresStorage(pg_url)
        await s.open()
        other = await asyncpg.connect(pg_url)
        try:
            await s.products.add(product("p1"))
            await add_devices(s, "p1", ["a", "b"])
            deleting = other.transaction()
            await deleting.start()
            await other.execute("DELETE FROM devices WHERE product_id = 'p1' AND name = 'a'")
            write = asyncio.create_task(
                s.devices.set_presence(
                    [PresenceUpdate("p1", "a", True, 5, 5), PresenceUpdate("p1", "b", True, 6, 6)]
                )
            )
            await asyncio.sleep(0.5)
            assert not write.done()  # waiting for the deleting transaction's row lock
            await deleting.commit()
            await write
            assert await s.devices.presence("p1", "b") == Presence(True, 6, 6)
            assert await s.devices.get("p1", "a") is None
        finally:
            await other.close()
            await s.close()

    asyncio.run(scenario())
