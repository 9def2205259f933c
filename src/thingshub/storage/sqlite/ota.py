"""SQLite OTA storage: firmware packages (straight to the connection's thread)
and tasks (writes group-committed, see sqlite/writes.py; rules in ota_common.py)."""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Sequence
from functools import partial
from typing import Any

from thingshub.core.model import Firmware, OtaDevice, OtaTask
from thingshub.storage import common, ota_common
from thingshub.storage.batch import GroupCommit
from thingshub.storage.sqlite.thread import Db

Rows = list[tuple[Any, ...]]

_TASK_PARAMS = ", ".join(f"?{i}" for i in range(1, 12))
_DEVICE_INSERT = (
    f"INSERT INTO ota_task_devices (position, {ota_common.DEVICE_COLUMNS})"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_DEVICE_UPDATE = (
    "UPDATE ota_task_devices SET state = ?3, step = ?4, description = ?5, detail = ?6,"
    " informed_at = ?7, updated_at = ?8, finished_at = ?9"
    f" WHERE task_id = ?1 AND name = ?2 AND state NOT IN ({ota_common.FINAL_SQL})"
)


def _task_add(conn: sqlite3.Connection, rows: Rows) -> list[object]:
    out: list[object] = []
    for task, devices in rows:
        changed = conn.execute(
            f"INSERT INTO ota_tasks ({ota_common.TASK_COLUMNS}) SELECT {_TASK_PARAMS}"
            " WHERE EXISTS (SELECT 1 FROM firmware WHERE id = ?3 AND product_id = ?2)"
            " ON CONFLICT (id) DO NOTHING",
            task,
        ).rowcount
        if changed:
            conn.executemany(_DEVICE_INSERT, devices)
            out.append(None)
        elif conn.execute("SELECT 1 FROM ota_tasks WHERE id = ?", (task[0],)).fetchone():
            out.append(ota_common.task_exists(task[0]))
        else:
            out.append(ota_common.firmware_missing(task[1], task[2]))
    return out


def _device_save(conn: sqlite3.Connection, rows: Rows) -> list[object]:
    return [conn.execute(_DEVICE_UPDATE, row).rowcount > 0 for row in rows]


def _task_finish(conn: sqlite3.Connection, rows: Rows) -> list[object]:
    out: list[object] = []
    for task_id, status, finished_at, devices in rows:
        changed = conn.execute(
            "UPDATE ota_tasks SET status = ?, finished_at = ? WHERE id = ? AND status = 'RUNNING'",
            (status, finished_at, task_id),
        ).rowcount
        if changed:
            conn.executemany(_DEVICE_UPDATE, devices)
        out.append(changed > 0)
    return out


WRITE_HANDLERS = {
    ota_common.OTA_TASK_ADD: _task_add,
    ota_common.OTA_DEVICE_SAVE: _device_save,
    ota_common.OTA_TASK_FINISH: _task_finish,
}


def _add_firmware(row: tuple[Any, ...], conn: sqlite3.Connection) -> str | None:
    """Insert; None, or what clashed ("product" when it is missing)."""
    try:
        conn.execute(
            f"INSERT INTO firmware ({ota_common.FIRMWARE_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            row,
        )
    except sqlite3.IntegrityError as exc:
        if exc.sqlite_errorname == "SQLITE_CONSTRAINT_FOREIGNKEY":
            return "product"
        if conn.execute("SELECT 1 FROM firmware WHERE id = ?", (row[0],)).fetchone():
            return "id"
        return "version"
    return None


def _delete_firmware(product_id: str, firmware_id: str, conn: sqlite3.Connection) -> str:
    """ "deleted", "absent" or "in use"."""
    if not conn.execute(
        "SELECT 1 FROM firmware WHERE product_id = ? AND id = ?", (product_id, firmware_id)
    ).fetchone():
        return "absent"
    if conn.execute(
        "SELECT 1 FROM ota_tasks WHERE firmware_id = ? AND status = 'RUNNING'", (firmware_id,)
    ).fetchone():
        return "in use"
    conn.execute("DELETE FROM firmware WHERE product_id = ? AND id = ?", (product_id, firmware_id))
    return "deleted"


class SqliteFirmware:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def add(self, firmware: Firmware) -> None:
        clash = await self._db.call(partial(_add_firmware, ota_common.firmware_row(firmware)))
        if clash == "product":
            raise common.product_missing(firmware.product_id)
        if clash is not None:
            raise ota_common.firmware_clash(firmware, clash)

    async def get(self, product_id: str, firmware_id: str) -> Firmware | None:
        row = await self._db.fetchone(
            f"SELECT {ota_common.FIRMWARE_COLUMNS} FROM firmware WHERE product_id = ? AND id = ?",
            (product_id, firmware_id),
        )
        return ota_common.firmware_of(row) if row is not None else None

    async def list(
        self, product_id: str, limit: int, after: str | None = None
    ) -> builtins.list[Firmware]:
        if limit <= 0:
            return []
        rows = await self._db.fetchall(
            f"SELECT {ota_common.FIRMWARE_COLUMNS} FROM firmware"
            " WHERE product_id = ? AND id > ? ORDER BY id LIMIT ?",
            (product_id, after or "", limit),
        )
        return [ota_common.firmware_of(r) for r in rows]

    async def delete(self, product_id: str, firmware_id: str) -> bool:
        outcome = await self._db.transaction(partial(_delete_firmware, product_id, firmware_id))
        if outcome == "in use":
            raise ota_common.firmware_in_use(firmware_id)
        return outcome == "deleted"

    async def ids(self) -> set[str]:
        return {str(r[0]) for r in await self._db.fetchall("SELECT id FROM firmware")}


class SqliteOta:
    def __init__(self, db: Db, writer: GroupCommit) -> None:
        self._db = db
        self._writer = writer

    async def add_task(self, task: OtaTask, devices: Sequence[OtaDevice]) -> None:
        await self._writer.submit(ota_common.task_add_write(task, devices))

    async def get_task(self, product_id: str, task_id: str) -> OtaTask | None:
        row = await self._db.fetchone(
            f"SELECT {ota_common.TASK_COLUMNS} FROM ota_tasks WHERE product_id = ? AND id = ?",
            (product_id, task_id),
        )
        return ota_common.task_of(row) if row is not None else None

    async def list_tasks(
        self, product_id: str, limit: int, after: str | None = None
    ) -> builtins.list[OtaTask]:
        if limit <= 0:
            return []
        rows = await self._db.fetchall(
            f"SELECT {ota_common.TASK_COLUMNS} FROM ota_tasks"
            " WHERE product_id = ? AND id > ? ORDER BY id LIMIT ?",
            (product_id, after or "", limit),
        )
        return [ota_common.task_of(r) for r in rows]

    async def running(self) -> builtins.list[OtaTask]:
        rows = await self._db.fetchall(
            f"SELECT {ota_common.TASK_COLUMNS} FROM ota_tasks WHERE status = 'RUNNING' ORDER BY id"
        )
        return [ota_common.task_of(r) for r in rows]

    async def devices(self, task_id: str) -> builtins.list[OtaDevice]:
        rows = await self._db.fetchall(
            f"SELECT {ota_common.DEVICE_COLUMNS} FROM ota_task_devices"
            " WHERE task_id = ? ORDER BY position",
            (task_id,),
        )
        return [ota_common.device_of(r) for r in rows]

    async def counts(self, task_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        ids = builtins.list(dict.fromkeys(task_ids))
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            rows = await self._db.fetchall(
                "SELECT task_id, state, count(*) FROM ota_task_devices"
                f" WHERE task_id IN ({marks}) GROUP BY task_id, state",
                chunk,
            )
            for task_id, state, n in rows:
                out.setdefault(task_id, {})[state] = int(n)
        return out

    async def save_device(self, device: OtaDevice) -> bool:
        return bool(await self._writer.submit(ota_common.device_save_write(device)))

    async def finish_task(
        self, task_id: str, status: str, finished_at: int, devices: Sequence[OtaDevice]
    ) -> bool:
        write = ota_common.task_finish_write(task_id, status, finished_at, devices)
        return bool(await self._writer.submit(write))
