"""`thingshub firmware ...` and `thingshub ota ...` as an operator runs them: a real
`serve` process and the CLI in subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_serve import Server, start_server, stop


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    env = {"THINGSHUB_FIRMWARE_MAX_SIZE": "100000", "THINGSHUB_CONSOLE": "false"}
    proc, lines = start_server(tmp_path / "data", env=env)
    srv = Server(proc, tmp_path / "data", lines)
    yield srv
    if proc.poll() is None:
        code, out = stop(proc)
        assert code == 0, out


def test_upload_create_show_watch_cancel(server: Server, tmp_path: Path) -> None:
    with server.api() as api:
        api.post("/api/v1/products", json={"id": "gh", "name": "Greenhouse"})
        for name in ("s1", "s2"):
            assert api.post("/api/v1/products/gh/devices", json={"name": name}).status_code == 201
    image = tmp_path / "greenhouse fw.bin"
    data = os.urandom(70_000)
    image.write_bytes(data)

    out = server.cli(
        "firmware", "upload", "gh", str(image), "--version", "2.1.0", "--module", "MCU",
        "--ext-data", '{"force": true}', "--json",
    ).stdout  # fmt: skip
    fw = json.loads(out)
    assert fw["md5"] == hashlib.md5(data).hexdigest()
    assert fw["sha256"] == hashlib.sha256(data).hexdigest()
    assert fw["size"] == len(data) and fw["name"] == "greenhouse fw.bin"
    assert fw["ext_data"] == {"force": True}
    listed = server.cli("firmware", "list", "gh").stdout
    assert fw["id"] in listed and "2.1.0" in listed

    too_big = tmp_path / "big.bin"
    too_big.write_bytes(b"x" * 100_001)
    refused = server.cli(
        "firmware", "upload", "gh", str(too_big), "--version", "9", "--module", "MCU", check=False
    )
    assert refused.returncode == 1 and "at most 100000 bytes" in refused.stderr
    bad = server.cli(
        "firmware", "upload", "gh", str(image), "--version", "9", "--module", "MCU",
        "--ext-data", "[1]", check=False,
    )  # fmt: skip
    assert bad.returncode == 1 and "JSON object" in bad.stderr
    dup = server.cli(
        "firmware", "upload", "gh", str(image), "--version", "2.1.0", "--module", "MCU",
        check=False,
    )  # fmt: skip
    assert dup.returncode == 1 and "already exists" in dup.stderr and "409" in dup.stderr

    created = json.loads(
        server.cli(
            "ota", "create", "gh", fw["id"], "--device", "s1", "--device", "s2",
            "--rollout", "60", "--timeout", "600", "--json",
        ).stdout
    )  # fmt: skip
    task_id = created["id"]
    assert created["status"] == "RUNNING"
    assert [d["name"] for d in created["devices"]] == ["s1", "s2"]
    assert created["rollout_per_minute"] == 60 and created["device_timeout_s"] == 600
    neither = server.cli("ota", "create", "gh", fw["id"], check=False)
    assert neither.returncode == 1 and "--all" in neither.stderr

    shown = server.cli("ota", "show", "gh", task_id).stdout
    assert task_id in shown and "RUNNING" in shown and "QUEUED" in shown and "s2" in shown
    assert "60 per minute" in shown
    tids = [d["tid"] for d in created["devices"]]
    assert tids[1] == tids[0] + 1  # OneNET's task ids, one a device, shown with each
    assert "tid" in shown and f" {tids[1]} " in shown

    env = {**os.environ, "THINGSHUB_DATA_DIR": str(server.data_dir), "COLUMNS": "200"}
    watcher = subprocess.Popen(
        [sys.executable, "-m", "thingshub", "ota", "watch", "gh", task_id, "--interval", "0.2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        canceled = server.cli("ota", "cancel", "gh", task_id).stdout
        assert "CANCELED" in canceled
        out, err = watcher.communicate(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
    assert watcher.returncode == 0, err
    assert f"task {task_id} CANCELED: 2 CANCELED" in out
    tasks = server.cli("ota", "list", "gh").stdout
    assert task_id in tasks and "CANCELED" in tasks
