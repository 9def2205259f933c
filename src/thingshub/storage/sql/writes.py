"""The writes the SQL repositories submit to the group-commit writer (batch.py).

Rules:
- A write is data: its kind (the handler that applies it, handlers.py), its
  key (what it touches; None: nothing another write reads) and its
  arguments, checked and encoded here, in the caller, so a bad value fails
  its caller only. A new kind is a constant and a function here, a handler
  there, and a repository method that submits it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from thingshub.core import ota
from thingshub.core.model import CommandRecord, DeviceEvent, OtaDevice, OtaTask, Point, StoredImage
from thingshub.storage import common, ota_common
from thingshub.storage.sql import rows
from thingshub.storage.sql.batch import Write

IMAGE_CREATE = "image.create"  # (product_id, name, version, document, updated_at)
IMAGE_UPDATE = "image.update"  # (product_id, name, expected, version, document, updated_at)
COMMAND_ADD = "command.add"  # rows.command_values(record)
COMMAND_FINISH = "command.finish"  # (cmd_id, status, answered_at, response, detail)
TELEMETRY_APPEND = "telemetry.append"  # (product_id, name, [(key, ts, num, value), ...])
#: Many devices' rows as one write (a gateway's message): a TELEMETRY_APPEND's args
#: a device, ((product_id, name, rows), ...); its outcome None, or a tuple of one
#: a device (None: stored, 0: no such device, nothing of its stored).
TELEMETRY_APPEND_DEVICES = "telemetry.append_devices"
ATTRIBUTES_UPSERT = "attributes.upsert"  # (product_id, name, [(key, value), ...], ts)
EVENTS_APPEND = "events.append"  # (product_id, name, [(ts, method, params), ...])
OTA_TASK_ADD = "ota.task_add"  # (task values, [(position, *ota device values), ...])
OTA_DEVICE_SAVE = "ota.device_save"  # rows.ota_device_values(device)
OTA_TASK_FINISH = "ota.task_finish"  # (task_id, status, finished_at, [ota device values...])

#: The final states of an OTA device as an SQL list, for `state NOT IN (...)`.
FINAL_STATES = ", ".join(f"'{s}'" for s in sorted(ota.FINAL))


def image(product_id: str, name: str, image: StoredImage, expected_version: int) -> Write:
    common.check_save(image, expected_version)
    text = common.dump_document(image.document)
    key = ("image", product_id, name)
    if expected_version == 0:
        return Write(IMAGE_CREATE, key, (product_id, name, image.version, text, common.now_ms()))
    args = (product_id, name, expected_version, image.version, text, common.now_ms())
    return Write(IMAGE_UPDATE, key, args)


def command_add(record: CommandRecord) -> Write:
    return Write(COMMAND_ADD, ("command", record.cmd_id), rows.command_values(record))


def command_finish(
    cmd_id: str, status: str, answered_at: int | None, response: bytes | None, detail: str | None
) -> Write:
    body = bytes(response) if response is not None else None
    return Write(COMMAND_FINISH, ("command", cmd_id), (cmd_id, status, answered_at, body, detail))


def telemetry(product_id: str, name: str, points: Sequence[Point]) -> Write:
    return Write(TELEMETRY_APPEND, None, (product_id, name, common.point_rows(points)))


def attributes(product_id: str, name: str, values: Mapping[str, object], ts: int) -> Write:
    args = (product_id, name, common.attribute_rows(values), common.check_ts(ts))
    return Write(ATTRIBUTES_UPSERT, None, args)


def events(product_id: str, name: str, events: Sequence[DeviceEvent]) -> Write:
    return Write(EVENTS_APPEND, None, (product_id, name, common.event_rows(events)))


def task_add(task: OtaTask, devices: Sequence[OtaDevice]) -> Write:
    ota_common.check_task(task, devices)
    positioned = [(i, *rows.ota_device_values(d)) for i, d in enumerate(devices)]
    return Write(OTA_TASK_ADD, ("ota_task", task.id), (rows.task_values(task), positioned))


def device_save(device: OtaDevice) -> Write:
    values = rows.ota_device_values(ota_common.check_device(device))
    return Write(OTA_DEVICE_SAVE, ("ota_device", device.task_id, device.name), values)


def task_finish(task_id: str, status: str, finished_at: int, devices: Sequence[OtaDevice]) -> Write:
    ota_common.check_finish(status, devices)
    values = [rows.ota_device_values(d) for d in devices]
    return Write(OTA_TASK_FINISH, ("ota_task", task_id), (task_id, status, finished_at, values))
