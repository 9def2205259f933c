"""What the signed-in key may do in the console: one table of its controls.

Rules:
- Every control that changes something is rendered only when `can` says so,
  from this one table (the roles of the HTTP API's table, api/roles.py, for
  the routes each control uses): a reader sees no button or form that would
  fail, and a page never builds the handler of a control it does not show.
- Products the key does not see are absent from every page, as from the API:
  `sees` for one, `products_seen` for the list.
"""

from __future__ import annotations

from thingshub.console.auth import current
from thingshub.console.context import ConsoleContext
from thingshub.core.access import ADMIN, OPERATOR, Need
from thingshub.core.model import Page, Product
from thingshub.services import scope

#: Console control -> what it needs.
ACTIONS: dict[str, Need] = {
    "product.create": Need(ADMIN, everywhere=True),
    "product.model": Need(ADMIN),  # upload or delete the thing model
    "device.create": Need(OPERATOR),
    "device.delete": Need(OPERATOR),
    "device.token": Need(OPERATOR),
    "device.command": Need(OPERATOR),  # commands, calls, properties, services
    "device.image": Need(OPERATOR),  # create the image, desired values, tags
    "device.desired": Need(OPERATOR),
    "device.gateway": Need(OPERATOR),  # bind, unbind
    "ota": Need(OPERATOR),  # firmware uploads, tasks started or cancelled
}


def can(ctx: ConsoleContext, action: str) -> bool:
    """Whether the signed-in key may use this control (False when signed out)."""
    return current(ctx).may(ACTIONS[action])


def sees(ctx: ConsoleContext, product_id: str) -> bool:
    return current(ctx).sees(product_id)


async def products_seen(ctx: ConsoleContext, limit: int) -> Page[Product]:
    """The first `limit` products the signed-in key sees, by id."""
    return await scope.list_products(ctx.api.devices, current(ctx), limit)
