"""Calls to devices: OneNET commands, ThingsPanel commands, attribute set and get,
control, and the command records.

Every call waits for the device, at most `?timeout=` seconds (default 10, 1
to 30): 409 when the device is offline (or goes offline while the call
waits), 504 when it does not answer in time.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse

from thingshub.api.schemas import ERRORS, ErrorOut
from thingshub.core import commands as calls
from thingshub.core.errors import InvalidRequest
from thingshub.core.jsontext import loads
from thingshub.core.model import CommandRecord
from thingshub.services.commands import CommandService

router = APIRouter(
    prefix="/api/v1/products/{pid}/devices/{name}",
    tags=["commands"],
    responses=ERRORS | {504: {"model": ErrorOut, "description": "No answer in time"}},
)

MAX_COMMAND = 64 * 1024
Timeout = Annotated[str | None, Query(description="Seconds to wait for the answer (1-30).")]
JsonObject = Annotated[dict[str, Any], Body()]


def _commands(request: Request) -> CommandService:
    service: CommandService = request.app.state.ctx.commands
    return service


def _text(data: bytes) -> str | None:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


@router.post(
    "/commands",
    openapi_extra={
        "requestBody": {
            "content": {"application/octet-stream": {}},
            "description": "The bytes to send, untouched.",
        }
    },
)
async def onenet_command(
    pid: str, name: str, request: Request, timeout: Timeout = None
) -> dict[str, Any]:
    """A OneNET synchronous command: the body is published as is on
    `$sys/{pid}/{name}/cmd/request/{cmd_id}`; the answer comes back base64 (and as
    text when it is UTF-8). An answer of 1024 bytes or more is refused: 400, err_code 99."""
    body = await request.body()
    if len(body) > MAX_COMMAND:
        raise InvalidRequest(f"a command is at most {MAX_COMMAND} bytes")
    result = await _commands(request).call(pid, name, calls.raw_command(body), timeout)
    return {
        "cmd_id": result.call_id,
        "response": base64.b64encode(result.payload).decode(),
        "response_text": _text(result.payload),
    }


@router.post("/calls")
async def thingspanel_call(
    pid: str, name: str, request: Request, body: JsonObject, timeout: Timeout = None
) -> dict[str, Any]:
    """A ThingsPanel command `{"method", "params"}` on `devices/command/{device_number}/{id}`;
    the device's response object, as it sent it."""
    unknown = set(body) - {"method", "params"}
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    call = calls.method_call(body.get("method"), body.get("params"))
    return await _answer_object(request, pid, name, call, timeout)


@router.put("/attributes")
async def set_attributes(
    pid: str, name: str, request: Request, body: JsonObject, timeout: Timeout = None
) -> dict[str, Any]:
    """Set attributes on the device (`devices/attributes/set/{device_number}/{id}`);
    the device's response object."""
    return await _answer_object(request, pid, name, calls.attribute_set(body), timeout)


async def _answer_object(
    request: Request, pid: str, name: str, call: calls.CallRequest, timeout: str | None
) -> dict[str, Any]:
    """The device's response object (its dialect read and checked it)."""
    result = await _commands(request).call(pid, name, call, timeout)
    assert result.body is not None, "a ThingsPanel answer is always read"
    return result.body


@router.post("/attributes/get")
async def get_attributes(
    pid: str, name: str, request: Request, body: JsonObject, timeout: Timeout = None
) -> dict[str, Any]:
    """Ask the device for attributes (`{"keys": [...]}`, empty for all) on
    `devices/attributes/get/{device_number}`; the values of its next report."""
    unknown = set(body) - {"keys"}
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    return await _commands(request).get_attributes(pid, name, body.get("keys", []), timeout)


@router.post("/control", status_code=202)
async def control(pid: str, name: str, request: Request, body: JsonObject) -> JSONResponse:
    """Values for the device on `devices/telemetry/control/{device_number}`; nothing waits."""
    await _commands(request).control(pid, name, body)
    return JSONResponse({"status": "sent"}, status_code=202)


@router.get("/commands")
async def list_commands(
    pid: str,
    name: str,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The recorded calls of both families, newest first. OneNET bodies are base64;
    ThingsPanel bodies are the JSON objects sent and received."""
    page = await _commands(request).list_records(pid, name, limit, cursor)
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
