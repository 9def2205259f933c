"""A device publishing numbered QoS 1 telemetry over a raw socket, for fault tests.

It keeps a window of messages in flight and records, with the time, every
sequence number acknowledged, and whether the server closed the connection,
so a test can tell "held" (open, no acknowledgement) from "dropped".
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterable

from tests.conftest import RunningPlatform
from tests.mqtt.clients import wait_until
from thingshub.mqtt.codec import Connack, Connect, PubAck, Publish, Reader, encode


class Publisher(threading.Thread):
    def __init__(
        self,
        port: int,
        username: str,
        password: str,
        key: str,
        window: int = 10,
        version: int = 4,
        pause: float = 0.0,
    ) -> None:
        super().__init__(daemon=True)
        self.port, self.username, self.password, self.key = port, username, password, key
        self.window = window
        self.version = version
        self.pause = pause  # seconds between messages (0: as fast as acknowledged)
        self.acked: list[int] = []
        self.codes: list[int] = []  # reason codes of 5.0 PUBACKs that were not 0
        self.last_ack_at = 0.0
        self.closed = False  # the server closed the connection
        self.error: BaseException | None = None
        self._halt = threading.Event()
        self.sock: socket.socket | None = None

    def run(self) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
                self.sock = sock
                self._publish(sock)
        except OSError:
            self.closed = not self._halt.is_set()
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self._halt.set()
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        self.join(10)

    def _publish(self, sock: socket.socket) -> None:
        reader = Reader(self.version)
        sock.sendall(
            encode(
                Connect(
                    f"c-{self.key}", self.version, True, 60, self.username, self.password.encode()
                ),
                self.version,
            )
        )

        def recv() -> object:
            while (packet := reader.next_packet()) is None:
                data = sock.recv(65536)
                if not data:
                    raise OSError("closed")
                reader.feed(data)
            return packet

        connack = recv()
        assert isinstance(connack, Connack) and connack.reason_code == 0, connack
        in_flight: dict[int, int] = {}
        seq = 0
        while not self._halt.is_set():
            while len(in_flight) < self.window:
                seq += 1
                pid = seq % 65535 + 1
                in_flight[pid] = seq
                body = json.dumps({self.key: seq}).encode()
                sock.sendall(
                    encode(Publish("devices/telemetry", body, 1, packet_id=pid), self.version)
                )
                if self.pause:
                    time.sleep(self.pause)
            ack = recv()
            assert isinstance(ack, PubAck), ack
            number = in_flight.pop(ack.packet_id)
            if ack.reason_code:
                self.codes.append(ack.reason_code)
            else:
                self.acked.append(number)
            self.last_ack_at = time.monotonic()


def metric(api: object, name: str) -> float:
    """The value of an unlabelled sample `name` in /metrics (`api`: an httpx client)."""
    for line in api.get("/metrics").text.splitlines():  # type: ignore[attr-defined]
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


def start_publishers(p: RunningPlatform, api: object, versions: Iterable[int]) -> list[Publisher]:
    """Product `p`, device d<i> publishing key k<i> with MQTT `versions[i]`, all
    started and past their first 100 acknowledgements: a load in full flow before
    the fault."""
    api.post("/api/v1/products", json={"id": "p", "name": "p"})  # type: ignore[attr-defined]
    publishers = []
    for i, version in enumerate(versions):
        d = api.post("/api/v1/products/p/devices", json={"name": f"d{i}"}).json()  # type: ignore[attr-defined]
        publishers.append(
            Publisher(p.mqtt_port, d["username"], d["password"], f"k{i}", version=version)
        )
    for pub in publishers:
        pub.start()
    wait_until(lambda: all(len(x.acked) > 100 for x in publishers), 20, "acknowledgements")
    return publishers


def assert_held(
    p: RunningPlatform, api: object, publishers: list[Publisher], before: list[int], what: str
) -> None:
    """During the outage: nothing more acknowledged since `before`, nobody dropped or
    refused, the writes held and the outage shown in /metrics."""
    assert [len(x.acked) for x in publishers] == before, f"acknowledged without {what}"
    assert not any(x.closed for x in publishers), "a publisher was dropped, not held"
    assert all(x.codes == [] for x in publishers), "a 5.0 publisher got a failure code"
    assert p.call(lambda: p.platform.storage.writer.stats.held) > 0, "nothing held"
    assert metric(api, "thingshub_storage_held_writes") > 0
    assert metric(api, "thingshub_storage_outage") == 1


def assert_resumed(api: object, publishers: list[Publisher], before: list[int], what: str) -> None:
    """Once the fault is gone: 100 more acknowledgements each, the outage over in
    /metrics and counted, and the publishers stopped with no error, never closed."""
    wait_until(
        lambda: all(len(x.acked) > b + 100 for x, b in zip(publishers, before, strict=True)),
        30,
        f"acknowledgements {what}",
    )
    assert metric(api, "thingshub_storage_outage") == 0
    assert metric(api, "thingshub_storage_held_writes") == 0
    assert metric(api, "thingshub_storage_outages_total") >= 1
    for pub in publishers:
        pub.stop()
        assert pub.error is None, pub.error
        assert not pub.closed


def assert_stored(publishers: list[Publisher], stored: dict[str, set[int]]) -> None:
    """Every message a publisher had acknowledged is in `stored` (values by key)."""
    for i, pub in enumerate(publishers):
        missing = set(pub.acked) - stored[f"k{i}"]
        assert not missing, f"{len(missing)} acknowledged messages of d{i} were not stored"
