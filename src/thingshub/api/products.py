"""Products: `/api/v1/products`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from thingshub.api.schemas import ERRORS, PageOut, ProductIn, ProductOut, ProductPatch
from thingshub.services.devices import DeviceService

router = APIRouter(prefix="/api/v1/products", tags=["products"], responses=ERRORS)


def _devices(request: Request) -> DeviceService:
    service: DeviceService = request.app.state.ctx.devices
    return service


@router.post("", status_code=201)
async def create_product(body: ProductIn, request: Request) -> ProductOut:
    product = await _devices(request).create_product(body.id, body.name)
    return ProductOut.of(product)


@router.get("")
async def list_products(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> PageOut[ProductOut]:
    page = await _devices(request).list_products(limit, cursor)
    return PageOut[ProductOut](items=[ProductOut.of(p) for p in page.items], next=page.next)


@router.get("/{pid}")
async def get_product(pid: str, request: Request) -> ProductOut:
    return ProductOut.of(await _devices(request).get_product(pid))


@router.patch("/{pid}")
async def patch_product(pid: str, body: ProductPatch, request: Request) -> ProductOut:
    """Set the product's retention (`{"retention_days": N}`, null: keep everything)."""
    return ProductOut.of(await _devices(request).set_retention(pid, body.retention_days))


@router.delete("/{pid}", status_code=204)
async def delete_product(pid: str, request: Request) -> Response:
    await _devices(request).delete_product(pid)
    return Response(status_code=204)
