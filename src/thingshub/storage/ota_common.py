"""What the storage backends share for OTA: firmware and task rows, their
group-committed writes, and the messages of their errors.

Rules:
- Firmware packages: a product has at most one package per (module,
  version); a package used by a RUNNING task cannot be deleted; packages and
  tasks go with their product (a product can be deleted only without devices).
- Tasks keep their firmware's id, module and version (not a reference the
  database enforces): a finished task stays readable after its package is
  deleted.
- Device rows are written through the group-commit writer (batch.py), each
  write being the whole row, so a later write repairs an earlier failed one.
  A row that is final never changes: every update is conditional on the
  stored state not being final, so the order in which a batch applies the
  writes of different keys cannot undo a cancel or a result.
- `ext_data` is stored as compact JSON text (orjson), read back as written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from thingshub.core import ota
from thingshub.core.errors import AlreadyExists, Conflict, NotFound
from thingshub.core.model import Firmware, OtaDevice, OtaTask
from thingshub.storage.batch import Write
from thingshub.storage.common import dump_json, load_document

FINAL_STATES = tuple(sorted(ota.FINAL))
#: SQL list of the final states, for `state NOT IN (...)` (constants, not input).
FINAL_SQL = ", ".join(f"'{s}'" for s in FINAL_STATES)

FIRMWARE_COLUMNS = "id, product_id, name, version, module, size, md5, sha256, created_at, ext_data"
TASK_COLUMNS = (
    "id, product_id, firmware_id, module, version, sign_method, rollout_per_minute,"
    " device_timeout_s, status, created_at, finished_at"
)
DEVICE_COLUMNS = (
    "task_id, name, state, step, description, detail, informed_at, updated_at, finished_at"
)

# ------------------------------------------------------------------ errors


def firmware_clash(firmware: Firmware, field: str) -> AlreadyExists:
    if field == "id":
        return AlreadyExists(f"firmware id {firmware.id!r} already exists")
    return AlreadyExists(
        f"version {firmware.version!r} of module {firmware.module!r} already exists"
        f" in product {firmware.product_id!r}"
    )


def firmware_in_use(firmware_id: str) -> Conflict:
    return Conflict(f"firmware {firmware_id!r} is used by a running OTA task; cancel it first")


def firmware_missing(product_id: str, firmware_id: str) -> NotFound:
    return NotFound(f"firmware {firmware_id!r} does not exist in product {product_id!r}")


def task_exists(task_id: str) -> AlreadyExists:
    return AlreadyExists(f"OTA task id {task_id!r} already exists")


# ------------------------------------------------------------------ rows


def firmware_row(f: Firmware) -> tuple[Any, ...]:
    """The values of FIRMWARE_COLUMNS."""
    return (
        f.id,
        f.product_id,
        f.name,
        f.version,
        f.module,
        f.size,
        f.md5,
        f.sha256,
        f.created_at,
        dump_json(dict(f.ext_data)),
    )


def firmware_of(row: Sequence[Any]) -> Firmware:
    return Firmware(
        id=row[0],
        product_id=row[1],
        name=row[2],
        version=row[3],
        module=row[4],
        size=int(row[5]),
        md5=row[6],
        sha256=row[7],
        created_at=int(row[8]),
        ext_data=load_document(row[9]),
    )


def task_row(t: OtaTask) -> tuple[Any, ...]:
    return (
        t.id,
        t.product_id,
        t.firmware_id,
        t.module,
        t.version,
        t.sign_method,
        t.rollout_per_minute,
        t.device_timeout_s,
        t.status,
        t.created_at,
        t.finished_at,
    )


def task_of(row: Sequence[Any]) -> OtaTask:
    return OtaTask(
        id=row[0],
        product_id=row[1],
        firmware_id=row[2],
        module=row[3],
        version=row[4],
        sign_method=row[5],
        rollout_per_minute=row[6],
        device_timeout_s=int(row[7]),
        status=row[8],
        created_at=int(row[9]),
        finished_at=row[10],
    )


def device_row(d: OtaDevice) -> tuple[Any, ...]:
    return (
        d.task_id,
        d.name,
        d.state,
        d.step,
        d.desc,
        d.detail,
        d.informed_at,
        d.updated_at,
        d.finished_at,
    )


def device_of(row: Sequence[Any]) -> OtaDevice:
    return OtaDevice(
        task_id=row[0],
        name=row[1],
        state=row[2],
        step=row[3],
        desc=row[4],
        detail=row[5],
        informed_at=row[6],
        updated_at=int(row[7]),
        finished_at=row[8],
    )


def _check_device(d: OtaDevice) -> OtaDevice:
    if d.state not in ota.STATES:
        raise ValueError(f"{d.state!r} is not an OTA device state")
    return d


# ------------------------------------------------------------------ group-committed writes

OTA_TASK_ADD = "ota.task_add"  # (task_row, [(position, *device_row), ...])
OTA_DEVICE_SAVE = "ota.device_save"  # device_row
OTA_TASK_FINISH = "ota.task_finish"  # (task_id, status, finished_at, [device_row, ...])


def task_add_write(task: OtaTask, devices: Sequence[OtaDevice]) -> Write:
    if task.status not in ota.TASK_STATUSES:
        raise ValueError(f"{task.status!r} is not an OTA task status")
    rows = [(i, *device_row(_check_device(d))) for i, d in enumerate(devices)]
    for d in devices:
        if d.task_id != task.id:
            raise ValueError(f"device {d.name!r} belongs to task {d.task_id!r}, not {task.id!r}")
    return Write(OTA_TASK_ADD, ("ota_task", task.id), (task_row(task), rows))


def device_save_write(device: OtaDevice) -> Write:
    row = device_row(_check_device(device))
    return Write(OTA_DEVICE_SAVE, ("ota_device", device.task_id, device.name), row)


def task_finish_write(
    task_id: str, status: str, finished_at: int, devices: Sequence[OtaDevice]
) -> Write:
    if status not in (ota.COMPLETED, ota.CANCELED):
        raise ValueError(f"a task finishes COMPLETED or CANCELED, not {status!r}")
    rows = [device_row(_check_device(d)) for d in devices]
    return Write(OTA_TASK_FINISH, ("ota_task", task_id), (task_id, status, finished_at, rows))
