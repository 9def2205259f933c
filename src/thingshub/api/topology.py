"""A device's place in a gateway's tree: `/api/v1/products/{pid}/devices/{name}/...`.

`GET .../sub-devices` lists a gateway's children with their presence; `PUT
.../gateway` binds the device to a gateway (or moves it), `DELETE .../gateway`
unbinds it. The tree's rules (no cycle, at most five levels, 1500 children)
are 400; an address a sibling has is 409.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from thingshub.api.deps import Context, Topology
from thingshub.api.params import ApiRoute, DeviceName, Limit, PairCursor, ProductId
from thingshub.api.roles import check_gateway, principal
from thingshub.api.schemas import BODY_ERRORS, ERRORS, DeviceOut, GatewayIn, PageOut, SubDeviceOut
from thingshub.services.scope import devices_seen

router = APIRouter(
    prefix="/api/v1/products/{pid}/devices/{name}",
    tags=["devices"],
    responses=ERRORS,
    route_class=ApiRoute,
)


@router.get("/sub-devices")
async def sub_devices(
    request: Request,
    pid: ProductId,
    name: DeviceName,
    topology: Topology,
    ctx: Context,
    limit: Limit = 100,
    cursor: PairCursor = None,
) -> PageOut[SubDeviceOut]:
    """The gateway's children (of the products the key sees)."""
    page = devices_seen(
        principal(request.scope), await topology.sub_devices(pid, name, limit, cursor)
    )
    presence = await ctx.presence.get_many([(d.product_id, d.name) for d in page.items])
    items = [SubDeviceOut.of(d, presence[(d.product_id, d.name)]) for d in page.items]
    return PageOut[SubDeviceOut](items=items, next=page.next)


@router.put("/gateway", responses=BODY_ERRORS)
async def bind(
    request: Request,
    pid: ProductId,
    name: DeviceName,
    body: GatewayIn,
    topology: Topology,
    ctx: Context,
) -> DeviceOut:
    check_gateway(request.scope, (body.product_id, body.name))
    device = await topology.bind(pid, name, (body.product_id, body.name), body.sub_address)
    return DeviceOut.of(device, await ctx.presence.get(pid, name))


@router.delete("/gateway", status_code=204)
async def unbind(pid: ProductId, name: DeviceName, topology: Topology) -> Response:
    await topology.unbind(pid, name)
    return Response(status_code=204)
