"""The thing model card of the device page: the model's properties with their latest
values, setting a property, and invoking a service.

Rules:
- Shown only when the product has a model (read once, when the page opens:
  the service's checked model).
- A property's latest value is its telemetry's latest value (properties are
  stored as telemetry points), read once and then merged from the bus
  (`TelemetryReceived`), as the latest values card does.
- Only `rw` properties can be set. Inputs suit the types (thing_inputs.py);
  the value is checked by the service and sent on `thing/property/set`; a
  service's form is built from its input params and its call goes out on
  `thing/service/{identifier}/invoke`. Both wait like the HTTP API
  (`ThingService`, timeout 1-30 s, default 5) and show the device's reply
  (code, msg, data) or the error with OneNET's code (308, 1022, 306, ...). An
  asynchronous service returns once published; its answer completes its
  record in the command history.
"""

from __future__ import annotations

from typing import Any, Final

from nicegui import ui

from thingshub.console import fmt
from thingshub.console.access import can
from thingshub.console.context import ConsoleContext
from thingshub.console.layout import card, column, empty, table, tid
from thingshub.console.thing_inputs import (
    CallResult,
    ParamsForm,
    ValueInput,
    timeout_input,
    timeout_of,
)
from thingshub.console.thing_text import CALL_TYPES, range_text, type_text, value_text
from thingshub.core.errors import ThingsHubError
from thingshub.core.events import Event, TelemetryReceived
from thingshub.core.thingmodel import ThingModel

COLUMNS: Final = [
    column("identifier", "Property"),
    column("name", "Name"),
    column("type", "Type"),
    column("range", "Range / unit"),
    column("access", "Access"),
    column("value", "Latest value"),
    column("at", "Reported"),
]


class ThingPanel:
    def __init__(self, ctx: ConsoleContext, pid: str, name: str, model: ThingModel) -> None:
        self.ctx = ctx
        self.pid = pid
        self.name = name
        self.model = model
        self.latest: dict[str, tuple[int, object]] = {}
        writable = [p for p in model.properties.values() if p.writable]
        with card("Thing model", "schema") as box:
            box.props(tid("thing-card"))
            with ui.row().classes("w-full items-center gap-2 -mt-1"):
                ui.label(
                    f"{len(model.properties)} properties, {len(model.events)} events, "
                    f"{len(model.services)} services in the product's model"
                ).classes("text-sm text-slate-500")
                ui.link("see the model", f"/products/{pid}").classes(
                    "text-sm text-primary no-underline"
                )
            self.table = table(COLUMNS, "identifier", "thing-properties")
            self.table.add_slot(
                "body-cell-access",
                """<q-td :props="props"><q-badge outline
                    :color="props.value === 'rw' ? 'primary' : 'grey-7'" :label="props.value" />
                    </q-td>""",
            )
            self.table.add_slot(
                "body-cell-value",
                """<q-td :props="props" class="th-mono">{{ props.value }}</q-td>""",
            )
            self.none = empty("The model has no properties.")
            if not can(ctx, "device.command"):  # a reader sees the values only (access.py)
                return
            with ui.grid(columns=2).classes("w-full gap-6"):
                with ui.column().classes("gap-2 min-w-0"):
                    ui.label("Set a property").classes("text-sm font-semibold text-slate-600")
                    if writable:
                        self._set_form({p.identifier: p for p in writable})
                    else:
                        empty("Every property of the model is read-only.")
                with ui.column().classes("gap-2 min-w-0"):
                    ui.label("Invoke a service").classes("text-sm font-semibold text-slate-600")
                    if model.services:
                        self._invoke_form()
                    else:
                        empty("The model has no services.")

    # ------------------------------------------------------------ the forms

    def _set_form(self, writable: dict[str, Any]) -> None:
        options = {k: f"{k} ({p.name})" if p.name != k else k for k, p in writable.items()}
        with ui.row().classes("items-start gap-3 w-full"):
            self.set_choice = (
                ui.select(options, value=next(iter(options)), label="Property")
                .props("outlined dense " + tid("thing-set-property"))
                .classes("min-w-[16rem]")
            )
            self.set_box = ui.row().classes("items-start")
        with ui.row().classes("items-center gap-3"):
            self.set_timeout = timeout_input("thing-set-timeout")
            ui.button("Set", icon="edit", on_click=self.set_property).props(
                "unelevated " + tid("thing-set")
            )
        self.set_result = CallResult("thing-set")
        self.set_input: ValueInput | None = None

        def chosen() -> None:
            self.set_box.clear()
            prop = self.model.properties[self.set_choice.value]
            with self.set_box:
                self.set_input = ValueInput(
                    prop.data_type, "Value", "thing-set-value", prop.identifier
                )

        self.set_choice.on_value_change(chosen)
        chosen()

    def _invoke_form(self) -> None:
        options = {
            s.identifier: f"{s.identifier} ({s.name}, {CALL_TYPES[s.call_type]})"
            for s in self.model.services.values()
        }
        self.service_choice = (
            ui.select(options, value=next(iter(options)), label="Service")
            .props("outlined dense " + tid("thing-service"))
            .classes("min-w-[16rem]")
        )
        self.service_box = ui.row().classes("items-start gap-3 w-full")
        with ui.row().classes("items-center gap-3"):
            self.invoke_timeout = timeout_input("thing-invoke-timeout")
            ui.button("Invoke", icon="play_arrow", on_click=self.invoke).props(
                "unelevated " + tid("thing-invoke")
            )
        self.invoke_result = CallResult("thing-invoke")
        self.service_form: ParamsForm | None = None

        def chosen() -> None:
            self.service_box.clear()
            service = self.model.services[self.service_choice.value]
            with self.service_box:
                if not service.input:
                    ui.label("No input params.").classes("text-sm text-slate-400 italic")
                self.service_form = ParamsForm(service.input, "thing-input")

        self.service_choice.on_value_change(chosen)
        chosen()

    async def set_property(self) -> None:
        if self.set_input is None:
            return
        self.set_result.waiting()
        try:
            identifier = self.set_choice.value
            values = {identifier: self.set_input.read()}
            answer = await self.ctx.api.things.set_properties(
                self.pid, self.name, values, timeout_of(self.set_timeout)
            )
        except ThingsHubError as exc:
            self.set_result.failed(exc)
            return
        self.set_result.answered(answer)

    async def invoke(self) -> None:
        if self.service_form is None:
            return
        self.invoke_result.waiting()
        try:
            arguments = self.service_form.read()
            answer = await self.ctx.api.things.invoke(
                self.pid,
                self.name,
                self.service_choice.value,
                arguments,
                timeout_of(self.invoke_timeout),
            )
        except ThingsHubError as exc:
            self.invoke_result.failed(exc)
            return
        self.invoke_result.answered(answer)

    # ------------------------------------------------------------ the values

    async def load(self) -> None:
        latest = await self.ctx.api.history.latest(self.pid, self.name)
        self.latest = {
            k: (v["ts"], v["value"]) for k, v in latest.items() if k in self.model.properties
        }
        self._show()

    def apply(self, events: list[Event]) -> None:
        changed = False
        for event in events:
            if not isinstance(event, TelemetryReceived):
                continue
            for p in event.points:
                if p.key not in self.model.properties:
                    continue
                held = self.latest.get(p.key)
                if held is None or p.ts >= held[0]:
                    self.latest[p.key] = (p.ts, p.value)
                    changed = True
        if changed:
            self._show()

    def tick(self) -> None:
        """Keep "reported ... ago" current."""
        if self.latest:
            self._show()

    def _show(self) -> None:
        now = fmt.now_ms()
        rows = []
        for prop in self.model.properties.values():
            held = self.latest.get(prop.identifier)
            rows.append(
                {
                    "identifier": prop.identifier,
                    "name": prop.name,
                    "type": type_text(prop.data_type),
                    "range": range_text(prop.data_type),
                    "access": prop.access_mode,
                    "value": "—" if held is None else value_text(prop.data_type, held[1]),
                    "at": "never" if held is None else fmt.ago(held[0], now),
                }
            )
        self.table.rows = rows
        self.table.update()
        self.table.set_visibility(bool(rows))
        self.none.set_visibility(not rows)
