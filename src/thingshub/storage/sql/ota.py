"""Firmware packages and OTA tasks in SQL (rules of the data in ota_common.py).

Rules:
- Packages are written straight to the database: an insert whose
  constraints decide (a missing product, a taken id or version), and a
  delete that checks, in its transaction and under a lock on the package,
  that no RUNNING task uses it. Tasks and their devices' states are
  group-committed (handlers.py). Pages are by id.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from functools import partial

from thingshub.core.model import Firmware, OtaDevice, OtaTask
from thingshub.storage import common, ota_common
from thingshub.storage.sql import rows, writes
from thingshub.storage.sql.batch import GroupCommit
from thingshub.storage.sql.connection import (
    Connection,
    Database,
    ForeignKeyViolation,
    UniqueViolation,
    one,
    sql,
)
from thingshub.storage.sql.dialect import Dialect

_FIRMWARE = f"SELECT {rows.FIRMWARE_COLUMNS} FROM firmware"
ADD_FIRMWARE = sql(
    f"INSERT INTO firmware ({rows.FIRMWARE_COLUMNS})"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
)
FIRMWARE_ID_TAKEN = sql("SELECT 1 FROM firmware WHERE id = $1")
GET_FIRMWARE = sql(f"{_FIRMWARE} WHERE product_id = $1 AND id = $2")
LIST_FIRMWARE = sql(f"{_FIRMWARE} WHERE product_id = $1 AND id > $2 ORDER BY id LIMIT $3")
FIRMWARE_IDS = sql("SELECT id FROM firmware")
LOCK_FIRMWARE = sql("SELECT 1 FROM firmware WHERE product_id = $1 AND id = $2 FOR UPDATE")
FIRMWARE_RUNNING = sql("SELECT 1 FROM ota_tasks WHERE firmware_id = $1 AND status = 'RUNNING'")
DELETE_FIRMWARE = sql("DELETE FROM firmware WHERE product_id = $1 AND id = $2")

_TASKS = f"SELECT {rows.TASK_COLUMNS} FROM ota_tasks"
GET_TASK = sql(f"{_TASKS} WHERE product_id = $1 AND id = $2")
LIST_TASKS = sql(f"{_TASKS} WHERE product_id = $1 AND id > $2 ORDER BY id LIMIT $3")
RUNNING_TASKS = sql(f"{_TASKS} WHERE status = 'RUNNING' ORDER BY id")
#: The query of `Dialect.task_counts`, given the condition on `task_id`.
TASK_COUNTS = (
    "SELECT task_id, state, count(*) FROM ota_task_devices WHERE task_id {} GROUP BY task_id, state"
)
BY_TID = sql(f"SELECT {rows.OTA_DEVICE_COLUMNS} FROM ota_task_devices WHERE tid = $1")
TASK_BY_ID = sql(f"{_TASKS} WHERE id = $1")
TASK_DEVICES = sql(
    f"SELECT {rows.OTA_DEVICE_COLUMNS} FROM ota_task_devices WHERE task_id = $1 ORDER BY position"
)


async def _delete_firmware(product_id: str, firmware_id: str, conn: Connection) -> bool:
    if await conn.fetchone(LOCK_FIRMWARE, product_id, firmware_id) is None:
        return False
    if await conn.fetchone(FIRMWARE_RUNNING, firmware_id) is not None:
        raise ota_common.firmware_in_use(firmware_id)
    await conn.execute(DELETE_FIRMWARE, product_id, firmware_id)
    return True


class SqlFirmware:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, firmware: Firmware) -> None:
        try:
            await self._db.execute(ADD_FIRMWARE, *rows.firmware_values(firmware))
        except ForeignKeyViolation:
            raise common.product_missing(firmware.product_id) from None
        except UniqueViolation:
            taken = await self._db.fetchone(FIRMWARE_ID_TAKEN, firmware.id) is not None
            raise ota_common.firmware_clash(firmware, "id" if taken else "version") from None

    async def get(self, product_id: str, firmware_id: str) -> Firmware | None:
        return await one(self._db, rows.firmware, GET_FIRMWARE, product_id, firmware_id)

    async def list(
        self, product_id: str, limit: int, after: str | None = None
    ) -> builtins.list[Firmware]:
        if limit <= 0:
            return []
        found = await self._db.fetch(LIST_FIRMWARE, product_id, after or "", limit)
        return [rows.firmware(r) for r in found]

    async def delete(self, product_id: str, firmware_id: str) -> bool:
        return await self._db.transaction(partial(_delete_firmware, product_id, firmware_id))

    async def ids(self) -> set[str]:
        return {str(r[0]) for r in await self._db.fetch(FIRMWARE_IDS)}


class SqlOta:
    def __init__(self, db: Database, dialect: Dialect, writer: GroupCommit) -> None:
        self._db = db
        self._dialect = dialect
        self._writer = writer

    async def add_task(self, task: OtaTask, devices: Sequence[OtaDevice]) -> int:
        first = await self._writer.submit(writes.task_add(task, devices))
        assert isinstance(first, int)  # the handler's outcome, or its error raised
        return first

    async def get_task(self, product_id: str, task_id: str) -> OtaTask | None:
        return await one(self._db, rows.task, GET_TASK, product_id, task_id)

    async def list_tasks(
        self, product_id: str, limit: int, after: str | None = None
    ) -> builtins.list[OtaTask]:
        if limit <= 0:
            return []
        found = await self._db.fetch(LIST_TASKS, product_id, after or "", limit)
        return [rows.task(r) for r in found]

    async def running(self) -> builtins.list[OtaTask]:
        return [rows.task(r) for r in await self._db.fetch(RUNNING_TASKS)]

    async def devices(self, task_id: str) -> builtins.list[OtaDevice]:
        return [rows.ota_device(r) for r in await self._db.fetch(TASK_DEVICES, task_id)]

    async def counts(self, task_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        if not task_ids:
            return out
        ids = builtins.list(dict.fromkeys(task_ids))
        for task_id, state, n in await self._dialect.task_counts(self._db, ids):
            out.setdefault(task_id, {})[state] = int(n)
        return out

    async def save_device(self, device: OtaDevice) -> bool:
        return bool(await self._writer.submit(writes.device_save(device)))

    async def by_tid(self, tid: int) -> tuple[OtaTask, OtaDevice] | None:
        row = await self._db.fetchone(BY_TID, tid)
        if row is None:
            return None
        device = rows.ota_device(row)
        task = await one(self._db, rows.task, TASK_BY_ID, device.task_id)
        return None if task is None else (task, device)

    async def finish_task(
        self, task_id: str, status: str, finished_at: int, devices: Sequence[OtaDevice]
    ) -> bool:
        write = writes.task_finish(task_id, status, finished_at, devices)
        return bool(await self._writer.submit(write))
