"""Nodes lost and restarted, as real processes: nothing acknowledged is lost, and
presence follows the node that holds each connection (issue 17's must-show).

Three `thingshub serve` processes share one PostgreSQL schema and a private
NATS server; the lease is short (3 s) so that a dead node is noticed within
the test's time, and long (10 s, 30 s) where the test must show that
something happened *without* waiting for the lease.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from tests.cluster.processes.harness import (
    Cluster,
    Node,
    create_device,
    create_product,
    stored_values,
    wait_for,
)
from tests.e2e.test_durability import Publisher
from tests.mqtt.clients import PahoClient

#: Seconds allowed beyond the lease for a dead node's devices to show offline: the
#: sweep's own period and the polling of this test.
MARGIN = 1.5


class StoppablePublisher(Publisher):
    """test_durability's QoS 1 publisher, which the test can also stop (by shutting its
    socket down, which ends it as a lost connection does)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sock: socket.socket | None = None

    def _run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            self.sock = sock
            self._publish(sock)

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.shutdown(socket.SHUT_RDWR)
        self.join(10)


def publish_on(node: Node, devices: list[dict[str, Any]], keys: list[str]) -> list[Publisher]:
    publishers: list[Publisher] = [
        StoppablePublisher(node.mqtt_port, d["username"], d["password"], key)
        for d, key in zip(devices, keys, strict=True)
    ]
    for p in publishers:
        p.start()
    return publishers


def acked(publishers: list[Publisher]) -> int:
    return sum(len(p.acked) for p in publishers)


def states(nodes: list[Node], names: list[str]) -> set[str]:
    """The set of connection states every node shows for these devices."""
    return {state for node in nodes for state in node.presence("p", names).values()}


def check_stored(node: Node, names: list[str], publishers: list[Publisher]) -> None:
    for name, p in zip(names, publishers, strict=True):
        missing = set(p.acked) - stored_values(node, "p", name, p.key)
        assert not missing, f"{name}: {len(missing)} acknowledged points missing"


def tp_client(node: Node, device: dict[str, Any], client_id: str) -> PahoClient:
    return PahoClient(
        node.mqtt_port, client_id, username=device["username"], password=device["password"]
    )


def test_sigkill_loses_nothing_acknowledged_and_its_devices_move(
    cluster: Callable[..., Cluster],
) -> None:
    c = cluster(lease=3.0)
    n1, n2, n3 = c.start("n1", "n2", "n3")
    create_product(n2, "p")
    names = [f"d{i}" for i in range(4)]
    devices = [create_device(n2, "p", name) for name in names]

    publishers = publish_on(n1, devices, [f"k{i}" for i in range(4)])
    wait_for(lambda: acked(publishers) >= 1000, 30, "1,000 acknowledged messages on n1")
    wait_for(lambda: states([n2, n3], names) == {"online"}, 5, "devices online")
    killed = time.monotonic()
    n1.kill()
    for p in publishers:
        p.join(10)
        assert p.error is None, p.error

    # 0 acknowledged messages missing, read through another node.
    check_stored(n3, names, publishers)
    # Its devices offline everywhere within the lease.
    wait_for(lambda: states([n2, n3], names) == {"offline"}, c.lease + 10, "devices offline")
    took = time.monotonic() - killed
    assert took <= c.lease + MARGIN, f"offline {took:.1f}s after the kill (lease {c.lease}s)"

    # They log in again on another node and carry on.
    again = publish_on(n2, devices, [f"k{i}b" for i in range(4)])
    wait_for(lambda: min(len(p.acked) for p in again) >= 100, 30, "acknowledgements on n2")
    wait_for(lambda: states([n2, n3], names) == {"online"}, 5, "devices online again")
    for p in again:
        assert isinstance(p, StoppablePublisher)
        p.stop()
        assert p.error is None, p.error
    check_stored(n3, names, again)


def test_a_node_stopped_cleanly_hands_its_devices_over_at_once(
    cluster: Callable[..., Cluster],
) -> None:
    # A long lease: the devices must show offline through the handover, not the sweep.
    c = cluster(lease=10.0)
    n1, n2, n3 = c.start("n1", "n2", "n3")
    create_product(n1, "p")
    names = ["a", "b", "c"]
    for name in names:
        tp_client(n1, create_device(n1, "p", name), name)
    stays = tp_client(n2, create_device(n1, "p", "stays"), "stays")
    wait_for(lambda: states([n2, n3], [*names, "stays"]) == {"online"}, 5, "devices online")

    stopped = time.monotonic()
    assert n1.terminate() == 0
    wait_for(lambda: states([n2, n3], names) == {"offline"}, c.lease, "devices offline")
    took = time.monotonic() - stopped
    assert took < 2.0, f"offline {took:.1f}s after SIGTERM (lease {c.lease}s)"
    assert states([n2, n3], ["stays"]) == {"online"}
    assert stays.publish("devices/telemetry", b'{"t": 1}', qos=1) == 0


def test_a_node_restarting_with_its_id_cleans_up_only_its_own_leftovers(
    cluster: Callable[..., Cluster],
) -> None:
    # A lease longer than the test: only the restart can have set anything offline.
    c = cluster(lease=30.0)
    n1, n2, n3 = c.start("n1", "n2", "n3")
    create_product(n1, "p")
    mine = ["m1", "m2"]
    for name in mine:
        tp_client(n1, create_device(n1, "p", name), name)
    others = {
        "o2": tp_client(n2, create_device(n1, "p", "o2"), "o2"),
        "o3": tp_client(n3, create_device(n1, "p", "o3"), "o3"),
    }
    wait_for(lambda: states([n2, n3], [*mine, *others]) == {"online"}, 5, "devices online")

    n1.kill()
    restarted = time.monotonic()
    n1.restart()  # the same id, at once: the database freed it with the dead process
    wait_for(lambda: states([n1, n2, n3], mine) == {"offline"}, 5, "n1's leftovers offline")
    took = time.monotonic() - restarted
    assert took < c.lease / 2, f"n1's devices offline only {took:.1f}s after its restart"
    assert states([n1, n2, n3], list(others)) == {"online"}
    for client in others.values():
        assert client.publish("devices/telemetry", b'{"t": 1}', qos=1) == 0
