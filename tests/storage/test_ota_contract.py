"""The OTA storage contract (core/ports.py FirmwareRepo and OtaRepo, storage/ota_common.py)
on every backend: memory, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from tests.storage.support import Backend, device, product
from thingshub.core import ota
from thingshub.core.errors import AlreadyExists, Conflict, NotFound
from thingshub.core.model import Firmware, OtaDevice, OtaTask
from thingshub.core.ota import Progress
from thingshub.core.ports import Storage

T0 = 1_700_000_000_000


def fw(fid: str = "f1", pid: str = "p1", version: str = "1.0", module: str = "MCU") -> Firmware:
    return Firmware(
        id=fid,
        product_id=pid,
        name=f"{module} {version} ünï",
        version=version,
        module=module,
        size=123_456_789_012,
        md5="a" * 32,
        sha256="b" * 64,
        created_at=T0,
        ext_data={"force": True, "n": [1, 2.5, None], "ü": {"x": "y"}},
    )


def task(tid: str = "t1", fid: str = "f1", pid: str = "p1", rate: int | None = 10) -> OtaTask:
    return OtaTask(
        id=tid,
        product_id=pid,
        firmware_id=fid,
        module="MCU",
        version="1.0",
        sign_method="SHA256",
        rollout_per_minute=rate,
        device_timeout_s=600,
        status=ota.RUNNING,
        created_at=T0,
    )


def queued(tid: str, *names: str) -> list[OtaDevice]:
    return [ota.queued(tid, n, T0) for n in names]


async def setup(s: Storage, *firmware: Firmware) -> None:
    await s.products.add(product("p1"))
    await s.products.add(product("p2"))
    for f in firmware:
        await s.firmware.add(f)


# ------------------------------------------------------------------ firmware


def test_firmware_add_get_list(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await setup(s)
        packages = [fw("f2"), fw("f1", version="0.9"), fw("f3", module="WIFI")]
        for f in packages:
            await s.firmware.add(f)
        await s.firmware.add(fw("f9", pid="p2"))
        assert await s.firmware.get("p1", "f2") == packages[0]
        assert await s.firmware.get("p2", "f2") is None  # another product's
        assert await s.firmware.get("p1", "nope") is None
        assert [f.id for f in await s.firmware.list("p1", 10)] == ["f1", "f2", "f3"]
        assert [f.id for f in await s.firmware.list("p1", 2)] == ["f1", "f2"]
        assert [f.id for f in await s.firmware.list("p1", 2, "f2")] == ["f3"]
        assert await s.firmware.list("p1", 0) == []
        assert await s.firmware.list("p3", 10) == []
        assert await s.firmware.ids() == {"f1", "f2", "f3", "f9"}

    backend.run(scenario)


def test_firmware_clashes(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await setup(s, fw("f1"))
        with pytest.raises(AlreadyExists, match=r"version '1\.0' of module 'MCU' already exists"):
            await s.firmware.add(fw("f2"))
        with pytest.raises(AlreadyExists, match="firmware id 'f1'"):
            await s.firmware.add(fw("f1", version="2.0"))
        with pytest.raises(NotFound, match="product 'p9'"):
            await s.firmware.add(fw("f3", pid="p9"))
        await s.firmware.add(fw("f4", module="WIFI"))  # another module: fine
        await s.firmware.add(fw("f5", pid="p2"))  # another product: fine
        assert await s.firmware.ids() == {"f1", "f4", "f5"}

    backend.run(scenario)


def test_firmware_delete_is_refused_while_a_running_task_uses_it(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await setup(s, fw("f1"), fw("f2", version="2.0"))
        await s.ota.add_task(task("t1", "f1"), queued("t1", "d1"))
        with pytest.raises(Conflict, match="'f1' is used by a running OTA task"):
            await s.firmware.delete("p1", "f1")
        assert await s.firmware.delete("p2", "f1") is False  # not that product's
        assert await s.firmware.delete("p1", "f2") is True
        assert await s.firmware.delete("p1", "f2") is False
        assert await s.ota.finish_task("t1", ota.CANCELED, T0 + 1, []) is True
        assert await s.firmware.delete("p1", "f1") is True
        # A finished task outlives its package.
        got = await s.ota.get_task("p1", "t1")
        assert got is not None and got.firmware_id == "f1" and got.status == "CANCELED"

    backend.run(scenario)


def test_packages_and_tasks_go_with_their_product(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await setup(s, fw("f1"), fw("f2", pid="p2"))
        await s.devices.add(device("p1", "d1"))
        await s.ota.add_task(task("t1"), queued("t1", "d1"))
        with pytest.raises(Conflict):
            await s.products.delete("p1")  # it has devices
        assert await s.devices.delete("p1", "d1") is True
        assert await s.products.delete("p1") is True
        assert await s.firmware.ids() == {"f2"}
        assert await s.ota.get_task("p1", "t1") is None
        assert await s.ota.running() == []
        assert await s.ota.devices("t1") == []

    backend.run(scenario)


# ------------------------------------------------------------------ tasks


def test_task_add_get_list(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await setup(s, fw("f1"), fw("f2", pid="p2"))
        await s.ota.add_task(task("t2", rate=None), queued("t2", "zeta", "alpha", "mid"))
        await s.ota.add_task(task("t1"), queued("t1", "d1"))
        await s.ota.add_task(task("t9", "f2", "p2"), queued("t9", "x"))
        assert await s.ota.get_task("p1", "t2") == task("t2", rate=None)
        assert await s.ota.get_task("p2", "t2") is None
        devices = await s.ota.devices("t2")
        assert [d.name for d in devices] == ["zeta", "alpha", "mid"]  # rollout order
        assert devices[0] == ota.queued("t2", "zeta", T0, tid=1)  # tids in rollout order
        assert [t.id for t in await s.ota.list_tasks("p1", 10)] == ["t1", "t2"]
        assert [t.id for t in await s.ota.list_tasks("p1", 1, "t1")] == ["t2"]
        assert [t.id for t in await s.ota.running()] == ["t1", "t2", "t9"]
        assert await s.ota.counts(["t2", "t1", "nope"]) == {
            "t2": {"QUEUED": 3},
            "t1": {"QUEUED": 1},
        }
        assert await s.ota.counts([]) == {}

    backend.run(scenario)


def test_task_add_needs_its_products_firmware(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await setup(s, fw("f1"), fw("f2", pid="p2"))
        with pytest.raises(NotFound, match="firmware 'nope'"):
            await s.ota.add_task(task("t1", "nope"), queued("t1", "d1"))
        with pytest.raises(NotFound, match="firmware 'f2' does not exist in product 'p1'"):
            await s.ota.add_task(task("t1", "f2"), queued("t1", "d1"))
        await s.ota.add_task(task("t1"), queued("t1", "d1"))
        with pytest.raises(AlreadyExists, match="'t1'"):
            await s.ota.add_task(task("t1"), queued("t1", "d2"))
        assert [d.name for d in await s.ota.devices("t1")] == ["d1"]
        with pytest.raises(ValueError):
            await s.ota.add_task(task("t2"), queued("t1", "d1"))  # devices of another task

    backend.run(scenario)


def test_device_rows_move_until_they_are_final(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await setup(s, fw("f1"))
        await s.ota.add_task(task("t1"), queued("t1", "d1", "d2"))
        d1 = ota.informed((await s.ota.devices("t1"))[0], T0 + 1)
        assert await s.ota.save_device(d1) is True
        d1 = replace(d1, state="IN_PROGRESS", step=40, desc="ünï 'x'", detail="raw words")
        assert await s.ota.save_device(d1) is True
        assert (await s.ota.devices("t1"))[0] == d1
        failed = replace(d1, state="FAILED", step=-2, desc="download failed", finished_at=T0 + 5)
        assert await s.ota.save_device(failed) is True
        # A final row never changes again.
        assert await s.ota.save_device(replace(d1, step=99)) is False
        assert await s.ota.save_device(replace(failed, state="SUCCEEDED")) is False
        assert (await s.ota.devices("t1"))[0] == failed
        assert await s.ota.save_device(ota.queued("t1", "nobody", T0)) is False
        assert await s.ota.save_device(ota.queued("t9", "d1", T0)) is False
        assert await s.ota.counts(["t1"]) == {"t1": {"FAILED": 1, "QUEUED": 1}}

    backend.run(scenario)


def test_finish_task(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await setup(s, fw("f1"))
        await s.ota.add_task(task("t1"), queued("t1", "d1", "d2", "d3"))
        rows = await s.ota.devices("t1")
        done = ota.progressed(ota.informed(rows[0], T0), Progress(100, "", "MCU"), T0 + 1)
        assert await s.ota.save_device(done) is True
        # The cancel carries every device; the final one in storage stays as it is.
        late_view = ota.ended(ota.informed(rows[0], T0), ota.CANCELED, "x", T0 + 2)
        canceled = [late_view] + [ota.ended(d, ota.CANCELED, "x", T0 + 2) for d in rows[1:]]
        assert await s.ota.finish_task("t1", ota.CANCELED, T0 + 2, canceled) is True
        stored = await s.ota.devices("t1")
        assert stored == [done, *canceled[1:]]
        got = await s.ota.get_task("p1", "t1")
        assert got is not None and (got.status, got.finished_at) == ("CANCELED", T0 + 2)
        assert await s.ota.running() == []
        # Only a running task finishes, once.
        assert await s.ota.finish_task("t1", ota.COMPLETED, T0 + 3, []) is False
        assert await s.ota.finish_task("nope", ota.COMPLETED, T0 + 3, []) is False
        got = await s.ota.get_task("p1", "t1")
        assert got is not None and got.status == "CANCELED"
        with pytest.raises(ValueError):
            await s.ota.finish_task("t1", ota.RUNNING, T0, [])

    backend.run(scenario)


def test_writes_of_one_batch_keep_their_meaning(backend: Backend) -> None:
    """Many device writes and a cancel, queued together (one group-committed batch on
    the SQL backends): the cancel never undoes a result, a late write never a cancel."""

    async def scenario(s: Storage) -> None:
        await setup(s, fw("f1"))
        names = [f"d{i:03d}" for i in range(200)]
        await s.ota.add_task(task("t1"), queued("t1", *names))
        informed = [ota.informed(d, T0) for d in await s.ota.devices("t1")]
        await asyncio.gather(*(s.ota.save_device(d) for d in informed))
        succeeded = {
            d.name: ota.progressed(d, Progress(100, "", "MCU"), T0 + 1) for d in informed[:50]
        }
        progress = [ota.progressed(d, Progress(50, "", "MCU"), T0 + 1) for d in informed[50:]]
        canceled = [ota.ended(d, ota.CANCELED, "c", T0 + 2) for d in informed[50:]]
        results = await asyncio.gather(
            *(s.ota.save_device(d) for d in succeeded.values()),
            *(s.ota.save_device(d) for d in progress[:75]),
            s.ota.finish_task("t1", ota.CANCELED, T0 + 2, canceled),
            *(s.ota.save_device(d) for d in progress[75:]),  # queued after the cancel
        )
        assert all(results[:126])  # whether the later ones were stored depends on the batch
        stored = {d.name: d for d in await s.ota.devices("t1")}
        for name in names[:50]:
            assert stored[name] == succeeded[name]
        for d in canceled:
            assert stored[d.name] == d

    backend.run(scenario)


def test_tasks_survive_a_reopen(durable_backend: Backend) -> None:
    async def write(s: Storage) -> None:
        await setup(s, fw("f1"))
        await s.ota.add_task(task("t1"), queued("t1", "d1", "d2"))
        d1 = ota.informed((await s.ota.devices("t1"))[0], T0 + 1)
        await s.ota.save_device(d1)

    async def read(s: Storage) -> None:
        assert await s.firmware.get("p1", "f1") == fw("f1")
        assert [t.id for t in await s.ota.running()] == ["t1"]
        assert [d.state for d in await s.ota.devices("t1")] == ["INFORMED", "QUEUED"]

    durable_backend.run(write)
    durable_backend.run(read)


def test_tids_are_consecutive_and_never_given_twice(backend: Backend) -> None:
    async def scenario(s: Storage) -> None:
        await setup(s, fw("f1"))
        first = await s.ota.add_task(task("t1"), queued("t1", "a", "b", "c"))
        assert first == 1
        assert [d.tid for d in await s.ota.devices("t1")] == [1, 2, 3]
        assert await s.ota.add_task(task("t2"), []) == 4  # a task of no device takes none
        with pytest.raises(NotFound):  # a refused task takes none either
            await s.ota.add_task(task("t3", "nope"), queued("t3", "x"))
        with_tids = [replace(d, tid=99) for d in queued("t4", "x", "y")]  # theirs are ignored
        assert await s.ota.add_task(task("t4"), with_tids) == 4
        assert [(d.name, d.tid) for d in await s.ota.devices("t4")] == [("x", 4), ("y", 5)]
        found = await s.ota.by_tid(5)
        assert found is not None and (found[0].id, found[1].name) == ("t4", "y")

    backend.run(scenario)


def test_processes_sharing_a_database_never_give_a_tid_twice(durable_backend: Backend) -> None:
    """Two storages open on one database (two processes of a cluster, or workers)
    create tasks at the same time: every device part has its own tid."""

    async def main() -> list[int]:
        one, two = durable_backend.make(), durable_backend.make()
        await one.open()
        await two.open()
        try:
            await setup(one, fw("f1"))

            async def add(s: Storage, i: int) -> int:
                return await s.ota.add_task(task(f"t{i:02}"), queued(f"t{i:02}", "a", "b", "c"))

            firsts = await asyncio.gather(*(add((one, two)[i % 2], i) for i in range(40)))
            tids = []
            for i in range(40):
                tids += [d.tid for d in await two.ota.devices(f"t{i:02}")]
            assert sorted(firsts) == list(range(1, 121, 3))
            return [t for t in tids if t is not None]
        finally:
            await one.close()
            await two.close()

    tids = asyncio.run(main())
    assert sorted(tids) == list(range(1, 121))
