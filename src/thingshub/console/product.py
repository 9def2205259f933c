"""The product page: what the product is, its devices at a glance, and its thing model.

Rules:
- A product that does not exist (or was deleted, or the key does not see) is
  a page saying so, not an error.
- Device counts are the service's count and presence's online count, read
  when the page opens (the overview and the device list are the live views).
- The thing model card is thing_model.py's.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import RedirectResponse
from nicegui import ui

from thingshub.console import fmt
from thingshub.console.access import sees
from thingshub.console.auth import gate
from thingshub.console.context import ConsoleContext
from thingshub.console.layout import card, empty, frame, stat, tid
from thingshub.console.thing_model import ModelCard
from thingshub.core.errors import NotFound


def product_path(product_id: str) -> str:
    return f"/products/{product_id}"


def register(ctx: ConsoleContext) -> None:
    @ui.page("/products/{pid}", title="Product · ThingsHub")
    async def product_page(request: Request, pid: str) -> RedirectResponse | None:
        if (denied := gate(ctx, request)) is not None:
            return denied
        devices = ctx.api.devices
        try:
            if not sees(ctx, pid):  # absent to this key, as in the API
                raise NotFound(pid)
            product = await devices.get_product(pid)
        except NotFound:
            with frame("products", f"Product {pid}"), card():
                empty(f"There is no product {pid!r}.")
                ui.link("Back to the products", "/products")
            return None
        ui.page_title(f"{product.name} · ThingsHub")
        retention = f"{product.retention_days} d" if product.retention_days else "forever"
        with frame(
            "products", product.name, f"Product {pid} · created {fmt.when(product.created_at)}"
        ):
            with ui.row().classes("items-center gap-4 -mt-3"):
                ui.link("← all products", "/products").classes("text-sm text-primary no-underline")
                ui.link("devices of this product →", f"/devices?product={pid}").classes(
                    "text-sm text-primary no-underline"
                ).props(tid("product-devices"))
            with ui.row().classes("w-full gap-5"):
                stat("devices", f"{await devices.count_devices(pid):,}", "developer_board")
                stat("online", f"{ctx.api.presence.online_count(pid):,}", "wifi", "text-positive")
                stat("data kept", retention, "history", "text-slate-500")
            model = ModelCard(ctx, pid)
        await model.load()
        return None
