"""DeviceService: products and devices, their secrets and lookups, on the memory storage.

Identifiers are checked; a device number defaults to the name, or to the
name under its product when the name is taken (never `response`); secrets
are shown once and only the key and a keyed hash of the password are kept;
logins find devices through a cache that a deletion empties, here and
through the bus; lists are paged with opaque cursors.
"""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from pathlib import Path

import pytest

from tests.services.conftest import World, build_world
from thingshub.bus.local import LocalBus
from thingshub.core.errors import AlreadyExists, Conflict, InvalidRequest, NotFound
from thingshub.core.events import DeviceDeleted
from thingshub.dialects.onenet.token import make_token
from thingshub.dialects.registry import default_registry
from thingshub.services.credentials import new_pepper
from thingshub.services.devices import DeviceService

# ---------------------------------------------------------------- products


async def test_a_product_has_an_id_given_or_made(world: World) -> None:
    given = await world.devices.create_product("lamps", "Street lamps")
    assert (given.id, given.name, given.created_at) == ("lamps", "Street lamps", 1_700_000_000_000)
    made = await world.devices.create_product(None, "Meters")
    assert re.fullmatch(r"[0-9a-f]{10}", made.id)
    assert await world.devices.get_product(made.id) == made
    with pytest.raises(AlreadyExists):
        await world.devices.create_product("lamps", "again")


@pytest.mark.parametrize(
    ("product_id", "name", "words"),
    [
        ("p1", "", "name is required"),
        ("p1", "   ", "name is required"),
        ("p1", 5, "name is required"),
        ("p1", "n" * 129, "longer than 128"),
        ("a/b", "ok", "id may contain only"),
        ("", "ok", "id is required"),
    ],
)
async def test_a_product_needs_a_valid_id_and_name(
    world: World, product_id: str, name: object, words: str
) -> None:
    with pytest.raises(InvalidRequest, match=words):
        await world.devices.create_product(product_id, name)


async def test_products_are_listed_a_page_at_a_time(world: World) -> None:
    for pid in ("c", "a", "b"):
        await world.devices.create_product(pid, pid.upper())
    first = await world.devices.list_products(limit=2)
    assert [p.id for p in first.items] == ["a", "b"] and first.next is not None
    second = await world.devices.list_products(limit=2, cursor=first.next)
    assert [p.id for p in second.items] == ["c"] and second.next is None
    with pytest.raises(InvalidRequest, match="cursor"):
        await world.devices.list_products(cursor="%%%")
    with pytest.raises(InvalidRequest, match="limit"):
        await world.devices.list_products(limit=1001)


async def test_a_product_with_devices_cannot_be_deleted(world: World) -> None:
    await world.device("d1")
    with pytest.raises(Conflict, match="still has 1 device"):
        await world.devices.delete_product("p1")
    await world.devices.delete_device("p1", "d1")
    await world.devices.delete_product("p1")
    with pytest.raises(NotFound, match="product 'p1'"):
        await world.devices.get_product("p1")
    with pytest.raises(NotFound):
        await world.devices.delete_product("p1")


async def test_retention_is_days_or_none(world: World) -> None:
    await world.devices.create_product("p1", "P")
    assert (await world.devices.set_retention("p1", 30)).retention_days == 30
    assert (await world.devices.set_retention("p1", None)).retention_days is None
    for bad in (0, 36501, True, 1.5, "30"):
        with pytest.raises(InvalidRequest, match="retention_days"):
            await world.devices.set_retention("p1", bad)
    with pytest.raises(NotFound):
        await world.devices.set_retention("p2", 30)


# ---------------------------------------------------------------- devices


async def test_a_device_is_created_with_its_secrets_shown_once(world: World) -> None:
    await world.devices.create_product("p1", "P")
    created = await world.devices.create_device("p1", "lamp-1", tags={"floor": "1"})
    device = created.device
    assert (device.product_id, device.name, device.device_number) == ("p1", "lamp-1", "lamp-1")
    assert len(base64.b64decode(device.key, validate=True)) == 32
    assert created.password not in device.password_hash  # only a keyed hash is kept
    assert world.devices.password_matches(device, created.password)
    assert not world.devices.password_matches(device, created.password + "x")
    stored = await world.storage.devices.get("p1", "lamp-1")
    product = await world.devices.get_product("p1")
    assert device.product_key == product.access_key  # what a login checks a token against
    assert stored == replace(device, product_key=None) and dict(stored.tags) == {"floor": "1"}
    # The secrets log the device in, through its dialects.
    registry = default_registry()
    login = registry.login("any", device.username, created.password.encode())
    assert login is not None
    found = await world.devices.lookup(login.lookup)
    assert found == device
    registry.get(login.dialect).verify(login, device, 0, world.devices.password_matches)
    token = make_token(device.key, "p1", "lamp-1", 2_000_000_000)
    login = registry.login("lamp-1", "p1", token.encode())
    assert login is not None and await world.devices.lookup(login.lookup) == device


async def test_two_devices_never_share_user_names_or_passwords(world: World) -> None:
    a = await world.device("a")
    b = await world.device("b")
    da = await world.devices.get_device(a.product_id, a.name)
    db = await world.devices.get_device(b.product_id, b.name)
    assert da.username != db.username and da.key != db.key
    assert da.password_hash != db.password_hash


async def test_a_device_number_taken_falls_back_to_the_name_under_its_product(
    world: World,
) -> None:
    first = await world.device("lamp", "p1")
    second = await world.device("lamp", "p2")
    reserved = await world.device("response", "p1")
    assert (first.device_number, second.device_number) == ("lamp", "p2.lamp")
    assert reserved.device_number == "p1.response"  # its topics would be everyone's answers


async def test_an_explicit_device_number_is_checked(world: World) -> None:
    ref = await world.device("d1", device_number="SN-0001")
    assert ref.device_number == "SN-0001"
    with pytest.raises(InvalidRequest, match="reserved"):
        await world.devices.create_device("p1", "d2", device_number="response")
    with pytest.raises(InvalidRequest, match="device_number may contain only"):
        await world.devices.create_device("p1", "d2", device_number="a+b")
    with pytest.raises(AlreadyExists):
        await world.devices.create_device("p1", "d3", device_number="SN-0001")
    with pytest.raises(AlreadyExists):
        await world.devices.create_device("p1", "d1")
    with pytest.raises(NotFound, match="product 'p9'"):
        await world.devices.create_device("p9", "d1")


@pytest.mark.parametrize(
    ("tags", "words"),
    [
        ([("a", "b")], "tags must be an object"),
        ({f"k{i}": "v" for i in range(65)}, "at most 64 tags"),
        ({"": "v"}, "tag keys are 1 to 64"),
        ({"k" * 65: "v"}, "tag keys are 1 to 64"),
        ({"k": 1}, "must be a string"),
        ({"k": "v" * 257}, "at most 256"),
    ],
)
async def test_tags_are_flat_strings_within_limits(world: World, tags: object, words: str) -> None:
    await world.devices.create_product("p1", "P")
    with pytest.raises(InvalidRequest, match=words):
        await world.devices.create_device("p1", "d1", tags=tags)


async def test_a_tags_patch_sets_and_removes_and_is_checked_whole(world: World) -> None:
    await world.device(tags={"floor": "1", "room": "7"})
    device = await world.devices.update_tags("p1", "d1", {"floor": "2", "room": None, "x": "y"})
    assert dict(device.tags) == {"floor": "2", "x": "y"}
    assert (await world.devices.get_device("p1", "d1")) == device
    with pytest.raises(InvalidRequest, match="null removes a tag"):
        await world.devices.update_tags("p1", "d1", ["floor"])
    with pytest.raises(InvalidRequest, match="must be a string"):
        await world.devices.update_tags("p1", "d1", {"floor": 3})
    assert dict((await world.devices.get_device("p1", "d1")).tags) == {"floor": "2", "x": "y"}
    found = await world.devices.find_by_username(device.username)  # the login cache follows
    assert found is not None and dict(found.tags) == {"floor": "2", "x": "y"}


async def test_devices_are_listed_and_searched_a_page_at_a_time(world: World) -> None:
    for name in ("d3", "d1", "x2"):
        await world.device(name)
    assert await world.devices.count_devices("p1") == 3
    first = await world.devices.list_devices("p1", limit=2)
    assert [d.name for d in first.items] == ["d1", "d3"]
    second = await world.devices.list_devices("p1", limit=2, cursor=first.next)
    assert [d.name for d in second.items] == ["x2"] and second.next is None
    found = await world.devices.list_devices("p1", search="D")
    assert [d.name for d in found.items] == ["d1", "d3"]
    with pytest.raises(NotFound):
        await world.devices.list_devices("p2")


async def test_unknown_devices_are_not_found_naming_what_is_missing(world: World) -> None:
    await world.device("d1")
    with pytest.raises(NotFound, match="device 'd2' does not exist in product 'p1'"):
        await world.devices.get_device("p1", "d2")
    with pytest.raises(NotFound, match="product 'p2' does not exist"):
        await world.devices.get_device("p2", "d1")
    assert await world.devices.lookup(("u", "nobody")) is None
    assert await world.devices.lookup(("d", "p1", "d2")) is None


# ---------------------------------------------------------------- deletion and the cache


async def test_deleting_a_device_announces_it_and_its_logins_stop_at_once(
    world: World, tmp_path: Path
) -> None:
    ref = await world.device()
    device = await world.devices.get_device("p1", "d1")
    other = build_world(tmp_path / "other", storage=world.storage, clock=world.clock)
    assert await other.devices.lookup(("u", device.username)) == device  # cached there too
    deleted = world.watch(DeviceDeleted)
    # In a cluster the bus carries the event to the other processes; here, by hand.
    other_bus_delivery = other.watch(DeviceDeleted)
    await world.devices.delete_device("p1", "d1")
    assert deleted == [DeviceDeleted("p1", "d1", ref.device_number, device.username)]
    assert world.devices.cached(("d", "p1", "d1")) is None
    assert world.devices.cached(("u", device.username)) is None
    assert await world.devices.lookup(("u", device.username)) is None
    assert other_bus_delivery == []
    other.bus.publish(deleted[0])
    assert other.devices.cached(("u", device.username)) is None
    assert await other.devices.lookup(("d", "p1", "d1")) is None


async def test_a_start_warms_the_login_cache(world: World, tmp_path: Path) -> None:
    for pid in ("p1", "p2"):
        for name in ("a", "b"):
            await world.device(name, pid, online=False)
    restarted = build_world(tmp_path / "next", storage=world.storage, clock=world.clock)
    assert restarted.devices.cached(("d", "p1", "a")) is None
    assert await restarted.devices.warm_cache() == 4
    device = restarted.devices.cached(("d", "p2", "b"))
    assert device is not None
    assert restarted.devices.cached(("u", device.username)) == device


async def test_the_login_cache_is_bounded(world: World) -> None:
    """Two entries a device (by id and by user name); the least recently used go first."""
    for name in ("a", "b", "c"):
        await world.device(name, online=False)
    devices = [await world.devices.get_device("p1", n) for n in ("a", "b", "c")]
    keys = [("d", "p1", d.name) for d in devices] + [("u", d.username) for d in devices]
    small = DeviceService(world.storage, world.clock, LocalBus(), new_pepper(), cache_size=4)
    await small.warm_cache()
    assert sum(small.cached(k) is not None for k in keys) == 4
    assert len([d for d in devices if small.cached(("d", "p1", d.name))]) == 2
    for d in devices:
        await small.find_device("p1", d.name)
    assert sum(small.cached(k) is not None for k in keys) == 4
    assert all(small.cached(("d", "p1", d.name)) for d in devices)  # the newest entries
