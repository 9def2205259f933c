"""`thingshub simulate` against a real `thingshub serve`: it registers the devices it
lacks (and reuses them on a second run), connects them, sends telemetry and events, and
answers the calls made through the API while it runs; every family; `--help`; bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.cli.test_serve import Server, server  # noqa: F401 - the fixture

PRODUCT = "/api/v1/products/sims"


def simulate(srv: Server, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "THINGSHUB_DATA_DIR": str(srv.data_dir), "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "thingshub", "simulate", "--product", "sims", "--no-live"]
    cmd += ["--credentials", str(tmp_path / "sims.json"), *args]
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_online(api: httpx.Client, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = api.get(f"{PRODUCT}/devices", params={"limit": 100})
        if r.status_code == 200:
            items = r.json()["items"]
            if sum(d["connectionState"] == "online" for d in items) >= count:
                return
        time.sleep(0.1)
    pytest.fail(f"fewer than {count} simulated devices came online")


def finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    return out


def test_a_fleet_of_each_family_answers_what_the_api_asks(server: Server, tmp_path: Path) -> None:  # noqa: F811
    with server.api() as api:
        proc = simulate(server, tmp_path, "--devices", "3", "--duration", "5", "--rate", "20")
        wait_online(api, 3)
        r = api.post(f"{PRODUCT}/devices/sim-00001/calls", json={"method": "blink"})
        assert r.status_code == 200 and r.json()["method"] == "blink", r.text
        r = api.put(f"{PRODUCT}/devices/sim-00002/attributes", json={"mode": "eco"})
        assert r.status_code == 200 and r.json()["result"] == 0, r.text
        out = finish(proc)
        assert "simulated 3 devices" in out and "all online in" in out
        assert "2 calls answered" in out and " 0 errors" in out
        latest = api.get(f"{PRODUCT}/devices/sim-00001/telemetry/latest").json()
        assert {"temperature", "humidity"} <= set(latest)

        # Again, as OneNET devices: the same devices (reused, not registered again) and
        # one more; a command answered and a desired change followed.
        proc = simulate(
            server,
            tmp_path,
            "--devices",
            "4",
            "--protocol",
            "onenet",
            "--duration",
            "5",
            "--profile",
            "walk",
        )
        wait_online(api, 4)
        r = api.post(f"{PRODUCT}/devices/sim-00003/commands", content=b"x")
        assert r.status_code == 200 and r.json()["response_text"] == "ok:x", r.text
        r = api.patch(f"{PRODUCT}/devices/sim-00004/image", json={"desired": {"led": "on"}})
        assert r.status_code == 200, r.text
        out = finish(proc)
        assert "simulated 4 devices" in out and " 0 errors" in out
        state = api.get(f"{PRODUCT}/devices/sim-00004/image").json()["properties"]["state"]
        assert state["reported"]["led"] == "on"
        names = [d["name"] for d in api.get(f"{PRODUCT}/devices").json()["items"]]
        assert names == ["sim-00001", "sim-00002", "sim-00003", "sim-00004"]

        proc = simulate(
            server,
            tmp_path,
            "--devices",
            "2",
            "--protocol",
            "thing-model",
            "--duration",
            "4",
            "--mqtt-url",
            f"ws://127.0.0.1:{server.http_port}/mqtt",
        )
        wait_online(api, 2)
        r = api.post(f"{PRODUCT}/devices/sim-00001/services/reboot", json={"soft": True})
        assert r.status_code == 200, r.text
        assert r.json()["data"] == {"rebooted": True, "soft": True}
        out = finish(proc)
        assert "1 calls answered" in out


def test_help_and_bad_input(server: Server, tmp_path: Path) -> None:  # noqa: F811
    shown = server.cli("simulate", "--help").stdout
    for option in (
        "--product",
        "--devices",
        "--protocol",
        "--rate",
        "--duration",
        "--profile",
        "--mqtt-url",
        "--credentials",
        "--url",
        "--api-key",
        "--data-dir",
    ):
        assert option in shown
    bad = server.cli("simulate", "--product", "p", "--protocol", "zigbee", check=False)
    assert bad.returncode == 1 and "--protocol must be one of" in bad.stderr + bad.stdout
    stale = server.cli(
        "simulate",
        "--product",
        "p",
        "--devices",
        "1",
        "--duration",
        "0",
        "--no-live",
        "--credentials",
        str(tmp_path / "one.json"),
    )
    assert "simulated 1 devices" in stale.stdout
    (tmp_path / "one.json").unlink()  # the secrets are gone: the device is of no use
    lost = server.cli(
        "simulate",
        "--product",
        "p",
        "--devices",
        "1",
        "--credentials",
        str(tmp_path / "one.json"),
        check=False,
    )
    assert lost.returncode == 1 and "secrets" in lost.stderr + lost.stdout


def test_a_onenet_fleet_performs_the_ota_task_made_for_it(server: Server, tmp_path: Path) -> None:  # noqa: F811
    with server.api() as api:
        proc = simulate(
            server, tmp_path, "--devices", "2", "--protocol", "onenet", "--duration", "10"
        )
        wait_online(api, 2)
        r = api.post(
            f"{PRODUCT}/firmware",
            files={"file": ("fw.bin", os.urandom(20_000), "application/octet-stream")},
            data={"version": "1.1.0", "module": "MCU"},
        )
        assert r.status_code == 201, r.text
        body = {"firmware_id": r.json()["id"], "devices": ["sim-00001", "sim-00002"]}
        r = api.post(f"{PRODUCT}/ota-tasks", json=body)
        assert r.status_code == 201, r.text
        task_url = f"{PRODUCT}/ota-tasks/{r.json()['id']}"
        deadline = time.monotonic() + 20
        while (task := api.get(task_url).json())["status"] != "COMPLETED":
            assert time.monotonic() < deadline, task
            time.sleep(0.1)
        for entry in task["devices"]:
            assert entry["state"] == "SUCCEEDED" and entry["step"] == 201, entry
            assert entry["protocol"] == "onenet"
        out = finish(proc)
        assert "2 upgrades" in out and " 0 errors" in out
