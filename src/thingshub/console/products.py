"""Products: the list (paged with cursors), device counts, and creating one. A
product's name leads to its page (product.py: its thing model), its device count to
its devices.

Rules:
- Paged by the service's keyset cursors, PAGE_SIZE at a time; "previous"
  goes back through a stack of the cursors seen, so nothing is ever counted
  or loaded beyond one page.
- A product's errors are the service's sentences (the HTTP API's).
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import RedirectResponse
from nicegui import ui

from thingshub.console import fmt
from thingshub.console.access import can
from thingshub.console.auth import current, gate
from thingshub.console.context import ConsoleContext
from thingshub.console.layout import MOUNT, card, frame, tid
from thingshub.console.overview import FleetCounts
from thingshub.console.paging import Pager
from thingshub.core.errors import ThingsHubError
from thingshub.services import scope

PAGE_SIZE = 25


def _new_product(ctx: ConsoleContext, counts: FleetCounts) -> ui.dialog:
    """The dialog that makes a product (for keys that may: access.py)."""
    devices = ctx.api.devices
    with ui.dialog() as dialog, ui.card().classes("w-[28rem] p-6 gap-3"):
        ui.label("New product").classes("text-lg font-semibold")
        name = ui.input("Name").props("outlined " + tid("product-name")).classes("w-full")
        pid = (
            ui.input("Id (optional: generated when empty)")
            .props("outlined " + tid("product-id"))
            .classes("w-full")
        )
        problem = ui.label().classes("text-negative text-sm")

        async def create() -> None:
            try:
                product = await devices.create_product(pid.value.strip() or None, name.value)
            except ThingsHubError as exc:
                problem.set_text(fmt.error(exc))
                return
            counts.forget()
            dialog.close()
            ui.notify(f"Product {product.id} created", type="positive")
            ui.navigate.to(f"/devices?product={product.id}")

        with ui.row().classes("w-full justify-end"):
            ui.button("Cancel", on_click=dialog.close).props("flat")
            ui.button("Create", on_click=create).props("unelevated " + tid("create-product"))
    return dialog


def register(ctx: ConsoleContext, counts: FleetCounts) -> None:
    @ui.page("/products", title="Products · ThingsHub")
    async def products(request: Request) -> RedirectResponse | None:
        if (denied := gate(ctx, request)) is not None:
            return denied
        who = current(ctx)
        devices, presence = ctx.api.devices, ctx.api.presence
        creates = can(ctx, "product.create")
        if creates:
            dialog = _new_product(ctx, counts)
        with frame("products", "Products", "Each product groups devices of one kind"):
            if creates:
                with ui.row().classes("w-full justify-end"):
                    ui.button("New product", icon="add", on_click=dialog.open).props(
                        "unelevated " + tid("new-product")
                    )
            with card():
                columns = [
                    {"name": "name", "label": "Product", "field": "name", "align": "left"},
                    {"name": "id", "label": "Id", "field": "id", "align": "left"},
                    {"name": "devices", "label": "Devices", "field": "devices"},
                    {"name": "online", "label": "Online", "field": "online"},
                    {"name": "retention", "label": "Retention", "field": "retention"},
                    {"name": "created", "label": "Created", "field": "created", "align": "left"},
                ]
                table = (
                    ui.table(columns=columns, rows=[], row_key="id")
                    .classes("w-full th-table")
                    .props("flat hide-pagination :pagination='{rowsPerPage: 0}' " + tid("products"))
                )
                table.add_slot(
                    "body-cell-name",
                    f"""<q-td :props="props">
                        <a :href="'{MOUNT}/products/' + encodeURIComponent(props.row.id)"
                           class="text-primary font-medium no-underline">{{{{ props.value }}}}</a>
                    </q-td>""",
                )
                table.add_slot(
                    "body-cell-devices",
                    f"""<q-td :props="props">
                        <a :href="'{MOUNT}/devices?product=' + encodeURIComponent(props.row.id)"
                           class="text-primary no-underline">{{{{ props.value }}}}</a>
                    </q-td>""",
                )
                pager = Pager()

        async def load() -> None:
            page = await scope.list_products(devices, who, PAGE_SIZE, pager.cursor)
            rows = []
            for p in page.items:
                rows.append(
                    {
                        "id": p.id,
                        "name": p.name,
                        "devices": f"{await devices.count_devices(p.id):,}",
                        "online": f"{presence.online_count(p.id):,}",
                        "retention": f"{p.retention_days} d" if p.retention_days else "forever",
                        "created": fmt.when(p.created_at),
                    }
                )
            table.rows = rows
            table.update()
            pager.show(page.next, len(rows))

        pager.on_move = load

        await load()
        return None
