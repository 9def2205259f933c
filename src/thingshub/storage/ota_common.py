"""What the three storage backends share for OTA: the messages of their errors
and the checks of what they are given.

Rules:
- Firmware packages: a product has at most one package per (module,
  version); a package used by a RUNNING task cannot be deleted; packages and
  tasks go with their product (a product can be deleted only without devices).
- Tasks keep their firmware's id, module and version (not a reference the
  database enforces): a finished task stays readable after its package is
  deleted.
- Device rows are written whole (in SQL through the group-commit writer,
  sql/writes.py), so a later write repairs an earlier failed one. A row
  that is final never changes: every update is conditional on the stored
  state not being final, so the order in which a batch applies the writes
  of different keys cannot undo a cancel or a result.
- `ext_data` is stored as compact JSON text (orjson), read back as written.
"""

from __future__ import annotations

from collections.abc import Sequence

from thingshub.core import ota
from thingshub.core.errors import AlreadyExists, Conflict, NotFound
from thingshub.core.model import Firmware, OtaDevice, OtaTask

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


# ------------------------------------------------------------------ checks


def check_device(d: OtaDevice) -> OtaDevice:
    if d.state not in ota.STATES:
        raise ValueError(f"{d.state!r} is not an OTA device state")
    return d


def check_task(task: OtaTask, devices: Sequence[OtaDevice]) -> None:
    """Refuse a task or devices the services never make (a caller's bug)."""
    if task.status not in ota.TASK_STATUSES:
        raise ValueError(f"{task.status!r} is not an OTA task status")
    for d in devices:
        check_device(d)
    for d in devices:
        if d.task_id != task.id:
            raise ValueError(f"device {d.name!r} belongs to task {d.task_id!r}, not {task.id!r}")


def check_finish(status: str, devices: Sequence[OtaDevice]) -> None:
    if status not in (ota.COMPLETED, ota.CANCELED):
        raise ValueError(f"a task finishes COMPLETED or CANCELED, not {status!r}")
    for d in devices:
        check_device(d)
