"""A device's attributes (as last reported) and its recent events.

Rules:
- Attributes are read once and then merged from the bus
  (`AttributesReported`); events likewise (`EventsReceived`), newest first,
  each with its thing-model type (info, alert, error; a colour each) where
  the model gives one.
- Events are read from the store ascending (its only order): the page asks for
  the last day, and when that holds more than one page it narrows the window
  until one page does, so it shows the newest events without paging through
  them all.
"""

from __future__ import annotations

from typing import Any

from nicegui import ui

from thingshub.console import fmt
from thingshub.console.context import ConsoleContext
from thingshub.console.layout import empty, tid
from thingshub.console.thing_text import EVENT_COLORS
from thingshub.core.events import AttributesReported, Event, EventsReceived
from thingshub.core.model import DeviceEvent

EVENTS_SHOWN = 50
#: Windows tried for "recent" events, widest first, in ms.
EVENT_WINDOWS = (86_400_000, 3_600_000, 600_000, 60_000)


class AttributesPanel:
    def __init__(self, ctx: ConsoleContext, pid: str, name: str) -> None:
        self.ctx = ctx
        self.pid = pid
        self.name = name
        self.values: dict[str, Any] = {}
        self.table = (
            ui.table(
                columns=[
                    {"name": "key", "label": "Attribute", "field": "key", "align": "left"},
                    {"name": "value", "label": "Value", "field": "value", "align": "left"},
                ],
                rows=[],
                row_key="key",
            )
            .classes("w-full th-table")
            .props("flat dense hide-pagination :pagination='{rowsPerPage: 0}' " + tid("attributes"))
        )
        self.none = empty("No attributes reported.")

    async def load(self) -> None:
        self.values = await self.ctx.api.history.attribute_values(self.pid, self.name)
        self._show()

    def apply(self, events: list[Event]) -> None:
        reports = [e for e in events if isinstance(e, AttributesReported)]
        for report in reports:
            self.values.update(report.values)
        if reports:
            self._show()

    def _show(self) -> None:
        self.table.rows = [
            {"key": k, "value": fmt.value(v)} for k, v in sorted(self.values.items())
        ]
        self.table.update()
        self.table.set_visibility(bool(self.values))
        self.none.set_visibility(not self.values)


class EventsPanel:
    def __init__(self, ctx: ConsoleContext, pid: str, name: str) -> None:
        self.ctx = ctx
        self.pid = pid
        self.name = name
        self.events: list[DeviceEvent] = []
        self.table = (
            ui.table(
                columns=[
                    {"name": "at", "label": "Time", "field": "at", "align": "left"},
                    {"name": "method", "label": "Event", "field": "method", "align": "left"},
                    {"name": "type", "label": "Type", "field": "type", "align": "left"},
                    {"name": "params", "label": "Params", "field": "params", "align": "left"},
                ],
                rows=[],
                row_key="id",
            )
            .classes("w-full th-table")
            .props("flat dense hide-pagination :pagination='{rowsPerPage: 0}' " + tid("events"))
        )
        self.table.add_slot(
            "body-cell-type",
            """<q-td :props="props"><q-badge v-if="props.value" :color="props.row.color"
                :label="props.value" :data-testid="'event-type-' + props.value" />
                <span v-else class="text-slate-400">—</span></q-td>""",
        )
        self.table.add_slot(
            "body-cell-params",
            """<q-td :props="props" class="th-mono" style="max-width: 18rem;
                overflow: hidden; text-overflow: ellipsis">{{ props.value }}</q-td>""",
        )
        self.none = empty("No events in the last day.")

    async def load(self) -> None:
        now = fmt.now_ms()
        found: list[DeviceEvent] = []
        for span in EVENT_WINDOWS:
            found, more = await self.ctx.api.history.event_list(
                self.pid, self.name, now - span, now + 1, limit=EVENTS_SHOWN
            )
            if more is None:
                break
        self.events = list(reversed(found))
        self._show()

    def apply(self, events: list[Event]) -> None:
        fresh = [e for ev in events if isinstance(ev, EventsReceived) for e in ev.events]
        if fresh:
            self.events = sorted(fresh + self.events, key=lambda e: -e.ts)[:EVENTS_SHOWN]
            self._show()

    def _show(self) -> None:
        self.table.rows = [
            {
                "id": i,
                "at": fmt.when(e.ts),
                "method": e.method,
                "type": e.type or "",
                "color": EVENT_COLORS.get(e.type or "", "grey-6"),
                "params": fmt.value(e.params),
            }
            for i, e in enumerate(self.events)
        ]
        self.table.update()
        self.table.set_visibility(bool(self.events))
        self.none.set_visibility(not self.events)
