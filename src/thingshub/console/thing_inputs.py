"""Inputs suited to a thing model's data types, forms built from a list of params, and
the box showing how a call to a device ended.

Rules:
- Each type gets its widget: numbers a number input with the model's bounds
  (integers in steps of 1), an enum a select of its labels, a bool a switch, a
  string a text input limited to its length, a date a number of ms, a bitMap a
  number from 0; a struct or an array a JSON text (thing_text reads them all).
- A widget carries `data-testid` = the given id, so a page and its tests name it.
- A call's outcome is shown as OneNET says it: the device's `code`, `msg` and
  `data`, or the platform's error sentence with its `err_code` (308 offline,
  1022 not listening, 306 no answer in time, 304 an unusable answer, 302 /
  309 / 313 refused before sending).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from nicegui import ui

from thingshub.console import fmt
from thingshub.console.layout import tid
from thingshub.console.thing_text import JS_SAFE, bounds, range_text, read_value
from thingshub.core import thingmodel
from thingshub.core.commands import MAX_TIMEOUT, MIN_TIMEOUT
from thingshub.core.errors import ThingsHubError
from thingshub.core.thingmodel import DataType, Param

#: A short word for each error code of a call (OneNET's).
OUTCOMES: Final = {
    thingmodel.DEVICE_NOT_ONLINE: "offline",
    thingmodel.SUBSCRIPTION_NOT_EXIST: "not listening",
    thingmodel.TIMEOUT: "timeout",
    thingmodel.RESP_ERROR: "bad answer",
}
DEFAULT_TIMEOUT: Final = 5


class ValueInput:
    """One input for a value of `data_type`; `read()` gives the JSON value."""

    def __init__(
        self, data_type: DataType, label: str, test_id: str, where: str | None = None
    ) -> None:
        self.data_type = data_type
        self.where = where or label  # what an error names
        kind = data_type.type
        hint = range_text(data_type)
        self.widget: ui.element
        if kind == "enum":
            options = {k: f"{k}: {v}" for k, v in data_type.enum.items()}
            self.widget = ui.select(options, value=next(iter(options)), label=label)
        elif kind == "bool":
            self.widget = ui.switch(label)
        elif kind == "string":
            self.widget = ui.input(label)
            if data_type.length:
                self.widget.props["maxlength"] = data_type.length
                self.widget.props["counter"] = True
        elif kind in ("struct", "array"):
            self.widget = ui.textarea(f"{label} (JSON)").props("autogrow input-class=th-mono")
        else:
            self.widget = self._number(data_type, label)
        if kind not in ("bool", "enum", "struct") and hint not in ("—", "text"):
            self.widget.props["hint"] = hint  # set, not parsed: a unit may hold quotes
        self.widget.props("outlined dense " + tid(test_id)).classes("min-w-[12rem]")

    @staticmethod
    def _number(data_type: DataType, label: str) -> ui.number:
        kind = data_type.type
        low, high = bounds(data_type)
        if kind in ("date", "bitMap"):
            low = 0
        if kind == "bitMap" and data_type.length:
            high = 2**data_type.length - 1
        integral = kind in ("int32", "int64", "date", "bitMap")
        number = ui.number(
            label,
            min=low if low is not None and abs(low) < JS_SAFE else None,
            max=high if high is not None and abs(high) < JS_SAFE else None,
            step=1 if integral else None,
            precision=0 if integral else None,
        )
        if data_type.unit:
            number.props["suffix"] = data_type.unit
        return number

    def read(self) -> object:
        return read_value(self.data_type, getattr(self.widget, "value", None), self.where)


class ParamsForm:
    """Inputs for a list of params (a service's input); `read()` gives the object."""

    def __init__(self, params: Iterable[Param], test_prefix: str) -> None:
        self.inputs: dict[str, ValueInput] = {}
        for param in params:
            label = param.identifier if param.name == param.identifier else param.name
            self.inputs[param.identifier] = ValueInput(
                param.data_type, label, f"{test_prefix}-{param.identifier}", param.identifier
            )

    def read(self) -> dict[str, Any]:
        return {identifier: field.read() for identifier, field in self.inputs.items()}


def timeout_input(test_id: str) -> ui.number:
    return (
        ui.number("Timeout (s)", value=DEFAULT_TIMEOUT, min=MIN_TIMEOUT, max=MAX_TIMEOUT, step=1)
        .classes("w-28")
        .props("outlined dense " + tid(test_id))
    )


def timeout_of(field: ui.number) -> object:
    value = field.value
    if value is None:
        return None
    return int(value) if float(value).is_integer() else value


class CallResult:
    """How a call ended: a badge (the device's code, or why there is no answer), the
    call's ids, and the text (msg and data, or the error)."""

    def __init__(self, test_prefix: str) -> None:
        with ui.column().classes("w-full gap-1") as self.box:
            with ui.row().classes("items-center gap-2"):
                self.badge = ui.badge().props(tid(f"{test_prefix}-status"))
                self.ids = ui.label().classes("text-xs text-slate-400 th-mono")
            self.text = (
                ui.label()
                .classes(
                    "th-mono whitespace-pre-wrap break-all text-sm bg-slate-50 border "
                    "border-slate-200 rounded-md p-3 w-full"
                )
                .props(tid(f"{test_prefix}-answer"))
            )
        self.box.set_visibility(False)

    def waiting(self) -> None:
        self.box.set_visibility(True)
        self._badge("waiting", "info")
        self.ids.set_text("")
        self.text.set_text("…")

    def answered(self, answer: Mapping[str, Any]) -> None:
        """The service's answer: {call_id, id, code, msg, data?}, or {call_id} alone when
        an asynchronous service was only published."""
        if set(answer) == {"call_id"}:
            self._badge("sent", "info")
            self.ids.set_text(f"call {answer['call_id']}")
            self.text.set_text(
                "Published. The device answers later; its answer completes the call in the "
                "command history."
            )
            return
        code = answer.get("code")
        self._badge(f"code {code}", "positive" if code == thingmodel.SUCCESS else "warning")
        self.ids.set_text(f"call {answer.get('call_id')} · id {answer.get('id')}")
        lines = [f"msg: {answer.get('msg') if answer.get('msg') is not None else '—'}"]
        if "data" in answer:
            lines.append("data: " + fmt.pretty(answer.get("data")))
        self.text.set_text("\n".join(lines))

    def failed(self, exc: ThingsHubError) -> None:
        word = OUTCOMES.get(exc.err_code, "refused") if isinstance(exc.err_code, int) else "refused"
        self._badge(word, "warning" if word == "timeout" else "negative")
        self.ids.set_text("")
        self.text.set_text(fmt.error(exc))

    def _badge(self, text: str, color: str) -> None:
        self.badge.set_text(text)
        self.badge.props(f"color={color}")
