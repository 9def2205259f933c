"""Products: `/api/v1/products`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from thingshub.api.deps import Devices, Things
from thingshub.api.params import ApiRoute, KeyCursor, Limit, ProductId
from thingshub.api.roles import principal
from thingshub.api.schemas import (
    BODY_ERRORS,
    ERRORS,
    AccessKeyOut,
    CreatedProductOut,
    PageOut,
    ProductIn,
    ProductOut,
    ProductPatch,
)
from thingshub.core import thingmodel
from thingshub.services import scope

router = APIRouter(
    prefix="/api/v1/products", tags=["products"], responses=ERRORS, route_class=ApiRoute
)


@router.post("", status_code=201, responses=BODY_ERRORS)
async def create_product(body: ProductIn, devices: Devices, things: Things) -> CreatedProductOut:
    """Create a product, with its thing model when `thing_model` is given (the model is
    checked first: a bad one is 400 with its `path`, and no product is made). The
    answer holds its OneNET `access_key`, shown only here."""
    if body.thing_model is not None:
        thingmodel.parse_model(body.thing_model, max_points=things.max_points)
    product = await devices.create_product(
        body.id, body.name, body.gateway_auto_register, body.dynamic_registration
    )
    if body.thing_model is not None:
        await things.set_model(product.id, body.thing_model)
    shown = ProductOut.of(product).model_dump()
    return CreatedProductOut(**shown, access_key=product.access_key or "")


@router.get("")
async def list_products(
    request: Request,
    devices: Devices,
    limit: Limit = 100,
    cursor: KeyCursor = None,
) -> PageOut[ProductOut]:
    """The products by id (those the key sees, when it is limited to some)."""
    page = await scope.list_products(devices, principal(request.scope), limit, cursor)
    return PageOut[ProductOut](items=[ProductOut.of(p) for p in page.items], next=page.next)


@router.get("/{pid}")
async def get_product(pid: ProductId, devices: Devices) -> ProductOut:
    return ProductOut.of(await devices.get_product(pid))


@router.patch("/{pid}", responses=BODY_ERRORS)
async def patch_product(pid: ProductId, body: ProductPatch, devices: Devices) -> ProductOut:
    """Change the product's name and settings; fields left out keep their values
    (`retention_days: null` keeps everything; a null name or flag is 400)."""
    return ProductOut.of(await devices.update_product(pid, body.changes()))


@router.post("/{pid}/access-key")
async def rotate_access_key(pid: ProductId, devices: Devices) -> AccessKeyOut:
    """Give the product a new OneNET access key: tokens signed with the old one stop
    working at once (connections already open stay)."""
    return AccessKeyOut(access_key=await devices.rotate_access_key(pid))


@router.delete("/{pid}", status_code=204)
async def delete_product(pid: ProductId, devices: Devices) -> Response:
    await devices.delete_product(pid)
    return Response(status_code=204)
