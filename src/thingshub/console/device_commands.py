"""Calls to a device from the device page, and the record of calls.

Rules:
- A call waits for the device like the HTTP API does (`CommandService`,
  timeout 1-30 s, default 10): the panel shows the answer, or why there is
  none (offline, timeout, refused), in the API's words.
- OneNET commands send raw bytes, typed as text or as hex; the answer is
  shown as text when it is UTF-8, and always as hex. ThingsPanel commands
  send `{"method", "params"}` and show the device's response object.
- The history lists the newest calls of both families and is re-read when a
  call of this device finishes (`CommandFinished` on the bus), whoever made it.
"""

from __future__ import annotations

import json
from typing import Any

from nicegui import ui

from thingshub.console import fmt
from thingshub.console.access import can
from thingshub.console.context import ConsoleContext
from thingshub.console.layout import card, empty, tid
from thingshub.core import commands as calls
from thingshub.core.commands import DEFAULT_TIMEOUT, MAX_TIMEOUT, MIN_TIMEOUT, ONENET
from thingshub.core.errors import (
    AnswerTooLarge,
    BadDeviceAnswer,
    CommandTimeout,
    DeviceOffline,
    InvalidRequest,
    ThingsHubError,
)
from thingshub.core.events import CommandFinished, Event
from thingshub.core.model import CommandRecord

HISTORY = 20
STATUS_COLORS = {
    "answered": "positive",
    "sent": "info",
    "timeout": "warning",
    "failed": "negative",
    "rejected": "negative",
}


def outcome(exc: ThingsHubError) -> str:
    """One word for why a call has no answer."""
    if isinstance(exc, CommandTimeout):
        return "timeout"
    if isinstance(exc, DeviceOffline):
        return "offline"
    if isinstance(exc, AnswerTooLarge | BadDeviceAnswer):
        return "rejected"
    return "refused"


def payload_bytes(text: str, as_hex: bool) -> bytes:
    if not as_hex:
        return text.encode()
    try:
        return bytes.fromhex(text.replace(" ", "").replace("\n", ""))
    except ValueError:
        raise InvalidRequest("the payload is not hex (pairs of 0-9, a-f)") from None


def body_text(family: str, data: bytes | None) -> str:
    """A recorded request or response, for reading: OneNET bytes as text when UTF-8
    (else hex), ThingsPanel JSON as compact JSON."""
    if data is None:
        return "—"
    if family == ONENET:
        try:
            return data.decode()
        except UnicodeDecodeError:
            return "0x" + data.hex()
    return data.decode(errors="replace")


def _timeout(value: float | None) -> object:
    if value is None:
        return None
    return int(value) if float(value).is_integer() else value


class CommandPanel:
    def __init__(self, ctx: ConsoleContext, pid: str, name: str, history_box: ui.element) -> None:
        self.ctx = ctx
        self.pid = pid
        self.name = name
        if can(ctx, "device.command"):  # a reader sees the history only (access.py)
            self._send_card()
        with history_box:
            self.table = (
                ui.table(
                    columns=[
                        {"name": "at", "label": "Sent", "field": "at", "align": "left"},
                        {"name": "family", "label": "Family", "field": "family", "align": "left"},
                        {"name": "status", "label": "Status", "field": "status", "align": "left"},
                        {
                            "name": "request",
                            "label": "Request",
                            "field": "request",
                            "align": "left",
                        },
                        {
                            "name": "response",
                            "label": "Answer",
                            "field": "response",
                            "align": "left",
                        },
                    ],
                    rows=[],
                    row_key="id",
                )
                .classes("w-full th-table")
                .props(
                    "flat dense hide-pagination :pagination='{rowsPerPage: 0}' " + tid("history")
                )
            )
            self.table.add_slot(
                "body-cell-status",
                """<q-td :props="props"><q-badge :color="props.row.color" :label="props.value" />
                   <q-tooltip v-if="props.row.detail">{{ props.row.detail }}</q-tooltip></q-td>""",
            )
            self.table.add_slot(
                "body-cell-at",
                """<q-td :props="props">{{ props.value }}
                   <q-tooltip>{{ props.row.at_full }}</q-tooltip></q-td>""",
            )
            for column in ("request", "response"):
                self.table.add_slot(
                    f"body-cell-{column}",
                    """<q-td :props="props" class="th-mono" style="max-width: 9rem;
                        overflow: hidden; text-overflow: ellipsis">{{ props.value }}
                        <q-tooltip>{{ props.value }}</q-tooltip></q-td>""",
                )
            self.history_empty = empty("No calls yet.")

    def _send_card(self) -> None:
        with card("Send a command", "terminal"):
            with ui.tabs().classes("w-full").props("dense align=left no-caps") as tabs:
                onenet_tab = ui.tab("OneNET (raw bytes)").props(tid("tab-onenet"))
                tp_tab = ui.tab("ThingsPanel (method, params)").props(tid("tab-thingspanel"))
            with ui.tab_panels(tabs, value=onenet_tab).classes("w-full"):
                with ui.tab_panel(onenet_tab).classes("gap-2 px-0"):
                    self.payload = (
                        ui.textarea("Payload", placeholder="switch on")
                        .classes("w-full")
                        .props("outlined autogrow input-class=th-mono " + tid("onenet-payload"))
                    )
                    with ui.row().classes("items-center gap-4"):
                        self.as_hex = ui.switch("hex")
                        self.onenet_timeout = self._timeout_input("onenet-timeout")
                        ui.button("Send", icon="send", on_click=self.send_onenet).props(
                            "unelevated " + tid("send-onenet")
                        )
                with ui.tab_panel(tp_tab).classes("gap-2 px-0"):
                    self.method = (
                        ui.input("Method", placeholder="reboot")
                        .classes("w-full")
                        .props("outlined " + tid("tp-method"))
                    )
                    self.params = (
                        ui.textarea("Params (JSON)", value="{}")
                        .classes("w-full")
                        .props("outlined autogrow input-class=th-mono " + tid("tp-params"))
                    )
                    with ui.row().classes("items-center gap-4"):
                        self.tp_timeout = self._timeout_input("tp-timeout")
                        ui.button("Send", icon="send", on_click=self.send_thingspanel).props(
                            "unelevated " + tid("send-thingspanel")
                        )
            with ui.column().classes("w-full gap-1") as result:
                self.result = result
                with ui.row().classes("items-center gap-2"):
                    ui.label("Answer").classes("text-sm font-medium text-slate-600")
                    self.result_badge = ui.badge().props(tid("answer-status"))
                    self.result_id = ui.label().classes("text-xs text-slate-400 th-mono")
                self.result_text = (
                    ui.label()
                    .classes(
                        "th-mono whitespace-pre-wrap break-all text-sm bg-slate-50 border "
                        "border-slate-200 rounded-md p-3 w-full"
                    )
                    .props(tid("answer"))
                )
            self.result.set_visibility(False)

    def _timeout_input(self, test_id: str) -> ui.number:
        return (
            ui.number(
                "Timeout (s)", value=DEFAULT_TIMEOUT, min=MIN_TIMEOUT, max=MAX_TIMEOUT, step=1
            )
            .classes("w-28")
            .props("outlined dense " + tid(test_id))
        )

    # ------------------------------------------------------------ calls

    async def send_onenet(self) -> None:
        self._waiting()
        try:
            payload = payload_bytes(self.payload.value, bool(self.as_hex.value))
            result = await self.ctx.api.commands.call(
                self.pid,
                self.name,
                calls.raw_command(payload),
                _timeout(self.onenet_timeout.value),
            )
            cmd_id, answer = result.call_id, result.payload
        except ThingsHubError as exc:
            self._failed(exc)
            return
        try:
            text = answer.decode()
            shown = f"{text}\n(hex {answer.hex() or '—'})"
        except UnicodeDecodeError:
            shown = f"0x{answer.hex()}"
        self._answered(cmd_id, shown)

    async def send_thingspanel(self) -> None:
        self._waiting()
        try:
            try:
                params = json.loads(self.params.value or "{}")
            except ValueError:
                raise InvalidRequest("params is not valid JSON") from None
            result = await self.ctx.api.commands.call(
                self.pid,
                self.name,
                calls.method_call(self.method.value.strip(), params),
                _timeout(self.tp_timeout.value),
            )
            answer = result.body
        except ThingsHubError as exc:
            self._failed(exc)
            return
        self._answered(None, fmt.pretty(answer))

    def _waiting(self) -> None:
        self.result.set_visibility(True)
        self.result_badge.set_text("waiting")
        self.result_badge.props("color=info")
        self.result_id.set_text("")
        self.result_text.set_text("…")

    def _answered(self, cmd_id: str | None, text: str) -> None:
        self.result_badge.set_text("answered")
        self.result_badge.props("color=positive")
        self.result_id.set_text(f"cmd_id {cmd_id}" if cmd_id else "")
        self.result_text.set_text(text)

    def _failed(self, exc: ThingsHubError) -> None:
        word = outcome(exc)
        self.result_badge.set_text(word)
        self.result_badge.props(f"color={'warning' if word == 'timeout' else 'negative'}")
        self.result_text.set_text(fmt.error(exc))

    # ------------------------------------------------------------ history

    async def load(self) -> None:
        page = await self.ctx.api.commands.list_records(self.pid, self.name, HISTORY)
        self.table.rows = [self._row(r) for r in page.items]
        self.table.update()
        self.table.set_visibility(bool(page.items))
        self.history_empty.set_visibility(not page.items)

    def _row(self, r: CommandRecord) -> dict[str, Any]:
        kind = "" if r.kind == "command" else f" ({r.kind.replace('_', ' ')})"
        return {
            "id": r.cmd_id,
            "at": fmt.clock(r.created_at),
            "at_full": fmt.when(r.created_at),
            "family": f"{r.family}{kind}",
            "status": r.status,
            "color": STATUS_COLORS.get(r.status, "grey-6"),
            "detail": r.detail or "",
            "request": body_text(r.family, r.request),
            "response": body_text(r.family, r.response),
        }

    async def apply(self, events: list[Event]) -> None:
        if any(isinstance(e, CommandFinished) for e in events):
            await self.load()
