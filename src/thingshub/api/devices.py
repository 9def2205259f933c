"""Devices: `/api/v1/products/{pid}/devices`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from thingshub.api.deps import Context
from thingshub.api.params import ApiRoute, DeviceName, KeyCursor, Limit, ProductId
from thingshub.api.roles import check_gateway, principal
from thingshub.api.schemas import (
    BODY_ERRORS,
    ERRORS,
    DeviceCreated,
    DeviceIn,
    DeviceOut,
    PageOut,
    TokenIn,
    TokenOut,
)
from thingshub.core.model import Presence
from thingshub.services.scope import gateway_seen

router = APIRouter(
    prefix="/api/v1/products/{pid}/devices",
    tags=["devices"],
    responses=ERRORS,
    route_class=ApiRoute,
)


@router.post("", status_code=201, responses=BODY_ERRORS)
async def create_device(
    request: Request, pid: ProductId, body: DeviceIn, ctx: Context
) -> DeviceCreated:
    gateway = (body.gateway.product_id, body.gateway.name) if body.gateway else None
    check_gateway(request.scope, gateway)
    created = await ctx.devices.create_device(
        pid,
        body.name,
        body.device_number,
        body.tags,
        body.access_token,
        gateway,
        body.sub_address,
    )
    device = created.device
    out = DeviceOut.of(device, Presence(False))
    return DeviceCreated(
        **out.model_dump(),
        key=device.key,
        password=created.password,
        access_token=device.access_token,
    )


@router.get("")
async def list_devices(
    request: Request,
    pid: ProductId,
    ctx: Context,
    limit: Limit = 100,
    cursor: KeyCursor = None,
    search: Annotated[
        str | None, Query(max_length=64, description="Names containing this text.")
    ] = None,
) -> PageOut[DeviceOut]:
    page = await ctx.devices.list_devices(pid, limit, cursor, search)
    presence = await ctx.presence.get_many([(d.product_id, d.name) for d in page.items])
    caller = principal(request.scope)
    items = [
        DeviceOut.of(gateway_seen(caller, d), presence[(d.product_id, d.name)]) for d in page.items
    ]
    return PageOut[DeviceOut](items=items, next=page.next)


@router.get("/{name}")
async def get_device(request: Request, pid: ProductId, name: DeviceName, ctx: Context) -> DeviceOut:
    device = gateway_seen(principal(request.scope), await ctx.devices.get_device(pid, name))
    versions = await ctx.devices.versions(pid, name)
    return DeviceOut.of(device, await ctx.presence.get(pid, name), versions)


@router.post("/{name}/token", responses=BODY_ERRORS)
async def mint_token(pid: ProductId, name: DeviceName, body: TokenIn, ctx: Context) -> TokenOut:
    """A fresh OneNET login token for the device (the key never leaves the server)."""
    device = await ctx.devices.get_device(pid, name)
    expires_at = ctx.devices.clock.now_ms() // 1000 + body.expires_in
    token = ctx.tokens(device.key, pid, name, expires_at, body.method)
    return TokenOut(client_id=name, username=pid, password=token, expires_at=expires_at)


@router.delete("/{name}", status_code=204)
async def delete_device(pid: ProductId, name: DeviceName, ctx: Context) -> Response:
    await ctx.devices.delete_device(pid, name)
    return Response(status_code=204)
