"""OneNET device images: `/api/v1/products/{pid}/devices/{name}/image`.

Errors carry the protocol's `err_code` and `err_msg` (protocols.md section 2):
400 with 160-165 for a rule broken, 404 with 167 when there is no image, 409
with 166 when creating one that exists.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse

from thingshub.api.schemas import ERRORS
from thingshub.core.errors import InvalidRequest
from thingshub.services.images import ImageService

router = APIRouter(
    prefix="/api/v1/products/{pid}/devices/{name}/image", tags=["images"], responses=ERRORS
)

PATCH_FIELDS = {"desired", "tags", "version"}


def _images(request: Request) -> ImageService:
    service: ImageService = request.app.state.ctx.images
    return service


@router.get("")
async def get_image(pid: str, name: str, request: Request) -> dict[str, Any]:
    """The image document: system properties, tags, and the properties (state,
    metadata, version, timestamp; times in Unix seconds)."""
    return await _images(request).document(pid, name)


@router.post("", status_code=201)
async def create_image(pid: str, name: str, request: Request) -> JSONResponse:
    """Create an empty image (version 1)."""
    return JSONResponse(await _images(request).create(pid, name), status_code=201)


@router.patch("")
async def patch_image(
    pid: str,
    name: str,
    request: Request,
    body: Annotated[
        dict[str, Any],
        Body(
            examples=[
                {"desired": {"lights": {"color": "RED"}}, "tags": {"floor": "1"}, "version": 3}
            ]
        ),
    ],
) -> dict[str, Any]:
    """Change desired (validated as a device's update; `null` deletes a key) and/or tags
    (`null` removes a tag). With `version`, the change applies only to that version."""
    unknown = set(body) - PATCH_FIELDS
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {k: body[k] for k in ("desired", "tags") if k in body}
    return await _images(request).patch(pid, name, version=body.get("version"), **kwargs)
