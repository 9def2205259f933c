"""OneNET device images: `/api/v1/products/{pid}/devices/{name}/image`.

Errors carry the protocol's `err_code` and `err_msg` (docs/protocols.md section 2):
400 with 160-165 for a rule broken, 404 with 167 when there is no image, 409
with 166 when creating one that exists.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse

from thingshub.api.deps import Images
from thingshub.api.params import ApiRoute, DeviceName, ProductId
from thingshub.api.schemas import BODY_ERRORS, ERRORS, ImagePatch

router = APIRouter(
    prefix="/api/v1/products/{pid}/devices/{name}/image",
    tags=["images"],
    responses=ERRORS,
    route_class=ApiRoute,
)


@router.get("")
async def get_image(pid: ProductId, name: DeviceName, images: Images) -> dict[str, Any]:
    """The image document: system properties, tags, and the properties (state,
    metadata, version, timestamp; times in Unix seconds)."""
    return await images.document(pid, name)


@router.post("", status_code=201)
async def create_image(pid: ProductId, name: DeviceName, images: Images) -> JSONResponse:
    """Create an empty image (version 1)."""
    return JSONResponse(await images.create(pid, name), status_code=201)


@router.patch("", responses=BODY_ERRORS)
async def patch_image(
    pid: ProductId,
    name: DeviceName,
    images: Images,
    body: Annotated[
        ImagePatch,
        Body(
            examples=[
                {"desired": {"lights": {"color": "RED"}}, "tags": {"floor": "1"}, "version": 3}
            ]
        ),
    ],
) -> dict[str, Any]:
    """Change desired (validated as a device's update; `null` deletes a key) and/or tags
    (`null` removes a tag). With `version`, the change applies only to that version."""
    given = body.model_fields_set
    kwargs: dict[str, Any] = {k: getattr(body, k) for k in ("desired", "tags") if k in given}
    return await images.patch(pid, name, version=body.version, **kwargs)
