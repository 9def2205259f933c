"""The frame every console page shares: theme, header with navigation, content column,
and the small building blocks pages repeat (cards with titles, stat tiles, chips).

Why one module: the pages look alike only if they are built from the same parts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from nicegui import ui

#: Where the console is mounted on the HTTP app.
MOUNT = "/console"

NAV = [
    ("overview", "Overview", "/", "space_dashboard"),
    ("products", "Products", "/products", "category"),
    ("devices", "Devices", "/devices", "developer_board"),
    ("ota", "OTA", "/ota", "system_update_alt"),
]

_CSS = """
body { background: #f1f5f9; }
.th-card {
  border-radius: 12px;
  box-shadow: 0 1px 2px rgba(15,23,42,.06), 0 1px 3px rgba(15,23,42,.08);
}
.th-nav .q-btn { text-transform: none; font-weight: 500; letter-spacing: 0; }
.th-nav .th-active { background: rgba(255,255,255,.14); }
.th-table .q-table__top { padding: 0; }
.th-table thead th { font-weight: 600; color: #475569; background: #f8fafc; }
.th-mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.th-json { max-height: 18rem; overflow: auto; }
"""


def tid(name: str) -> str:
    """Props giving an element a `data-testid` (what the browser tests look for)."""
    return f'data-testid="{name}"'


def apply_theme() -> None:
    ui.colors(
        primary="#0f766e",
        secondary="#334155",
        accent="#f59e0b",
        positive="#16a34a",
        negative="#dc2626",
        warning="#d97706",
        info="#0284c7",
    )
    ui.add_css(_CSS)


@contextmanager
def frame(active: str, title: str, subtitle: str | None = None) -> Iterator[ui.column]:
    """Header with navigation, then a centered column for the page's content."""
    apply_theme()
    with ui.header().classes("bg-slate-900 text-white items-center px-6 py-2 gap-6"):
        with ui.link(target="/").classes("row items-center gap-2 no-underline text-white"):
            ui.icon("hub", size="1.7rem").classes("text-teal-300")
            ui.label("ThingsHub").classes("text-lg font-semibold tracking-wide")
        with ui.row().classes("th-nav gap-1"):
            for key, label, path, icon in NAV:
                button = ui.button(label, icon=icon, on_click=lambda p=path: ui.navigate.to(p))
                button.props("flat dense no-caps color=white").classes("px-3")
                if key == active:
                    button.classes("th-active")
                button.props(tid(f"nav-{key}"))
        ui.space()
        ui.button("Sign out", icon="logout", on_click=lambda: ui.navigate.to("/logout")).props(
            "flat dense no-caps color=white"
        ).props(tid("logout"))
    with ui.column().classes("w-full max-w-screen-xl mx-auto px-6 py-6 gap-5") as main:
        with ui.column().classes("gap-0"):
            ui.label(title).classes("text-2xl font-semibold text-slate-800").props(
                tid("page-title")
            )
            if subtitle:
                ui.label(subtitle).classes("text-sm text-slate-500")
        yield main


@contextmanager
def card(title: str | None = None, icon: str | None = None) -> Iterator[ui.card]:
    """A white card with an optional title row; the content goes below it."""
    with ui.card().classes("th-card w-full p-5 gap-3") as c:
        if title:
            with ui.row().classes("items-center gap-2"):
                if icon:
                    ui.icon(icon, size="1.3rem").classes("text-primary")
                ui.label(title).classes("text-base font-semibold text-slate-700")
        yield c


def stat(label: str, value: str, icon: str, color: str = "text-primary") -> ui.label:
    """A tile with a big number; returns the number's label, to update it."""
    with (
        ui.card().classes("th-card p-4 min-w-[11rem] flex-1"),
        ui.row().classes("items-center gap-4 no-wrap"),
    ):
        ui.icon(icon, size="2.2rem").classes(color)
        with ui.column().classes("gap-0"):
            number = ui.label(value).classes("text-2xl font-semibold text-slate-800")
            ui.label(label).classes("text-xs uppercase tracking-wide text-slate-500")
    return number


def column(name: str, label: str, align: str = "left") -> dict[str, Any]:
    """A table column whose field has the column's name."""
    return {"name": name, "label": label, "field": name, "align": align}


#: A table showing all its rows, without Quasar's own paging (pages page by cursor).
TABLE_PROPS = "flat dense hide-pagination :pagination='{rowsPerPage: 0}' "


def table(columns: list[dict[str, Any]], row_key: str, test_id: str) -> ui.table:
    """An empty table in the console's style; rows are set by whoever loads them."""
    return (
        ui.table(columns=columns, rows=[], row_key=row_key)
        .classes("w-full th-table")
        .props(TABLE_PROPS + tid(test_id))
    )


def presence_chip(online: bool) -> ui.chip:
    chip = ui.chip().props("dense square")
    set_presence(chip, online)
    return chip


def set_presence(chip: ui.chip, online: bool) -> None:
    chip.set_text("online" if online else "offline")
    chip.props(f"color={'positive' if online else 'grey-6'} text-color=white")


def empty(text: str) -> ui.label:
    return ui.label(text).classes("text-sm text-slate-400 italic")
