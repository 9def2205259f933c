"""Previous / next paging over keyset cursors.

Why: lists of devices can hold 100,000 entries; a cursor names where the next
page starts, so each page is one indexed query of `limit` rows, wherever it
is. Going back needs the cursors of the pages before, kept in a stack; no
page count is shown, because counting is exactly what must not happen.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nicegui import ui

from thingshub.console.layout import tid


class Pager:
    """The row under a table: "page N", previous, next. Call `show` after each load."""

    def __init__(self) -> None:
        self.cursor: str | None = None
        self._stack: list[str | None] = []
        self._next: str | None = None
        self.on_move: Callable[[], Awaitable[None]] | None = None
        with ui.row().classes("w-full items-center justify-end gap-2"):
            self._label = ui.label().classes("text-sm text-slate-500").props(tid("page-label"))
            self._prev = ui.button(icon="chevron_left", on_click=self.previous).props(
                "flat round dense " + tid("page-prev")
            )
            self._nextb = ui.button(icon="chevron_right", on_click=self.next).props(
                "flat round dense " + tid("page-next")
            )

    def reset(self) -> None:
        self.cursor = None
        self._stack.clear()

    def show(self, next_cursor: str | None, rows: int) -> None:
        self._next = next_cursor
        page = len(self._stack) + 1
        self._label.set_text(f"page {page}" + ("" if rows else " · nothing here"))
        self._prev.set_enabled(bool(self._stack))
        self._nextb.set_enabled(next_cursor is not None)

    async def next(self) -> None:
        if self._next is None:
            return
        self._stack.append(self.cursor)
        self.cursor = self._next
        await self._move()

    async def previous(self) -> None:
        if not self._stack:
            return
        self.cursor = self._stack.pop()
        await self._move()

    async def _move(self) -> None:
        if self.on_move is not None:
            await self.on_move()
