"""OneNET's HTTP APIs for devices: OTA under `/ota/` and `/fuse-ota/`, and dynamic
registration at `/mqtt/v1/devices/reg` (field-protocols §4.2, §5.4).

Rules:
- No API key: a OneNET token in `Authorization` admits the device (token.py
  of the OneNET dialect checks it: the device's key or the product's access
  key, at device or product level). For OTA its `res` must name the path's
  product (and device); a `userid/...` token, a missing device or a wrong
  signature is errno 1.
- OTA answers are HTTP 200 with OneNET's JSON, `errno`/`error` and
  `code`/`msg` alike (the C SDK reads the first pair, newer firmware the
  second); the errors of the tree carry the errno as `err_code`
  (core/onenet_ota.py), other errors map by kind.
- A download answers the file (206 for a range, by OneNET's Range rules),
  with `Content-Length`, `Content-Disposition` and `Ota-Errno: 0`; a
  refusal is 403 (the token, another device's tid) or 404 (no task or
  file, a finished task) with `Ota-Errno` and the JSON answer. The file is
  read from disk in blocks on a worker thread.
- These are devices' endpoints in OneNET's own shapes, documented in
  docs/protocols.md; they stay out of the OpenAPI document of the API.
- Bodies are small JSON objects, read up to MAX_BODY bytes; anything else is
  errno 2 (registration: 400 `000007`).
- Registration answers in OneNET's envelope: 200 with the device and its
  key; 401 `000001` without a token, `000002` with a bad one; 403 `000002`
  when the product does not allow it; 400 `000007` for a bad body.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from thingshub.api.params import ApiRoute
from thingshub.api.served import served
from thingshub.core import names
from thingshub.core import onenet_ota as rules
from thingshub.core.errors import (
    Forbidden,
    InvalidRequest,
    NotFound,
    ThingsHubError,
    Unauthorized,
)
from thingshub.core.model import Device
from thingshub.dialects.onenet import token as tokens
from thingshub.services.devices import DeviceService
from thingshub.services.onenet_ota import OneNetOta

router = APIRouter(tags=["onenet devices"], route_class=ApiRoute, include_in_schema=False)

PREFIXES = ("/ota", "/fuse-ota")
MAX_BODY = 4096
BLOCK = 64 * 1024
#: errno of an error without one, by kind.
_ERRNO_OF = {
    Unauthorized: rules.AUTH,
    InvalidRequest: rules.BAD_PARAMS,
    NotFound: rules.NO_TASK,
    Forbidden: rules.OTHER_DEVICE,
}


def _errno(exc: ThingsHubError) -> int:
    if isinstance(exc.err_code, int) and exc.err_code in rules.ERRNO:
        return exc.err_code
    for kind, errno in _ERRNO_OF.items():
        if isinstance(exc, kind):
            return errno
    return rules.BAD_STATE


def answer(errno: int = rules.OK, data: Any = None, status: int = 200) -> JSONResponse:
    text = rules.ERRNO[errno]
    body: dict[str, Any] = {
        "errno": errno,
        "error": text,
        "code": errno,
        "msg": text,
        "request_id": secrets.token_hex(16),
    }
    if data is not None:
        body["data"] = data
    return JSONResponse(body, status_code=status, headers={"Ota-Errno": str(errno)})


def _services(request: Request) -> tuple[DeviceService, OneNetOta]:
    ctx = served(request.scope).ctx
    if ctx.onenet_ota is None:
        raise rules.error(NotFound, rules.INTERNAL)
    return ctx.devices, ctx.onenet_ota


def _now_s(request: Request) -> int:
    clock: Callable[[], int] = served(request.scope).ctx.devices.clock.now_ms
    return clock() // 1000


async def _device(request: Request, pid: str, name: str) -> Device:
    """The device the path names, if the request's token admits it (errno 1 otherwise)."""
    devices, _ = _services(request)
    try:
        token = tokens.parse_token(request.headers.get("authorization", ""))
        names.check("product id", pid)
        names.check("name", name)
    except (Unauthorized, InvalidRequest):
        raise rules.error(Unauthorized, rules.AUTH) from None
    device = await devices.find_device(pid, name)
    if device is None:
        raise rules.error(Unauthorized, rules.AUTH)
    try:
        tokens.verify_token(
            token,
            key_b64=device.key,
            product_id=pid,
            device_name=name,
            now_s=_now_s(request),
            product_key=device.product_key,
        )
    except Unauthorized:
        raise rules.error(Unauthorized, rules.AUTH) from None
    return device


async def _json_body(request: Request) -> dict[str, Any]:
    if int(request.headers.get("content-length") or 0) > MAX_BODY:
        raise rules.error(InvalidRequest, rules.BAD_PARAMS)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise rules.error(InvalidRequest, rules.BAD_PARAMS)
    try:
        value = json.loads(body)
    except ValueError:
        raise rules.error(InvalidRequest, rules.BAD_PARAMS) from None
    if not isinstance(value, dict):
        raise rules.error(InvalidRequest, rules.BAD_PARAMS)
    return value


def _tid(text: str) -> int:
    if not text.isdigit() or len(text) > 18 or int(text) < 1:
        raise rules.error(InvalidRequest, rules.BAD_PARAMS)
    return int(text)


# ---------------------------------------------------------------- OTA


async def post_version(request: Request, pid: str, name: str) -> JSONResponse:
    """Report the versions the device runs (`f_version`: module, `s_version`: application)."""
    try:
        await _device(request, pid, name)
        body = await _json_body(request)
        f, s = body.get("f_version"), body.get("s_version")
        if f is None and s is None:
            raise rules.error(InvalidRequest, rules.BAD_PARAMS)
        await _services(request)[1].report_versions(pid, name, f, s)
    except ThingsHubError as exc:
        return answer(_errno(exc))
    return answer()


async def get_version(request: Request, pid: str, name: str) -> JSONResponse:
    """The versions the device reported."""
    try:
        await _device(request, pid, name)
        f, s = await _services(request)[1].versions(pid, name)
    except ThingsHubError as exc:
        return answer(_errno(exc))
    return answer(data={"f_version": f, "s_version": s})


async def check_task(request: Request, pid: str, name: str) -> JSONResponse:
    """The upgrade task of a type (`type` 1 module, 2 application) for the device's
    `version`, if it has one (errno 11 otherwise)."""
    try:
        await _device(request, pid, name)
        query = request.query_params
        task, firmware, device = await _services(request)[1].check(
            pid, name, query.get("type"), query.get("version")
        )
    except ThingsHubError as exc:
        return answer(_errno(exc))
    data = {
        "tid": device.tid,
        "target": task.version,
        "size": firmware.size,
        "md5": firmware.md5,
        "status": rules.status(device),
        "type": 1,
    }
    return answer(data=data)


async def task_status(request: Request, pid: str, name: str, tid: str) -> JSONResponse:
    """Where the device's part of a task stands (`status` 1-6)."""
    try:
        await _device(request, pid, name)
        device = await _services(request)[1].state(pid, name, _tid(tid))
    except ThingsHubError as exc:
        return answer(_errno(exc))
    return answer(data={"status": rules.status(device)})


async def report_step(request: Request, pid: str, name: str, tid: str) -> JSONResponse:
    """The device's step: download progress 0-100, 101 downloaded, 201 upgraded,
    102-107 and 202-208 failures."""
    try:
        await _device(request, pid, name)
        number = _tid(tid)
        step = (await _json_body(request)).get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            raise rules.error(InvalidRequest, rules.BAD_PARAMS)
        await _services(request)[1].step(pid, name, number, step)
    except ThingsHubError as exc:
        return answer(_errno(exc))
    return answer()


async def download(request: Request, pid: str, name: str, tid: str) -> Response:
    """The package of the device's task; `Range` as OneNET reads it (`a-b` with or
    without `bytes=`, `a-`, `-n`)."""
    try:
        await _device(request, pid, name)
        service = _services(request)[1]
        firmware = await service.download(pid, name, _tid(tid))
        path = service.ota.file_of(firmware)
        size = (await asyncio.to_thread(path.stat)).st_size
    except FileNotFoundError:
        return answer(rules.NO_TASK, status=404)
    except ThingsHubError as exc:
        errno = _errno(exc)
        return answer(errno, status=403 if errno in (rules.AUTH, rules.OTHER_DEVICE) else 404)
    span = rules.byte_range(request.headers.get("range"), size)
    first, last = span if span is not None else (0, size - 1)
    headers = {
        "Content-Length": str(last - first + 1),
        "Content-Disposition": f'attachment; filename="{firmware.module}-{firmware.version}.bin"',
        "Ota-Errno": "0",
        "Cache-Control": "no-store",
    }
    if span is not None:
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    return StreamingResponse(
        _read(path, first, last - first + 1),
        status_code=206 if span is not None else 200,
        media_type="application/octet-stream",
        headers=headers,
    )


async def _read(path: Path, offset: int, length: int) -> AsyncIterator[bytes]:
    file = await asyncio.to_thread(path.open, "rb")
    try:
        await asyncio.to_thread(file.seek, offset)
        while length > 0:
            block = await asyncio.to_thread(file.read, min(BLOCK, length))
            if not block:
                return
            length -= len(block)
            yield block
    finally:  # closed at once: an await here is canceled again when the client went away
        file.close()


_OTA_ROUTES: tuple[tuple[str, str, Callable[..., Any]], ...] = (
    ("POST", "/version", post_version),
    ("GET", "/version", get_version),
    ("GET", "/check", check_task),
    ("GET", "/{tid}/check", task_status),
    ("GET", "/{tid}/download", download),
    ("GET", "/{tid}/download/", download),
    ("POST", "/{tid}/status", report_step),
)
for _prefix in PREFIXES:
    for _method, _path, _handler in _OTA_ROUTES:
        router.add_api_route(
            f"{_prefix}/{{pid}}/{{name}}{_path}",
            _handler,
            methods=[_method],
        )


# ---------------------------------------------------------------- dynamic registration

_REG_ERRORS = {
    "000001": "onenet_common_token_missing",
    "000002": "onenet_common_token_invalid",
    "000007": "onenet_common_bad_request",
}


def _registration(code_no: str, message: str, status: int, data: Any = None) -> JSONResponse:
    body: dict[str, Any] = {
        "request_id": secrets.token_hex(16),
        "code_no": code_no,
        "code": _REG_ERRORS.get(code_no, "onenet_common_success"),
        "message": message,
    }
    if data is not None:
        body["data"] = data
    return JSONResponse(body, status_code=status)


@router.post("/mqtt/v1/devices/reg")
async def register(request: Request) -> JSONResponse:
    """A device registers itself with a product-level token (`res=products/{pid}`,
    signed with the product's access key): the device of that name is made (with
    the `key` given, or a new one) or, if it exists, returned."""
    devices: DeviceService = served(request.scope).ctx.devices
    header = request.headers.get("authorization")
    if not header:
        return _registration("000001", "a product-level token is required", 401)
    try:
        token = tokens.parse_token(header)
        pid = token.res.removeprefix("products/")
        product = await devices.storage.products.get(pid) if names.is_valid(pid) else None
        if product is None:
            raise Unauthorized("the token names no product of this server")
        tokens.verify_token(
            token,
            key_b64=None,
            product_id=pid,
            device_name=None,
            now_s=_now_s(request),
            product_key=product.access_key,
        )
    except Unauthorized as exc:
        return _registration("000002", exc.message, 401)
    try:
        body = await _json_body(request)
        desc = body.get("desc")
        if desc is not None and (not isinstance(desc, str) or len(desc) > 1024):
            raise InvalidRequest("desc must be a string of at most 1024 characters")
        device, _ = await devices.register_itself(pid, body.get("name"), body.get("key"))
    except Forbidden as exc:
        return _registration("000002", exc.message, 403)
    except InvalidRequest as exc:
        message = exc.message if exc.err_code is None else "the body must be a JSON object"
        return _registration("000007", message, 400)
    data = {"device_id": device.device_number, "name": device.name, "pid": pid, "key": device.key}
    return _registration("000000", "success", 200, data)
