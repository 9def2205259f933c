"""ThingService's posts without a task (`device_post_now`), on the memory storage.

The common post (the sender's own properties, its product's model cached, every
value fitting) is the storage's own future; its reply and bookkeeping follow the
write. Everything else takes the coroutine, which decides as it always did; the
outcomes are the same either way: 200 once stored, 303 for a device deleted
meanwhile (acknowledged) or a storage failure (not acknowledged), the model's
code for a value that does not fit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

from tests.services.conftest import Settling, World, eventually
from thingshub.core import thingmodel
from thingshub.core.errors import Unavailable
from thingshub.core.events import TelemetryReceived
from thingshub.core.messages import DeviceRef, ThingData, ThingPost, ThingReply, ThingValue
from thingshub.core.model import Point, PointsAt
from thingshub.core.ports import TelemetryRepo
from thingshub.core.settlement import Settlement
from thingshub.core.thingvalues import ValuesAt
from thingshub.services.things import ThingService

NOW = 1_700_000_000_000
MODEL = {
    "properties": [
        {
            "identifier": "temp",
            "name": "temp",
            "accessMode": "r",
            "dataType": {"type": "float", "specs": {"min": -40, "max": 125}},
        }
    ]
}


def things(world: World, points: TelemetryRepo | None = None) -> ThingService:
    return ThingService(
        world.storage.thing_models,
        world.storage.desired,
        points or world.storage.telemetry,
        world.storage.events,
        world.devices,
        world.commands,
        world.link,
        world.clock,
        world.bus,
    )


def post(*values: tuple[str, object], identity: tuple[str, str] | None = None) -> ThingPost:
    data = ThingData(identity, tuple(ThingValue(k, v, None) for k, v in values), ())
    return ThingPost("property/post", "7", (data,), NOW)


async def ready(world: World, service: ThingService) -> DeviceRef:
    """A device whose product's model is set and cached."""
    ref = await world.device()
    await service.set_model("p1", MODEL)
    await service.model("p1")
    return ref


def replies(world: World, ref: DeviceRef) -> list[tuple[int, str | None]]:
    return [(r.code, r.hint) for r in world.link.received(ref, ThingReply)]


async def test_the_common_post_is_the_storages_future_replied_once_stored(
    world: World,
) -> None:
    service = things(world)
    ref = await ready(world, service)
    announced = world.watch(TelemetryReceived)
    outcome = service.device_post_now(ref, post(("temp", 21.5)))
    assert isinstance(outcome, asyncio.Future)  # no task, no coroutine
    assert await outcome is None
    await eventually(lambda: replies(world, ref))
    assert replies(world, ref) == [(thingmodel.SUCCESS, None)]
    assert service.stored_points == 1
    assert await world.storage.telemetry.latest("p1", "d1") == {"temp": (NOW, 21.5)}
    assert [(e.name, e.points) for e in announced] == [("d1", [Point("temp", NOW, 21.5)])]


async def test_a_device_deleted_meanwhile_is_answered_303_and_acknowledged(
    world: World,
) -> None:
    service = things(world)
    ref = await ready(world, service)
    await world.devices.delete_device("p1", "d1")
    outcome = service.device_post_now(ref, post(("temp", 1.0)))
    assert isinstance(outcome, asyncio.Future)
    assert await outcome == 0  # acknowledged: nothing to send again
    await eventually(lambda: replies(world, ref))
    assert replies(world, ref) == [(thingmodel.INTERNAL_ERROR, "device deleted")]
    assert service.stored_points == 0


class Failing:
    """A telemetry store whose every write fails (the database is away)."""

    def append_now(
        self,
        product_id: str,
        name: str,
        points: Sequence[Point],
        then: Callable[[], None] | None = None,
    ) -> Awaitable[int | None]:
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        future.set_exception(Unavailable("the database is away"))
        return future

    append_settled = append_now

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"not used here: {name}")


async def test_common_posts_of_one_settlement_are_answered_by_their_outcome(
    world: World,
) -> None:
    """Posts joining one settlement: the stored one is replied 200 and counted as it
    commits, a device deleted meanwhile and a failed one 303; one waiter for all."""
    store = Settling()
    service = things(world, store)
    refs = [await ready(world, service)]
    refs += [await world.device(name) for name in ("d2", "d3")]
    outcomes = [service.device_post_now(ref, post(("temp", 1.0))) for ref in refs]
    assert all(o is store.settlement for o in outcomes)  # no future, no task
    assert len(store.settlement._waiters) == 1
    store.decide(failures={2: Unavailable("the database is away")}, missing={1})
    assert [replies(world, ref) for ref in refs] == [
        [(thingmodel.SUCCESS, None)],
        [(thingmodel.INTERNAL_ERROR, "device deleted")],
        [(thingmodel.INTERNAL_ERROR, "storage failed")],
    ]
    assert service.stored_points == 1
    # A failed batch: every post of it 303, nothing counted; the next settlement anew.
    store.settlement, store.thens = Settlement(), []
    service.device_post_now(refs[0], post(("temp", 2.0)))
    store.decide(error=Unavailable("the database is away"))
    assert replies(world, refs[0])[-1] == (thingmodel.INTERNAL_ERROR, "storage failed")
    assert service.stored_points == 1


async def test_a_storage_failure_is_answered_303_and_not_acknowledged(world: World) -> None:
    service = things(world, Failing())
    ref = await ready(world, service)
    outcome = service.device_post_now(ref, post(("temp", 1.0)))
    assert isinstance(outcome, asyncio.Future)
    with pytest.raises(Unavailable):
        await outcome
    await eventually(lambda: replies(world, ref))
    assert replies(world, ref) == [(thingmodel.INTERNAL_ERROR, "storage failed")]
    assert service.stored_points == 0


@pytest.mark.parametrize(
    "message",
    [
        post(("temp", 500.0)),  # does not fit the model: refused by the coroutine
        post(("humidity", 1.0)),  # not in the model
        post(("temp", 1.0), identity=("p1", "other")),  # another device's data
        ThingPost("property/post", "7", (), NOW),  # nothing to store
    ],
)
async def test_anything_else_takes_the_coroutine(world: World, message: ThingPost) -> None:
    service = things(world)
    ref = await ready(world, service)
    outcome = service.device_post_now(ref, message)
    assert asyncio.iscoroutine(outcome)
    await outcome
    await eventually(lambda: replies(world, ref))
    assert len(replies(world, ref)) == 1


async def test_a_model_not_cached_yet_is_loaded_by_the_coroutine(world: World) -> None:
    service = things(world)
    ref = await world.device()
    await service.set_model("p1", MODEL)
    outcome = service.device_post_now(ref, post(("temp", 500.0)))
    assert asyncio.iscoroutine(outcome)
    await outcome
    assert replies(world, ref)[0][0] == thingmodel.DATA_TYPE_ERROR
    # Cached now: the next post takes the fast path.
    fast = service.device_post_now(ref, post(("temp", 5.0)))
    assert isinstance(fast, asyncio.Future)
    assert await fast is None


class Recording:
    """The storage's telemetry, remembering what each append was handed."""

    def __init__(self, inner: TelemetryRepo) -> None:
        self.inner = inner
        self.appended: list[Sequence[Point]] = []

    def append_settled(
        self,
        product_id: str,
        name: str,
        points: Sequence[Point],
        then: Callable[[], None] | None = None,
    ) -> Settlement | Awaitable[int | None]:
        self.appended.append(points)
        return self.inner.append_settled(product_id, name, points, then)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def post_at(ts: int | None, **posted: object) -> ThingPost:
    return ThingPost("property/post", "7", (ThingData(None, ValuesAt(ts, posted), ()),), NOW)


@pytest.mark.parametrize("ts", [None, NOW - 5])
async def test_values_at_one_time_are_stored_as_points_at_that_time(
    world: World, ts: int | None
) -> None:
    """A property post at one time goes to the storage as one `PointsAt` of the values
    as checked: no `Point` a value; its reply and announcement as before."""
    store = Recording(world.storage.telemetry)
    service = things(world, store)
    ref = await ready(world, service)
    announced = world.watch(TelemetryReceived)
    outcome = service.device_post_now(ref, post_at(ts, temp=21))
    assert isinstance(outcome, asyncio.Future | Settlement)
    await eventually(lambda: replies(world, ref))
    assert replies(world, ref) == [(thingmodel.SUCCESS, None)]
    at = ts or NOW
    assert [type(p) for p in store.appended] == [PointsAt] and store.appended[0] == [
        Point("temp", at, 21)
    ]
    assert await world.storage.telemetry.latest("p1", "d1") == {"temp": (at, 21)}
    assert [e.points for e in announced] == [[Point("temp", at, 21)]]
    assert service.stored_points == 1


async def test_values_at_one_time_without_a_model_are_stored_free(world: World) -> None:
    store = Recording(world.storage.telemetry)
    service = things(world, store)
    ref = await world.device()
    await service.model("p1")  # cached: no model
    outcome = service.device_post_now(ref, post_at(None, anything={"n": 1}))
    assert not asyncio.iscoroutine(outcome)
    await eventually(lambda: replies(world, ref))
    assert replies(world, ref) == [(thingmodel.SUCCESS, None)]
    assert store.appended == [[Point("anything", NOW, {"n": 1})]]


@pytest.mark.parametrize(
    "message",
    [
        post_at(None, temp=500.0),  # does not fit the model
        post_at(None, humidity=1.0),  # not in the model
        ThingPost(
            "pack/post",
            "7",
            (ThingData(None, ValuesAt(None, {"temp": 1.0}), (ThingValue("boot", {}, None),)),),
            NOW,
        ),  # events too
    ],
)
async def test_values_at_one_time_refused_take_the_coroutine(
    world: World, message: ThingPost
) -> None:
    service = things(world)
    ref = await ready(world, service)
    outcome = service.device_post_now(ref, message)
    assert asyncio.iscoroutine(outcome)
    await outcome
    await eventually(lambda: replies(world, ref))
    assert len(replies(world, ref)) == 1 and replies(world, ref)[0][0] != thingmodel.SUCCESS


async def test_a_value_refused_without_a_model_takes_the_coroutine(world: World) -> None:
    service = things(world)
    ref = await world.device()
    await service.model("p1")  # cached: no model
    outcome = service.device_post_now(ref, post_at(None, anything=None))
    assert asyncio.iscoroutine(outcome)
    await outcome
    assert replies(world, ref)[0][0] == thingmodel.DATA_TYPE_ERROR


@pytest.mark.parametrize("message", [post_at(None, temp=21), post(("temp", 21.5))])
async def test_a_success_nobody_could_receive_is_not_built(
    world: World, message: ThingPost
) -> None:
    """No connection holds a subscription (`heard` is False): the post is stored,
    counted and announced, and no reply is made; a refusal is still sent."""
    service = things(world)
    ref = await ready(world, service)
    world.link.anyone_subscribed = False
    announced = world.watch(TelemetryReceived)
    outcome = service.device_post_now(ref, message)
    assert isinstance(outcome, asyncio.Future | Settlement)
    await eventually(lambda: announced)
    assert service.stored_points == 1
    slow = service.device_post(ref, post(("temp", 22.0), identity=("p1", "d1")))
    await slow
    assert service.stored_points == 2
    await asyncio.sleep(0)  # a reply would be sent on this turn
    assert [m for _, m in world.link.sent if isinstance(m, ThingReply)] == []
    await service.device_post(ref, post(("temp", 500.0)))
    assert replies(world, ref)[0][0] == thingmodel.DATA_TYPE_ERROR
