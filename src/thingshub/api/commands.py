"""Calls to devices: OneNET commands, ThingsPanel commands, attribute set and get,
control, and the command records.

Every call waits for the device, at most `?timeout=` seconds (default 10, 1
to 30): 409 when the device is offline (or goes offline while the call
waits), 504 when it does not answer in time.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse

from thingshub.api.deps import Commands
from thingshub.api.params import (
    ApiRoute,
    CommandCursor,
    DeviceName,
    Limit,
    ProductId,
    Timeout,
)
from thingshub.api.schemas import BODY_ERRORS, CALL_ERRORS, ERRORS, AttributesGetIn, CallIn
from thingshub.core import commands as calls
from thingshub.core.errors import InvalidRequest
from thingshub.core.jsontext import loads
from thingshub.core.model import CommandRecord

router = APIRouter(
    prefix="/api/v1/products/{pid}/devices/{name}",
    tags=["commands"],
    responses=ERRORS,
    route_class=ApiRoute,
)

MAX_COMMAND = 64 * 1024
#: Values for the device: a JSON object with at least one member.
Values = Annotated[dict[str, Any], Body(min_length=1)]
CALL = BODY_ERRORS | CALL_ERRORS


def _text(data: bytes) -> str | None:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


@router.post(
    "/commands",
    responses=CALL,
    openapi_extra={
        "requestBody": {
            "content": {
                "application/octet-stream": {
                    "schema": {"type": "string", "format": "binary", "maxLength": MAX_COMMAND}
                }
            },
            "description": f"The bytes to send, untouched (at most {MAX_COMMAND}).",
        }
    },
)
async def onenet_command(
    pid: ProductId, name: DeviceName, request: Request, commands: Commands, timeout: Timeout = 10
) -> dict[str, Any]:
    """A OneNET synchronous command: the body is published as is on
    `$sys/{pid}/{name}/cmd/request/{cmd_id}`; the answer comes back base64 (and as
    text when it is UTF-8). An answer of 1024 bytes or more is refused: 400, err_code 99."""
    body = await request.body()
    if len(body) > MAX_COMMAND:
        raise InvalidRequest(f"a command is at most {MAX_COMMAND} bytes")
    result = await commands.call(pid, name, calls.raw_command(body), timeout)
    return {
        "cmd_id": result.call_id,
        "response": base64.b64encode(result.payload).decode(),
        "response_text": _text(result.payload),
    }


@router.post("/calls", responses=CALL)
async def thingspanel_call(
    pid: ProductId, name: DeviceName, commands: Commands, body: CallIn, timeout: Timeout = 10
) -> dict[str, Any]:
    """A ThingsPanel command `{"method", "params"}` on `devices/command/{device_number}/{id}`;
    the device's response object, as it sent it."""
    call = calls.method_call(body.method, body.params)
    return await _answer_object(commands, pid, name, call, timeout)


@router.put("/attributes", responses=CALL)
async def set_attributes(
    pid: ProductId, name: DeviceName, commands: Commands, body: Values, timeout: Timeout = 10
) -> dict[str, Any]:
    """Set attributes on the device (`devices/attributes/set/{device_number}/{id}`);
    the device's response object."""
    return await _answer_object(commands, pid, name, calls.attribute_set(body), timeout)


async def _answer_object(
    commands: Commands, pid: str, name: str, call: calls.CallRequest, timeout: int
) -> dict[str, Any]:
    """The device's response object (its dialect read and checked it)."""
    result = await commands.call(pid, name, call, timeout)
    assert result.body is not None, "a ThingsPanel answer is always read"
    return result.body


@router.post("/attributes/get", responses=CALL)
async def get_attributes(
    pid: ProductId,
    name: DeviceName,
    commands: Commands,
    body: AttributesGetIn,
    timeout: Timeout = 10,
) -> dict[str, Any]:
    """Ask the device for attributes (`{"keys": [...]}`, empty for all) on
    `devices/attributes/get/{device_number}`; the values of its next report."""
    return await commands.get_attributes(pid, name, body.keys, timeout)


@router.post("/control", status_code=202, responses=BODY_ERRORS)
async def control(
    pid: ProductId, name: DeviceName, commands: Commands, body: Values
) -> JSONResponse:
    """Values for the device on `devices/telemetry/control/{device_number}`; nothing waits."""
    await commands.control(pid, name, body)
    return JSONResponse({"status": "sent"}, status_code=202)


@router.get("/commands")
async def list_commands(
    pid: ProductId,
    name: DeviceName,
    commands: Commands,
    limit: Limit = 100,
    cursor: CommandCursor = None,
) -> dict[str, Any]:
    """The recorded calls of both families, newest first. OneNET bodies are base64;
    ThingsPanel bodies are the JSON objects sent and received."""
    page = await commands.list_records(pid, name, limit, cursor)
    return {"items": [_record(r) for r in page.items], "next": page.next}


def _record(r: CommandRecord) -> dict[str, Any]:
    return {
        "cmd_id": r.cmd_id,
        "family": r.family,
        "kind": r.kind,
        "status": r.status,
        "created_at": r.created_at,
        "answered_at": r.answered_at,
        "request": _body(r.family, r.request),
        "response": _body(r.family, r.response) if r.response is not None else None,
        "detail": r.detail,
    }


def _body(family: str, data: bytes) -> Any:
    if family == calls.ONENET:
        return base64.b64encode(data).decode()
    try:
        return loads(data)
    except ValueError:
        return base64.b64encode(data).decode()
