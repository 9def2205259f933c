"""The desired values of a device's thing-model properties: see, set and delete them.

Rules:
- Desired values are the service's (`ThingService.desired`, `patch_desired`):
  per property, versioned (1, +1 per set, 1 again after a deletion), checked
  like a property set (only `rw` properties), pushed to the device on
  `thing/property/set` when it is online and listens.
- Read once when the page opens, then merged from the bus (`DesiredChanged`),
  whoever changed them: this page, the HTTP API, or the device deleting one.
- A refused value shows the service's sentence with OneNET's code (302, 309,
  313).
"""

from __future__ import annotations

from typing import Any, Final

from nicegui import events, ui

from thingshub.console import fmt
from thingshub.console.access import can
from thingshub.console.context import ConsoleContext
from thingshub.console.layout import card, column, empty, table, tid
from thingshub.console.thing_inputs import ValueInput
from thingshub.console.thing_text import value_text
from thingshub.core.errors import ThingsHubError
from thingshub.core.events import DesiredChanged, Event
from thingshub.core.thingmodel import ThingModel

COLUMNS: Final = [
    column("identifier", "Property"),
    column("name", "Name"),
    column("value", "Desired value"),
    column("version", "Version"),
    column("at", "Set"),
    {**column("actions", "", "right"), "field": "identifier"},
]


class DesiredPanel:
    def __init__(self, ctx: ConsoleContext, pid: str, name: str, model: ThingModel) -> None:
        self.ctx = ctx
        self.pid = pid
        self.name = name
        self.model = model
        self.values: dict[str, dict[str, Any]] = {}
        writable = {k: p for k, p in model.properties.items() if p.writable}
        with card("Desired values", "flag") as box:
            box.props(tid("desired-card"))
            ui.label(
                "What the device should apply: pushed on thing/property/set when it listens, "
                "asked for with property/desired/get otherwise."
            ).classes("text-sm text-slate-500 -mt-1")
            self.table = table(COLUMNS, "identifier", "desired-values")
            self.table.add_slot(
                "body-cell-value",
                """<q-td :props="props" class="th-mono">{{ props.value }}</q-td>""",
            )
            edits = can(ctx, "device.desired")  # a reader sees the values only (access.py)
            if edits:
                self._delete_buttons()
            self.none = empty("No desired values.")
            if not edits:
                return
            if not writable:
                empty("Every property of the model is read-only: none can be desired.")
                return
            self._set_form(writable)

    def _delete_buttons(self) -> None:
        self.table.add_slot(
            "body-cell-actions",
            """<q-td :props="props"><q-btn flat dense round size="sm" icon="delete"
                    color="negative" :data-testid="'desired-delete-' + props.row.identifier"
                    @click="() => $parent.$emit('forget', props.row.identifier)">
                    <q-tooltip>Delete this desired value</q-tooltip></q-btn></q-td>""",
        )
        self.table.on("forget", self._forget)

    def _set_form(self, writable: dict[str, Any]) -> None:
        options = {k: f"{k} ({p.name})" if p.name != k else k for k, p in writable.items()}
        with ui.row().classes("items-start gap-3 w-full"):
            self.choice = (
                ui.select(options, value=next(iter(options)), label="Property")
                .props("outlined dense " + tid("desired-set-property"))
                .classes("min-w-[12rem]")
            )
            self.box = ui.row().classes("items-start")
            ui.button("Set desired", icon="flag", on_click=self.set_value).props(
                "unelevated " + tid("desired-set")
            )
        self.problem = ui.label().classes("text-negative text-sm").props(tid("desired-set-problem"))
        self.input: ValueInput | None = None
        self.choice.on_value_change(self._chosen)
        self._chosen()

    def _chosen(self) -> None:
        self.box.clear()
        prop = self.model.properties[self.choice.value]
        with self.box:
            self.input = ValueInput(prop.data_type, "Value", "desired-set-value", prop.identifier)

    async def set_value(self) -> None:
        if self.input is None:
            return
        self.problem.set_text("")
        try:
            change = {self.choice.value: self.input.read()}
            self.values = await self.ctx.api.things.patch_desired(self.pid, self.name, change)
        except ThingsHubError as exc:
            self.problem.set_text(fmt.error(exc))
            return
        self._show()

    async def _forget(self, e: events.GenericEventArguments) -> None:
        identifier = str(e.args)
        try:
            self.values = await self.ctx.api.things.patch_desired(
                self.pid, self.name, {identifier: None}
            )
        except ThingsHubError as exc:
            ui.notify(fmt.error(exc), type="negative")
            return
        self._show()

    async def load(self) -> None:
        self.values = await self.ctx.api.things.desired(self.pid, self.name)
        self._show()

    def apply(self, events: list[Event]) -> None:
        changes = [e for e in events if isinstance(e, DesiredChanged)]
        for change in changes:
            for identifier, value in change.values.items():
                if value is None:
                    self.values.pop(identifier, None)
                else:
                    self.values[identifier] = {**value, "ts": change.ts}
        if changes:
            self._show()

    def _show(self) -> None:
        rows = []
        for identifier, held in sorted(self.values.items()):
            prop = self.model.properties.get(identifier)
            rows.append(
                {
                    "identifier": identifier,
                    "name": prop.name if prop is not None else "",
                    "value": value_text(prop.data_type if prop else None, held.get("value")),
                    "version": held.get("version"),
                    "at": fmt.when(held.get("ts")) if isinstance(held.get("ts"), int) else "—",
                }
            )
        self.table.rows = rows
        self.table.update()
        self.table.set_visibility(bool(rows))
        self.none.set_visibility(not rows)
