"""The thing model card of the product page: upload a TSL file, see the model's
properties, events and services, download or delete it.

Rules:
- The file is read in the browser's upload and checked by the service
  (`ThingService.set_model`), whose rules are the HTTP API's: a fault is shown
  with its JSON pointer (`path`) and the model in place stays as it was.
- Setting a model replaces the whole document and raises its revision;
  deleting it asks first. Neither touches what devices reported.
- What is shown is the stored, canonical document (aliases resolved), read
  through the service's checked model; a stored document the service can no
  longer read is shown as JSON.
"""

from __future__ import annotations

from typing import Any, Final

from nicegui import events, ui

from thingshub.console import fmt
from thingshub.console.access import can
from thingshub.console.context import ConsoleContext
from thingshub.console.layout import card, column, empty, tid
from thingshub.console.thing_text import (
    ACCESS,
    CALL_TYPES,
    EVENT_COLORS,
    params_text,
    range_text,
    read_model_file,
    type_text,
)
from thingshub.core.errors import NotFound, ThingsHubError
from thingshub.core.model import StoredModel
from thingshub.core.thingmodel import ModelError, ThingModel

#: The largest file the card takes (the HTTP API's limit on a JSON body).
MAX_FILE: Final = 1 << 20
TABLE_PROPS: Final = "flat dense wrap-cells hide-pagination :pagination='{rowsPerPage: 0}' "
LINES_SLOT: Final = """<q-td :props="props" class="th-mono text-xs">
    <div v-for="(line, i) in props.value" :key="i">{{ line }}</div>
    <span v-if="!props.value.length" class="text-slate-400">—</span></q-td>"""


def property_rows(model: ThingModel) -> list[dict[str, Any]]:
    return [
        {
            "identifier": p.identifier,
            "name": p.name,
            "type": type_text(p.data_type),
            "range": range_text(p.data_type),
            "access": p.access_mode,
        }
        for p in model.properties.values()
    ]


def event_rows(model: ThingModel) -> list[dict[str, Any]]:
    return [
        {
            "identifier": e.identifier,
            "name": e.name,
            "type": e.event_type,
            "color": EVENT_COLORS[e.event_type],
            "output": params_text(e.output),
        }
        for e in model.events.values()
    ]


def service_rows(model: ThingModel) -> list[dict[str, Any]]:
    return [
        {
            "identifier": s.identifier,
            "name": s.name,
            "call": CALL_TYPES[s.call_type],
            "input": params_text(s.input),
            "output": params_text(s.output),
        }
        for s in model.services.values()
    ]


class ModelCard:
    def __init__(self, ctx: ConsoleContext, pid: str) -> None:
        self.things = ctx.api.things
        self.pid = pid
        self.stored: StoredModel | None = None
        #: Upload and delete only for keys that may change the model (access.py).
        self.edits = can(ctx, "product.model")
        if self.edits:
            with ui.dialog() as self.confirm, ui.card().classes("w-[26rem] p-6 gap-3"):
                ui.label("Delete the thing model?").classes("text-lg font-semibold")
                ui.label(
                    "Devices' reports stay stored; values are no longer checked against a model."
                ).classes("text-sm text-slate-600")
                with ui.row().classes("w-full justify-end"):
                    ui.button("Cancel", on_click=self.confirm.close).props("flat")
                    ui.button("Delete", on_click=self.delete).props(
                        "unelevated color=negative " + tid("model-delete-confirm")
                    )
        with card("Thing model", "schema"):
            with ui.row().classes("w-full items-center gap-3"):
                self.summary = (
                    ui.label().classes("text-sm text-slate-600").props(tid("model-summary"))
                )
                ui.space()
                if self.edits:
                    self._upload_button()
                self.download_button = ui.button(
                    "Download JSON", icon="download", on_click=self.download
                ).props("flat dense " + tid("model-download"))
                if self.edits:
                    self.delete_button = ui.button(
                        "Delete", icon="delete", on_click=self.confirm.open
                    ).props("flat dense color=negative " + tid("model-delete"))
            with ui.column().classes(
                "w-full gap-1 border border-red-200 bg-red-50 rounded-md p-3"
            ) as self.problem_box:
                ui.label("The model was not saved").classes("text-sm font-medium text-negative")
                with ui.row().classes("items-baseline gap-2") as self.path_row:
                    ui.label("at").classes("text-sm text-slate-600")
                    self.problem_path = (
                        ui.label()
                        .classes("th-mono text-sm font-semibold")
                        .props(tid("model-problem-path"))
                    )
                self.problem = (
                    ui.label().classes("text-sm text-negative").props(tid("model-problem"))
                )
            self.problem_box.set_visibility(False)
            self.sections = ui.column().classes("w-full gap-4")

    # ------------------------------------------------------------ loading

    async def load(self) -> None:
        try:
            self.stored = await self.things.get_model(self.pid)
        except NotFound:
            self.stored = None
        model = await self.things.model(self.pid) if self.stored is not None else None
        self._show(model)

    def _upload_button(self) -> None:
        # The uploader itself stays hidden: the button opens its file picker.
        self.upload = (
            ui.upload(auto_upload=True, max_file_size=MAX_FILE)
            .on_upload(self.uploaded)
            .on_rejected(lambda: ui.notify("The file is over 1 MiB.", type="negative"))
            .props('accept=".json,application/json" ' + tid("model-upload"))
            .classes("hidden")
        )
        ui.button(
            "Upload a TSL file",
            icon="upload_file",
            on_click=lambda: self.upload.run_method("pickFiles"),
        ).props("unelevated dense " + tid("model-choose")).tooltip(
            "JSON, as OneNET exports it; replaces the model in place"
        )

    def _show(self, model: ThingModel | None) -> None:
        stored = self.stored
        self.download_button.set_visibility(stored is not None)
        if self.edits:
            self.delete_button.set_visibility(stored is not None)
        self.sections.clear()
        if stored is None:
            self.summary.set_text("No thing model yet.")
            with self.sections:
                empty(
                    "Upload the product's TSL file: its properties, events and services then "
                    "check what devices post and what applications send."
                )
            return
        counts = (
            f"{len(model.properties)} properties, {len(model.events)} events, "
            f"{len(model.services)} services · "
            if model is not None
            else ""
        )
        self.summary.set_text(
            f"{counts}revision {stored.revision}, updated {fmt.when(stored.updated_at)}"
        )
        with self.sections:
            if model is None:
                ui.label("The stored model cannot be read; its document:").classes("text-sm")
                ui.code(fmt.pretty(dict(stored.document)), language="json").classes("w-full")
                return
            self._properties(model)
            self._events(model)
            self._services(model)

    def _table(self, title: str, columns: list[dict[str, Any]], rows: list[Any], test: str) -> Any:
        ui.label(title).classes("text-sm font-semibold text-slate-600")
        if not rows:
            empty(f"No {title.lower()}.")
            return None
        key = "identifier"
        return (
            ui.table(columns=columns, rows=rows, row_key=key)
            .classes("w-full th-table")
            .props(TABLE_PROPS + tid(test))
        )

    def _properties(self, model: ThingModel) -> None:
        columns = [
            column("identifier", "Identifier"),
            column("name", "Name"),
            column("type", "Type"),
            column("range", "Range / unit"),
            column("access", "Access"),
        ]
        table = self._table("Properties", columns, property_rows(model), "model-properties")
        if table is not None:
            table.add_slot(
                "body-cell-access",
                f"""<q-td :props="props"><q-badge outline
                    :color="props.value === 'rw' ? 'primary' : 'grey-7'" :label="props.value" />
                    <q-tooltip>{{{{ {ACCESS!r}[props.value] }}}}</q-tooltip></q-td>""",
            )

    def _events(self, model: ThingModel) -> None:
        columns = [
            column("identifier", "Identifier"),
            column("name", "Name"),
            column("type", "Type"),
            column("output", "Output params"),
        ]
        table = self._table("Events", columns, event_rows(model), "model-events")
        if table is not None:
            table.add_slot(
                "body-cell-type",
                """<q-td :props="props"><q-badge :color="props.row.color"
                    :label="props.value" /></q-td>""",
            )
            table.add_slot("body-cell-output", LINES_SLOT)

    def _services(self, model: ThingModel) -> None:
        columns = [
            column("identifier", "Identifier"),
            column("name", "Name"),
            column("call", "Call"),
            column("input", "Input params"),
            column("output", "Output params"),
        ]
        table = self._table("Services", columns, service_rows(model), "model-services")
        if table is not None:
            table.add_slot("body-cell-input", LINES_SLOT)
            table.add_slot("body-cell-output", LINES_SLOT)

    # ------------------------------------------------------------ changes

    async def uploaded(self, e: events.UploadEventArguments) -> None:
        self.upload.reset()
        self.problem_box.set_visibility(False)
        try:
            document = read_model_file(await e.file.read())
            self.stored = await self.things.set_model(self.pid, document)
        except ModelError as exc:
            self._problem(exc.detail, exc.path or "/")
            return
        except ThingsHubError as exc:
            self._problem(fmt.error(exc), None)
            return
        ui.notify(f"Thing model saved: revision {self.stored.revision}", type="positive")
        self._show(await self.things.model(self.pid))

    def _problem(self, message: str, path: str | None) -> None:
        self.problem.set_text(message)
        self.problem_path.set_text(path or "")
        self.path_row.set_visibility(path is not None)
        self.problem_box.set_visibility(True)

    async def delete(self) -> None:
        self.confirm.close()
        try:
            await self.things.delete_model(self.pid)
        except ThingsHubError as exc:
            ui.notify(fmt.error(exc), type="negative")
        else:
            ui.notify("Thing model deleted", type="positive")
        self.problem_box.set_visibility(False)
        await self.load()

    def download(self) -> None:
        if self.stored is not None:
            body = fmt.pretty(dict(self.stored.document)).encode()
            ui.download.content(body, f"{self.pid}-thing-model.json", "application/json")
