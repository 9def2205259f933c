"""PresenceService: who is online and when each device was last heard from.

Online while at least one connection is open; each transition announced
once; activity only moves forward; changes are kept in memory (reads are
never behind) and recorded in batches by `flush`; a start marks everyone
recorded online offline. The clock is fake, so every time is exact.
"""

from __future__ import annotations

from pathlib import Path

from tests.services.conftest import World, build_world
from thingshub.core.events import PresenceChanged
from thingshub.core.model import Presence
from thingshub.services.presence import PresenceService

T0 = 1_700_000_000_000


async def test_a_connection_makes_a_device_online_and_its_close_offline(world: World) -> None:
    await world.device(online=False)
    changes = world.watch(PresenceChanged)
    world.presence.connected("p1", "d1", 7)
    world.clock.advance(30)
    world.presence.disconnected("p1", "d1", 7)
    assert not world.presence.is_online("p1", "d1")
    assert changes == [
        PresenceChanged("p1", "d1", True, T0),
        PresenceChanged("p1", "d1", False, T0 + 30),
    ]
    assert await world.presence.get("p1", "d1") == Presence(False, T0, T0 + 30)


async def test_the_newest_connection_holds_the_device(world: World) -> None:
    """A takeover: the new connection logs in before the old one's close arrives;
    that late close must not make the device offline."""
    await world.device(online=False)
    changes = world.watch(PresenceChanged)
    world.presence.connected("p1", "d1", 1)
    world.presence.connected("p1", "d1", 2)  # the same device again: no new transition
    world.presence.disconnected("p1", "d1", 1)  # the older one's late close
    assert world.presence.is_online("p1", "d1")
    world.presence.connected("p1", "d1", 1)  # an accept older than the holder changes nothing
    world.presence.disconnected("p1", "d1", 1)
    assert world.presence.is_online("p1", "d1")
    world.presence.disconnected("p1", "d1", 2)
    assert not world.presence.is_online("p1", "d1")
    world.presence.disconnected("p1", "d1", 2)  # a repeated close changes nothing
    assert [c.online for c in changes] == [True, False]


async def test_activity_moves_forward_only_and_only_while_connected(world: World) -> None:
    await world.device()
    world.presence.touch("p1", "d1", T0 + 500)
    world.presence.touch("p1", "d1", T0 + 200)  # an older sample changes nothing
    assert await world.presence.get("p1", "d1") == Presence(True, T0 + 500, T0)
    world.disconnect("d1")
    world.presence.touch("p1", "d1", T0 + 900)  # a late sample of a closed connection
    assert await world.presence.get("p1", "d1") == Presence(False, T0 + 500, T0)


async def test_changes_are_recorded_in_one_batch_by_flush(world: World) -> None:
    await world.device("d1")
    await world.device("d2")
    world.presence.touch("p1", "d2", T0 + 7)
    assert await world.storage.devices.presence("p1", "d1") == Presence(False)
    await world.presence.flush()
    assert await world.storage.devices.presence("p1", "d1") == Presence(True, T0, T0)
    assert await world.storage.devices.presence("p1", "d2") == Presence(True, T0 + 7, T0)
    await world.presence.flush()  # nothing pending: nothing to do


async def test_reads_prefer_memory_then_the_store(world: World, tmp_path: Path) -> None:
    await world.device("d1")
    await world.device("d2", online=False)
    world.disconnect("d1")
    await world.presence.flush()
    # Recorded and offline: no longer kept in memory, read from the store.
    other = build_world(tmp_path / "other", storage=world.storage, clock=world.clock)
    assert await other.presence.get("p1", "d1") == Presence(False, T0, T0)
    assert await other.presence.get("p1", "d2") == Presence(False)
    assert await other.presence.get("p1", "nobody") == Presence(False)
    world.connect("d2")
    assert await world.presence.get_many([("p1", "d1"), ("p1", "d2"), ("p1", "x")]) == {
        ("p1", "d1"): Presence(False, T0, T0),
        ("p1", "d2"): Presence(True, T0, T0),
        ("p1", "x"): Presence(False),
    }
    assert await world.presence.get_many([("p1", "d2")]) == {("p1", "d2"): Presence(True, T0, T0)}


async def test_online_devices_are_counted_per_product(world: World) -> None:
    await world.device("d1", "p1")
    await world.device("d2", "p1")
    await world.device("d1", "p2")
    await world.device("d3", "p2", online=False)
    assert world.presence.online_count() == 3
    assert world.presence.online_count("p1") == 2
    assert world.presence.online_count("p2") == 1
    assert world.presence.online_count("p3") == 0


async def test_a_deleted_device_is_forgotten_without_a_record(world: World) -> None:
    await world.device()
    changes = world.watch(PresenceChanged)
    world.presence.forget("p1", "d1")
    await world.presence.flush()
    assert not world.presence.is_online("p1", "d1")
    assert changes == []
    assert await world.storage.devices.presence("p1", "d1") == Presence(False)


async def test_a_start_marks_every_device_recorded_online_offline(
    world: World, tmp_path: Path
) -> None:
    """The previous run stopped without recording its disconnections."""
    await world.device()
    await world.presence.flush()
    restarted = build_world(tmp_path / "next", storage=world.storage, clock=world.clock)
    world.clock.advance(60_000)
    await restarted.presence.start()
    try:
        assert await restarted.presence.get("p1", "d1") == Presence(False, T0, T0 + 60_000)
    finally:
        await restarted.presence.stop()


async def test_stop_records_what_is_pending(world: World) -> None:
    await world.presence.start()
    await world.device()
    await world.presence.stop()
    assert await world.storage.devices.presence("p1", "d1") == Presence(True, T0, T0)
    await world.presence.stop()  # stopping twice is harmless


def nodes(world: World, *ids: str) -> list[PresenceService]:
    """The presence of several nodes of a cluster on one store (and one bus)."""
    return [PresenceService(world.storage.devices, world.clock, world.bus, node=n) for n in ids]


async def test_a_nodes_release_takes_the_sub_devices_of_its_gateways(world: World) -> None:
    """What the sweep does for a dead node: a sub-device reached through a
    gateway's connection is recorded under the gateway's node, so it goes too;
    devices of other nodes stay."""
    for name in ("gw", "sub", "d3"):
        await world.device(name, online=False)
    n1, n2 = nodes(world, "n1", "n2")
    n1.connected("p1", "gw", 1)
    n1.reached("p1", "sub", ("p1", "gw"))
    n2.connected("p1", "d3", 1)
    await n1.flush()
    await n2.flush()
    changes = world.watch(PresenceChanged)
    assert await n2.release("n1") == [("p1", "gw"), ("p1", "sub")]
    assert [(c.name, c.online) for c in changes] == [("gw", False), ("sub", False)]
    assert await world.storage.devices.holder("p1", "d3") == "n2"
    assert await world.storage.devices.holder("p1", "gw") is None


async def test_a_device_handed_over_leaves_a_node_without_an_offline(world: World) -> None:
    """A newer login on n2: n1 announces nothing of the device, only its
    sub-devices (reached through the closed connection) go offline; the device
    ends up held by n2 whichever node writes first."""
    for name in ("gw", "sub"):
        await world.device(name, online=False)
    for first in ("n1", "n2"):
        n1, n2 = nodes(world, "n1", "n2")
        n1.connected("p1", "gw", 1)
        n1.reached("p1", "sub", ("p1", "gw"))
        await n1.flush()
        n2.connected("p1", "gw", 5)
        changes = world.watch(PresenceChanged)
        n1.handed_over("p1", "gw", 1)
        assert [(c.name, c.online) for c in changes] == [("sub", False)]
        assert not n1.is_online("p1", "gw")
        for node in (n1, n2) if first == "n1" else (n2, n1):
            await node.flush()
        assert await world.storage.devices.holder("p1", "gw") == "n2"
        n2.disconnected("p1", "gw", 5)
        await n2.flush()
        assert await world.storage.devices.holder("p1", "gw") is None


async def test_a_gateways_report_reaches_its_sub_devices_at_one_reading(world: World) -> None:
    """`reached_all`: as `reached` for each sub-device of one report; one already reached
    through that gateway has its activity noted, folded into its state (and its record)
    before anything reads or changes it: no new `Presence` a message."""
    await world.device("gw")
    for name in ("a", "b"):
        await world.device(name, online=False, gateway=("p1", "gw"), sub_address=name)
    changes = world.watch(PresenceChanged)
    presence = world.presence
    a, b, gw = ("p1", "a"), ("p1", "b"), ("p1", "gw")
    presence.reached_all([a, b], via=("p1", "nobody"))  # not connected: nothing
    assert not presence.is_online(*a)
    world.clock.advance(10)
    presence.reached_all([a, gw, b], via=gw)  # the gateway itself: nothing
    assert presence.is_online(*a) and presence.is_online(*b) and not presence.is_connected(*a)
    assert [(c.name, c.online, c.ts) for c in changes] == [
        ("a", True, T0 + 10),
        ("b", True, T0 + 10),
    ]
    made = presence._state[a]
    world.clock.advance(5)
    presence.reached_all([a, b], via=gw)
    world.clock.advance(5)
    presence.reached_all([a], via=gw)
    assert presence._state[a] is made  # noted only
    assert await presence.get(*a) == Presence(True, T0 + 20, T0 + 10)
    assert await presence.get_many([a, b]) == {
        a: Presence(True, T0 + 20, T0 + 10),
        b: Presence(True, T0 + 15, T0 + 10),
    }
    world.clock.advance(5)
    presence.reached_all([b], via=gw)
    await presence.flush()
    assert await world.storage.devices.presence(*b) == Presence(True, T0 + 25, T0 + 10)
    world.clock.advance(5)
    presence.reached_all([a], via=gw)
    world.clock.advance(5)
    world.disconnect("gw")  # noted activity kept as its sub-devices go offline
    assert await presence.get(*a) == Presence(False, T0 + 30, T0 + 35)
    assert [(c.name, c.online) for c in changes[2:]] == [("gw", False), ("a", False), ("b", False)]


async def test_noted_activity_never_goes_back(world: World) -> None:
    await world.device("gw")
    await world.device("a", online=False, gateway=("p1", "gw"), sub_address="a")
    presence, a, gw = world.presence, ("p1", "a"), ("p1", "gw")
    presence.reached_all([a], via=gw)
    world.clock.advance(10)
    presence.reached_all([a], via=gw)
    world.clock.jump(-5)  # the wall clock stepped back
    presence.reached_all([a], via=gw)
    presence.touch(*a, T0)  # folded first (and a sub-device is not connected: no touch)
    assert await presence.get(*a) == Presence(True, T0 + 10, T0)


async def test_one_devices_reading_folds_only_its_own_noted_activity(world: World) -> None:
    """A device's touch or get folds its own noted activity, not every sub-device's: the
    rest wait for the flush (a gateway's touch every second folded them all)."""
    await world.device("gw")
    for name in ("a", "b"):
        await world.device(name, online=False, gateway=("p1", "gw"), sub_address=name)
    presence, a, b, gw = world.presence, ("p1", "a"), ("p1", "b"), ("p1", "gw")
    presence.reached_all([a, b], via=gw)
    world.clock.advance(5)
    presence.reached_all([a, b], via=gw)
    presence.touch(*gw, T0 + 5)
    assert await presence.get(*a) == Presence(True, T0 + 5, T0)
    assert set(presence._heard) == {b}
    await presence.flush()
    assert not presence._heard
    assert await world.storage.devices.presence(*b) == Presence(True, T0 + 5, T0)
