"""The device tree's storage contract over memory, SQLite and PostgreSQL: a device
created under a gateway or bound later, addresses unique among siblings only,
children listed in pages and counted, and a deleted gateway unbinding them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.storage.support import Backend, device, product
from thingshub.core.errors import AlreadyExists
from thingshub.core.ports import Storage


def test_children_bound_at_creation_or_later(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.products.add(product("p2"))
        await s.devices.add(device("p1", "gw"))
        await s.devices.add(replace(device("p1", "a"), gateway=("p1", "gw"), sub_address="1:a"))
        await s.devices.add(device("p2", "b"))
        await s.devices.add(device("p1", "c"))
        stored = await s.devices.get("p1", "a")
        assert stored is not None and stored.gateway == ("p1", "gw")
        assert stored.sub_address == "1:a"
        loose = await s.devices.get("p1", "c")
        assert loose is not None and (loose.gateway, loose.sub_address) == (None, None)
        assert await s.devices.set_gateway("p2", "b", ("p1", "gw"), "2") is True
        assert await s.devices.set_gateway("p1", "c", ("p1", "gw"), None) is True
        assert await s.devices.set_gateway("p1", "nope", ("p1", "gw"), "3") is False
        assert await s.devices.count_children("p1", "gw") == 3
        first = await s.devices.children("p1", "gw", 2)
        assert [(d.product_id, d.name) for d in first] == [("p1", "a"), ("p1", "c")]
        rest = await s.devices.children("p1", "gw", 2, ("p1", "c"))
        assert [(d.product_id, d.name, d.sub_address) for d in rest] == [("p2", "b", "2")]
        assert await s.devices.children("p1", "gw", 0) == []
        assert await s.devices.children("p1", "a", 10) == []
        by_number = await s.devices.by_number("p2.b")
        assert by_number is not None and by_number.gateway == ("p1", "gw")

    backend.run(scenario)


def test_addresses_are_unique_among_siblings_only(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        for name in ("gw1", "gw2", "x"):
            await s.devices.add(device("p1", name))
        await s.devices.add(replace(device("p1", "a"), gateway=("p1", "gw1"), sub_address="7"))
        with pytest.raises(AlreadyExists, match="sub_address"):
            await s.devices.add(replace(device("p1", "b"), gateway=("p1", "gw1"), sub_address="7"))
        assert await s.devices.get("p1", "b") is None  # nothing written
        await s.devices.add(replace(device("p1", "b"), gateway=("p1", "gw2"), sub_address="7"))
        with pytest.raises(AlreadyExists, match="sub_address"):
            await s.devices.set_gateway("p1", "x", ("p1", "gw1"), "7")
        unchanged = await s.devices.get("p1", "x")
        assert unchanged is not None and unchanged.gateway is None
        assert await s.devices.set_gateway("p1", "a", ("p1", "gw1"), "7") is True  # its own
        # Devices without an address never clash.
        assert await s.devices.set_gateway("p1", "x", ("p1", "gw1"), None) is True
        await s.devices.add(replace(device("p1", "y"), gateway=("p1", "gw1")))
        assert await s.devices.count_children("p1", "gw1") == 3
        assert await s.devices.set_gateway("p1", "a", None, None) is True
        a = await s.devices.get("p1", "a")
        assert a is not None and (a.gateway, a.sub_address) == (None, None)
        assert await s.devices.count_children("p1", "gw1") == 2

    backend.run(scenario)


def test_deleting_a_gateway_unbinds_its_children(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await s.products.add(product("p1"))
        await s.devices.add(device("p1", "gw"))
        await s.devices.add(replace(device("p1", "a"), gateway=("p1", "gw"), sub_address="1"))
        assert await s.devices.delete("p1", "gw") is True
        a = await s.devices.get("p1", "a")
        assert a is not None and (a.gateway, a.sub_address) == (None, None)
        await s.devices.add(device("p1", "gw"))  # a new device of the old name adopts nothing
        assert await s.devices.count_children("p1", "gw") == 0

    backend.run(scenario)
