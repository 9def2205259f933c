"""A gateway's own changes of its tree (TopologyService.adopt, release, below) and its
requests about sub-devices (GatewayRequests) in the services: the rules the end-to-end
tests reach only through the wire, and the storage failure that leaves the message
unacknowledged."""

from __future__ import annotations

from typing import Any

import pytest

from tests.services.conftest import World
from thingshub.core import thingmodel
from thingshub.core.errors import Conflict, NotFound, Unavailable
from thingshub.core.events import TopologyChanged
from thingshub.core.messages import DeviceRef, ThingReply
from thingshub.core.submessages import GatewayNote, SubRequest
from thingshub.services.gateway_requests import GatewayRequests
from thingshub.services.topology import TopologyService

GW = DeviceRef("p1", "gw", "gw")


def services(world: World) -> tuple[TopologyService, GatewayRequests]:
    tree = TopologyService(world.devices, world.presence, world.link, world.clock, world.bus)
    requests = GatewayRequests(
        tree, world.storage.events, world.presence, world.link, world.clock, world.bus
    )
    return tree, requests


async def test_adopt_release_and_below(world: World) -> None:
    tree, _ = services(world)
    await world.device("gw")
    await world.device("other")
    await world.device("mid", gateway=("p1", "gw"))
    await world.device("leaf", gateway=("p1", "mid"))
    await world.device("free")
    changes = world.watch(TopologyChanged)
    await tree.adopt(("p1", "gw"), ("p1", "free"))
    await tree.adopt(("p1", "gw"), ("p1", "free"))  # again: nothing
    assert [(c.name, c.by_gateway) for c in changes] == [("free", True)]
    with pytest.raises(Conflict):
        await tree.adopt(("p1", "other"), ("p1", "free"))
    with pytest.raises(Conflict):
        await tree.release(("p1", "other"), ("p1", "free"))
    leaf = await world.devices.get_device("p1", "leaf")
    assert await tree.below(leaf, ("p1", "gw")) and await tree.below(leaf, ("p1", "mid"))
    assert not await tree.below(leaf, ("p1", "other"))
    assert not await tree.below(await world.devices.get_device("p1", "gw"), ("p1", "gw"))
    await tree.release(("p1", "gw"), ("p1", "free"))
    await tree.release(("p1", "gw"), ("p1", "free"))  # no gateway: nothing
    assert (await world.devices.get_device("p1", "free")).gateway is None
    with pytest.raises(NotFound):
        await tree.adopt(("p1", "gw"), ("p1", "ghost"))


def replies(world: World) -> list[ThingReply]:
    return [m for _, m in world.link.sent if isinstance(m, ThingReply)]


async def test_a_device_deleted_before_its_binding_is_1107(world: World) -> None:
    _, requests = services(world)
    await world.device("gw")
    await world.device("s1")

    def admits(_: Any, __: int) -> None:
        return None

    await world.devices.delete_device("p1", "s1")
    await requests.request(GW, SubRequest("sub/topo/add", "1", ("p1", "s1"), admits))
    assert replies(world)[-1].code == thingmodel.DEVICE_NOT_FOUND


async def test_a_storage_failure_is_303_and_raised(world: World) -> None:
    _, requests = services(world)
    await world.device("gw")

    async def broken(*_: Any, **__: Any) -> Any:
        raise Unavailable("the database is gone")

    world.storage.devices.children = broken  # type: ignore[method-assign]
    with pytest.raises(Unavailable):
        await requests.request(GW, SubRequest("sub/topo/get", "1", None))
    assert replies(world)[-1].code == thingmodel.INTERNAL_ERROR


async def test_notes_of_a_deleted_gateway_are_dropped(world: World) -> None:
    _, requests = services(world)
    await world.device("gw")
    await world.devices.delete_device("p1", "gw")
    await requests.note(GW, GatewayNote("sub/topo/change_reply", "1", 200, None))
    await requests.stop()
