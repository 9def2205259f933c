"""PostgreSQL OTA storage: firmware packages (on the pool) and tasks (writes
group-committed on the writer's connection, see postgres/writes.py; rules in
ota_common.py). Device rows move in bulk, through `unnest` arrays."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from thingshub.core.model import Firmware, OtaDevice, OtaTask
from thingshub.storage import common, ota_common
from thingshub.storage.batch import GroupCommit

Rows = list[tuple[Any, ...]]
Pool = Callable[[], Any]  # the open pool, or Unavailable

_DEVICE_TYPES = (
    "$1::text[], $2::text[], $3::text[], $4::integer[], $5::text[], $6::text[],"
    " $7::bigint[], $8::bigint[], $9::bigint[]"
)


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(width)]


async def _update_devices(conn: Any, rows: Sequence[Sequence[Any]]) -> set[tuple[str, str]]:
    """Apply device rows (distinct keys) that are not final; the keys changed."""
    if not rows:
        return set()
    returned = await conn.fetch(
        "UPDATE ota_task_devices AS d SET state = u.state, step = u.step,"
        " description = u.description, detail = u.detail, informed_at = u.informed_at,"
        " updated_at = u.updated_at, finished_at = u.finished_at"
        f" FROM unnest({_DEVICE_TYPES}) AS u(task_id, name, state, step, description, detail,"
        " informed_at, updated_at, finished_at)"
        " WHERE d.task_id = u.task_id AND d.name = u.name"
        f" AND d.state NOT IN ({ota_common.FINAL_SQL})"
        " RETURNING d.task_id, d.name",
        *_columns(rows, 9),
    )
    return {(r[0], r[1]) for r in returned}


async def _task_add(conn: Any, rows: Rows) -> list[object]:
    out: list[object] = []
    for task, devices in rows:
        added = await conn.fetchval(
            f"INSERT INTO ota_tasks ({ota_common.TASK_COLUMNS})"
            " SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text,"
            " $7::integer, $8::integer, $9::text, $10::bigint, $11::bigint"
            " WHERE EXISTS (SELECT 1 FROM firmware"
            " WHERE id = $3 AND product_id = $2 FOR KEY SHARE)"
            " ON CONFLICT (id) DO NOTHING RETURNING id",
            *task,
        )
        if added is not None:
            if devices:
                await conn.execute(
                    f"INSERT INTO ota_task_devices (position, {ota_common.DEVICE_COLUMNS})"
                    " SELECT * FROM unnest($1::integer[], $2::text[], $3::text[], $4::text[],"
                    " $5::integer[], $6::text[], $7::text[], $8::bigint[], $9::bigint[],"
                    " $10::bigint[])",
                    *_columns(devices, 10),
                )
            out.append(None)
        elif await conn.fetchval("SELECT 1 FROM ota_tasks WHERE id = $1", task[0]):
            out.append(ota_common.task_exists(task[0]))
        else:
            out.append(ota_common.firmware_missing(task[1], task[2]))
    return out


async def _device_save(conn: Any, rows: Rows) -> list[object]:
    changed = await _update_devices(conn, rows)
    return [(row[0], row[1]) in changed for row in rows]


async def _task_finish(conn: Any, rows: Rows) -> list[object]:
    out: list[object] = []
    for task_id, status, finished_at, devices in rows:
        done = await conn.fetchval(
            "UPDATE ota_tasks SET status = $2, finished_at = $3"
            " WHERE id = $1 AND status = 'RUNNING' RETURNING id",
            task_id,
            status,
            finished_at,
        )
        if done is not None:
            await _update_devices(conn, devices)
        out.append(done is not None)
    return out


WRITE_HANDLERS = {
    ota_common.OTA_TASK_ADD: _task_add,
    ota_common.OTA_DEVICE_SAVE: _device_save,
    ota_common.OTA_TASK_FINISH: _task_finish,
}


class PostgresFirmware:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def add(self, firmware: Firmware) -> None:
        try:
            await self._pool().execute(
                f"INSERT INTO firmware ({ota_common.FIRMWARE_COLUMNS})"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                *ota_common.firmware_row(firmware),
            )
        except asyncpg.ForeignKeyViolationError:
            raise common.product_missing(firmware.product_id) from None
        except asyncpg.UniqueViolationError as exc:
            field = "id" if exc.constraint_name == "firmware_pkey" else "version"
            raise ota_common.firmware_clash(firmware, field) from None

    async def get(self, product_id: str, firmware_id: str) -> Firmware | None:
        row = await self._pool().fetchrow(
            f"SELECT {ota_common.FIRMWARE_COLUMNS} FROM firmware WHERE product_id = $1 AND id = $2",
            product_id,
            firmware_id,
        )
        return ota_common.firmware_of(row) if row is not None else None

    async def list(
        self, product_id: str, limit: int, after: str | None = None
    ) -> builtins.list[Firmware]:
        if limit <= 0:
            return []
        rows = await self._pool().fetch(
            f"SELECT {ota_common.FIRMWARE_COLUMNS} FROM firmware"
            " WHERE product_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            product_id,
            after or "",
            limit,
        )
        return [ota_common.firmware_of(r) for r in rows]

    async def delete(self, product_id: str, firmware_id: str) -> bool:
        async with self._pool().acquire() as conn, conn.transaction():
            found = await conn.fetchval(
                "SELECT 1 FROM firmware WHERE product_id = $1 AND id = $2 FOR UPDATE",
                product_id,
                firmware_id,
            )
            if found is None:
                return False
            if await conn.fetchval(
                "SELECT 1 FROM ota_tasks WHERE firmware_id = $1 AND status = 'RUNNING'",
                firmware_id,
            ):
                raise ota_common.firmware_in_use(firmware_id)
            await conn.execute(
                "DELETE FROM firmware WHERE product_id = $1 AND id = $2", product_id, firmware_id
            )
        return True

    async def ids(self) -> set[str]:
        return {str(r[0]) for r in await self._pool().fetch("SELECT id FROM firmware")}


class PostgresOta:
    def __init__(self, pool: Pool, writer: GroupCommit) -> None:
        self._pool = pool
        self._writer = writer

    async def add_task(self, task: OtaTask, devices: Sequence[OtaDevice]) -> None:
        await self._writer.submit(ota_common.task_add_write(task, devices))

    async def get_task(self, product_id: str, task_id: str) -> OtaTask | None:
        row = await self._pool().fetchrow(
            f"SELECT {ota_common.TASK_COLUMNS} FROM ota_tasks WHERE product_id = $1 AND id = $2",
            product_id,
            task_id,
        )
        return ota_common.task_of(row) if row is not None else None

    async def list_tasks(
        self, product_id: str, limit: int, after: str | None = None
    ) -> builtins.list[OtaTask]:
        if limit <= 0:
            return []
        rows = await self._pool().fetch(
            f"SELECT {ota_common.TASK_COLUMNS} FROM ota_tasks"
            " WHERE product_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            product_id,
            after or "",
            limit,
        )
        return [ota_common.task_of(r) for r in rows]

    async def running(self) -> builtins.list[OtaTask]:
        rows = await self._pool().fetch(
            f"SELECT {ota_common.TASK_COLUMNS} FROM ota_tasks WHERE status = 'RUNNING' ORDER BY id"
        )
        return [ota_common.task_of(r) for r in rows]

    async def devices(self, task_id: str) -> builtins.list[OtaDevice]:
        rows = await self._pool().fetch(
            f"SELECT {ota_common.DEVICE_COLUMNS} FROM ota_task_devices"
            " WHERE task_id = $1 ORDER BY position",
            task_id,
        )
        return [ota_common.device_of(r) for r in rows]

    async def counts(self, task_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        if not task_ids:
            return {}
        rows = await self._pool().fetch(
            "SELECT task_id, state, count(*) FROM ota_task_devices"
            " WHERE task_id = ANY($1::text[]) GROUP BY task_id, state",
            builtins.list(dict.fromkeys(task_ids)),
        )
        out: dict[str, dict[str, int]] = {}
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
