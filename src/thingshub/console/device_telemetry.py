"""A device's telemetry: latest values, and one chart per numeric key over a time range.

Rules:
- History is aggregated in the database: a range is cut into about BUCKETS
  buckets of a round interval (`interval_for`) and each bucket is the average
  of its points (`HistoryService.telemetry(..., interval, agg="avg")`), so a
  chart costs the same for a quiet device and for one reporting every 10 ms.
- Bucket boundaries are multiples of the interval, so they stay put while the
  range slides, and a live update can ask the database for just the buckets
  that changed: points arriving from the bus re-read their own buckets
  (exactly what a reload would show), never the whole range.
- Charts are for numbers; other values appear in the latest values only.
"""

from __future__ import annotations

from typing import Any

from nicegui import ui

from thingshub.console import fmt
from thingshub.console.context import ConsoleContext
from thingshub.console.layout import card, empty, tid
from thingshub.core.events import Event, TelemetryReceived

#: Buckets aimed at in one chart (a chart is about as many pixels wide).
BUCKETS = 300
MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000
RANGES: dict[str, int] = {
    "15 min": 15 * MINUTE,
    "1 h": HOUR,
    "6 h": 6 * HOUR,
    "24 h": DAY,
    "7 d": 7 * DAY,
    "30 d": 30 * DAY,
}
DEFAULT_RANGE = "1 h"
#: Round bucket widths, in ms.
INTERVALS = [
    s * 1000
    for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)
] + [DAY]
#: Buckets up to which a chart marks each one with a dot (a lone bucket is then visible).
SYMBOLS_UP_TO = 60
PALETTE = ["#0f766e", "#0284c7", "#d97706", "#7c3aed", "#db2777", "#16a34a", "#475569"]


def interval_for(range_ms: int) -> int:
    """The smallest round interval giving at most about BUCKETS buckets."""
    target = range_ms / BUCKETS
    return next((i for i in INTERVALS if i >= target), INTERVALS[-1])


def window(range_ms: int, now: int) -> tuple[int, int, int]:
    """(start, end, interval) of a range ending now: start on a bucket boundary, end
    past the bucket now is in (so the newest bucket is whole)."""
    interval = interval_for(range_ms)
    start = (now - range_ms) // interval * interval
    end = (now // interval + 1) * interval
    return start, end, interval


def is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _chart_options(key: str, color: str, start: int, end: int) -> dict[str, Any]:
    return {
        "animation": False,
        "title": {"text": key, "left": 8, "top": 4, "textStyle": {"fontSize": 13}},
        "grid": {"left": 52, "right": 18, "top": 36, "bottom": 28},
        "tooltip": {"trigger": "axis"},
        "xAxis": {"type": "time", "min": start, "max": end},
        "yAxis": {"type": "value", "scale": True},
        "series": [
            {
                "name": key,
                "type": "line",
                "showSymbol": True,
                "symbol": "circle",
                "symbolSize": 5,
                "lineStyle": {"width": 2},
                "itemStyle": {"color": color},
                "areaStyle": {"opacity": 0.08},
                "data": [],
            }
        ],
    }


class TelemetryPanel:
    """The latest values card and the charts card of the device page."""

    def __init__(self, ctx: ConsoleContext, pid: str, name: str, latest_box: ui.element) -> None:
        self.ctx = ctx
        self.pid = pid
        self.name = name
        self.range_label = DEFAULT_RANGE
        self.latest: dict[str, dict[str, Any]] = {}
        self.charts: dict[str, ui.echart] = {}
        with latest_box:
            self.latest_table = (
                ui.table(
                    columns=[
                        {"name": "key", "label": "Key", "field": "key", "align": "left"},
                        {"name": "value", "label": "Value", "field": "value", "align": "left"},
                        {"name": "at", "label": "Reported", "field": "at", "align": "left"},
                    ],
                    rows=[],
                    row_key="key",
                )
                .classes("w-full th-table")
                .props("flat dense hide-pagination :pagination='{rowsPerPage: 0}' " + tid("latest"))
            )
            self.latest_empty = empty("No telemetry yet.")
        with card("Telemetry", "show_chart"):
            with ui.row().classes("w-full items-center"):
                self.caption = ui.label().classes("text-sm text-slate-500")
                ui.space()
                ui.toggle(
                    list(RANGES), value=DEFAULT_RANGE, on_change=lambda e: self.set_range(e.value)
                ).props("dense unelevated toggle-color=primary " + tid("range"))
            self.grid = ui.element("div").classes("w-full grid grid-cols-1 lg:grid-cols-2 gap-4")
            self.charts_empty = empty("Charts appear here once the device reports numbers.")

    # ------------------------------------------------------------ loading

    async def load(self) -> None:
        latest = await self.ctx.api.history.latest(self.pid, self.name)
        self.latest = {k: {"ts": v["ts"], "value": v["value"]} for k, v in latest.items()}
        self._show_latest()
        await self._load_charts()

    async def set_range(self, label: str) -> None:
        self.range_label = label
        await self._load_charts()

    async def _load_charts(self) -> None:
        start, end, interval = window(RANGES[self.range_label], fmt.now_ms())
        self.caption.set_text(
            f"Average per {_duration(interval)}, last {self.range_label} (computed in the database)"
        )
        for key in sorted(k for k, v in self.latest.items() if is_number(v["value"])):
            chart = self._chart(key, start, end)
            points = await self._buckets(key, start, end, interval)
            _set_data(chart, points)
            chart.options["xAxis"].update(min=start, max=end)
            chart.update()
        self.charts_empty.set_visibility(not self.charts)

    async def _buckets(self, key: str, start: int, end: int, interval: int) -> list[list[Any]]:
        result = await self.ctx.api.history.telemetry(
            self.pid, self.name, key, start, end, interval=interval, agg="avg"
        )
        points: list[list[Any]] = result["points"]
        return points

    def _chart(self, key: str, start: int, end: int) -> ui.echart:
        chart = self.charts.get(key)
        if chart is None:
            color = PALETTE[len(self.charts) % len(PALETTE)]
            with self.grid:
                chart = (
                    ui.echart(_chart_options(key, color, start, end))
                    .classes("w-full h-64 border border-slate-100 rounded-lg")
                    .props(tid(f"chart-{key}"))
                )
            self.charts[key] = chart
        return chart

    # ------------------------------------------------------------ live

    async def apply(self, events: list[Event]) -> None:
        """New points from the bus: latest values at once, charts by re-reading the buckets
        the points fell in."""
        earliest: dict[str, int] = {}
        for event in events:
            if not isinstance(event, TelemetryReceived):
                continue
            for p in event.points:
                held = self.latest.get(p.key)
                if held is None or p.ts >= held["ts"]:
                    self.latest[p.key] = {"ts": p.ts, "value": p.value}
                if is_number(p.value):
                    earliest[p.key] = min(earliest.get(p.key, p.ts), p.ts)
        if not earliest:
            return
        self._show_latest()
        start, end, interval = window(RANGES[self.range_label], fmt.now_ms())
        for key, first in earliest.items():
            chart = self._chart(key, start, end)
            since = max(start, first // interval * interval)
            if since >= end:
                continue
            fresh = await self._buckets(key, since, end, interval)
            kept = [pt for pt in chart.options["series"][0]["data"] if start <= pt[0] < since]
            _set_data(chart, kept + fresh)
            chart.options["xAxis"].update(min=start, max=end)
            chart.update()
        self.charts_empty.set_visibility(not self.charts)

    def tick(self) -> None:
        """Keep "reported ... ago" current."""
        if self.latest:
            self._show_latest()

    def _show_latest(self) -> None:
        now = fmt.now_ms()
        self.latest_table.rows = [
            {"key": k, "value": fmt.value(v["value"]), "at": f"{fmt.ago(v['ts'], now)}"}
            for k, v in sorted(self.latest.items())
        ]
        self.latest_table.update()
        self.latest_table.set_visibility(bool(self.latest))
        self.latest_empty.set_visibility(not self.latest)


def _set_data(chart: ui.echart, points: list[list[Any]]) -> None:
    series = chart.options["series"][0]
    series["data"] = points
    series["showSymbol"] = len(points) <= SYMBOLS_UP_TO  # dots only where they can be told apart


def _duration(ms: int) -> str:
    if ms % DAY == 0:
        return f"{ms // DAY} d"
    if ms % HOUR == 0:
        return f"{ms // HOUR} h"
    if ms % MINUTE == 0:
        return f"{ms // MINUTE} min"
    return f"{ms // 1000} s"
