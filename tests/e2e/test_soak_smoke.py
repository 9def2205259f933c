"""bench/soak.py, shortened to a smoke run: every kind of its traffic flows through a
real `thingshub serve` for a few seconds with no error, and it samples and judges.

The one-hour soak is a documented command (bench/README.md); this only keeps the
script working. Its verdict is not asserted: a few seconds on a shared machine say
nothing about a trend, and the rule needs samples after the warm-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_soak_smoke_run_has_every_traffic_and_no_error(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    argv = [sys.executable, str(ROOT / "bench" / "soak.py"), "--json", str(out)]
    argv += ["--duration", "8", "--interval", "1", "--warmup", "1", "--telemetry", "5"]
    argv += ["--images", "3", "--commands", "2", "--churn", "3"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}  # this tree's thingshub, from bench/
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=120, cwd=ROOT / "bench", env=env
    )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["errors"] == {}, data["examples"]
    assert data["exit_code"] == 0
    counts = data["counts"]
    assert all(counts[k] > 0 for k in ("telemetry", "images", "commands", "churn")), counts
    assert counts["downloads"] > 0 and counts["stream_msgs"] > 0, counts
    samples = data["samples"]
    assert len(samples) >= 6
    assert all(s["rss_mb"] > 0 and s["fds"] > 0 and s["lag_ms"] > 0 for s in samples)
    assert all(0 < s["sqlite_mb"] < s["sqlite_limit_mb"] == 80 for s in samples)
    assert all(
        abs(s["rss_less_sqlite_mb"] - (s["rss_mb"] - s["sqlite_mb"])) <= 0.11 for s in samples
    )
    assert "verdict: " in proc.stdout
