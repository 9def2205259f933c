"""Products: `/api/v1/products`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from thingshub.api.params import ApiRoute, KeyCursor, Limit, ProductId
from thingshub.api.schemas import BODY_ERRORS, ERRORS, PageOut, ProductIn, ProductOut, ProductPatch
from thingshub.services.devices import DeviceService

router = APIRouter(
    prefix="/api/v1/products", tags=["products"], responses=ERRORS, route_class=ApiRoute
)


def _devices(request: Request) -> DeviceService:
    service: DeviceService = request.app.state.ctx.devices
    return service


@router.post("", status_code=201, responses=BODY_ERRORS)
async def create_product(body: ProductIn, request: Request) -> ProductOut:
    product = await _devices(request).create_product(body.id, body.name)
    return ProductOut.of(product)


@router.get("")
async def list_products(
    request: Request,
    limit: Limit = 100,
    cursor: KeyCursor = None,
) -> PageOut[ProductOut]:
    page = await _devices(request).list_products(limit, cursor)
    return PageOut[ProductOut](items=[ProductOut.of(p) for p in page.items], next=page.next)


@router.get("/{pid}")
async def get_product(pid: ProductId, request: Request) -> ProductOut:
    return ProductOut.of(await _devices(request).get_product(pid))


@router.patch("/{pid}", responses=BODY_ERRORS)
async def patch_product(pid: ProductId, body: ProductPatch, request: Request) -> ProductOut:
    """Set the product's retention (`{"retention_days": N}`, null: keep everything)."""
    return ProductOut.of(await _devices(request).set_retention(pid, body.retention_days))


@router.delete("/{pid}", status_code=204)
async def delete_product(pid: ProductId, request: Request) -> Response:
    await _devices(request).delete_product(pid)
    return Response(status_code=204)
