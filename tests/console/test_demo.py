"""`thingshub demo` in a real headless Chromium: one command, and soon after it
prints the console's address (its start, for a user) the overview shows every
device online and messages coming in.

On a quiet machine that takes a few seconds; the bound here is 30 s, as the suite
runs four workers on two cores beside it: there, once, 28 of the 36 devices were
registered at 10 s. A demo that never got there, or a fleet that stalls, fails."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.console.conftest import VIEWPORT

CONSOLE = re.compile(r"ThingsHub demo ready: console at (http://\S+/console/)")
KEY = re.compile(r"API key: (\S+)")
#: Seconds from the printed address to every device shown online (see above).
BOUND = 30


def test_the_demo_shows_live_devices_within_thirty_seconds(browser: Any, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "thingshub",
            "demo",
            "--data-dir",
            str(tmp_path / "demo"),
            "--http-port",
            "0",
            "--mqtt-port",
            "0",
            "--devices",
            "12",
            "--duration",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    url = key = None
    try:
        while key is None:
            line = proc.stdout.readline()
            if not line:
                pytest.fail("demo ended before printing its key:\n" + "".join(lines))
            lines.append(line)
            if m := CONSOLE.search(line):
                url = m.group(1)
            if m := KEY.search(line):
                key = m.group(1)
        assert url is not None
        # The demo has started: its address is printed, a user can open the console now.
        start = time.monotonic()
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        page.goto(url + "login")
        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_test_id("page-title").wait_for()
        page.goto(url)

        def tile(label: str) -> Any:
            card = page.locator(".th-card").filter(has=page.get_by_text(label, exact=True))
            return card.locator(".text-2xl").first

        left = max(0.1, BOUND - (time.monotonic() - start))
        expect(tile("devices")).to_have_text("36", timeout=left * 1000)
        left = max(0.1, BOUND - (time.monotonic() - start))
        expect(tile("online")).to_have_text("36", timeout=left * 1000)
        left = max(0.1, BOUND - (time.monotonic() - start))
        expect(tile("messages in / s")).not_to_have_text(
            re.compile(r"^(—|0\.00)$"), timeout=left * 1000
        )
        assert time.monotonic() - start < BOUND
        context.close()
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    out = "".join(lines) + out
    assert proc.returncode == 0, out
    assert "ThingsHub demo stopped" in out and "Traceback" not in out
