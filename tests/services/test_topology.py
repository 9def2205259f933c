"""Gateways and sub-devices in the services: presence reached through a gateway and
lost with it, the tree changed through TopologyService (moves, unbinding, paging),
and registrations judged entry by entry."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.services.conftest import Settling, World, eventually
from thingshub.core.errors import AlreadyExists, InvalidRequest, NotFound, Unavailable
from thingshub.core.events import (
    AttributesReported,
    EventsReceived,
    PresenceChanged,
    TelemetryReceived,
    TopologyChanged,
)
from thingshub.core.messages import (
    GatewayReport,
    NodeData,
    ReportAck,
    SubRegister,
    SubRegisterReply,
    SubRegisterRequest,
)
from thingshub.core.model import DeviceEvent, Point
from thingshub.core.settlement import Settlement
from thingshub.services.subdevices import GatewayReports
from thingshub.services.topology import TopologyService

NOW = 1_700_000_000_000  # the fake clock's start


def topology(world: World) -> TopologyService:
    return TopologyService(world.devices, world.presence, world.link, world.clock, world.bus)


def gateway_reports(
    world: World, telemetry: Any, tree: TopologyService | None = None
) -> GatewayReports:
    """The gateway report service of `world`, storing telemetry in `telemetry` (the
    storage's, or a test's own store), resolving through `tree` (a new one if None)."""
    return GatewayReports(
        tree or topology(world),
        telemetry,
        world.storage.attributes,
        world.storage.events,
        world.presence,
        world.link,
        world.clock,
        world.bus,
    )


async def test_a_sub_device_is_online_while_reached_through_a_connected_gateway(
    world: World,
) -> None:
    await world.device("gw")
    await world.device("other")
    await world.device("a", online=False, gateway=("p1", "gw"), sub_address="a")
    changes = world.watch(PresenceChanged)
    presence = world.presence
    presence.reached("p1", "a", via=("p1", "nobody"))  # not connected: nothing
    presence.reached("p1", "gw", via=("p1", "gw"))  # itself: nothing
    assert not presence.is_online("p1", "a")
    presence.reached("p1", "a", via=("p1", "gw"))
    world.clock.advance(5)
    presence.reached("p1", "a", via=("p1", "gw"))  # again: activity only
    assert presence.is_online("p1", "a") and not presence.is_connected("p1", "a")
    presence.reached("p1", "a", via=("p1", "other"))  # now through another gateway
    world.disconnect("gw")  # no longer the one it is reached through
    assert presence.is_online("p1", "a")
    world.disconnect("other")
    assert not presence.is_online("p1", "a")
    assert [(c.name, c.online) for c in changes if c.name == "a"] == [("a", True), ("a", False)]
    assert (await presence.get("p1", "a")).last_activity is not None


async def test_detaching_and_forgetting(world: World) -> None:
    await world.device("gw")
    await world.device("a", online=False, gateway=("p1", "gw"), sub_address="a")
    await world.device("b", gateway=("p1", "gw"), sub_address="b")  # connected itself too
    presence = world.presence
    presence.detach("p1", "a")  # never reached: nothing
    presence.reached("p1", "a", via=("p1", "gw"))
    presence.reached("p1", "b", via=("p1", "gw"))
    presence.detach("p1", "a")
    presence.detach("p1", "b")
    assert not presence.is_online("p1", "a") and presence.is_online("p1", "b")
    presence.reached("p1", "a", via=("p1", "gw"))
    presence.forget("p1", "a")
    assert not presence.is_online("p1", "a")
    presence.reached("p1", "a", via=("p1", "gw"))
    changes = world.watch(PresenceChanged)
    presence.forget("p1", "gw")  # a deleted gateway: its sub-devices go offline
    assert [(c.name, c.online) for c in changes] == [("a", False)]
    assert presence.is_online("p1", "b")  # connected itself
    await presence.flush()


async def test_binding_moving_and_unbinding(world: World) -> None:
    service = topology(world)
    await world.device("g1")
    await world.device("g2")
    await world.device("d", online=False)
    events = world.watch(TopologyChanged)
    moved = await service.bind("p1", "d", ("p1", "g1"), "x")
    assert (moved.gateway, moved.sub_address) == (("p1", "g1"), "x")
    world.presence.reached("p1", "d", via=("p1", "g1"))
    moved = await service.bind("p1", "d", ("p1", "g2"), None)
    assert not world.presence.is_online("p1", "d")  # no longer reached through g1
    again = await service.bind("p1", "d", ("p1", "g2"), "y")  # same gateway, new address
    assert again.sub_address == "y"
    assert (await world.devices.get_device("p1", "d")).sub_address == "y"
    await service.unbind("p1", "d")
    await service.unbind("p1", "d")  # nothing to do
    assert [(e.gateway, e.previous) for e in events] == [
        (("p1", "g1"), None),
        (("p1", "g2"), ("p1", "g1")),
        (("p1", "g2"), ("p1", "g2")),
        (None, ("p1", "g2")),
    ]
    with pytest.raises(InvalidRequest, match="sub_address"):
        await service.bind("p1", "d", ("p1", "g1"), "a/b")
    with pytest.raises(NotFound):
        await service.bind("p1", "d", ("p1", "nope"))
    with pytest.raises(InvalidRequest, match="needs a gateway"):
        await world.devices.create_device("p1", "e", sub_address="1")


async def test_the_height_of_a_subtree_limits_where_it_goes(world: World) -> None:
    service = topology(world)
    await world.device("top", online=False)
    chain = ["l1", "l2", "l3", "l4"]
    parent = "top"
    for name in chain:
        await world.device(name, online=False, gateway=("p1", parent), sub_address=name)
        parent = name
    await world.device("solo", online=False)
    with pytest.raises(InvalidRequest, match="6 devices deep"):
        await service.bind("p1", "top", ("p1", "solo"))
    with pytest.raises(InvalidRequest, match="cycle"):
        await service.bind("p1", "top", ("p1", "l4"))


async def test_sub_devices_in_pages(world: World) -> None:
    service = topology(world)
    await world.device("gw", online=False)
    for pid, name in (("p1", "b"), ("p0", "a"), ("p1", "a")):
        await world.device(name, pid, online=False, gateway=("p1", "gw"), sub_address=pid + name)
    first = await service.sub_devices("p1", "gw", 2)
    assert [(d.product_id, d.name) for d in first.items] == [("p0", "a"), ("p1", "a")]
    assert first.next == "p1:a"
    rest = await service.sub_devices("p1", "gw", 2, first.next)
    assert [(d.product_id, d.name) for d in rest.items] == [("p1", "b")] and rest.next is None
    with pytest.raises(AlreadyExists, match="sub_address"):
        await world.device("c", online=False, gateway=("p1", "gw"), sub_address="p1a")


async def test_registrations_entry_by_entry(world: World) -> None:
    service = topology(world)
    gw = await world.device("g" * 60)
    await world.device("other", "meters", online=False)
    long = "x" * 10  # the name would pass 64 characters
    request = SubRegisterRequest(
        (SubRegister("a", model="meters"), SubRegister("b", model="no/such"), SubRegister(long)),
        invalid=(("c/d", "malformed"),),
    )
    await service.register(gw, request)
    (reply,) = world.link.received(gw, SubRegisterReply)
    assert reply.ok
    fates = {r.sub_address: r.errcode for r in reply.results}
    assert fates == {"c/d": "INVALID_PARAM", "a": "", "b": "", long: "INVALID_PARAM"}
    assert (await world.devices.get_device("meters", f"{gw.name}-a")).gateway == ("p1", gw.name)
    assert (await world.devices.get_device("p1", f"{gw.name}-b")).sub_address == "b"
    assert await service.resolve(("p1", gw.name), ("a",)) == ("meters", f"{gw.name}-a")
    assert await service.resolve(("p1", gw.name), ("a", "deeper")) is None
    await service.register(gw, SubRegisterRequest((), problem="unreadable"))
    assert not world.link.received(gw, SubRegisterReply)[-1].ok
    await world.devices.delete_device("p1", gw.name)
    await service.register(gw, SubRegisterRequest((SubRegister("z"),)))  # gone: no answer
    assert len(world.link.received(gw, SubRegisterReply)) == 2


async def test_a_name_taken_is_refused_and_a_race_for_an_address_is_exists(world: World) -> None:
    service = topology(world)
    gw = await world.device("gw")
    await world.device("gw-t", online=False)
    await world.device("elsewhere", online=False, gateway=("p1", "gw"), sub_address="r")
    service._children[("p1", "gw")] = {}  # a stale cache: the store still decides
    await service.register(gw, SubRegisterRequest((SubRegister("t"), SubRegister("r"))))
    (reply,) = world.link.received(gw, SubRegisterReply)
    assert {r.sub_address: r.errcode for r in reply.results} == {
        "t": "INVALID_PARAM",
        "r": "exists",
    }


async def test_a_gateways_telemetry_for_a_sub_device_deleted_meanwhile_skips_it(
    world: World,
) -> None:
    """The tree still names it (another process deleted it): its points are not
    stored, it is counted and named as skipped, the others are stored."""
    tree = topology(world)
    reports = gateway_reports(world, world.storage.telemetry, tree)
    gw = await world.device("gw")
    await world.device("a", online=False, gateway=("p1", "gw"), sub_address="a")
    await world.device("b", online=False, gateway=("p1", "gw"), sub_address="b")
    report = GatewayReport(
        "attributes",
        None,
        (NodeData(("a",), attributes={"x": 1}), NodeData(("b",), attributes={"x": 1})),
        NOW,
    )
    await reports.report(gw, report)  # resolves both: the tree is cached now
    assert await world.storage.devices.delete("p1", "b")  # not through this process
    telemetry = tuple(
        NodeData((address,), points=(Point("t", NOW, 1.5),)) for address in ("a", "b")
    )
    await reports.report(gw, GatewayReport("telemetry", "9", telemetry, NOW))
    assert reports.skipped == 1 and reports.stored_nodes == 3
    assert await world.storage.telemetry.latest("p1", "a") == {"t": (NOW, 1.5)}
    assert await world.storage.telemetry.latest("p1", "b") == {}
    (ack,) = world.link.received(gw, ReportAck)
    assert (ack.error, ack.note) == (None, "1 unknown sub-device address skipped: b")


async def test_a_gateways_telemetry_is_one_member_of_the_storages_settlement(
    world: World,
) -> None:
    """Every node's points are ONE write, a member of the open settlement awaited
    once: the devices its value names 0 are skipped, the others stored; a failed
    settlement fails the report and answers its error."""
    store = Settling()
    tree = topology(world)
    reports = gateway_reports(world, store, tree)
    gw = await world.device("gw")
    for address in ("a", "b", "c"):
        await world.device(address, online=False, gateway=("p1", "gw"), sub_address=address)
    nodes = tuple(NodeData((a,), points=(Point("t", NOW, 1.5),)) for a in ("a", "b", "c"))
    task = asyncio.ensure_future(reports.report(gw, GatewayReport("telemetry", "9", nodes, NOW)))
    await eventually(lambda: store.settlement.size == 1)
    assert [[(p, n) for p, n, _ in devices] for devices in store.devices] == [
        [("p1", "a"), ("p1", "b"), ("p1", "c")]
    ]
    assert len(store.settlement._waiters) == 1 and not task.done()
    store.decide(values={0: (None, 0, None)})
    await task
    assert reports.skipped == 1 and reports.stored_nodes == 2
    (ack,) = world.link.received(gw, ReportAck)
    assert (ack.error, ack.note) == (None, "1 unknown sub-device address skipped: b")
    store.settlement, store.thens = Settlement(), []
    task = asyncio.ensure_future(reports.report(gw, GatewayReport("telemetry", "10", nodes, NOW)))
    await eventually(lambda: store.settlement.size == 1)
    store.decide()  # every one stored
    await task
    assert reports.skipped == 1 and reports.stored_nodes == 5
    assert world.link.received(gw, ReportAck)[-1].note is None
    store.settlement, store.thens = Settlement(), []
    task = asyncio.ensure_future(reports.report(gw, GatewayReport("telemetry", "11", nodes, NOW)))
    await eventually(lambda: store.settlement.size == 1)
    store.decide(error=Unavailable("the database is away"))
    with pytest.raises(Unavailable):
        await task
    assert isinstance(world.link.received(gw, ReportAck)[-1].error, Unavailable)
    assert reports.stored_nodes == 5


async def test_a_gateways_telemetry_from_a_storage_without_a_settlement(world: World) -> None:
    """The storage's future (no writer to batch with): a device it names 0 is
    skipped, a value it refuses is that node's failure (raised, as before), a
    failure of the write every node's."""

    class Store:
        def __init__(self) -> None:
            self.outcome: asyncio.Future[tuple[object, ...] | None] | None = None

        def append_devices_settled(
            self, devices: list[tuple[str, str, object]]
        ) -> asyncio.Future[tuple[object, ...] | None]:
            assert self.outcome is not None
            return self.outcome

    store = Store()
    reports = gateway_reports(world, store)
    gw = await world.device("gw")
    for address in ("a", "b"):
        await world.device(address, online=False, gateway=("p1", "gw"), sub_address=address)
    nodes = tuple(NodeData((a,), points=(Point("t", NOW, 1.5),)) for a in ("a", "b", "x"))
    loop = asyncio.get_running_loop()
    store.outcome = loop.create_future()
    store.outcome.set_result((0, None))
    await reports.report(gw, GatewayReport("telemetry", "1", nodes, NOW))
    assert (reports.skipped, reports.stored_nodes) == (2, 1)  # "x" unknown, "a" deleted
    assert world.link.received(gw, ReportAck)[-1].note == (
        "2 unknown sub-device addresses skipped: x, a"
    )
    store.outcome = loop.create_future()
    store.outcome.set_result((None, ValueError("no such value")))
    with pytest.raises(ValueError, match="no such value"):
        await reports.report(gw, GatewayReport("telemetry", "2", nodes, NOW))
    store.outcome = loop.create_future()
    store.outcome.set_exception(Unavailable("the database is away"))
    with pytest.raises(Unavailable):
        await reports.report(gw, GatewayReport("telemetry", "3", nodes, NOW))
    assert isinstance(world.link.received(gw, ReportAck)[-1].error, Unavailable)
    store.outcome = None  # nothing resolved: no write at all
    await reports.report(gw, GatewayReport("telemetry", "4", nodes[2:], NOW))
    assert world.link.received(gw, ReportAck)[-1].note == (
        "1 unknown sub-device address skipped: x"
    )


async def test_a_messages_paths_are_resolved_in_one_call_fetching_each_level_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`resolve_all`: each path as `resolve` gives it (None at the first unknown
    address, at any level), the children of a level fetched from the store once
    and then read from the cache, which a deletion empties."""
    tree = topology(world)
    await world.device("gw")
    await world.device("a", online=False, gateway=("p1", "gw"), sub_address="a")
    await world.device("b", online=False, gateway=("p1", "gw"), sub_address="b")
    await world.device("x", online=False, gateway=("p1", "a"), sub_address="x")
    fetched: list[str] = []
    children = world.storage.devices.children

    async def counted(product_id: str, name: str, limit: int) -> object:
        fetched.append(name)
        return await children(product_id, name, limit)

    monkeypatch.setattr(world.storage.devices, "children", counted)
    paths = [("a",), ("a", "x"), ("c",), ("a", "y"), ("a", "x", "z"), ("b",), ()]
    expected = [("p1", "a"), ("p1", "x"), None, None, None, ("p1", "b"), ("p1", "gw")]
    assert await tree.resolve_all(("p1", "gw"), paths) == expected
    assert fetched == ["gw", "a", "x"]  # each level once: then cached (x: none)
    assert await tree.resolve_all(("p1", "gw"), paths) == expected
    assert [await tree.resolve(("p1", "gw"), p) for p in paths] == expected
    assert fetched == ["gw", "a", "x"]
    await world.devices.delete_device("p1", "b")
    fetched.clear()  # (the deletion looks for b's own children)
    assert await tree.resolve_all(("p1", "gw"), [("b",), ("a",)]) == [None, ("p1", "a")]
    assert fetched == ["gw"]


async def test_each_stored_nodes_data_is_announced_under_its_own_ids(world: World) -> None:
    """Telemetry, attributes and events of a gateway's report are announced per
    stored sub-device (an unknown one is not), as any device's."""
    reports = gateway_reports(world, world.storage.telemetry)
    gw = await world.device("gw")
    for address in ("a", "b"):
        await world.device(address, online=False, gateway=("p1", "gw"), sub_address=address)
    paths = (("a",), ("x",), ("b",))
    telemetry = tuple(NodeData(p, points=(Point("t", NOW, 1.5),)) for p in paths)
    await reports.report(gw, GatewayReport("telemetry", None, telemetry, NOW))  # nobody listens
    points = world.watch(TelemetryReceived)
    attributes = world.watch(AttributesReported)
    events = world.watch(EventsReceived)
    await reports.report(gw, GatewayReport("telemetry", None, telemetry, NOW))
    assert [(e.name, list(e.points)) for e in points] == [
        ("a", [Point("t", NOW, 1.5)]),
        ("b", [Point("t", NOW, 1.5)]),
    ]
    shared = tuple(NodeData(p, attributes={"fw": "2"}) for p in paths)
    await reports.report(gw, GatewayReport("attributes", None, shared, NOW))
    assert [(e.name, e.values) for e in attributes] == [("a", {"fw": "2"}), ("b", {"fw": "2"})]
    happened = tuple(NodeData(p, events=(DeviceEvent(NOW, "boot"),)) for p in paths)
    await reports.report(gw, GatewayReport("event", None, happened, NOW))
    assert [(e.name, e.events) for e in events] == [
        ("a", [DeviceEvent(NOW, "boot")]),
        ("b", [DeviceEvent(NOW, "boot")]),
    ]
    assert reports.skipped == 4


async def test_messages_in_flight_wait_for_one_fetch_of_a_gateways_children(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway's children not cached: the resolutions in flight wait for one fetch
    (not one each); one cancelled leaves it to the others. The tree changing during
    a fetch keeps its result out of the cache, and a resolution after the change
    fetches anew."""
    tree = topology(world)
    await world.device("gw")
    await world.device("z")
    await world.device("y")
    await world.device("x")
    await world.device("a", online=False, gateway=("p1", "gw"), sub_address="a")
    await world.device("b", online=False, gateway=("p1", "gw"), sub_address="b")
    fetched: list[str] = []
    release = asyncio.Event()
    children = world.storage.devices.children

    async def slow(product_id: str, name: str, limit: int) -> object:
        if name == "gw":
            fetched.append(name)
            await release.wait()
        return await children(product_id, name, limit)

    monkeypatch.setattr(world.storage.devices, "children", slow)
    waiting = [asyncio.create_task(tree.resolve(("p1", "gw"), ("a",))) for _ in range(20)]
    await eventually(lambda: fetched == ["gw"])
    waiting[0].cancel()
    release.set()
    assert await asyncio.gather(*waiting[1:]) == [("p1", "a")] * 19
    assert waiting[0].cancelled() and fetched == ["gw"]
    assert await tree.resolve(("p1", "gw"), ("a",)) == ("p1", "a")
    assert fetched == ["gw"]  # cached

    await world.devices.delete_device("p1", "a")  # empties the cache
    fetched.clear()
    release.clear()
    first = asyncio.create_task(tree.resolve(("p1", "gw"), ("b",)))
    await eventually(lambda: fetched == ["gw"])
    await world.devices.delete_device("p1", "z")  # the tree may have changed meanwhile
    release.set()
    assert await first == ("p1", "b")
    assert await tree.resolve(("p1", "gw"), ("b",)) == ("p1", "b")
    assert fetched == ["gw", "gw"]  # the first fetch's result was not cached
    assert await tree.resolve(("p1", "gw"), ("b",)) == ("p1", "b")
    assert fetched == ["gw", "gw"]  # this one's was

    await world.devices.delete_device("p1", "y")
    fetched.clear()
    release.clear()
    first = asyncio.create_task(tree.resolve(("p1", "gw"), ("b",)))
    await eventually(lambda: fetched == ["gw"])
    await world.devices.delete_device("p1", "x")  # changed while the fetch is under way
    second = asyncio.create_task(tree.resolve(("p1", "gw"), ("b",)))
    await eventually(lambda: fetched == ["gw", "gw"])  # so a fetch of its own, not that one
    release.set()
    assert [await first, await second] == [("p1", "b"), ("p1", "b")]
    assert await tree.resolve(("p1", "gw"), ("b",)) == ("p1", "b")
    assert fetched == ["gw", "gw"]
