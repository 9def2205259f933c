"""The device list of a product: search, status and last activity, live; registering one.

Rules:
- Pages of PAGE_SIZE through the service's keyset cursors (paging.py): one
  indexed query a page, however many devices the product has; search is the
  service's (names and device numbers containing the text).
- Status and last activity come from presence for the rows shown only
  (`get_many`); presence changes of those rows arrive from the bus, and last
  activity is refreshed every few seconds for the rows shown.
- A sub-device is marked with its gateway (it is in the device's own row, so
  free); gateways are not marked, which would cost a query a row.
- A new device's secrets are shown once, in the dialog that created it.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse
from nicegui import ui

from thingshub.console import fmt, layout
from thingshub.console.access import can, products_seen
from thingshub.console.auth import gate
from thingshub.console.context import ConsoleContext
from thingshub.console.layout import MOUNT, card, column, empty, frame, tid
from thingshub.console.live import LiveFeed
from thingshub.console.overview import FleetCounts
from thingshub.console.paging import Pager
from thingshub.core.errors import InvalidRequest, ThingsHubError
from thingshub.core.events import Event, PresenceChanged
from thingshub.core.model import Device, Presence

PAGE_SIZE = 50
ACTIVITY_REFRESH_S = 5.0
#: Products offered in the product picker.
MAX_PRODUCTS = 1000

COLUMNS = [
    column("name", "Device"),
    column("number", "Device number"),
    column("status", "Status"),
    column("activity", "Last activity"),
    column("created", "Created"),
    column("tags", "Tags"),
]


def device_path(product_id: str, name: str) -> str:
    return f"/products/{product_id}/devices/{name}"


def _row(device: Device, presence: Presence, now: int) -> dict[str, Any]:
    return {
        "name": device.name,
        "number": device.device_number,
        "status": "online" if presence.online else "offline",
        "activity": fmt.ago(presence.last_activity, now),
        "activity_at": fmt.when(presence.last_activity),
        "created": fmt.when(device.created_at),
        "tags": dict(device.tags),
        "via": device.gateway[1] if device.gateway is not None else "",
        "via_at": f"{device.gateway[0]}/{device.gateway[1]}" if device.gateway else "",
    }


def parse_tags(text: str) -> object:
    """The tags field: empty, or a JSON object (checked by the service)."""
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise InvalidRequest('tags must be a JSON object, e.g. {"room": "3"}') from None


def register(ctx: ConsoleContext, counts: FleetCounts) -> None:
    @ui.page("/devices", title="Devices · ThingsHub")
    async def device_list(
        request: Request, product: str | None = None, search: str | None = None
    ) -> RedirectResponse | None:
        if (denied := gate(ctx, request)) is not None:
            return denied
        services, presence = ctx.api.devices, ctx.api.presence
        products = (await products_seen(ctx, MAX_PRODUCTS)).items
        chosen = next((p for p in products if p.id == product), products[0] if products else None)

        if chosen is None:
            with frame("devices", "Devices", "Search, status and last activity, live"), card():
                empty("No products yet: create one on the Products page first.")
                ui.button("Products", on_click=lambda: ui.navigate.to("/products")).props(
                    "unelevated"
                )
            return None
        pid = chosen.id

        creates = can(ctx, "device.create")
        if creates:
            with ui.dialog() as dialog, ui.card().classes("w-[30rem] p-6 gap-3"):
                ui.label(f"New device in {chosen.name}").classes("text-lg font-semibold")
                name = ui.input("Name").props("outlined " + tid("device-name")).classes("w-full")
                number = ui.input("Device number (optional)").props("outlined").classes("w-full")
                tags = (
                    ui.input("Tags (optional JSON object)", placeholder='{"room": "3"}')
                    .props("outlined " + tid("device-tags"))
                    .classes("w-full")
                )
                problem = ui.label().classes("text-negative text-sm").props(tid("device-problem"))

                async def create() -> None:
                    try:
                        created = await services.create_device(
                            pid,
                            name.value.strip(),
                            number.value.strip() or None,
                            parse_tags(tags.value),
                        )
                    except ThingsHubError as exc:
                        problem.set_text(fmt.error(exc))
                        return
                    counts.forget()
                    dialog.close()
                    show_secrets(created.device, created.password)

                with ui.row().classes("w-full justify-end"):
                    ui.button("Cancel", on_click=dialog.close).props("flat")
                    ui.button("Create", on_click=create).props("unelevated " + tid("create-device"))

        with frame("devices", "Devices", "Search, status and last activity, live"):
            with ui.row().classes("w-full items-center gap-4"):
                ui.select(
                    {p.id: f"{p.name} ({p.id})" for p in products},
                    value=pid,
                    label="Product",
                    on_change=lambda e: ui.navigate.to(f"/devices?product={e.value}"),
                ).props("outlined dense " + tid("product-select")).classes("min-w-[16rem]")
                ui.link("product & thing model", f"/products/{pid}").classes(
                    "text-sm text-primary no-underline"
                ).props(tid("product-page"))
                query = (
                    ui.input("Search name or device number", value=search or "")
                    .props("outlined dense clearable debounce=300 " + tid("device-search"))
                    .classes("min-w-[20rem]")
                )
                with query.add_slot("prepend"):
                    ui.icon("search").classes("text-slate-400")
                ui.space()
                if creates:
                    ui.button("New device", icon="add", on_click=dialog.open).props(
                        "unelevated " + tid("new-device")
                    )
            with card():
                table = layout.table(COLUMNS, "name", "devices")
                table.add_slot(
                    "body-cell-name",
                    f"""<q-td :props="props">
                        <a :href="'{MOUNT}/products/' + encodeURIComponent('{pid}') + '/devices/'
                                  + encodeURIComponent(props.row.name)"
                           class="text-primary font-medium no-underline">{{{{ props.value }}}}</a>
                        <q-badge v-if="props.row.via" outline color="blue-grey-7" class="q-ml-sm"
                                 :label="'via ' + props.row.via">
                          <q-tooltip>a sub-device of {{{{ props.row.via_at }}}}</q-tooltip>
                        </q-badge>
                    </q-td>""",
                )
                table.add_slot(
                    "body-cell-status",
                    """<q-td :props="props">
                        <q-badge :color="props.value === 'online' ? 'positive' : 'grey-6'"
                                 :label="props.value" class="q-px-sm q-py-xs" />
                    </q-td>""",
                )
                table.add_slot(
                    "body-cell-activity",
                    """<q-td :props="props">{{ props.value }}
                        <q-tooltip>{{ props.row.activity_at }}</q-tooltip></q-td>""",
                )
                table.add_slot(
                    "body-cell-tags",
                    """<q-td :props="props">
                        <q-chip v-for="(v, k) in props.value" :key="k" dense square
                                size="sm" color="blue-grey-1" text-color="blue-grey-9"
                                >{{ k }}: {{ v }}</q-chip>
                    </q-td>""",
                )
                pager = Pager()

        shown: dict[str, dict[str, Any]] = {}

        async def load() -> None:
            page = await services.list_devices(pid, PAGE_SIZE, pager.cursor, query.value or None)
            states = await presence.get_many([(pid, d.name) for d in page.items])
            now = fmt.now_ms()
            rows = [_row(d, states[(pid, d.name)], now) for d in page.items]
            shown.clear()
            shown.update({r["name"]: r for r in rows})
            table.rows = rows
            table.update()
            pager.show(page.next, len(rows))

        async def searched() -> None:
            pager.reset()
            await load()

        async def refresh_activity() -> None:
            if not shown:
                return
            states = await presence.get_many([(pid, name) for name in shown])
            now = fmt.now_ms()
            for name, row in shown.items():
                state = states[(pid, name)]
                row["status"] = "online" if state.online else "offline"
                row["activity"] = fmt.ago(state.last_activity, now)
                row["activity_at"] = fmt.when(state.last_activity)
            table.rows = list(shown.values())  # the table keeps copies: hand it the rows again
            table.update()

        def wanted(event: Event) -> bool:
            return event.product_id == pid and event.name in shown

        pager.on_move = load
        query.on_value_change(searched)
        LiveFeed(ctx.api.bus, [PresenceChanged], wanted, lambda _events: refresh_activity())
        ui.timer(ACTIVITY_REFRESH_S, refresh_activity)

        def show_secrets(device: Device, password: str) -> None:
            with ui.dialog() as shown_once, ui.card().classes("w-[36rem] p-6 gap-3"):
                ui.label(f"Device {device.name} registered").classes("text-lg font-semibold")
                ui.label("These secrets are shown once. Keep them now.").classes(
                    "text-sm text-warning"
                )
                with ui.grid(columns="auto 1fr").classes("gap-x-4 gap-y-1 items-center"):
                    for label, value, test_id in (
                        ("Device number", device.device_number, "number"),
                        ("Device key (OneNET)", device.key, "key"),
                        ("User name (ThingsPanel)", device.username, "username"),
                        ("Password (ThingsPanel)", password, "password"),
                    ):
                        ui.label(label).classes("text-sm text-slate-500")
                        ui.label(value).classes("th-mono text-sm break-all").props(
                            tid("secret-" + test_id)
                        )
                with ui.row().classes("w-full justify-end"):
                    ui.button(
                        "Open the device",
                        on_click=lambda: ui.navigate.to(device_path(pid, device.name)),
                    ).props("unelevated " + tid("open-device"))
            shown_once.open()
            shown_once.on("hide", load)

        await load()
        return None
