"""Firmware packages: `/api/v1/products/{pid}/firmware`.

Rules:
- The upload is `multipart/form-data` with the parts `file`, `version`,
  `module`, and optionally `name` and `ext_data` (a JSON object), in any
  order. The body is parsed as it arrives (python-multipart's push parser)
  and the file part goes straight to the firmware service, which writes it
  to the data dir: nothing is spooled, and a file over the size limit is
  refused (413) as soon as its bytes pass the limit, or before anything is
  read when the declared Content-Length already does.
- Other parts are small (64 KiB together at most); an unknown part, a
  second file or a malformed body is a 400.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from thingshub.api import deps
from thingshub.api.guard import allow_body
from thingshub.api.params import ID_PATTERN, ApiRoute, FirmwareId, KeyCursor, Limit, ProductId
from thingshub.api.schemas import ERRORS, OPTIONAL_ERRORS, ErrorOut
from thingshub.core import ota
from thingshub.core.errors import InvalidRequest, TooLarge
from thingshub.core.model import Firmware

router = APIRouter(
    prefix="/api/v1/products/{pid}/firmware",
    tags=["ota"],
    responses=ERRORS | OPTIONAL_ERRORS,
    route_class=ApiRoute,
)

FIELDS = ("version", "module", "name", "ext_data")
MAX_FIELDS = 64 * 1024  # bytes of all the parts but the file


def firmware_out(f: Firmware) -> dict[str, Any]:
    return {
        "id": f.id,
        "product_id": f.product_id,
        "name": f.name,
        "version": f.version,
        "module": f.module,
        "size": f.size,
        "md5": f.md5,
        "sha256": f.sha256,
        "ext_data": dict(f.ext_data),
        "created_at": f.created_at,
    }


class _Form:
    """The parts of a multipart body, collected from the parser's callbacks: the
    small fields as text, the file's bytes handed over in `pending`."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.pending: list[bytes] = []
        self.file_seen = False
        self.ended = False
        self.error: str | None = None
        self._field_bytes = 0
        self._headers: dict[str, str] = {}
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._part: str | None = None  # the current part's name; "file" for the file
        self._value = bytearray()

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _fail(self, message: str) -> None:
        if self.error is None:
            self.error = message

    def _part_begin(self) -> None:
        self._headers = {}
        self._part = None
        self._value = bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        name = self._header_name.decode("latin-1").strip().lower()
        self._headers[name] = self._header_value.decode("latin-1")
        self._header_name = bytearray()
        self._header_value = bytearray()

    def _headers_finished(self) -> None:
        kind, options = parse_options_header(self._headers.get("content-disposition", ""))
        name = _text(options.get(b"name"))
        if kind != b"form-data" or not name:
            self._fail("every part needs a Content-Disposition: form-data with a name")
            return
        if name == "file":
            if self.file_seen:
                self._fail("only one file may be uploaded at a time")
                return
            self.file_seen = True
            self.filename = _text(options.get(b"filename"))
        elif name not in FIELDS:
            self._fail(f"unknown part {name!r}; the parts are file, {', '.join(FIELDS)}")
            return
        elif name in self.fields:
            self._fail(f"part {name!r} is given twice")
            return
        self._part = name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part == "file":
            self.pending.append(data[start:end])
        elif self._part is not None:
            self._field_bytes += end - start
            if self._field_bytes > MAX_FIELDS:
                self._fail(f"the parts other than the file exceed {MAX_FIELDS} bytes")
                self._part = None
                return
            self._value += data[start:end]

    def _part_end(self) -> None:
        if self._part is not None and self._part != "file":
            try:
                self.fields[self._part] = self._value.decode("utf-8")
            except UnicodeDecodeError:
                self._fail(f"part {self._part!r} is not UTF-8 text")
        self._part = None

    def _end(self) -> None:
        self.ended = True


def _text(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _boundary(request: Request) -> bytes:
    kind, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InvalidRequest(
            "the upload must be multipart/form-data with the parts file, version, module"
            " (and name, ext_data if wanted)"
        )
    return boundary


def _check_length(request: Request, max_size: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_size + MAX_FIELDS:
        raise TooLarge(f"the firmware file is larger than the limit of {max_size} bytes")
    allow_body(request.scope, max_size + MAX_FIELDS)


UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "version", "module"],
                    "additionalProperties": False,
                    "properties": {
                        "file": {"type": "string", "format": "binary", "minLength": 1},
                        "version": {
                            "type": "string",
                            "pattern": "^[!-~]{1,64}$",
                            "description": "e.g. 1.2.0: 1-64 printable ASCII, no spaces.",
                        },
                        "module": {
                            "type": "string",
                            "pattern": ID_PATTERN,
                            "description": "e.g. MCU: 1-64 of [A-Za-z0-9_.-].",
                        },
                        "name": {
                            "type": "string",
                            "maxLength": ota.MAX_FIRMWARE_NAME,
                            "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]*$",
                            "description": "A name (default: the file's).",
                        },
                        "ext_data": {
                            "type": "object",
                            "additionalProperties": {"$ref": "#/components/schemas/SafeJson"},
                            "description": "A JSON object of at most 8 KiB, its numbers"
                            " within ±(2^53 - 1), sent to devices as extData.",
                        },
                    },
                },
                "encoding": {"ext_data": {"contentType": "application/json"}},
            }
        },
    }
}


@router.post(
    "",
    status_code=201,
    openapi_extra=UPLOAD_BODY,
    responses={413: {"model": ErrorOut, "description": "The file is over the size limit"}},
)
async def upload_firmware(pid: ProductId, request: Request, service: deps.Firmware) -> JSONResponse:
    """Upload a firmware package. The answer carries its id, size, and its MD5 and
    SHA-256 digests (lowercase hex) computed while it was received."""
    boundary = _boundary(request)
    _check_length(request, service.max_size)
    upload = await service.begin(pid)
    form = _Form()
    parser = MultipartParser(boundary, form.callbacks())
    try:
        try:
            async for chunk in request.stream():
                parser.write(chunk)
                if form.error is not None:
                    break
                for piece in form.pending:
                    await upload.write(piece)
                form.pending.clear()
            else:
                parser.finalize()
        except MultipartParseError:
            raise InvalidRequest("the multipart body is malformed") from None
        except ClientDisconnect:
            raise InvalidRequest("the upload was interrupted") from None
        if form.error is not None:
            raise InvalidRequest(form.error)
        for piece in form.pending:
            await upload.write(piece)
        if not form.ended:
            raise InvalidRequest("the multipart body is incomplete")
        if not form.file_seen:
            raise InvalidRequest("the file part is missing")
    except BaseException:
        await upload.abort()
        raise
    firmware = await service.finish(
        upload,
        version=form.fields.get("version"),
        module=form.fields.get("module"),
        name=form.fields.get("name"),
        ext_data=form.fields.get("ext_data"),
        filename=form.filename,
    )
    return JSONResponse(firmware_out(firmware), status_code=201)


@router.get("")
async def list_firmware(
    pid: ProductId,
    firmware: deps.Firmware,
    limit: Limit = 100,
    cursor: KeyCursor = None,
) -> dict[str, Any]:
    """The product's packages, oldest first."""
    page = await firmware.list(pid, limit, cursor)
    return {"items": [firmware_out(f) for f in page.items], "next": page.next}


@router.get("/{firmware_id}")
async def get_firmware(
    pid: ProductId, firmware_id: FirmwareId, firmware: deps.Firmware
) -> dict[str, Any]:
    return firmware_out(await firmware.get(pid, firmware_id))


@router.delete("/{firmware_id}", status_code=204)
async def delete_firmware(
    pid: ProductId, firmware_id: FirmwareId, firmware: deps.Firmware
) -> Response:
    """Delete a package and its file; 409 while a running OTA task uses it."""
    await firmware.delete(pid, firmware_id)
    return Response(status_code=204)
