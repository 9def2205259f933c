"""ImageService: device images updated by devices and applications, on the memory storage.

A device's update is stored before it is accepted, each accepted update is
announced, and a non-empty delta is pushed; a device's updates are rate
limited on the (fake) clock; two writers on one store never both win, the
loser applying its update again on the winner's image; applications create,
read and patch images and tags with the same rules.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.services.conftest import World, build_world, eventually, settle
from thingshub.core.errors import Conflict, NotFound
from thingshub.core.events import ImageChanged
from thingshub.core.messages import (
    DeviceRef,
    ImageAccepted,
    ImageDelta,
    ImageRejected,
    ImageSnapshot,
)
from thingshub.core.shadow import ImageError

T = 1_700_000_000  # the fake clock's start, in seconds
OWN = "$sys/p1/d1/"
#: The seed's image update example.
SEED_UPDATE = b'{"state": {"desired": {"color": "red"}, "reported": {"color": "red"}}}'


def rejected(world: World, ref: DeviceRef) -> list[tuple[str, object, int]]:
    return [(m.request, m.request_id, m.err_code) for m in world.link.received(ref, ImageRejected)]


# ---------------------------------------------------------------- from devices


async def test_a_devices_first_update_creates_the_image_and_is_accepted(world: World) -> None:
    ref = await world.device(subscribe=(OWN + "image/#",))
    changed = world.watch(ImageChanged)
    await world.link.publish(ref, OWN + "image/update", SEED_UPDATE)
    [accepted] = world.link.received(ref)
    assert isinstance(accepted, ImageAccepted)
    assert (accepted.applied.image.version, accepted.applied.image.timestamp) == (1, T)
    stored = await world.storage.images.get("p1", "d1")
    assert stored is not None and stored.version == 1
    assert stored.document["state"] == {"desired": {"color": "red"}, "reported": {"color": "red"}}
    assert changed == [
        ImageChanged(
            "p1", "d1", 1, {"desired": {"color": "red"}, "reported": {"color": "red"}}, T * 1000
        )
    ]
    # Wire: accepted, no delta (desired equals reported).
    assert [t for t, _ in world.link.wire[("p1", "d1")]] == [OWN + "image/update/accepted"]


async def test_an_update_leaving_a_difference_is_followed_by_the_delta(world: World) -> None:
    ref = await world.device(subscribe=(OWN + "image/#",))
    await world.link.publish(ref, OWN + "image/update", b'{"state":{"desired":{"fan":"on"}}}')
    assert [type(m) for m in world.link.received(ref)] == [ImageAccepted, ImageDelta]
    assert world.link.wire[("p1", "d1")][1] == (
        OWN + "image/update/delta",
        b'{"state":{"fan":"on"},"metadata":{"fan":{"timestamp":1700000000}},'
        b'"version":1,"timestamp":1700000000}',
    )


async def test_an_update_for_another_version_is_rejected_with_165(world: World) -> None:
    ref = await world.device()
    await world.link.publish(ref, OWN + "image/update", b'{"state":{"reported":{"a":1}}}')
    await world.link.publish(
        ref, OWN + "image/update", b'{"state":{"reported":{"a":2}},"version":5,"id":"r9"}'
    )
    assert rejected(world, ref) == [("update", "r9", 165)]
    [message] = world.link.received(ref, ImageRejected)
    assert message.detail is not None and "version conflict" in message.detail
    stored = await world.storage.images.get("p1", "d1")
    assert stored is not None and stored.version == 1


async def test_a_malformed_update_is_rejected_with_its_code(world: World) -> None:
    ref = await world.device()
    await world.link.publish(ref, OWN + "image/update", b'{"id":"r1","state":{"x":1}}')
    assert rejected(world, ref) == [("update", "r1", 164)]
    assert await world.storage.images.get("p1", "d1") is None


async def test_an_update_making_the_document_too_large_is_rejected_with_161(world: World) -> None:
    ref = await world.device()
    big = b'{"state":{"reported":{"s":"' + b"x" * 500 + b'"}}}'
    for i in range(8):
        await world.link.publish(ref, OWN + "image/update", big.replace(b'"s"', b'"s%d"' % i))
    assert rejected(world, ref) == [("update", None, 161)]
    stored = await world.storage.images.get("p1", "d1")
    assert stored is not None and stored.version == 7


async def test_a_device_may_send_burst_updates_then_rate_per_second(world: World) -> None:
    ref = await world.device()
    update = b'{"state":{"reported":{"n":1}}}'
    for _ in range(20):  # the burst
        await world.link.publish(ref, OWN + "image/update", update)
    await world.link.publish(ref, OWN + "image/update", b'{"id":"x","state":{"reported":{}}}')
    assert rejected(world, ref) == [("update", "x", 128)]
    [refusal] = world.link.received(ref, ImageRejected)
    assert refusal.detail == "too many updates: at most 10 per second"
    assert world.images.rate_limited == 1
    # Refused updates are limited too (and cost a token like any other).
    await world.link.publish(ref, OWN + "image/update", b"not json")
    assert rejected(world, ref)[-1] == ("update", None, 128)
    world.clock.advance(101)  # a tenth of a second (and a bit: seconds are floats): one token
    await world.link.publish(ref, OWN + "image/update", update)
    stored = await world.storage.images.get("p1", "d1")
    assert stored is not None and stored.version == 21
    await world.link.publish(ref, OWN + "image/update", update)
    assert world.images.rate_limited == 3


async def test_rate_limits_are_per_device(world: World) -> None:
    d1 = await world.device("d1")
    d2 = await world.device("d2")
    for _ in range(21):
        await world.link.publish(d1, OWN + "image/update", b'{"state":{"reported":{"n":1}}}')
    await world.link.publish(d2, "$sys/p1/d2/image/update", b'{"state":{"reported":{"n":1}}}')
    assert [type(m) for m in world.link.received(d2)] == [ImageAccepted]


async def test_a_get_returns_the_image_or_167(world: World) -> None:
    ref = await world.device()
    await world.link.publish(ref, OWN + "image/get", b'{"id":"q1"}')
    assert rejected(world, ref) == [("get", "q1", 167)]
    await world.link.publish(ref, OWN + "image/update", SEED_UPDATE)
    await world.link.publish(ref, OWN + "image/get", b"")
    [snapshot] = world.link.received(ref, ImageSnapshot)
    assert snapshot.request_id is None and snapshot.image.version == 1


async def test_the_delta_is_pushed_when_the_device_subscribes_to_it(world: World) -> None:
    ref = await world.device(online=False)
    await world.images.patch("p1", "d1", desired={"fan": "on"})  # offline: not pushed
    world.connect("d1")
    for topic_filter in (OWN + "image/update/accepted", OWN + "cmd/#"):
        world.link.subscribe(ref, topic_filter)
        world.images.device_subscribed(ref, [topic_filter])
    await settle()
    assert world.link.received(ref, ImageDelta) == []  # neither filter takes deltas
    world.link.subscribe(ref, OWN + "image/+/delta")
    world.images.device_subscribed(ref, [OWN + "image/+/delta"])
    await eventually(lambda: world.link.wire.get(("p1", "d1")))
    assert world.link.wire[("p1", "d1")] == [
        (
            OWN + "image/update/delta",
            b'{"state":{"fan":"on"},"metadata":{"fan":{"timestamp":1700000000}},'
            b'"version":1,"timestamp":1700000000}',
        )
    ]


async def test_nothing_is_pushed_on_subscription_without_a_delta(world: World) -> None:
    ref = await world.device(subscribe=(OWN + "#",))
    world.images.device_subscribed(ref, [OWN + "#"])  # no image at all
    await settle()
    await world.link.publish(ref, OWN + "image/update", SEED_UPDATE)  # desired == reported
    world.images.device_subscribed(ref, [OWN + "#"])
    await settle()
    assert world.link.received(ref, ImageDelta) == []
    await world.images.stop()


# ---------------------------------------------------------------- two writers


async def test_two_writers_never_both_win_the_loser_reapplies(world: World, tmp_path: Path) -> None:
    """A second process (another ImageService on the same store) writes in between:
    the first one's cached image is stale, its save conflicts, and it applies its
    update again on the stored image."""
    ref = await world.device()
    await world.link.publish(ref, OWN + "image/update", b'{"state":{"reported":{"a":1}}}')
    other = build_world(tmp_path / "other", storage=world.storage, clock=world.clock)
    await other.images.patch("p1", "d1", desired={"b": 2})  # version 2, elsewhere
    await world.link.publish(ref, OWN + "image/update", b'{"state":{"reported":{"c":3}}}')
    stored = await world.storage.images.get("p1", "d1")
    assert stored is not None and stored.version == 3
    assert stored.document["state"] == {"desired": {"b": 2}, "reported": {"a": 1, "c": 3}}
    [_, accepted] = world.link.received(ref, ImageAccepted)
    assert accepted.applied.image.version == 3


async def test_an_update_naming_a_version_overtaken_by_another_writer_fails(
    world: World, tmp_path: Path
) -> None:
    ref = await world.device()
    await world.link.publish(ref, OWN + "image/update", b'{"state":{"reported":{"a":1}}}')
    other = build_world(tmp_path / "other", storage=world.storage, clock=world.clock)
    await other.images.patch("p1", "d1", desired={"b": 2})
    await world.link.publish(
        ref, OWN + "image/update", b'{"state":{"reported":{"a":5}},"version":1,"id":1}'
    )
    assert rejected(world, ref) == [("update", 1, 165)]
    stored = await world.storage.images.get("p1", "d1")
    assert stored is not None and stored.version == 2


async def test_a_deleted_devices_image_is_forgotten(world: World) -> None:
    ref = await world.device()
    await world.link.publish(ref, OWN + "image/update", b'{"id":"u","state":{"reported":{}}}')
    await world.devices.delete_device("p1", "d1")
    await world.link.publish(ref, OWN + "image/update", b'{"id":"u2","state":{"reported":{}}}')
    assert rejected(world, ref) == [("update", "u2", 128)]
    [refusal] = world.link.received(ref, ImageRejected)
    assert refusal.detail == "the device no longer exists"
    await world.link.publish(ref, OWN + "image/get", b"")  # not served from a stale cache
    assert rejected(world, ref)[-1] == ("get", None, 167)


# ---------------------------------------------------------------- from applications


async def test_an_application_creates_an_empty_image_once(world: World) -> None:
    await world.device(online=False, tags={"building": "43"})
    with pytest.raises(NotFound) as missing:
        await world.images.document("p1", "d1")
    assert missing.value.err_code == 167
    document = await world.images.create("p1", "d1")
    assert document == {
        "deviceId": "d1",
        "createTime": T,
        "status": "enabled",
        "statusReason": "created",
        "statusUpdateTime": T,
        "connectionState": "offline",
        "lastActivityTime": None,
        "tags": {"building": "43"},
        "properties": {
            "state": {"desired": {}, "reported": {}},
            "metadata": {"desired": {}, "reported": {}},
            "version": 1,
            "timestamp": T,
        },
    }
    with pytest.raises(Conflict) as existed:
        await world.images.create("p1", "d1")
    assert (existed.value.err_code, existed.value.err_msg) == (166, "device image existed")


async def test_a_patch_of_desired_is_pushed_to_an_online_device(world: World) -> None:
    ref = await world.device()
    world.clock.advance(2000)
    document = await world.images.patch("p1", "d1", desired={"fan": "on"})
    assert document["connectionState"] == "online"
    assert document["lastActivityTime"] == T
    assert document["properties"]["state"] == {
        "desired": {"fan": "on"},
        "reported": {},
        "delta": {"fan": "on"},
    }
    assert document["properties"]["version"] == 1
    assert [type(m) for m in world.link.received(ref)] == [ImageDelta]
    world.disconnect("d1")
    await world.images.patch("p1", "d1", desired={"fan": "off"}, version=1)
    assert len(world.link.received(ref)) == 1  # offline: it gets the delta when it subscribes


async def test_tags_are_not_properties(world: World) -> None:
    """Changing only tags touches neither version nor timestamp, and creates no image."""
    await world.device(tags={"floor": "1"})
    document = await world.images.patch("p1", "d1", tags={"building": "43", "floor": None})
    assert document["tags"] == {"building": "43"}
    assert "properties" not in document
    assert await world.storage.images.get("p1", "d1") is None
    await world.images.patch("p1", "d1", desired={"a": 1})
    document = await world.images.patch("p1", "d1", tags={"floor": "2"})
    assert document["properties"]["version"] == 1


async def test_a_patch_follows_the_image_rules(world: World) -> None:
    await world.device()
    with pytest.raises(ImageError) as nothing:
        await world.images.patch("p1", "d1")
    assert nothing.value.err_code == 164
    with pytest.raises(ImageError) as conflict:
        await world.images.patch("p1", "d1", desired={"a": 1}, version=3)
    assert conflict.value.err_code == 165
    with pytest.raises(ImageError) as bad_key:
        await world.images.patch("p1", "d1", desired={"a-b": 1}, tags={"t": "v"})
    assert bad_key.value.err_code == 165
    device = await world.devices.get_device("p1", "d1")
    assert dict(device.tags) == {}  # checked before anything changed
    with pytest.raises(NotFound, match="'d2'"):
        await world.images.patch("p1", "d2", desired={"a": 1})
