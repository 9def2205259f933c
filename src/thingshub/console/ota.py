"""OTA: firmware packages, upgrade tasks, and each device's progress.

Rules:
- Everything goes through the HTTP API's OTA routes (the README's HTTP API), called
  in-process (api_client.py): the API's contract is fixed while the OTA
  service behind it may change, and the console then validates and answers
  exactly as applications see. A server without those routes gets a page
  saying OTA is not available, not an error.
- A task is read once; then each device's progress arrives from the bus
  (`OtaProgressed`, the events the live stream's `ota` kind carries) and is
  applied in place. A task of at most REREAD_UP_TO devices is also re-read
  (at most every REREAD_S seconds) while events arrive, for the devices'
  descriptions and the task's status; a larger one is re-read only once all
  its devices are final, so following 100,000 devices costs no polling.
- Large tasks show their state counts and the first DEVICES_SHOWN devices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import RedirectResponse
from nicegui import events, ui

from thingshub.console import fmt
from thingshub.console.access import can, products_seen
from thingshub.console.api_client import ApiClient, ApiError
from thingshub.console.auth import gate
from thingshub.console.context import ConsoleContext
from thingshub.console.layout import card, empty, frame, tid
from thingshub.console.live import LiveFeed
from thingshub.core.events import Event, OtaProgressed

DEVICES_SHOWN = 200
REREAD_UP_TO = 1000
REREAD_S = 2.0
FINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELED", "TIMED_OUT"})
MAX_PRODUCTS = 1000
MAX_FIRMWARE_BYTES = 256 * 1024 * 1024
STATE_COLORS = {
    "QUEUED": "grey-6",
    "INFORMED": "info",
    "IN_PROGRESS": "primary",
    "SUCCEEDED": "positive",
    "FAILED": "negative",
    "CANCELED": "grey-8",
    "TIMED_OUT": "warning",
}
STATE_ORDER = list(STATE_COLORS)


def _base(pid: str) -> str:
    return f"/api/v1/products/{quote(pid, safe='')}"


def _items(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, dict):
        items = body.get("items", [])
    else:
        items = body or []
    return [i for i in items if isinstance(i, dict)]


def _counts(task: dict[str, Any]) -> dict[str, int]:
    """Devices per state: from the task's `counts`, or counted from its devices."""
    counts = task.get("counts")
    if isinstance(counts, dict):
        return {k: int(v) for k, v in counts.items() if isinstance(v, int)}
    out: dict[str, int] = {}
    for d in task.get("devices", []):
        out[d.get("state", "?")] = out.get(d.get("state", "?"), 0) + 1
    return out


def _state_badges(counts: dict[str, int]) -> None:
    with ui.row().classes("gap-1"):
        for state in STATE_ORDER:
            if counts.get(state):
                ui.badge(f"{state.lower().replace('_', ' ')} {counts[state]:,}").props(
                    f"color={STATE_COLORS[state]}"
                )


def register(ctx: ConsoleContext) -> None:
    api = ApiClient(ctx.http, ctx.api.api_key)

    @ui.page("/ota", title="OTA · ThingsHub")
    async def ota_page(
        request: Request, product: str | None = None, task: str | None = None
    ) -> RedirectResponse | None:
        if (denied := gate(ctx, request)) is not None:
            return denied
        products = (await products_seen(ctx, MAX_PRODUCTS)).items
        chosen = next((p for p in products if p.id == product), products[0] if products else None)
        with frame("ota", "Firmware upgrades (OTA)", "Packages, tasks and each device's progress"):
            if chosen is None:
                with card():
                    empty("No products yet: create one on the Products page first.")
                return None
            pid = chosen.id
            ui.select(
                {p.id: f"{p.name} ({p.id})" for p in products},
                value=pid,
                label="Product",
                on_change=lambda e: ui.navigate.to(f"/ota?product={e.value}"),
            ).props("outlined dense " + tid("ota-product")).classes("min-w-[16rem]")
            try:
                firmware = _items(await api.call("GET", f"{_base(pid)}/firmware"))
            except ApiError as exc:
                with card("OTA", "system_update_alt"):
                    if exc.missing:
                        empty("OTA is not available on this server.").props(tid("ota-missing"))
                    else:
                        ui.label(exc.message).classes("text-negative")
                return None
            if task:
                await task_section(pid, task)
            with ui.grid(columns=2).classes("w-full gap-5"):
                firmware_section(pid, firmware)
                if can(ctx, "ota"):  # uploads and tasks need an operator (access.py)
                    new_task_section(pid, firmware)
            await tasks_section(pid)
        return None

    def firmware_section(pid: str, firmware: list[dict[str, Any]]) -> None:
        max_size = ctx.api.firmware.max_size if ctx.api.firmware else MAX_FIRMWARE_BYTES
        with card("Firmware packages", "inventory"):
            rows = [
                {
                    "id": f.get("id"),
                    "version": f.get("version"),
                    "module": f.get("module"),
                    "name": f.get("name") or "",
                    "size": f"{int(f.get('size') or 0):,} B",
                    "sha256": (f.get("sha256") or "")[:12] + "…",
                }
                for f in firmware
            ]
            columns = [
                {"name": k, "label": label, "field": k, "align": "left"}
                for k, label in (
                    ("module", "Module"),
                    ("version", "Version"),
                    ("name", "Name"),
                    ("size", "Size"),
                    ("sha256", "SHA-256"),
                )
            ]
            if rows:
                ui.table(columns=columns, rows=rows, row_key="id").classes("w-full th-table").props(
                    "flat dense hide-pagination :pagination='{rowsPerPage: 0}' " + tid("firmware")
                )
            else:
                empty("No firmware packages yet.")
            if not can(ctx, "ota"):
                return
            ui.separator()
            ui.label("Upload a package").classes("text-sm font-medium text-slate-600")
            with ui.row().classes("w-full gap-3"):
                version = (
                    ui.input("Version", placeholder="1.4.3")
                    .props("outlined dense " + tid("fw-version"))
                    .classes("w-32")
                )
                module = (
                    ui.input("Module", value="default")
                    .props("outlined dense " + tid("fw-module"))
                    .classes("w-32")
                )
                name = ui.input("Name (optional)").props("outlined dense").classes("flex-1")
            ext_data = (
                ui.input("Extra data for devices (optional JSON object)")
                .props("outlined dense " + tid("fw-ext"))
                .classes("w-full")
            )
            problem = ui.label().classes("text-negative text-sm").props(tid("fw-problem"))

            async def uploaded(e: events.UploadEventArguments) -> None:
                problem.set_text("")
                data = await e.file.read()
                form = {"version": version.value.strip(), "module": module.value.strip()}
                if name.value.strip():
                    form["name"] = name.value.strip()
                if ext_data.value.strip():
                    form["ext_data"] = ext_data.value.strip()
                try:
                    await api.call(
                        "POST",
                        f"{_base(pid)}/firmware",
                        data=form,
                        files={"file": (e.file.name, data, "application/octet-stream")},
                    )
                except ApiError as exc:
                    problem.set_text(exc.message)
                    upload.reset()
                    return
                ui.notify(f"Firmware {form['module']} {form['version']} uploaded", type="positive")
                ui.navigate.to(f"/ota?product={pid}")

            upload = (
                ui.upload(label="Choose the file", auto_upload=True, max_file_size=max_size)
                .on_upload(uploaded)
                .props("flat bordered " + tid("fw-upload"))
                .classes("w-full")
            )

    def new_task_section(pid: str, firmware: list[dict[str, Any]]) -> None:
        with card("New upgrade task", "rocket_launch"):
            if not firmware:
                empty("Upload a firmware package first.")
                return
            options = {
                f["id"]: f"{f.get('module')} {f.get('version')}" for f in firmware if f.get("id")
            }
            chosen = (
                ui.select(options, value=next(iter(options)), label="Firmware")
                .props("outlined dense " + tid("task-firmware"))
                .classes("w-full")
            )
            everything = ui.switch("All devices of the product", value=True).props(tid("task-all"))
            names = (
                ui.input("Devices (names, comma separated)")
                .props("outlined dense " + tid("task-devices"))
                .classes("w-full")
            )
            names.bind_visibility_from(everything, "value", backward=lambda v: not v)
            with ui.row().classes("w-full gap-3"):
                sign = (
                    ui.select(["SHA256", "MD5"], value="SHA256", label="Signature")
                    .props("outlined dense")
                    .classes("w-32")
                )
                rate = (
                    ui.number("Devices per minute", min=1, step=1)
                    .props('outlined dense hint="empty: all at once"')
                    .classes("flex-1")
                )
                timeout = (
                    ui.number("Device timeout (s)", value=3600, min=1, step=1)
                    .props("outlined dense")
                    .classes("w-44")
                )
            problem = ui.label().classes("text-negative text-sm").props(tid("task-problem"))

            async def create() -> None:
                problem.set_text("")
                body: dict[str, Any] = {"firmware_id": chosen.value, "sign_method": sign.value}
                if everything.value:
                    body["all"] = True
                else:
                    body["devices"] = [n.strip() for n in names.value.split(",") if n.strip()]
                if rate.value:
                    body["rollout_per_minute"] = int(rate.value)
                if timeout.value:
                    body["device_timeout_s"] = int(timeout.value)
                try:
                    created = await api.call("POST", f"{_base(pid)}/ota-tasks", json=body)
                except ApiError as exc:
                    problem.set_text(exc.message)
                    return
                ui.navigate.to(f"/ota?product={pid}&task={created['id']}")

            ui.button("Start the task", icon="play_arrow", on_click=create).props(
                "unelevated " + tid("task-create")
            )

    async def tasks_section(pid: str) -> None:
        with card("Tasks", "list_alt"):
            try:
                tasks = _items(await api.call("GET", f"{_base(pid)}/ota-tasks"))
            except ApiError as exc:
                empty("The list of tasks is not available." if exc.missing else exc.message)
                return
            if not tasks:
                empty("No tasks yet.")
                return
            for t in reversed(tasks):
                with ui.row().classes("w-full items-center gap-4 py-1 border-b border-slate-100"):
                    ui.link(str(t.get("id")), f"/ota?product={pid}&task={t.get('id')}").classes(
                        "th-mono text-primary no-underline"
                    )
                    ui.label(f"{t.get('module', '')} {t.get('version', '')}").classes("text-sm")
                    ui.badge(str(t.get("status", "")).lower()).props("outline color=secondary")
                    ui.label(fmt.when(t.get("created_at"))).classes("text-xs text-slate-500")
                    ui.space()
                    _state_badges(_counts(t))

    async def task_section(pid: str, task_id: str) -> None:
        path = f"{_base(pid)}/ota-tasks/{quote(task_id, safe='')}"
        with card(f"Task {task_id}", "rocket_launch"):
            with ui.row().classes("w-full items-center gap-3"):
                status = ui.badge().props(tid("task-status"))
                summary = ui.label().classes("text-sm text-slate-500")
                ui.space()
                cancel = (
                    ui.button("Cancel the task", icon="cancel").props(
                        "flat color=negative " + tid("task-cancel")
                    )
                    if can(ctx, "ota")
                    else None
                )
            badges = ui.row().classes("gap-1")
            table = (
                ui.table(
                    columns=[
                        {"name": "name", "label": "Device", "field": "name", "align": "left"},
                        {"name": "state", "label": "State", "field": "state", "align": "left"},
                        {"name": "step", "label": "Progress", "field": "step", "align": "left"},
                        {"name": "desc", "label": "Detail", "field": "desc", "align": "left"},
                        {"name": "protocol", "label": "Via", "field": "protocol", "align": "left"},
                        {"name": "tid", "label": "tid", "field": "tid", "align": "left"},
                    ],
                    rows=[],
                    row_key="name",
                )
                .classes("w-full th-table")
                .props(
                    "flat dense hide-pagination :pagination='{rowsPerPage: 0}' "
                    + tid("task-devices")
                )
            )
            table.add_slot(
                "body-cell-state",
                """<q-td :props="props"><q-badge :color="props.row.color"
                    :label="props.value" /></q-td>""",
            )
            table.add_slot(
                "body-cell-step",
                """<q-td :props="props" style="min-width: 12rem">
                    <q-linear-progress :value="props.row.progress" size="10px" rounded
                        :color="props.row.color" class="q-mt-xs" />
                    <div class="text-caption text-grey-7">{{ props.value }}</div></q-td>""",
            )
            problem = ui.label().classes("text-negative text-sm")

        devices: dict[str, dict[str, Any]] = {}
        state = _Seen()

        def render() -> None:
            running = state.status == "RUNNING"
            status.set_text(state.status.lower())
            status.props(f"color={'primary' if running else 'secondary'}")
            summary.set_text(f"{len(devices):,} device(s)")
            counts: dict[str, int] = {}
            for d in devices.values():
                counts[d["state"]] = counts.get(d["state"], 0) + 1
            badges.clear()
            with badges:
                _state_badges(counts)
            table.rows = [_device_row(d) for d in list(devices.values())[:DEVICES_SHOWN]]
            table.update()
            if cancel is not None:
                cancel.set_visibility(running)

        async def reread() -> None:
            try:
                task = await api.call("GET", path)
            except ApiError as exc:
                problem.set_text(exc.message)
                return
            state.status, state.read_at = str(task.get("status", "")), time.monotonic()
            devices.clear()
            for d in task.get("devices", []):
                if isinstance(d, dict) and isinstance(d.get("name"), str):
                    devices[d["name"]] = d
            render()

        async def progressed(events: list[Event]) -> None:
            for e in events:
                if isinstance(e, OtaProgressed) and e.name in devices:
                    devices[e.name].update(state=e.state, step=e.step)
            render()
            settled = all(d.get("state") in FINAL_STATES for d in devices.values())
            due = time.monotonic() - state.read_at >= REREAD_S
            if settled or (len(devices) <= REREAD_UP_TO and due):
                await reread()

        async def do_cancel() -> None:
            try:
                await api.call("POST", f"{path}/cancel")
            except ApiError as exc:
                problem.set_text(exc.message)
                return
            await reread()

        if cancel is not None:
            cancel.on_click(do_cancel)
        await reread()
        LiveFeed(
            ctx.api.bus,
            [OtaProgressed],
            lambda e: isinstance(e, OtaProgressed) and e.task_id == task_id,
            progressed,
        )


@dataclass
class _Seen:
    """What a task page last read of its task."""

    status: str = ""
    read_at: float = 0.0


def _device_row(d: dict[str, Any]) -> dict[str, Any]:
    state = str(d.get("state", ""))
    step = d.get("step")
    return {
        "name": d.get("name"),
        "state": state.lower().replace("_", " "),
        "color": STATE_COLORS.get(state, "grey-6"),
        "progress": (min(step, 100) / 100) if isinstance(step, int) and step > 0 else 0,
        "step": _step(step),
        "desc": d.get("desc") or "",
        "protocol": d.get("protocol") or "—",
        "tid": d.get("tid") if d.get("tid") is not None else "—",
    }


def _step(step: object) -> str:
    """A percentage, or one of OneNET's step codes past 100 (101 downloaded, 201
    upgraded, the others failures) as it is."""
    if not isinstance(step, int) or step < 0:
        return "—"
    return f"{step} %" if step <= 100 else str(step)
