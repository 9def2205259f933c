"""`thingshub serve --workers 2` as an operator runs it: real processes on one port
pair, a private NATS server, devices spread over both workers, `GET
/api/v1/cluster` and `thingshub cluster` through the shared port, a worker that
dies started again, and a clean stop of everything."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.cli.test_serve import Server, start_server, stop

DEVICES = 24


@pytest.fixture
def workers(tmp_path: Path, pg_url: str) -> Iterator[Server]:
    env = {"THINGSHUB_CONSOLE": "false", "THINGSHUB_NODE_LEASE": "3"}
    proc, lines = start_server(
        tmp_path / "data", "--workers", "2", "--database-url", pg_url, env=env
    )
    yield Server(proc, tmp_path / "data", lines)
    if proc.poll() is None:
        code, out = stop(proc)
        assert code == 0, out


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return found


def test_two_workers_share_the_ports_and_the_devices(workers: Server) -> None:
    assert any("nodes " in line and "-0, " in line for line in workers.lines), workers.lines
    clients: list[mqtt.Client] = []
    with workers.api() as api:
        assert api.post("/api/v1/products", json={"id": "p1", "name": "P"}).status_code == 201
        try:
            for i in range(DEVICES):
                made = api.post("/api/v1/products/p1/devices", json={"name": f"d{i}"}).json()
                client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"d{i}")
                client.username_pw_set(made["username"], made["password"])
                client.connect("127.0.0.1", workers.mqtt_port)
                client.loop_start()
                clients.append(client)

            def spread() -> list[dict[str, Any]] | None:
                nodes = api.get("/api/v1/cluster").json()["nodes"]
                total = sum(n["connections"] for n in nodes)
                if len(nodes) == 2 and total == DEVICES and all(n["connections"] for n in nodes):
                    return list(nodes)
                return None

            nodes = wait_for(spread, 20, "the devices on both workers")
            ids = sorted(n["id"] for n in nodes)
            assert ids[0].endswith("-0") and ids[1].endswith("-1")
            # Requests through the one HTTP port reach both workers, each listing both.
            answering = wait_for(
                lambda: {_answering(api) for _ in range(20)} == set(ids),
                20,
                "answers from both workers",
            )
            assert answering
        finally:
            for client in clients:
                client.loop_stop()
                client.disconnect()

    table = workers.cli("cluster").stdout
    assert all(i in table for i in ids) and "*" in table
    as_json = json.loads(workers.cli("cluster", "--json").stdout)
    assert sorted(n["id"] for n in as_json["nodes"]) == ids and as_json["node"] in ids
    ports = json.loads((workers.data_dir / "ports.json").read_text())
    assert ports == {"mqtt": workers.mqtt_port, "http": workers.http_port}


def test_a_worker_that_dies_is_started_again_and_all_stop_cleanly(workers: Server) -> None:
    with workers.api() as api:
        first = {n["id"]: n["started_at"] for n in api.get("/api/v1/cluster").json()["nodes"]}
        assert len(first) == 2
        victim = _worker_pid(workers.proc.pid)
        os.kill(victim, signal.SIGKILL)

        def restarted() -> bool:
            try:  # a connection the killed worker had accepted is reset
                answer = api.get("/api/v1/cluster", headers={"Connection": "close"})
            except httpx.HTTPError:
                return False
            nodes = {n["id"]: n["started_at"] for n in answer.json()["nodes"]}
            return nodes.keys() == first.keys() and nodes != first

        wait_for(restarted, 30, "the worker started again")
    code, out = stop(workers.proc)
    assert code == 0, out
    assert "starting it again" in out and out.rstrip().endswith("ThingsHub stopped"), out


def _worker_pid(supervisor: int) -> int:
    """A `thingshub serve` child of the supervisor (not its NATS server)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == supervisor and b"serve" in cmdline:
            return int(entry.name)
    raise AssertionError("no worker found")


def _answering(api: Any) -> str:
    """The node answering a request on a connection of its own (the kernel picks
    the worker per connection)."""
    node: str = api.get("/api/v1/cluster", headers={"Connection": "close"}).json()["node"]
    return node
