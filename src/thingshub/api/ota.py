"""OTA tasks (`/api/v1/products/{pid}/ota-tasks`) and the firmware download
devices use (`/ota/download/{task}/{device}?token=...`).

Rules:
- The download is outside `/api`: devices have no API key; the token in the
  URL is what admits them (core/ota.py). A forged, expired or spent token is
  403. The file is served with HTTP Range support (Starlette's FileResponse:
  206 with Content-Range for a satisfiable range, 416 otherwise, HEAD too),
  streamed from disk in chunks by a worker thread.
"""

from __future__ import annotations

import asyncio
import os
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import APIKeyQuery
from pydantic import ConfigDict, Field, StrictBool, StringConstraints

from thingshub.api.deps import Ota
from thingshub.api.params import (
    ApiRoute,
    DeviceName,
    KeyCursor,
    Limit,
    ProductId,
    TaskId,
)
from thingshub.api.schemas import (
    BODY_ERRORS,
    ERRORS,
    NUMBER,
    OPTIONAL_ERRORS,
    ErrorOut,
    Identifier,
    Strict,
)
from thingshub.core import ota
from thingshub.core.errors import NotFound
from thingshub.core.model import OtaDevice, OtaTask
from thingshub.services.ota_tasks import TaskView

router = APIRouter(
    prefix="/api/v1/products/{pid}/ota-tasks",
    tags=["ota"],
    responses=ERRORS | OPTIONAL_ERRORS,
    route_class=ApiRoute,
)
download_router = APIRouter(tags=["ota"], route_class=ApiRoute)
DOWNLOAD_PATH = "/ota/download/{task_id}/{device}"
SIGN_METHOD = r"^([Mm][Dd]5|[Ss][Hh][Aa]256)$"
#: What admits a device to a download: the token of its inform's url.
DOWNLOAD_TOKEN = APIKeyQuery(
    name="token",
    auto_error=False,
    scheme_name="downloadToken",
    description="The token of the url in the OTA inform (a wrong or missing one: 403).",
)


class TaskIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["devices"],
                    "properties": {"devices": {"type": "array"}, "all": {"enum": [False, None]}},
                },
                {
                    "required": ["all"],
                    "properties": {"all": {"const": True}, "devices": {"type": "null"}},
                },
            ]
        },
    )

    firmware_id: Identifier = Field(description="The package to install (from /firmware).")
    devices: list[Identifier] | None = Field(
        None,
        min_length=1,
        max_length=ota.MAX_TASK_DEVICES,
        description='Device names, in rollout order (or `"all": true`).',
    )
    all: StrictBool | None = Field(None, description="true: every device of the product.")
    sign_method: Annotated[str, StringConstraints(pattern=SIGN_METHOD)] | None = Field(
        None, description="MD5 or SHA256 (default), in any case."
    )
    rollout_per_minute: (
        Annotated[int, Field(ge=1, le=ota.MAX_ROLLOUT_PER_MINUTE), NUMBER] | None
    ) = Field(None, description="Devices informed per minute at most (default: all at once).")
    device_timeout_s: (
        Annotated[int, Field(ge=ota.MIN_DEVICE_TIMEOUT_S, le=ota.MAX_DEVICE_TIMEOUT_S), NUMBER]
        | None
    ) = Field(
        None,
        description="Seconds a device has from its inform to report 100 (default 3600).",
    )


def device_out(d: OtaDevice) -> dict[str, Any]:
    return {
        "name": d.name,
        "state": d.state,
        "step": d.step,
        "desc": d.desc,
        "detail": d.detail,
        "informed_at": d.informed_at,
        "updated_at": d.updated_at,
        "finished_at": d.finished_at,
        "protocol": d.protocol,
        "tid": d.tid,
    }


def task_out(task: OtaTask, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "id": task.id,
        "product_id": task.product_id,
        "status": task.status,
        "firmware_id": task.firmware_id,
        "module": task.module,
        "version": task.version,
        "sign_method": task.sign_method,
        "rollout_per_minute": task.rollout_per_minute,
        "device_timeout_s": task.device_timeout_s,
        "created_at": task.created_at,
        "finished_at": task.finished_at,
        "counts": counts,
    }


def view_out(view: TaskView) -> dict[str, Any]:
    return {**task_out(view.task, view.counts), "devices": [device_out(d) for d in view.devices]}


@router.post("", status_code=201, responses=BODY_ERRORS)
async def create_task(pid: ProductId, body: TaskIn, ota: Ota) -> JSONResponse:
    """Start upgrading devices (a list, or `"all": true`) to a package. Devices online
    and subscribed to `ota/devices/inform/{device_number}` are informed at once (at the
    rollout pace), the others when they subscribe."""
    view = await ota.create_task(
        pid,
        body.firmware_id,
        body.devices,
        body.all,
        body.sign_method,
        body.rollout_per_minute,
        body.device_timeout_s,
    )
    return JSONResponse(view_out(view), status_code=201)


@router.get("")
async def list_tasks(
    pid: ProductId,
    ota: Ota,
    limit: Limit = 100,
    cursor: KeyCursor = None,
) -> dict[str, Any]:
    """The product's tasks, oldest first, with how many devices are in each state."""
    page = await ota.list_tasks(pid, limit, cursor)
    return {"items": [task_out(t, c) for t, c in page.items], "next": page.next}


@router.get("/{task_id}")
async def get_task(pid: ProductId, task_id: TaskId, ota: Ota) -> dict[str, Any]:
    """A task with the state, step and description of each of its devices."""
    return view_out(await ota.get_task(pid, task_id))


@router.post("/{task_id}/cancel")
async def cancel_task(pid: ProductId, task_id: TaskId, ota: Ota) -> dict[str, Any]:
    """Cancel a running task: its devices not yet final become CANCELED (409 if the
    task has completed; cancelling a canceled task changes nothing)."""
    return view_out(await ota.cancel(pid, task_id))


@download_router.get(
    DOWNLOAD_PATH,
    response_class=FileResponse,
    responses={
        400: {"model": ErrorOut, "description": "Malformed request"},
        404: {"model": ErrorOut, "description": "The file is missing on this server"},
        206: {"description": "The range asked for (Content-Range)"},
        403: {"model": ErrorOut, "description": "A forged, expired or spent token"},
        416: {"description": "The range is outside the file"},
    },
)
async def download(
    task_id: TaskId,
    device: DeviceName,
    ota: Ota,
    token: Annotated[str | None, Depends(DOWNLOAD_TOKEN)],
) -> FileResponse:
    """The firmware file of a task, for the device the link was made for (no API key:
    the link's token admits it). Supports `Range` for resumed downloads."""
    service = ota
    firmware = await service.authorize_download(task_id, device, token)
    path = service.file_of(firmware)
    try:
        stat = await asyncio.to_thread(os.stat, path)
    except FileNotFoundError:
        raise NotFound("the firmware file is missing on this server") from None
    return FileResponse(
        path,
        stat_result=stat,
        media_type="application/octet-stream",
        filename=f"{firmware.module}-{firmware.version}.bin",
        headers={
            "Cache-Control": "no-store",
            "X-Firmware-MD5": firmware.md5,
            "X-Firmware-SHA256": firmware.sha256,
        },
    )


download_router.add_api_route(DOWNLOAD_PATH, download, methods=["HEAD"], include_in_schema=False)
