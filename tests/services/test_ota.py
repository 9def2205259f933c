"""OtaService: upgrade tasks, their rollout, progress, timeouts and downloads, on
the memory storage and the fake clock.

A device is informed when its task has a rollout token for it and it is
online and subscribed to its inform topic (at once, by the rollout loop, or
when it subscribes); its progress moves it through the core's state machine;
the loop (`step`, driven by hand here) times out silent devices; a task whose
devices are all final completes; cancelling, deleting a device and a restart
(another service on the same store) keep every device's state consistent.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.services.conftest import PUBLIC_URL, World, build_world, settle
from thingshub.core import ota
from thingshub.core.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unavailable
from thingshub.core.events import OtaProgressed
from thingshub.core.messages import DeviceRef, OtaInform, OtaProgressRefused
from thingshub.core.model import Firmware
from thingshub.services.ota import TaskView

T0 = 1_700_000_000_000
INFORM = "ota/devices/inform/{}"
PROGRESS = "ota/devices/progress"
#: The seed's OTA success and failure reports.
SUCCESS = b'{"step": "100", "desc": "Upgrade 100%", "module": "MCU"}'
FAILURE = b'{"step": "-1", "desc": "OTA Failed, download failed", "module": "MCU"}'


async def listening(world: World, name: str = "d1", **kwargs: object) -> DeviceRef:
    """A device subscribed to its inform topic."""
    return await world.device(name, subscribe=(INFORM.format(name),), **kwargs)  # type: ignore[arg-type]


def states(view: TaskView) -> dict[str, str]:
    return {d.name: d.state for d in view.devices}


async def stored_states(world: World, task_id: str) -> dict[str, str]:
    await settle()  # writes queued by the service run on this loop
    return {d.name: d.state for d in await world.storage.ota.devices(task_id)}


def informs(world: World, ref: DeviceRef) -> list[OtaInform]:
    return [m for m in world.link.received(ref, OtaInform)]


# ---------------------------------------------------------------- a task's life


async def test_a_listening_device_is_informed_at_once_and_reports_to_success(
    world: World,
) -> None:
    ref = await listening(world)
    firmware = await world.upload()
    progressed = world.watch(OtaProgressed)
    view = await world.ota.create_task("p1", firmware.id, ["d1"], sign_method="md5")
    task_id = view.task.id
    assert (view.task.status, view.task.sign_method, states(view)) == (
        "RUNNING",
        "MD5",
        {"d1": "INFORMED"},
    )
    [(topic, payload)] = world.link.wire[("p1", "d1")]
    inform = json.loads(payload)
    assert topic == "ota/devices/inform/d1"
    assert inform == {
        "id": task_id,
        "code": 200,
        "params": {
            "version": "2.0.1",
            "size": firmware.size,
            "url": inform["params"]["url"],
            "signMethod": "MD5",
            "sign": firmware.md5,
            "module": "MCU",
            "extData": {},
        },
    }
    url = urlsplit(inform["params"]["url"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{PUBLIC_URL}/ota/download/{task_id}/d1"
    assert await stored_states(world, task_id) == {"d1": "INFORMED"}

    await world.link.publish(
        ref, PROGRESS, b'{"step": "35", "desc": "downloading", "module": "MCU"}'
    )
    device = (await world.ota.get_task("p1", task_id)).devices[0]
    assert (device.state, device.step, device.desc) == ("IN_PROGRESS", 35, "downloading")
    assert await stored_states(world, task_id) == {"d1": "IN_PROGRESS"}

    world.clock.advance(5000)
    await world.link.publish(ref, PROGRESS, SUCCESS)
    view = await world.ota.get_task("p1", task_id)
    assert (view.task.status, view.task.finished_at) == ("COMPLETED", T0 + 5000)
    device = view.devices[0]
    assert (device.state, device.step, device.desc, device.detail) == (
        "SUCCEEDED",
        100,
        "upgrade succeeded",
        "Upgrade 100%",
    )
    stored = await world.storage.ota.get_task("p1", task_id)
    assert stored is not None and stored.status == "COMPLETED"
    assert [(e.state, e.step) for e in progressed] == [
        ("INFORMED", None),
        ("IN_PROGRESS", 35),
        ("SUCCEEDED", 100),
    ]
    assert (world.ota.accepted, world.ota.informs, world.ota.running_count) == (2, 1, 0)


async def test_a_failure_step_ends_the_device_with_its_meaning(world: World) -> None:
    ref = await listening(world)
    view = await world.ota.create_task("p1", (await world.upload()).id, ["d1"])
    await world.link.publish(ref, PROGRESS, FAILURE)
    view = await world.ota.get_task("p1", view.task.id)
    device = view.devices[0]
    assert (device.state, device.step, device.desc, device.detail) == (
        "FAILED",
        -1,
        "upgrade failed",
        "OTA Failed, download failed",
    )
    assert view.task.status == "COMPLETED"


async def test_an_offline_device_is_informed_when_it_subscribes(world: World) -> None:
    ref = await world.device(online=False)
    view = await world.ota.create_task("p1", (await world.upload()).id, ["d1"])
    assert states(view) == {"d1": "QUEUED"}
    world.ota.step()
    assert informs(world, ref) == []
    world.connect("d1")
    world.link.subscribe(ref, INFORM.format("d1"))
    world.ota.device_subscribed(ref, [INFORM.format("d1")])
    assert states(await world.ota.get_task("p1", view.task.id)) == {"d1": "INFORMED"}
    assert len(informs(world, ref)) == 1


async def test_a_device_not_subscribed_is_not_tried_again_until_it_subscribes(
    world: World,
) -> None:
    ref = await world.device()
    view = await world.ota.create_task("p1", (await world.upload()).id, ["d1"])
    assert states(view) == {"d1": "QUEUED"}  # the inform reached nobody
    # tried on ThingsPanel's topic, then on OneNET's
    assert [i.family for i in informs(world, ref)] == ["thingspanel", "onenet"]
    world.ota.step()
    assert len(informs(world, ref)) == 2  # not retried on every round
    world.ota.device_subscribed(ref, ["devices/command/d1/+"])  # not the inform topic
    assert len(informs(world, ref)) == 2
    world.link.subscribe(ref, INFORM.format("d1"))
    world.ota.device_subscribed(ref, [INFORM.format("d1")])
    assert states(await world.ota.get_task("p1", view.task.id)) == {"d1": "INFORMED"}


async def test_a_reconnection_makes_the_loop_try_again(world: World) -> None:
    ref = await world.device()
    view = await world.ota.create_task("p1", (await world.upload()).id, ["d1"])
    world.disconnect("d1")
    world.link.subscribe(ref, INFORM.format("d1"))  # a persistent session: it kept it
    world.connect("d1")
    world.ota.step()
    assert states(await world.ota.get_task("p1", view.task.id)) == {"d1": "INFORMED"}


async def test_an_informed_device_subscribing_again_is_informed_again_for_free(
    world: World,
) -> None:
    """A QoS 0 inform may have been lost; the repeat costs no rollout token."""
    d1 = await listening(world, "d1")
    d2 = await listening(world, "d2")
    fw = await world.upload()
    view = await world.ota.create_task("p1", fw.id, ["d1", "d2"], rollout_per_minute=1)
    assert states(view) == {"d1": "INFORMED", "d2": "QUEUED"}
    world.clock.advance(1000)
    world.ota.device_subscribed(d1, [INFORM.format("d1")])
    assert len(informs(world, d1)) == 2
    world.ota.device_subscribed(d2, [INFORM.format("d2")])  # no token yet for d2
    view = await world.ota.get_task("p1", view.task.id)
    assert states(view) == {"d1": "INFORMED", "d2": "QUEUED"}
    assert view.devices[0].informed_at == T0  # the first inform counts
    world.clock.advance(59_000)
    world.ota.device_subscribed(d2, [INFORM.format("d2")])
    assert states(await world.ota.get_task("p1", view.task.id)) == {
        "d1": "INFORMED",
        "d2": "INFORMED",
    }


async def test_the_rollout_informs_at_most_its_pace(world: World) -> None:
    names = [f"d{i}" for i in range(4)]
    for name in names:
        await listening(world, name)
    view = await world.ota.create_task("p1", (await world.upload()).id, names, rollout_per_minute=2)
    task_id = view.task.id
    informed = []
    for _ in range(4):
        view = await world.ota.get_task("p1", task_id)
        informed.append(sum(d.state == "INFORMED" for d in view.devices))
        world.clock.advance(30_000)  # two a minute: one every 30 s
        world.ota.step()
    assert informed == [1, 2, 3, 4]


async def test_silent_devices_time_out_and_the_task_completes(world: World) -> None:
    await listening(world)
    view = await world.ota.create_task("p1", (await world.upload()).id, ["d1"], device_timeout_s=60)
    world.clock.advance(59_999)
    world.ota.step()
    assert states(await world.ota.get_task("p1", view.task.id)) == {"d1": "INFORMED"}
    world.clock.advance(1)
    world.ota.step()
    device = (await world.ota.get_task("p1", view.task.id)).devices[0]
    assert (device.state, device.desc) == ("TIMED_OUT", "no final report within 60 s of the inform")
    await settle()
    stored = await world.storage.ota.get_task("p1", view.task.id)
    assert stored is not None and stored.status == "COMPLETED"
    assert await stored_states(world, view.task.id) == {"d1": "TIMED_OUT"}


# ---------------------------------------------------------------- progress that changes nothing


async def test_progress_that_changes_nothing_is_counted_by_reason(world: World) -> None:
    ref = await listening(world)
    await world.link.publish(ref, PROGRESS, SUCCESS)  # no task yet
    queued = await world.device("q", online=False)
    await world.ota.create_task("p1", (await world.upload()).id, ["d1", "q"])
    await world.link.publish(ref, PROGRESS, b'{"step": "50", "module": "WIFI"}')
    await world.link.publish(queued, PROGRESS, b'{"step": "50", "module": "MCU"}')
    await world.link.publish(ref, PROGRESS, b'{"step": "101", "module": "MCU"}')
    await world.link.publish(ref, PROGRESS, b'{"module": "MCU"}')
    await world.link.publish(ref, PROGRESS, b"50%")
    await world.ota.device_refused_progress(ref, OtaProgressRefused(Unavailable("?")))
    assert world.ota.ignored == {
        "no_task": 1,
        "unknown_module": 1,
        "not_informed": 1,
        "bad_step": 2,
        "invalid_report": 2,
    }
    assert world.ota.accepted == 0


# ---------------------------------------------------------------- what a task may be


async def test_a_task_names_a_package_and_existing_devices(world: World) -> None:
    await world.device("d1")
    fw = await world.upload()
    with pytest.raises(InvalidRequest, match="firmware_id is required"):
        await world.ota.create_task("p1", None, ["d1"])
    with pytest.raises(NotFound, match="firmware 'nope'"):
        await world.ota.create_task("p1", "nope", ["d1"])
    with pytest.raises(NotFound, match="devices 'x', 'y' not found"):
        await world.ota.create_task("p1", fw.id, ["d1", "x", "y"])
    with pytest.raises(NotFound, match="product 'p2'"):
        await world.ota.create_task("p2", fw.id, ["d1"])
    with pytest.raises(InvalidRequest, match="sign_method"):
        await world.ota.create_task("p1", fw.id, ["d1"], sign_method="SHA1")
    assert await world.storage.ota.list_tasks("p1", 10) == []


async def test_all_targets_every_device_of_the_product(world: World) -> None:
    await world.devices.create_product("p1", "P")
    fw = await world.upload()
    with pytest.raises(Conflict, match="has no devices"):
        await world.ota.create_task("p1", fw.id, everything=True)
    for name in ("b", "a", "c"):
        await world.device(name, online=False)
    await world.device("other", "p2", online=False)
    view = await world.ota.create_task("p1", fw.id, everything=True)
    assert [d.name for d in view.devices] == ["a", "b", "c"]


async def test_a_device_upgrades_one_package_per_module_at_a_time(world: World) -> None:
    await world.device("d1", online=False)
    await world.device("d2", online=False)
    first = await world.ota.create_task("p1", (await world.upload()).id, ["d1"])
    newer = await world.upload(version="2.0.2")
    with pytest.raises(Conflict, match="device 'd1' already upgrading module 'MCU'"):
        await world.ota.create_task("p1", newer.id, ["d2", "d1"])
    await world.ota.cancel("p1", first.task.id)
    assert states(await world.ota.create_task("p1", newer.id, ["d2", "d1"])) == {
        "d2": "QUEUED",
        "d1": "QUEUED",
    }


async def test_no_device_is_informed_before_the_platform_has_an_address(world: World) -> None:
    ref = await listening(world)
    world.ota.public_url = ""
    view = await world.ota.create_task("p1", (await world.upload()).id, ["d1"])
    world.ota.step()
    assert states(await world.ota.get_task("p1", view.task.id)) == {"d1": "QUEUED"}
    assert informs(world, ref) == []


# ---------------------------------------------------------------- cancelling, deleting


async def test_cancelling_ends_the_devices_not_final_yet(world: World) -> None:
    done = await listening(world, "done")
    await listening(world, "busy")
    await world.device("queued", online=False)
    view = await world.ota.create_task("p1", (await world.upload()).id, ["done", "busy", "queued"])
    await world.link.publish(done, PROGRESS, SUCCESS)
    world.clock.advance(10)
    canceled = await world.ota.cancel("p1", view.task.id)
    assert (canceled.task.status, canceled.task.finished_at) == ("CANCELED", T0 + 10)
    assert states(canceled) == {"done": "SUCCEEDED", "busy": "CANCELED", "queued": "CANCELED"}
    assert {d.desc for d in canceled.devices if d.state == "CANCELED"} == {"the task was canceled"}
    assert await stored_states(world, view.task.id) == states(canceled)
    again = await world.ota.cancel("p1", view.task.id)  # changes nothing
    assert states(again) == states(canceled) and again.task.status == "CANCELED"
    with pytest.raises(NotFound):
        await world.ota.cancel("p1", "no-such-task")


async def test_a_completed_task_cannot_be_canceled(world: World) -> None:
    ref = await listening(world)
    view = await world.ota.create_task("p1", (await world.upload()).id, ["d1"])
    await world.link.publish(ref, PROGRESS, SUCCESS)
    with pytest.raises(Conflict, match="is COMPLETED already"):
        await world.ota.cancel("p1", view.task.id)


async def test_a_deleted_devices_part_is_canceled(world: World) -> None:
    await listening(world, "d1")
    await world.device("d2", online=False)
    view = await world.ota.create_task("p1", (await world.upload()).id, ["d1", "d2"])
    await world.devices.delete_device("p1", "d1")
    assert states(await world.ota.get_task("p1", view.task.id)) == {
        "d1": "CANCELED",
        "d2": "QUEUED",
    }
    await world.devices.delete_device("p1", "d2")  # the last one: the task completes
    await settle()
    stored = await world.storage.ota.get_task("p1", view.task.id)
    assert stored is not None and stored.status == "COMPLETED"
    devices = await world.storage.ota.devices(view.task.id)
    assert {d.desc for d in devices} == {"the device was deleted"}


# ---------------------------------------------------------------- downloads


async def test_a_download_link_works_while_the_upgrade_is_under_way(world: World) -> None:
    ref = await listening(world)
    firmware = await world.upload()
    view = await world.ota.create_task("p1", firmware.id, ["d1"], device_timeout_s=60)
    [inform] = informs(world, ref)
    token = parse_qs(urlsplit(inform.url).query)["token"][0]
    task_id = view.task.id
    assert await world.ota.authorize_download(task_id, "d1", token) == firmware
    assert world.ota.file_of(firmware).read_bytes() == b"firmware 2.0.1"
    for bad_task, bad_name, bad_token in [
        (task_id, "d1", None),
        (task_id, "d1", token[:-1] + ("0" if token[-1] != "0" else "1")),
        (task_id, "d2", token),
        ("other-task", "d1", token),
    ]:
        with pytest.raises(Forbidden):
            await world.ota.authorize_download(bad_task, bad_name, bad_token)
    await world.link.publish(ref, PROGRESS, SUCCESS)
    with pytest.raises(Forbidden, match="not running"):
        await world.ota.authorize_download(task_id, "d1", token)
    assert world.ota.downloads == {"served": 1, "refused": 5}


async def test_a_download_link_expires_with_the_devices_time(world: World) -> None:
    ref = await listening(world, "d1")
    await listening(world, "d2")
    view = await world.ota.create_task(
        "p1", (await world.upload()).id, ["d1", "d2"], device_timeout_s=60
    )
    token = parse_qs(urlsplit(informs(world, ref)[0].url).query)["token"][0]
    world.clock.advance(61_000)
    with pytest.raises(Forbidden, match="expired"):
        await world.ota.authorize_download(view.task.id, "d1", token)


async def test_a_final_device_may_no_longer_download(world: World) -> None:
    d1 = await listening(world, "d1")
    await world.device("d2", online=False)
    view = await world.ota.create_task("p1", (await world.upload()).id, ["d1", "d2"])
    token = parse_qs(urlsplit(informs(world, d1)[0].url).query)["token"][0]
    await world.link.publish(d1, PROGRESS, FAILURE)
    with pytest.raises(Forbidden, match="not under way"):
        await world.ota.authorize_download(view.task.id, "d1", token)


# ---------------------------------------------------------------- listing and restarts


async def test_tasks_are_listed_with_their_counts(world: World) -> None:
    ref = await listening(world)
    fw = await world.upload()
    first = await world.ota.create_task("p1", fw.id, ["d1"])
    await world.link.publish(ref, PROGRESS, SUCCESS)
    await world.device("d2", online=False)
    world.clock.advance(1)
    second = await world.ota.create_task("p1", fw.id, ["d2"])
    page = await world.ota.list_tasks("p1", limit=1)
    [(task, counts)] = page.items
    assert (task.id, task.status) == (first.task.id, "COMPLETED")
    assert counts == {**dict.fromkeys(ota.STATES, 0), "SUCCEEDED": 1}
    page = await world.ota.list_tasks("p1", limit=1, cursor=page.next)
    [(task, counts)] = page.items
    assert (task.id, task.status, page.next) == (second.task.id, "RUNNING", None)
    assert counts == {**dict.fromkeys(ota.STATES, 0), "QUEUED": 1}
    with pytest.raises(NotFound, match="OTA task 'x'"):
        await world.ota.get_task("p1", "x")
    with pytest.raises(NotFound):
        await world.ota.get_task("p2", second.task.id)


async def test_a_restarted_service_resumes_its_running_tasks(world: World, tmp_path: Path) -> None:
    await world.device("d1", online=False)
    await world.device("d2", online=False)
    await world.device("gone", online=False)
    fw: Firmware = await world.upload()
    view = await world.ota.create_task("p1", fw.id, ["d1", "d2", "gone"])
    await settle()
    await world.storage.devices.delete("p1", "gone")  # deleted while the server was down
    restarted = build_world(tmp_path, storage=world.storage, clock=world.clock)
    d1 = DeviceRef("p1", "d1", "d1")
    restarted.connect("d1")
    restarted.link.subscribe(d1, INFORM.format("d1"))
    await restarted.ota.start()
    try:
        assert restarted.ota.running_count == 1
        restarted.ota.step()
        assert states(await restarted.ota.get_task("p1", view.task.id)) == {
            "d1": "INFORMED",
            "d2": "QUEUED",
            "gone": "CANCELED",
        }
        assert [i.task_id for i in restarted.link.received(d1, OtaInform)] == [view.task.id]
    finally:
        await restarted.ota.stop()


async def test_a_wall_clock_jump_times_out_nobody_early_and_stalls_no_rollout(
    world: World,
) -> None:
    """Timeouts and the pace run on the monotonic clock: the wall clock set an
    hour forward times out no device (the old rule timed out every informed
    device at once), and set a day back does not stall the rollout for a day."""
    names = ["d0", "d1", "d2"]
    for name in names:
        await listening(world, name)
    firmware = (await world.upload()).id
    view = await world.ota.create_task(
        "p1", firmware, names, rollout_per_minute=2, device_timeout_s=60
    )
    assert states(view) == {"d0": "INFORMED", "d1": "QUEUED", "d2": "QUEUED"}
    world.clock.jump(3_600_000)
    world.ota.step()
    assert states(await world.ota.get_task("p1", view.task.id))["d0"] == "INFORMED"
    world.clock.jump(-86_400_000)
    world.clock.advance(30_000)
    world.ota.step()
    assert states(await world.ota.get_task("p1", view.task.id)) == {
        "d0": "INFORMED",
        "d1": "INFORMED",
        "d2": "QUEUED",
    }
    world.clock.advance(30_000)  # d0's 60 s have passed; d1 was informed 30 s ago
    world.ota.step()
    after = states(await world.ota.get_task("p1", view.task.id))
    assert after == {"d0": "TIMED_OUT", "d1": "INFORMED", "d2": "INFORMED"}
