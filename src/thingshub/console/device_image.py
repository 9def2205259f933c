"""A device's OneNET image: desired, reported and delta side by side; editing desired
and tags.

Rules:
- Changes go through `ImageService.patch`, the HTTP API's PATCH: the same
  validation and the same messages (with the protocol's err_code), and a
  non-empty delta is pushed to the device when it is online.
- Desired is edited as a patch: it is merged into desired, and `null`
  deletes a key (as in the API). With "only if still version N" the change
  applies only to that version (OneNET's optimistic check, err_code 165).
- Tags are edited whole; keys left out are removed (sent as `null`).
- What the device reports arrives from the bus (`ImageChanged`) and is shown
  as it happens; the editors are not overwritten while someone types.
"""

from __future__ import annotations

import json
from typing import Any

from nicegui import ui

from thingshub.console import fmt
from thingshub.console.access import can
from thingshub.console.context import ConsoleContext
from thingshub.console.layout import card, tid
from thingshub.core.errors import InvalidRequest, NotFound, ThingsHubError
from thingshub.core.events import Event, ImageChanged


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError as exc:
        raise InvalidRequest(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{what} must be a JSON object")
    return value


def tags_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The API's tags patch turning `old` into `new` (removed keys become null)."""
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    patch.update({k: v for k, v in new.items() if old.get(k, object()) != v})
    return patch


class ImagePanel:
    def __init__(self, ctx: ConsoleContext, pid: str, name: str) -> None:
        self.ctx = ctx
        self.pid = pid
        self.name = name
        self.version: int | None = None
        self.tags: dict[str, Any] = {}
        with card("Device image", "layers") as box:
            self.box = box
            with ui.row().classes("w-full items-center gap-3"):
                self.caption = (
                    ui.label().classes("text-sm text-slate-500").props(tid("image-version"))
                )
                ui.space()
                #: Creating and changing the image only for keys that may (access.py).
                self.edits = can(ctx, "device.image")
                self.create_button = (
                    ui.button("Create the image", icon="add", on_click=self.create).props(
                        "unelevated dense " + tid("create-image")
                    )
                    if self.edits
                    else None
                )
            with ui.grid(columns=3).classes("w-full gap-4"):
                self.desired = self._block("Desired", "image-desired")
                self.reported = self._block("Reported", "image-reported")
                self.delta = self._block("Delta (desired, not yet reported)", "image-delta")
            if self.edits:
                self._edit_forms()

    def _edit_forms(self) -> None:
        with ui.grid(columns=2).classes("w-full gap-4"):
            with ui.column().classes("gap-2"):
                ui.label("Change desired").classes("text-sm font-medium text-slate-600")
                self.desired_edit = (
                    ui.textarea(placeholder='{"temperature": 22}')
                    .classes("w-full th-mono")
                    .props("outlined autogrow input-class=th-mono " + tid("desired-edit"))
                )
                ui.label("Merged into desired; null deletes a key.").classes(
                    "text-xs text-slate-500"
                )
                with ui.row().classes("items-center gap-3"):
                    ui.button("Apply", icon="send", on_click=self.apply_desired).props(
                        "unelevated " + tid("apply-desired")
                    )
                    self.pin = ui.checkbox("only if still this version")
                self.desired_problem = (
                    ui.label().classes("text-negative text-sm").props(tid("desired-problem"))
                )
            with ui.column().classes("gap-2"):
                ui.label("Tags").classes("text-sm font-medium text-slate-600")
                self.tags_edit = (
                    ui.textarea()
                    .classes("w-full")
                    .props("outlined autogrow input-class=th-mono " + tid("tags-edit"))
                )
                ui.label("String values; keys left out are removed.").classes(
                    "text-xs text-slate-500"
                )
                ui.button("Save tags", icon="sell", on_click=self.save_tags).props(
                    "unelevated " + tid("save-tags")
                )
                self.tags_problem = (
                    ui.label().classes("text-negative text-sm").props(tid("tags-problem"))
                )

    def _block(self, title: str, test_id: str) -> ui.label:
        with ui.column().classes("gap-1 min-w-0"):
            ui.label(title).classes("text-sm font-medium text-slate-600")
            return (
                ui.label("{}")
                .classes(
                    "th-mono th-json whitespace-pre text-xs bg-slate-50 border border-slate-200 "
                    "rounded-md p-3 w-full min-h-[5rem]"
                )
                .props(tid(test_id))
            )

    # ------------------------------------------------------------ loading

    async def load(self) -> None:
        try:
            doc = await self.ctx.api.images.document(self.pid, self.name)
        except NotFound as exc:
            if exc.err_code != 167:
                raise
            doc = None
            device = await self.ctx.api.devices.get_device(self.pid, self.name)
            self.tags = dict(device.tags)
        if doc is not None:
            self.tags = dict(doc.get("tags", {}))
            props = doc["properties"]
            self._show(props["version"], props["state"], props.get("timestamp"))
            if self.edits:
                self.desired_edit.set_value(fmt.pretty(props["state"].get("desired", {})))
        else:
            self.version = None
            self.caption.set_text("This device has no image yet.")
            if self.create_button is not None:
                self.create_button.set_visibility(True)
        if self.edits:
            self.tags_edit.set_value(fmt.pretty(self.tags))

    def _show(self, version: int, state: dict[str, Any], timestamp: int | None = None) -> None:
        self.version = version
        if self.create_button is not None:
            self.create_button.set_visibility(False)
        when = f" · changed {fmt.when(timestamp * 1000)}" if timestamp else ""
        self.caption.set_text(f"Version {version}{when}")
        self.desired.set_text(fmt.pretty(state.get("desired", {})))
        self.reported.set_text(fmt.pretty(state.get("reported", {})))
        self.delta.set_text(fmt.pretty(state.get("delta", {})))

    def apply(self, events: list[Event]) -> None:
        changes = [e for e in events if isinstance(e, ImageChanged)]
        if changes:
            last = max(changes, key=lambda e: e.version)
            if self.version is None or last.version >= self.version:
                self._show(last.version, dict(last.state), last.ts // 1000)

    # ------------------------------------------------------------ changes

    async def create(self) -> None:
        try:
            doc = await self.ctx.api.images.create(self.pid, self.name)
        except ThingsHubError as exc:
            ui.notify(fmt.error(exc), type="negative")
            return
        props = doc["properties"]
        self._show(props["version"], props["state"], props.get("timestamp"))

    async def apply_desired(self) -> None:
        self.desired_problem.set_text("")
        try:
            desired = _json_object(self.desired_edit.value, "desired")
            version = self.version if self.pin.value else None
            doc = await self.ctx.api.images.patch(
                self.pid, self.name, desired=desired, version=version
            )
        except ThingsHubError as exc:
            self.desired_problem.set_text(fmt.error(exc))
            return
        props = doc["properties"]
        self._show(props["version"], props["state"], props.get("timestamp"))
        delta = props["state"].get("delta")
        online = self.ctx.api.presence.is_online(self.pid, self.name)
        if delta and online:
            ui.notify("Desired changed; the delta was sent to the device", type="positive")
        elif delta:
            ui.notify("Desired changed; the device gets the delta when it subscribes", type="info")
        else:
            ui.notify("Desired changed; the device already reports it", type="positive")

    async def save_tags(self) -> None:
        self.tags_problem.set_text("")
        try:
            new = _json_object(self.tags_edit.value, "tags")
            patch = tags_patch(self.tags, new)
            if patch:
                doc = await self.ctx.api.images.patch(self.pid, self.name, tags=patch)
                self.tags = dict(doc.get("tags", {}))
        except ThingsHubError as exc:
            self.tags_problem.set_text(fmt.error(exc))
            return
        self.tags_edit.set_value(fmt.pretty(self.tags))
        ui.notify("Tags saved", type="positive")
