"""What a key limited to some products sees, for the lists that span products.

Rules (interfaces.md, "API keys and roles"):
- Other products are absent to such a key: lists leave them out, pages and
  cursors are those of the list it would get if only its products existed.
- A device reached through a gateway of a product the key does not see
  shows no gateway (its name is another product's).
- The product list of a limited key reads its few products one by one (a
  key names at most 1,000), never every product filtered.
"""

from __future__ import annotations

from dataclasses import replace

from thingshub.core.access import Principal
from thingshub.core.errors import NotFound
from thingshub.core.model import Device, Page, Product
from thingshub.services.devices import DeviceService
from thingshub.services.products import check_limit, decode_cursor, encode_cursor


async def list_products(
    devices: DeviceService, caller: Principal, limit: int = 100, cursor: str | None = None
) -> Page[Product]:
    """The products `caller` sees, by id, paged as `DeviceService.list_products`."""
    if caller.products is None:
        return await devices.list_products(limit, cursor)
    check_limit(limit)
    after = decode_cursor(cursor)
    found: list[Product] = []
    for pid in sorted(caller.products):
        if after is not None and pid <= after:
            continue
        try:
            found.append(await devices.get_product(pid))
        except NotFound:  # deleted since the key was made
            continue
        if len(found) > limit:
            break
    items = found[:limit]
    return Page(items, encode_cursor(items[-1].id) if len(found) > limit else None)


def devices_seen(caller: Principal, page: Page[Device]) -> Page[Device]:
    """A page of devices of any product (a gateway's children) without those of
    products `caller` does not see; the cursor stays the page's."""
    if caller.products is None:
        return page
    return Page([d for d in page.items if caller.sees(d.product_id)], page.next)


def gateway_seen(caller: Principal, device: Device) -> Device:
    """`device` as `caller` may see it: a gateway of a product it does not see is
    absent, so the device shows as reached directly."""
    if device.gateway is None or caller.sees(device.gateway[0]):
        return device
    return replace(device, gateway=None, sub_address=None)
