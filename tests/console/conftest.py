"""The console in a real headless Chromium, against `thingshub serve` in a subprocess.

- NiceGUI keeps process-wide state, so the console never runs in the test
  process: `console_server` starts `thingshub serve` (console on) once for
  the module, on a data dir seeded with a product of 100,000 devices, reads
  its output all along, and at the end stops it and fails if it exited
  uncleanly or logged a warning, an error or a traceback.
- The browser is the Debian `chromium` (/usr/bin/chromium, installed by
  .ci/run), driven by Playwright; Playwright never downloads a browser here.
  A missing chromium fails the tests with a clear message: CI installs it,
  so a skip would only hide a broken setup.
- `console` is a signed-in browser page; `shoot` saves a screenshot into the
  test's temporary dir, or into `$THINGSHUB_SCREENSHOTS` when that is set:
  `scripts/screenshots` sets it to docs/screenshots/ (the README links them),
  so the docs change only when someone means them to.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import default_tls
from thingshub.core.model import Product
from thingshub.storage import open_storage


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every console test in one xdist group: with `--dist loadgroup` they run on one
    worker, which starts each module's server (the seeded fleet, `serve`, the
    sign-in) and Chromium once. scripts/test spreads tests by xdist's default,
    which ignores groups (its comment says why)."""
    here = Path(__file__).parent
    for item in items:
        if item.path.parent == here:
            item.add_marker(pytest.mark.xdist_group("console"))


CHROMIUM = Path(os.environ.get("THINGSHUB_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
READY = re.compile(r"ThingsHub ready: MQTT on [\d.]+:(\d+), HTTP on http://[\d.]+:(\d+)")
#: Lines of the server's output that fail the run (its log format is "<time> LEVEL name: ...").
BAD_LINE = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback")
#: NiceGUI's notices of its own timing (a page not built within 3 s, a binding
#: propagation over 10 ms) measure the machine, not a fault: on a loaded CI
#: machine they came with nothing else wrong. Where the console promises a time
#: (the first page of 100,000 devices in 5 s, the demo live in 10 s), its tests
#: measure it themselves.
TIMING_NOTICE = re.compile(
    r"WARNING nicegui: (Response for \S+ not ready after [\d.]+ seconds"
    r"|binding propagation for \d+ active links took [\d.]+ s)$"
)
FLEET = "fleet"
FLEET_SIZE = 100_000
VIEWPORT = {"width": 1400, "height": 900}


def fleet_name(i: int) -> str:
    return f"dev{i:06d}"


def seed_fleet(data_dir: Path, count: int) -> None:
    """A product `fleet` with `count` devices, written straight into the SQLite file:
    through the service it would take minutes (one durable commit a device), and the
    console's paging is what is under test, not registration."""
    data_dir.mkdir(parents=True, exist_ok=True)

    async def create_schema() -> None:
        storage = open_storage(None, data_dir)
        await storage.open()
        await storage.products.add(Product(FLEET, "Fleet of 100k", int(time.time() * 1000)))
        await storage.close()

    # In a thread of its own: Playwright's sync API may already run a loop on this one.
    worker = threading.Thread(target=asyncio.run, args=(create_schema(),))
    worker.start()
    worker.join(60)
    (db_path,) = [p for p in data_dir.iterdir() if p.suffix in (".db", ".sqlite", ".sqlite3")]
    now = int(time.time() * 1000)
    rows = (
        (i + 1, FLEET, fleet_name(i), f"{FLEET}.{fleet_name(i)}", "a2V5" * 11,
         f"fleet-user-{i}", "0" * 64, now, "{}", "enabled")
        for i in range(count)
    )  # fmt: skip
    with sqlite3.connect(db_path) as conn:
        conn.executemany(
            "INSERT INTO devices (id, product_id, name, device_number, key, username,"
            " password_hash, created_at, tags, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    conn.close()


class ConsoleServer:
    """`thingshub serve` with the console, its output collected by a thread."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "thingshub", "serve", "--data-dir", str(data_dir),
             "--mqtt-port", "0", "--http-port", "0", "--log-level", "info"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "THINGSHUB_CONSOLE": "1"},
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, name="serve-output", daemon=True)
        self._reader.start()
        if not self._ready.wait(60):
            self.proc.kill()
            self.proc.wait(10)
            pytest.fail("serve did not become ready:\n" + "\n".join(self.lines))
        ports = json.loads((data_dir / "ports.json").read_text())
        self.mqtt_port = int(ports["mqtt"])
        self.http_port = int(ports["http"])
        self.api_key = (data_dir / "api-key").read_text().strip()
        self.base_url = f"http://127.0.0.1:{self.http_port}"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if READY.search(line):
                self._ready.set()

    def api(self) -> httpx.Client:
        """A client of the HTTP API; the caller closes it (use it in a `with`)."""
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=30,
            verify=default_tls(),
        )

    def bus_handlers(self) -> int:
        text = httpx.get(f"{self.base_url}/metrics", timeout=10).text
        match = re.search(r"^thingshub_bus_handlers (\S+)$", text, re.M)
        assert match, "thingshub_bus_handlers is missing from /metrics"
        return int(float(match.group(1)))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        finally:
            self._reader.join(10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        return code


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    data_dir = tmp_path_factory.mktemp("console") / "data"
    seed_fleet(data_dir, FLEET_SIZE)
    server = ConsoleServer(data_dir)
    try:
        yield server
    finally:
        code = server.stop()
        output = "\n".join(server.lines)
        assert code == 0, f"serve exited with {code}:\n{output}"
        bad = [
            i
            for i, line in enumerate(server.lines)
            if BAD_LINE.search(line) and not TIMING_NOTICE.search(line)
        ]
        # Each with the lines that follow it: a traceback's first line says nothing.
        told = ["\n".join(server.lines[i : i + 40]) for i in bad]
        assert not bad, "the server logged problems:\n" + "\n---\n".join(told)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: install the Debian packages `chromium` and "
            "`chromium-driver` (`apt-get install -y chromium chromium-driver`; .ci/run does), "
            "or point THINGSHUB_TEST_CHROMIUM at a Chromium binary",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def sign_in(page: Any, server: ConsoleServer) -> None:
    page.goto(f"{server.base_url}/console/login")
    page.get_by_label("API key").fill(server.api_key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_test_id("page-title").wait_for()


@pytest.fixture(scope="module")
def session(browser: Any, console_server: ConsoleServer) -> dict[str, Any]:
    """The cookies of one sign-in, reused by every `console` page (signing in is
    tested on its own)."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        sign_in(context.new_page(), console_server)
        state: dict[str, Any] = context.storage_state()
    finally:
        context.close()
    return state


@pytest.fixture
def console(browser: Any, session: dict[str, Any]) -> Iterator[Any]:
    """A signed-in page of its own browser context, 1400x900."""
    context = browser.new_context(viewport=VIEWPORT, storage_state=session)
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def shoot(tmp_path: Path) -> Callable[..., Path]:
    """shoot(page, name, *parts): a full-page screenshot, <name>.png (see the module's
    rules); with parts (locators), only the area holding them, with a margin."""
    target = Path(os.environ.get("THINGSHUB_SCREENSHOTS") or tmp_path / "screenshots")

    def take(page: Any, name: str, *parts: Any) -> Path:
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"{name}.png"
        page.wait_for_load_state("networkidle")
        page.mouse.move(0, 0)  # no hover effects or tooltips
        page.evaluate("window.scrollTo(0, 0)")  # the fixed header where it belongs
        page.wait_for_timeout(400)  # charts draw their first frame
        clip = _around([part.bounding_box() for part in parts]) if parts else None
        page.screenshot(path=str(path), full_page=True, animations="disabled", clip=clip)
        assert path.read_bytes().startswith(b"\x89PNG"), f"{path} is not a PNG"
        return path

    return take


def _around(boxes: list[dict[str, float] | None], margin: float = 16) -> dict[str, float]:
    """The rectangle holding every box (page coordinates: the page is scrolled to the top)."""
    assert all(boxes), "a part to shoot is not on the page"
    shown = [b for b in boxes if b]
    left = min(b["x"] for b in shown) - margin
    top = min(b["y"] for b in shown) - margin
    right = max(b["x"] + b["width"] for b in shown) + margin
    bottom = max(b["y"] + b["height"] for b in shown) + margin
    return {"x": max(left, 0), "y": max(top, 0), "width": right - left, "height": bottom - top}
