"""OTA storage in dicts: the reference for the SQL backends (rules in ota_common.py).

Nothing here awaits between reading and writing, so each method is atomic on
the event loop, as a transaction is in SQL; values are frozen dataclasses, so
what is stored cannot be changed through what was passed or returned.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from thingshub.core import ota
from thingshub.core.model import Firmware, OtaDevice, OtaTask, Product
from thingshub.storage import common, ota_common


@dataclass
class OtaData:
    products: Mapping[str, Product]
    firmware: dict[str, Firmware] = field(default_factory=dict)
    tasks: dict[str, OtaTask] = field(default_factory=dict)
    devices: dict[str, dict[str, OtaDevice]] = field(default_factory=dict)  # in rollout order
    last_tid: int = 0  # the last OneNET tid given

    def forget_product(self, product_id: str) -> None:
        """The product was deleted: its packages and tasks go with it."""
        for fid in [k for k, f in self.firmware.items() if f.product_id == product_id]:
            del self.firmware[fid]
        for tid in [k for k, t in self.tasks.items() if t.product_id == product_id]:
            del self.tasks[tid]
            self.devices.pop(tid, None)


def _copy(firmware: Firmware) -> Firmware:
    # Through the JSON text, as the SQL backends store it.
    ext = common.load_document(common.dump_json(dict(firmware.ext_data)))
    return replace(firmware, ext_data=ext)


class MemoryFirmware:
    def __init__(self, data: OtaData) -> None:
        self._data = data

    async def add(self, firmware: Firmware) -> None:
        data = self._data
        if firmware.product_id not in data.products:
            raise common.product_missing(firmware.product_id)
        if firmware.id in data.firmware:
            raise ota_common.firmware_clash(firmware, "id")
        for f in data.firmware.values():
            if (f.product_id, f.module, f.version) == (
                firmware.product_id,
                firmware.module,
                firmware.version,
            ):
                raise ota_common.firmware_clash(firmware, "version")
        data.firmware[firmware.id] = _copy(firmware)

    async def get(self, product_id: str, firmware_id: str) -> Firmware | None:
        f = self._data.firmware.get(firmware_id)
        return _copy(f) if f is not None and f.product_id == product_id else None

    async def list(
        self, product_id: str, limit: int, after: str | None = None
    ) -> builtins.list[Firmware]:
        if limit <= 0:
            return []
        found = sorted(
            (f for f in self._data.firmware.values() if f.product_id == product_id),
            key=lambda f: f.id,
        )
        return [_copy(f) for f in found if after is None or f.id > after][:limit]

    async def delete(self, product_id: str, firmware_id: str) -> bool:
        f = self._data.firmware.get(firmware_id)
        if f is None or f.product_id != product_id:
            return False
        if any(
            t.firmware_id == firmware_id and t.status == ota.RUNNING
            for t in self._data.tasks.values()
        ):
            raise ota_common.firmware_in_use(firmware_id)
        del self._data.firmware[firmware_id]
        return True

    async def ids(self) -> set[str]:
        return set(self._data.firmware)


class MemoryOta:
    def __init__(self, data: OtaData) -> None:
        self._data = data

    async def add_task(self, task: OtaTask, devices: Sequence[OtaDevice]) -> int:
        ota_common.check_task(task, devices)  # the same checks as the SQL backends
        data = self._data
        if task.id in data.tasks:
            raise ota_common.task_exists(task.id)
        f = data.firmware.get(task.firmware_id)
        if f is None or f.product_id != task.product_id:
            raise ota_common.firmware_missing(task.product_id, task.firmware_id)
        first = data.last_tid + 1
        data.last_tid += len(devices)
        data.tasks[task.id] = task
        data.devices[task.id] = {d.name: replace(d, tid=first + i) for i, d in enumerate(devices)}
        return first

    async def get_task(self, product_id: str, task_id: str) -> OtaTask | None:
        t = self._data.tasks.get(task_id)
        return t if t is not None and t.product_id == product_id else None

    async def list_tasks(
        self, product_id: str, limit: int, after: str | None = None
    ) -> builtins.list[OtaTask]:
        if limit <= 0:
            return []
        found = sorted(
            (t for t in self._data.tasks.values() if t.product_id == product_id),
            key=lambda t: t.id,
        )
        return [t for t in found if after is None or t.id > after][:limit]

    async def running(self) -> builtins.list[OtaTask]:
        return sorted(
            (t for t in self._data.tasks.values() if t.status == ota.RUNNING), key=lambda t: t.id
        )

    async def devices(self, task_id: str) -> builtins.list[OtaDevice]:
        return builtins.list(self._data.devices.get(task_id, {}).values())

    async def counts(self, task_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for task_id in task_ids:
            for d in self._data.devices.get(task_id, {}).values():
                states = out.setdefault(task_id, {})
                states[d.state] = states.get(d.state, 0) + 1
        return out

    def _save(self, device: OtaDevice) -> bool:
        rows = self._data.devices.get(device.task_id)
        current = rows.get(device.name) if rows is not None else None
        if rows is None or current is None or current.state in ota.FINAL:
            return False
        rows[device.name] = device
        return True

    async def save_device(self, device: OtaDevice) -> bool:
        ota_common.check_device(device)
        return self._save(device)

    async def by_tid(self, tid: int) -> tuple[OtaTask, OtaDevice] | None:
        for task_id, rows in self._data.devices.items():
            for d in rows.values():
                if d.tid == tid:
                    return self._data.tasks[task_id], d
        return None

    async def finish_task(
        self, task_id: str, status: str, finished_at: int, devices: Sequence[OtaDevice]
    ) -> bool:
        ota_common.check_finish(status, devices)
        task = self._data.tasks.get(task_id)
        if task is None or task.status != ota.RUNNING:
            return False
        self._data.tasks[task_id] = replace(task, status=status, finished_at=finished_at)
        for d in devices:
            self._save(d)
        return True
