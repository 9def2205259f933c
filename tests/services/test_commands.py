"""CommandService: calls from applications to devices, on the memory storage.

One path for both protocols: the call is recorded, sent, and waits for its
answer; each answer is judged and the verdict told to the device in its own
protocol's words; offline and unsubscribed devices fail at once, a device
leaving fails its waiting calls at once, and every record ends in exactly one
final status. Timeouts are real (asyncio), so only the tests of timeouts wait,
for the shortest timeout a caller may ask (1 s).
"""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.services.conftest import Script, World, eventually
from thingshub.core import commands as rules
from thingshub.core.errors import (
    AnswerTooLarge,
    BadDeviceAnswer,
    CommandTimeout,
    DeviceOffline,
    InvalidRequest,
    NotFound,
)
from thingshub.core.events import CommandFinished
from thingshub.core.messages import AnswerVerdict, AttributesGet, Call, Control, DeviceRef
from thingshub.core.model import CommandRecord

ONENET_CMDS = "$sys/p1/d1/cmd/#"


def onenet_answer(payload: bytes) -> Script:
    """A OneNET device's script: answer every command with `payload`."""

    def script(call: Call) -> tuple[str, bytes]:
        return f"$sys/p1/d1/cmd/response/{call.call_id}", payload

    return script


async def record(world: World, cmd_id: str) -> CommandRecord:
    found = await world.storage.commands.get(cmd_id)
    assert found is not None
    return found


# ---------------------------------------------------------------- answered calls


async def test_a_onenet_command_is_recorded_sent_and_answered(world: World) -> None:
    ref = await world.device(subscribe=(ONENET_CMDS,))
    world.link.on_call(ref, onenet_answer(b"done"))
    finished = world.watch(CommandFinished)
    result = await world.commands.call("p1", "d1", rules.raw_command(b"\x01reboot"))
    assert re.fullmatch(r"[0-9a-f]{16}", result.call_id)
    assert (result.payload, result.body) == (b"done", None)
    # The device got the command as sent, then the verdict on its answer.
    assert world.link.wire[("p1", "d1")] == [
        (f"$sys/p1/d1/cmd/request/{result.call_id}", b"\x01reboot"),
        (f"$sys/p1/d1/cmd/response/{result.call_id}/accepted", b""),
    ]
    stored = await record(world, result.call_id)
    assert (stored.status, stored.request, stored.response, stored.family, stored.kind) == (
        "answered",
        b"\x01reboot",
        b"done",
        "onenet",
        "command",
    )
    assert stored.sent_at == stored.created_at == stored.answered_at == world.clock.now_ms()
    assert [(e.cmd_id, e.status) for e in finished] == [(result.call_id, "answered")]


async def test_a_thingspanel_command_gets_a_clock_id_and_its_answer_read(world: World) -> None:
    ref = await world.device(subscribe=("devices/command/d1/+",))
    world.link.on_call(
        ref,
        lambda call: (
            f"devices/command/response/{call.call_id}",
            b'{"result":0,"message":"success","ts":1609459200}',
        ),
    )
    world.clock.now = 1_700_000_123_456
    result = await world.commands.call("p1", "d1", rules.method_call("Restart", {"delay": 5}))
    assert result.call_id == "0123456"  # the last 7 digits of the clock
    assert result.body == {"result": 0, "message": "success", "ts": 1609459200}
    assert world.link.wire[("p1", "d1")] == [
        ("devices/command/d1/0123456", b'{"method":"Restart","params":{"delay":5}}')
    ]  # ThingsPanel is never told the verdict on its answer
    page = await world.commands.list_records("p1", "d1")
    [stored] = page.items
    # Clock ids repeat over time, so the record's own id is made unique.
    assert re.fullmatch(r"0123456-[0-9a-f]{8}", stored.cmd_id)
    assert (stored.status, stored.kind) == ("answered", "command")


async def test_an_attribute_set_waits_for_its_own_answer_topic(world: World) -> None:
    ref = await world.device(subscribe=("devices/attributes/set/d1/+",))
    world.link.on_call(
        ref,
        lambda call: (
            f"devices/attributes/set/response/{call.call_id}",
            b'{"result":1,"errcode":"INVALID_PARAM","message":"no such attribute"}',
        ),
    )
    result = await world.commands.call("p1", "d1", rules.attribute_set({"heartbeat": 30}))
    assert result.body is not None and result.body["result"] == 1  # a failure is an answer


async def test_calls_to_one_device_never_wait_for_each_other(world: World) -> None:
    await world.device(subscribe=("devices/command/d1/+",))
    calls = [
        asyncio.create_task(world.commands.call("p1", "d1", rules.method_call(f"m{i}", None)))
        for i in range(3)
    ]
    await eventually(lambda: len(world.link.received(DeviceRef("p1", "d1", "d1"), Call)) == 3)
    sent = world.link.received(DeviceRef("p1", "d1", "d1"), Call)
    ids = [c.call_id for c in sent]
    assert len(set(ids)) == 3  # one clock reading, three ids: each moves on past those in use
    ref = DeviceRef("p1", "d1", "d1")
    for call in reversed(sent):  # answered in the reverse order
        await world.link.publish(
            ref, f"devices/command/response/{call.call_id}", b'{"result":0,"message":"ok"}'
        )
    results = await asyncio.gather(*calls)
    assert [r.call_id for r in results] == ids


# ---------------------------------------------------------------- calls that cannot be made


async def test_an_offline_device_fails_at_once_and_nothing_is_sent(world: World) -> None:
    await world.device(online=False, subscribe=(ONENET_CMDS,))
    with pytest.raises(DeviceOffline, match="offline"):
        await world.commands.call("p1", "d1", rules.raw_command(b"x"))
    assert world.link.sent == []
    assert (await world.commands.list_records("p1", "d1")).items == []


async def test_a_device_not_subscribed_to_its_commands_fails_the_call_at_once(
    world: World,
) -> None:
    await world.device(subscribe=("$sys/p1/d1/image/#",))
    with pytest.raises(DeviceOffline, match="not subscribed"):
        await world.commands.call("p1", "d1", rules.raw_command(b"x"))
    [stored] = (await world.commands.list_records("p1", "d1")).items
    assert (stored.status, stored.detail) == ("failed", "the device is not subscribed")


async def test_calls_to_unknown_devices_and_bad_timeouts_are_refused(world: World) -> None:
    await world.device()
    with pytest.raises(NotFound, match="device 'd2'"):
        await world.commands.call("p1", "d2", rules.raw_command(b"x"))
    with pytest.raises(NotFound, match="product 'p2'"):
        await world.commands.call("p2", "d1", rules.raw_command(b"x"))
    with pytest.raises(InvalidRequest, match="between 1 and 30"):
        await world.commands.call("p1", "d1", rules.raw_command(b"x"), timeout=31)


# ---------------------------------------------------------------- verdicts


async def test_an_answer_too_large_fails_the_call_with_onenets_code(world: World) -> None:
    ref = await world.device(subscribe=(ONENET_CMDS,))
    world.link.on_call(ref, onenet_answer(b"x" * 1024))
    with pytest.raises(AnswerTooLarge) as info:
        await world.commands.call("p1", "d1", rules.raw_command(b"x"))
    assert (info.value.err_code, info.value.err_msg) == (99, "maximum payload size exceeded")
    assert "1024 bytes; at most 1023" in info.value.message
    [(_, rejected)] = [w for w in world.link.wire[("p1", "d1")] if w[0].endswith("/rejected")]
    assert rejected == b'{"err_code":99,"err_msg":"maximum payload size exceeded"}'
    [stored] = (await world.commands.list_records("p1", "d1")).items
    assert stored.status == "rejected" and stored.response is None
    assert world.commands.ignored["too_large"] == 1


async def test_an_answer_that_is_not_a_response_object_fails_the_call(world: World) -> None:
    ref = await world.device(subscribe=("devices/command/d1/+",))
    world.link.on_call(ref, lambda call: (f"devices/command/response/{call.call_id}", b"ok"))
    with pytest.raises(BadDeviceAnswer, match="not a response object"):
        await world.commands.call("p1", "d1", rules.method_call("Reboot", None))
    [stored] = (await world.commands.list_records("p1", "d1")).items
    assert stored.status == "rejected" and "not valid JSON" in (stored.detail or "")


async def test_unknown_and_repeated_answers_change_nothing_and_are_counted(world: World) -> None:
    ref = await world.device(subscribe=(ONENET_CMDS,))
    world.link.on_call(ref, onenet_answer(b"first"))
    result = await world.commands.call("p1", "d1", rules.raw_command(b"x"))
    await world.link.publish(ref, f"$sys/p1/d1/cmd/response/{result.call_id}", b"again")
    await world.link.publish(ref, "$sys/p1/d1/cmd/response/no-such-id", b"?")
    assert world.commands.ignored == {"unknown": 2}
    rejected = [p for t, p in world.link.wire[("p1", "d1")] if t.endswith("/rejected")]
    assert rejected == [b'{"err_code":113,"err_msg":"CMD id not found"}'] * 2
    stored = await record(world, result.call_id)
    assert (stored.status, stored.response) == ("answered", b"first")


async def test_a_device_cannot_answer_another_devices_call(world: World) -> None:
    d1 = await world.device("d1", subscribe=("$sys/p1/d1/cmd/#",))
    d2 = await world.device("d2", subscribe=("$sys/p1/d2/cmd/#",))
    call = asyncio.create_task(world.commands.call("p1", "d1", rules.raw_command(b"x")))
    await eventually(lambda: world.link.received(d1, Call))
    [sent] = world.link.received(d1, Call)
    await world.link.publish(d2, f"$sys/p1/d2/cmd/response/{sent.call_id}", b"not yours")
    assert world.link.received(d2, AnswerVerdict) == [
        AnswerVerdict("onenet", sent.call_id, "unknown")
    ]
    assert not call.done()  # still waiting for its own device
    await world.link.publish(d1, f"$sys/p1/d1/cmd/response/{sent.call_id}", b"mine")
    assert (await call).payload == b"mine"


async def test_a_call_times_out_and_a_late_answer_is_told_so(world: World) -> None:
    ref = await world.device(subscribe=(ONENET_CMDS,))
    finished = world.watch(CommandFinished)
    with pytest.raises(CommandTimeout, match="within 1 s"):
        await world.commands.call("p1", "d1", rules.raw_command(b"x"), timeout="1")
    [sent] = world.link.received(ref, Call)
    stored = await record(world, sent.call_id)
    assert (stored.status, stored.detail) == ("timeout", "no answer within 1 s")
    assert [e.status for e in finished] == ["timeout"]
    await world.link.publish(ref, f"$sys/p1/d1/cmd/response/{sent.call_id}", b"sorry")
    assert world.link.wire[("p1", "d1")][-1] == (
        f"$sys/p1/d1/cmd/response/{sent.call_id}/rejected",
        b'{"err_code":112,"err_msg":"CMD response timeout"}',
    )
    assert world.commands.ignored == {"late": 1}
    assert (await record(world, sent.call_id)).status == "timeout"  # final: never changes


async def test_a_device_leaving_fails_its_waiting_calls_at_once(world: World) -> None:
    ref = await world.device(subscribe=(ONENET_CMDS,))
    call = asyncio.create_task(world.commands.call("p1", "d1", rules.raw_command(b"x")))
    await eventually(lambda: world.link.received(ref, Call))
    world.disconnect("d1")
    with pytest.raises(DeviceOffline, match="disconnected before it answered"):
        await call
    [stored] = (await world.commands.list_records("p1", "d1")).items
    assert stored.status == "failed"


async def test_calls_left_waiting_by_a_stopped_server_are_failed_at_start(world: World) -> None:
    await world.device()
    left = CommandRecord("c-old", "p1", "d1", "onenet", "command", b"x", "sent", 1, sent_at=1)
    await world.storage.commands.add(left)
    await world.commands.start()
    assert (await record(world, "c-old")).status == "failed"


# ---------------------------------------------------------------- attributes and control


async def test_an_attribute_get_is_answered_by_the_next_attribute_report(world: World) -> None:
    ref = await world.device(subscribe=("devices/attributes/get/d1",))
    get = asyncio.create_task(world.commands.get_attributes("p1", "d1", ["ip", "fw"]))
    await eventually(lambda: world.link.received(ref, AttributesGet))
    assert world.link.wire[("p1", "d1")] == [("devices/attributes/get/d1", b'{"keys":["ip","fw"]}')]
    await world.link.publish(ref, "devices/attributes/1", b'{"ip":"10.0.0.2","mac":"00:11"}')
    assert await get == {"ip": "10.0.0.2"}  # only the keys asked for, of those reported


async def test_an_attribute_get_of_all_keys_takes_the_whole_report(world: World) -> None:
    ref = await world.device(subscribe=("devices/attributes/get/d1",))
    get = asyncio.create_task(world.commands.get_attributes("p1", "d1", []))
    await eventually(lambda: world.link.received(ref, AttributesGet))
    await world.link.publish(ref, "devices/attributes/2", b'{"ip":"10.0.0.2","mac":"00:11"}')
    assert await get == {"ip": "10.0.0.2", "mac": "00:11"}


async def test_an_attribute_get_fails_when_nobody_would_answer(world: World) -> None:
    ref = await world.device()
    with pytest.raises(InvalidRequest, match="keys must be a list"):
        await world.commands.get_attributes("p1", "d1", "ip")
    with pytest.raises(DeviceOffline, match="not subscribed"):
        await world.commands.get_attributes("p1", "d1", [])
    world.link.subscribe(ref, "devices/attributes/get/d1")
    get = asyncio.create_task(world.commands.get_attributes("p1", "d1", []))
    await eventually(lambda: len(world.link.received(ref, AttributesGet)) == 2)
    world.disconnect("d1")
    with pytest.raises(DeviceOffline, match="disconnected before it reported"):
        await get
    with pytest.raises(DeviceOffline, match="offline"):
        await world.commands.get_attributes("p1", "d1", [])


async def test_an_attribute_get_times_out(world: World) -> None:
    await world.device(subscribe=("devices/attributes/get/d1",))
    with pytest.raises(CommandTimeout, match="did not report attributes within 1 s"):
        await world.commands.get_attributes("p1", "d1", [], timeout=1)


async def test_control_values_are_sent_and_forgotten(world: World) -> None:
    ref = await world.device(subscribe=("devices/telemetry/control/d1",))
    await world.commands.control("p1", "d1", {"switch": True})
    assert world.link.received(ref) == [Control({"switch": True})]
    assert world.link.wire[("p1", "d1")] == [("devices/telemetry/control/d1", b'{"switch":true}')]
    assert (await world.commands.list_records("p1", "d1")).items == []  # nothing waits


async def test_control_needs_values_and_a_listening_device(world: World) -> None:
    await world.device("d1")
    with pytest.raises(InvalidRequest, match="non-empty JSON object"):
        await world.commands.control("p1", "d1", {})
    with pytest.raises(DeviceOffline, match="not subscribed"):
        await world.commands.control("p1", "d1", {"switch": True})


# ---------------------------------------------------------------- records


async def test_records_are_listed_newest_first_a_page_at_a_time(world: World) -> None:
    ref = await world.device(subscribe=(ONENET_CMDS,))
    world.link.on_call(ref, onenet_answer(b"ok"))
    ids = []
    for _ in range(5):
        ids.append((await world.commands.call("p1", "d1", rules.raw_command(b"x"))).call_id)
        world.clock.advance(1000)
    first = await world.commands.list_records("p1", "d1", limit=2)
    assert [r.cmd_id for r in first.items] == ids[:2:-1][:2]
    assert first.next is not None
    second = await world.commands.list_records("p1", "d1", limit=2, cursor=first.next)
    last = await world.commands.list_records("p1", "d1", limit=2, cursor=second.next)
    listed = [r.cmd_id for page in (first, second, last) for r in page.items]
    assert listed == ids[::-1]
    assert last.next is None
    with pytest.raises(InvalidRequest, match="cursor"):
        await world.commands.list_records("p1", "d1", cursor="not-a-cursor!")
    with pytest.raises(InvalidRequest, match="limit"):
        await world.commands.list_records("p1", "d1", limit=0)
