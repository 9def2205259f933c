"""IngestService: what devices report, stored whole and answered, on the memory storage.

Devices publish the seed's example reports; the dialect decodes them and the
service stores them (a handler returns only once its rows are stored: that is
when the gateway acknowledges), answers attribute and event reports, counts and
answers the refused ones without storing anything, and announces accepted
reports on the bus only when someone listens.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.services.conftest import World, build_world
from thingshub.core.errors import InvalidRequest, NotFound
from thingshub.core.events import AttributesReported, EventsReceived, TelemetryReceived
from thingshub.core.messages import DeviceRef, ReportAck, ReportRefused, TelemetryReport
from thingshub.core.model import DeviceEvent, Point
from thingshub.core.settlement import Settlement
from thingshub.storage import open_storage

NOW = 1_700_000_000_000  # the fake clock's start

#: The seed's real-time telemetry example.
REALTIME = b'{"temperature": 25.5, "humidity": 65.0, "switch": true}'
#: The seed's historical telemetry example.
HISTORICAL = (
    b'[{"ts": 1609459200, "values": {"temperature": 22.5, "humidity": 60.0}},'
    b' {"ts": 1609462800, "values": {"temperature": 23.0, "humidity": 61.5}}]'
)
#: The seed's attribute example.
ATTRIBUTES = b'{"ip": "192.168.1.100", "mac": "00:11:22:33:44:55", "version": "1.0.0"}'
#: The seed's real-time event example.
EVENT = b'{"method": "AlarmTriggered", "params": {"level": "high", "sensor": "temperature"}}'
#: The seed's historical event example (its first record).
HISTORICAL_EVENT = (
    b'[{"ts": 1609459200000, "method": "AlarmTriggered", "params": {"level": "high"}}]'
)


async def test_real_time_telemetry_is_stored_at_the_platforms_clock(world: World) -> None:
    ref = await world.device()
    await world.link.publish(ref, "devices/telemetry", REALTIME)
    latest = await world.storage.telemetry.latest("p1", "d1")
    assert latest == {"temperature": (NOW, 25.5), "humidity": (NOW, 65.0), "switch": (NOW, True)}
    assert (world.ingest.stored_points, world.ingest.stored_messages) == (3, 1)
    assert world.link.sent == []  # telemetry is never answered


async def test_historical_telemetry_is_stored_at_its_own_times(world: World) -> None:
    ref = await world.device()
    await world.link.publish(ref, "devices/telemetry", HISTORICAL)
    history = await world.storage.telemetry.history("p1", "d1", "temperature", 0, NOW, limit=10)
    assert [(ts, value) for ts, _, value in history] == [
        (1_609_459_200_000, 22.5),
        (1_609_462_800_000, 23.0),
    ]
    assert world.ingest.stored_points == 4


async def test_telemetry_is_announced_to_whoever_listens(world: World) -> None:
    ref = await world.device()
    telemetry = world.watch(TelemetryReceived)
    await world.link.publish(ref, "devices/telemetry", b'{"t": 1}')
    assert telemetry == [TelemetryReceived("p1", "d1", [Point("t", NOW, 1)], NOW)]


async def test_attributes_are_stored_answered_and_announced(world: World) -> None:
    ref = await world.device()
    announced = world.watch(AttributesReported)
    world.clock.advance(1500)
    await world.link.publish(ref, "devices/attributes/0123456", ATTRIBUTES)
    values = {"ip": "192.168.1.100", "mac": "00:11:22:33:44:55", "version": "1.0.0"}
    assert await world.storage.attributes.get("p1", "d1") == values
    assert world.link.received(ref) == [ReportAck("attributes", "0123456", NOW + 1500)]
    assert announced == [AttributesReported("p1", "d1", values, NOW + 1500)]


async def test_a_real_time_events_answer_echoes_its_method(world: World) -> None:
    ref = await world.device(subscribe=("devices/event/response/d1/+",))
    announced = world.watch(EventsReceived)
    await world.link.publish(ref, "devices/event/77", EVENT)
    event = DeviceEvent(NOW, "AlarmTriggered", {"level": "high", "sensor": "temperature"})
    assert [e for _, _, e in await world.storage.events.list("p1", "d1", 0, NOW + 1, 10)] == [event]
    assert world.link.wire[("p1", "d1")] == [
        (
            "devices/event/response/d1/77",
            b'{"result":0,"message":"success","ts":1700000000,"method":"AlarmTriggered"}',
        )
    ]
    assert announced == [EventsReceived("p1", "d1", [event], NOW)]


async def test_a_historical_batchs_answer_names_no_method(world: World) -> None:
    ref = await world.device()
    await world.link.publish(ref, "devices/event/78", HISTORICAL_EVENT)
    assert world.link.received(ref) == [ReportAck("event", "78", NOW, None, None)]
    stored = await world.storage.events.list("p1", "d1", 0, NOW, 10)
    assert [e.ts for _, _, e in stored] == [1_609_459_200_000]


async def test_refused_reports_are_counted_answered_and_store_nothing(world: World) -> None:
    ref = await world.device(subscribe=("devices/attributes/response/d1/+",))
    await world.link.publish(ref, "devices/telemetry", b"{}")
    await world.link.publish(ref, "devices/telemetry", b"not json")
    await world.link.publish(ref, "devices/attributes/5", b'["ip"]')
    await world.link.publish(ref, "devices/event/6", b'{"method":"M","params":1}')
    assert world.ingest.refused == {
        ("telemetry", "INVALID_PARAM"): 1,
        ("telemetry", "INVALID_JSON"): 1,
        ("attributes", "INVALID_PARAM"): 1,
        ("event", "INVALID_PARAM"): 1,
    }
    assert await world.storage.telemetry.latest("p1", "d1") == {}
    assert await world.storage.attributes.get("p1", "d1") == {}
    assert await world.storage.events.list("p1", "d1", 0, NOW + 1, 10) == []
    # Telemetry has no answer topic; the others are answered with the errcode.
    answers = world.link.received(ref, ReportAck)
    assert [(a.kind, a.reply_to, a.method, a.error.err_code) for a in answers] == [
        ("attributes", "5", None, "INVALID_PARAM"),
        ("event", "6", "M", "INVALID_PARAM"),
    ]
    [(topic, payload)] = world.link.wire[("p1", "d1")]
    assert topic == "devices/attributes/response/d1/5"
    assert payload.startswith(b'{"result":1,"errcode":"INVALID_PARAM","message":"attributes ')


async def test_a_refusal_without_a_protocol_code_counts_as_internal(world: World) -> None:
    """A dialect of the platform's own (say, a plug-in) may refuse without a code."""
    ref = await world.device()
    refused = ReportRefused("telemetry", None, InvalidRequest("no"), NOW)
    await world.ingest.refused_report(ref, refused)
    assert world.ingest.refused == {("telemetry", "INTERNAL"): 1}


async def test_reports_of_a_device_deleted_meanwhile_store_nothing_and_fail_quietly(
    world: World,
) -> None:
    """Its connection is being closed: nothing to redo, and it is not the device's fault."""
    ref = await world.device()
    await world.devices.delete_device("p1", "d1")
    await world.link.publish(ref, "devices/telemetry", REALTIME)
    await world.link.publish(ref, "devices/attributes/9", ATTRIBUTES)
    await world.link.publish(ref, "devices/event/10", EVENT)
    assert world.ingest.stored_messages == 0
    assert world.ingest.refused == {}
    answers = world.link.received(ref, ReportAck)
    assert [(a.kind, a.reply_to, type(a.error)) for a in answers] == [
        ("attributes", "9", NotFound),
        ("event", "10", NotFound),
    ]
    assert answers[1].method == "AlarmTriggered"


async def test_a_telemetry_report_handed_in_directly_is_stored_whole(world: World) -> None:
    ref = await world.device()
    points = [Point("a", NOW - 5, 1), Point("a", NOW - 5, 2), Point("b", NOW, {"x": [1]})]
    await world.ingest.telemetry_report(ref, TelemetryReport(points, NOW))
    history = await world.storage.telemetry.history("p1", "d1", "a", 0, NOW + 1, limit=10)
    assert [v for _, _, v in history] == [1, 2]  # equal times are both kept
    assert await world.storage.telemetry.latest("p1", "d1") == {
        "a": (NOW - 5, 2),
        "b": (NOW, {"x": [1]}),
    }


async def test_telemetry_settled_in_one_batch_counts_and_announces_what_it_stored(
    tmp_path: Path,
) -> None:
    """On SQLite, reports of one batch share a settlement: the counters count the
    reports it stored (not one of a device that does not exist), announced once each."""
    storage = open_storage("", tmp_path)
    await storage.open()
    try:
        world = build_world(tmp_path, storage)
        ref = await world.device()
        telemetry = world.watch(TelemetryReceived)
        ghost = DeviceRef("p1", "ghost", "dn-ghost")
        reports = [TelemetryReport([Point("t", NOW, i), Point("u", NOW, i)], NOW) for i in (1, 2)]
        outcomes = [
            world.ingest.telemetry_now(ref, reports[0]),
            world.ingest.telemetry_now(ghost, reports[0]),
            world.ingest.telemetry_now(ref, reports[1]),
        ]
        settlement = outcomes[0]
        assert isinstance(settlement, Settlement) and all(o is settlement for o in outcomes)
        decided = asyncio.Event()
        settlement.wait(decided.set)
        await decided.wait()
        assert [settlement.outcome(i) for i in range(3)] == [0, 0, 0]  # the ghost too: 0
        assert (world.ingest.stored_messages, world.ingest.stored_points) == (2, 4)
        assert [e.points for e in telemetry] == [r.points for r in reports]
        assert await storage.telemetry.latest("p1", "d1") == {"t": (NOW, 2), "u": (NOW, 2)}
    finally:
        await storage.close()
