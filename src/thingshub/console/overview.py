"""The fleet overview: how many devices, how many online, how busy, over the last hour.

Rules:
- Nothing here scans devices or telemetry: online counts come from presence
  (memory), device counts from one indexed count per product, cached for a
  few seconds and shared by every open overview, and the rates and the chart
  from the in-memory meter (meter.py).
- The page refreshes itself every few seconds with a timer; no bus traffic.
- The nodes of the cluster (a single process: itself) are read from the
  nodes' heartbeats (services/nodes.py: one small table), as
  `GET /api/v1/cluster` shows them; the node serving the page is marked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse
from nicegui import ui

from thingshub.console import fmt
from thingshub.console.auth import current, gate
from thingshub.console.context import ConsoleContext
from thingshub.console.layout import MOUNT, card, frame, stat, tid

REFRESH_S = 5.0
#: How long device counts are reused.
COUNTS_TTL_S = 10.0
#: Products shown (and counted) on the overview.
MAX_PRODUCTS = 100


@dataclass
class ProductCount:
    id: str
    name: str
    devices: int
    online: int


class FleetCounts:
    """Device counts per product, recounted at most every COUNTS_TTL_S seconds."""

    def __init__(self, ctx: ConsoleContext) -> None:
        self.ctx = ctx
        self._at = 0.0
        self._devices: dict[str, tuple[str, int]] = {}
        self.more_products = False

    async def get(self) -> list[ProductCount]:
        if time.monotonic() - self._at > COUNTS_TTL_S:
            page = await self.ctx.api.devices.list_products(MAX_PRODUCTS)
            self._devices = {
                p.id: (p.name, await self.ctx.api.devices.count_devices(p.id)) for p in page.items
            }
            self.more_products = page.next is not None
            self._at = time.monotonic()
        presence = self.ctx.api.presence
        return [
            ProductCount(pid, name, count, presence.online_count(pid))
            for pid, (name, count) in self._devices.items()
        ]

    def forget(self) -> None:
        """Recount on the next read (after a device or product was created)."""
        self._at = 0.0


def _ingest_chart(ctx: ConsoleContext) -> dict[str, Any]:
    now = time.time()
    return {
        "animation": False,
        "grid": {"left": 56, "right": 56, "top": 40, "bottom": 30},
        "legend": {"top": 0},
        "tooltip": {"trigger": "axis"},
        "xAxis": {"type": "time"},
        "yAxis": [
            {"type": "value", "name": "messages / min", "minInterval": 1},
            {"type": "value", "name": "points / min", "minInterval": 1},
        ],
        "series": [
            {
                "name": "messages in",
                "type": "bar",
                "barMaxWidth": 10,
                "itemStyle": {"color": "#0f766e"},
                "data": ctx.meter.per_minute("messages_in", now),
            },
            {
                "name": "points stored",
                "type": "line",
                "yAxisIndex": 1,
                "showSymbol": False,
                "smooth": True,
                "itemStyle": {"color": "#f59e0b"},
                "data": ctx.meter.per_minute("points", now),
            },
        ],
    }


NODE_COLUMNS = [
    {"name": "id", "label": "Node", "field": "id", "align": "left"},
    {"name": "connections", "label": "Connections", "field": "connections"},
    {"name": "rate", "label": "Messages in / s", "field": "rate"},
    {"name": "started", "label": "Started", "field": "started", "align": "left"},
    {"name": "seen", "label": "Last seen", "field": "seen", "align": "left"},
]


async def _node_rows(ctx: ConsoleContext) -> list[dict[str, str]]:
    nodes = ctx.api.nodes
    if nodes is None:
        return []
    return [
        {
            "id": f"{n.id} (this page)" if n.id == nodes.node_id else n.id,
            "connections": f"{n.connections:,}",
            "rate": f"{n.messages_in_per_s:,}",
            "started": fmt.when(n.started_at),
            "seen": fmt.ago(n.last_seen),
        }
        for n in await nodes.nodes()
    ]


def register(ctx: ConsoleContext) -> FleetCounts:
    counts = FleetCounts(ctx)

    @ui.page("/", title="Overview · ThingsHub")
    async def overview(request: Request) -> RedirectResponse | None:
        if (denied := gate(ctx, request)) is not None:
            return denied
        who = current(ctx)  # a key limited to products sees only theirs (access.py)
        with frame("overview", "Fleet overview", "Devices, connections and traffic, live"):
            with ui.row().classes("w-full gap-4"):
                n_products = stat("products", "—", "category", "text-slate-600")
                n_devices = stat("devices", "—", "developer_board", "text-primary")
                n_online = stat("online", "—", "wifi", "text-positive")
                n_offline = stat("offline", "—", "wifi_off", "text-slate-400")
            with ui.row().classes("w-full gap-4"):
                r_in = stat("messages in / s", "—", "south_west", "text-teal-600")
                r_out = stat("messages out / s", "—", "north_east", "text-sky-600")
                r_points = stat("points stored / s", "—", "storage", "text-amber-600")
            with card("Ingest over the last hour", "insights"):
                chart = (
                    ui.echart(_ingest_chart(ctx)).classes("w-full h-72").props(tid("ingest-chart"))
                )
            with card("Products", "category"):
                columns = [
                    {"name": "name", "label": "Product", "field": "name", "align": "left"},
                    {"name": "id", "label": "Id", "field": "id", "align": "left"},
                    {"name": "devices", "label": "Devices", "field": "devices"},
                    {"name": "online", "label": "Online", "field": "online"},
                    {"name": "offline", "label": "Offline", "field": "offline"},
                ]
                table = (
                    ui.table(columns=columns, rows=[], row_key="id")
                    .classes("w-full th-table")
                    .props("flat dense hide-pagination :pagination='{rowsPerPage: 0}'")
                )
                table.add_slot(
                    "body-cell-name",
                    f"""<q-td :props="props">
                        <a :href="'{MOUNT}/devices?product=' + encodeURIComponent(props.row.id)"
                           class="text-primary font-medium no-underline">{{{{ props.value }}}}</a>
                    </q-td>""",
                )
            with card("Nodes", "hub"):
                nodes = (
                    ui.table(columns=NODE_COLUMNS, rows=[], row_key="id")
                    .classes("w-full th-table")
                    .props("flat dense hide-pagination :pagination='{rowsPerPage: 0}'")
                    .props(tid("nodes"))
                )

        async def refresh() -> None:
            products = [p for p in await counts.get() if who.sees(p.id)]
            total = sum(p.devices for p in products)
            online = (
                ctx.api.presence.online_count()
                if who.products is None
                else sum(p.online for p in products)
            )
            more = "+" if counts.more_products else ""
            n_products.set_text(f"{len(products):,}{more}")
            n_devices.set_text(f"{total:,}{more}")
            n_online.set_text(f"{online:,}")
            n_offline.set_text(f"{max(total - online, 0):,}{more}")
            r_in.set_text(fmt.rate(ctx.meter.rate("messages_in")))
            r_out.set_text(fmt.rate(ctx.meter.rate("messages_out")))
            r_points.set_text(fmt.rate(ctx.meter.rate("points")))
            table.rows = [
                {
                    "id": p.id,
                    "name": p.name,
                    "devices": f"{p.devices:,}",
                    "online": f"{p.online:,}",
                    "offline": f"{max(p.devices - p.online, 0):,}",
                }
                for p in products
            ]
            table.update()
            nodes.rows = await _node_rows(ctx)
            nodes.update()
            fresh = _ingest_chart(ctx)
            for series, data in zip(chart.options["series"], fresh["series"], strict=True):
                series["data"] = data["data"]
            chart.update()

        await refresh()
        ui.timer(REFRESH_S, refresh)
        return None

    return counts
