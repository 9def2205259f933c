"""Rows and the core's values: one function per row type, for both databases.

Rules:
- `*_COLUMNS` are the fields of a core model, in their order. `x(row)` maps
  such a row (read by position: an asyncpg Record or an sqlite3 tuple) to
  the model, `x_values(model)` a model to the values inserted: tags and
  JSON as text, bodies as bytes. No presence row is "offline, never seen".
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from thingshub.core.model import (
    CommandRecord,
    Device,
    Firmware,
    OtaDevice,
    OtaTask,
    Presence,
    Product,
    StoredImage,
)
from thingshub.storage import common
from thingshub.storage.sql.connection import Row

PRODUCT_COLUMNS = (
    "id, name, created_at, retention_days, gateway_auto_register, dynamic_registration, access_key"
)
DEVICE_COLUMNS = (
    "product_id, name, device_number, key, username, password_hash, created_at, tags, status,"
    " access_token, gateway_product_id, gateway_name, sub_address"
)
PRESENCE_COLUMNS = "p.online, p.last_activity, p.changed_at"  # of `device_presence p`
IMAGE_COLUMNS = "document, version"
COMMAND_COLUMNS = (
    "cmd_id, product_id, name, family, kind, request, status,"
    " created_at, sent_at, answered_at, response, detail, target, node"
)
FIRMWARE_COLUMNS = "id, product_id, name, version, module, size, md5, sha256, created_at, ext_data"
TASK_COLUMNS = (
    "id, product_id, firmware_id, module, version, sign_method, rollout_per_minute,"
    " device_timeout_s, status, created_at, finished_at"
)
OTA_DEVICE_COLUMNS = (
    "task_id, name, state, step, description, detail, informed_at, updated_at, finished_at,"
    " tid, protocol"
)


def _fields(value: Any) -> tuple[Any, ...]:
    return tuple(getattr(value, f.name) for f in fields(value))


def _body(value: bytes | None) -> bytes | None:
    return bytes(value) if value is not None else None


def product(row: Row) -> Product:
    return Product(row[0], row[1], row[2], row[3], bool(row[4]), bool(row[5]), row[6])


def device(row: Row) -> Device:
    tags = common.load_tags(row[7])
    gateway = (row[10], row[11]) if row[10] is not None else None
    return Device(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        tags,
        row[8],
        row[9],
        gateway,
        row[12],
    )


def device_values(d: Device) -> tuple[Any, ...]:
    gateway = d.gateway or (None, None)
    return (
        *_fields(d)[:7],
        common.dump_tags(d.tags),
        d.status,
        d.access_token,
        *gateway,
        d.sub_address,
    )


def presence(row: Row) -> Presence:
    """From PRESENCE_COLUMNS of a LEFT JOIN: no row is a device never seen."""
    if row[0] is None:
        return Presence(False)
    return Presence(bool(row[0]), row[1], row[2])


def image(row: Row) -> StoredImage:
    return StoredImage(common.load_document(row[0]), row[1])


def command(row: Row) -> CommandRecord:
    request, response = bytes(row[5]), _body(row[10])
    head = (row[0], row[1], row[2], row[3], row[4])
    tail = (row[11], row[12], row[13])
    return CommandRecord(*head, request, row[6], row[7], row[8], row[9], response, *tail)


def command_values(r: CommandRecord) -> tuple[Any, ...]:
    values = _fields(r)
    body = _body(r.response)
    return (*values[:5], bytes(r.request), *values[6:10], body, r.detail, r.target, r.node)


def firmware(row: Row) -> Firmware:
    ext_data = common.load_document(row[9])
    head = (row[0], row[1], row[2], row[3], row[4])
    return Firmware(*head, int(row[5]), row[6], row[7], int(row[8]), ext_data)


def firmware_values(f: Firmware) -> tuple[Any, ...]:
    return (*_fields(f)[:9], common.dump_json(dict(f.ext_data)))


def task(row: Row) -> OtaTask:
    head = (row[0], row[1], row[2], row[3], row[4], row[5], row[6])
    return OtaTask(*head, int(row[7]), row[8], int(row[9]), row[10])


def task_values(t: OtaTask) -> tuple[Any, ...]:
    return _fields(t)


def ota_device(row: Row) -> OtaDevice:
    head = (row[0], row[1], row[2], row[3], row[4], row[5], row[6], int(row[7]), row[8])
    return OtaDevice(*head, None if row[9] is None else int(row[9]), row[10])


def ota_device_values(d: OtaDevice) -> tuple[Any, ...]:
    return _fields(d)
