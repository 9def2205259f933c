"""A server killed with SIGKILL while devices publish QoS 1 telemetry loses no point
whose PUBACK was sent: the acknowledgement leaves only after the commit.

The server runs as a real process (`thingshub serve`); devices publish as fast as
acknowledgements come back, each message carrying a unique sequence number; the
process is killed mid-stream, started again on the same data, and every
acknowledged number must be there.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.cli.test_serve import start_server, stop
from thingshub.mqtt.codec import Connack, Connect, PubAck, Publish, Reader, encode


class Publisher(threading.Thread):
    """One device: QoS 1 telemetry with a window of messages in flight; records
    which sequence numbers were acknowledged until the connection dies."""

    def __init__(self, port: int, username: str, password: str, key: str, window: int = 20):
        super().__init__(daemon=True)
        self.port, self.username, self.password, self.key = port, username, password, key
        self.window = window
        self.acked: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except OSError:
            pass  # the server was killed: expected
        except BaseException as exc:
            self.error = exc

    def _run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            self._publish(sock)

    def _publish(self, sock: socket.socket) -> None:
        reader = Reader(4)
        sock.sendall(
            encode(Connect(f"c-{self.key}", 4, True, 60, self.username, self.password.encode()), 4)
        )

        def recv() -> object:
            while (packet := reader.next_packet()) is None:
                data = sock.recv(65536)
                if not data:
                    raise OSError("closed")
                reader.feed(data)
            return packet

        assert isinstance(recv(), Connack)
        in_flight: dict[int, int] = {}
        seq = 0
        while True:
            while len(in_flight) < self.window:
                seq += 1
                pid = seq % 65535 + 1
                in_flight[pid] = seq
                body = json.dumps({self.key: seq}).encode()
                sock.sendall(encode(Publish("devices/telemetry", body, 1, packet_id=pid), 4))
            ack = recv()
            assert isinstance(ack, PubAck)
            self.acked.append(in_flight.pop(ack.packet_id))


@pytest.mark.parametrize("run", [1, 2])
def test_sigkill_loses_no_acknowledged_point(tmp_path: Path, run: int) -> None:
    data = tmp_path / "data"
    proc, _ = start_server(data)
    ports = json.loads((data / "ports.json").read_text())
    api_key = (data / "api-key").read_text().strip()
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{ports['http']}", headers={"Authorization": f"Bearer {api_key}"}
    )
    with api:
        api.post("/api/v1/products", json={"id": "p", "name": "p"})
        devices = [
            api.post("/api/v1/products/p/devices", json={"name": f"d{i}"}).json() for i in range(4)
        ]
    publishers = [
        Publisher(ports["mqtt"], d["username"], d["password"], f"k{i}")
        for i, d in enumerate(devices)
    ]
    for p in publishers:
        p.start()
    deadline = time.monotonic() + 20
    while sum(len(p.acked) for p in publishers) < 2000 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)
    for p in publishers:
        p.join(10)
        assert p.error is None, p.error
    acked_total = sum(len(p.acked) for p in publishers)
    assert acked_total >= 2000, "the devices were not publishing fast enough to test anything"

    proc, _ = start_server(data)
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{json.loads((data / 'ports.json').read_text())['http']}",
            headers={"Authorization": f"Bearer {api_key}"},
        ) as api2:
            for i, p in enumerate(publishers):
                stored: set[int] = set()
                cursor = None
                while True:
                    params = {"key": f"k{i}", "start": 0, "end": 2**41, "limit": 10_000}
                    if cursor:
                        params["cursor"] = cursor
                    page = api2.get(
                        f"/api/v1/products/p/devices/d{i}/telemetry", params=params
                    ).json()
                    stored.update(v for _, v in page["points"])
                    cursor = page["next"]
                    if cursor is None:
                        break
                missing = set(p.acked) - stored
                assert not missing, f"device d{i}: {len(missing)} acknowledged points lost"
    finally:
        code, out = stop(proc)
        assert code == 0, out
