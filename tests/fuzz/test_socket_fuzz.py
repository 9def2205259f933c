"""Fuzzing the running MQTT server over sockets.

Many connections, each sending a valid client stream of the seed corpus
mutated (bit flips, overwritten lengths, truncations, splices, random
bytes) in random pieces, then ending its side; a subscriber to `#` receives
whatever gets through. The server must: close or answer every connection
(none hangs), log no error (the suite's autouse fixture fails the test on
any), count every connection gone at the end, and still serve a new client.
The run is replayed from `THINGSHUB_FUZZ_SEED`; each connection's stream
comes from its own `random.Random(seed, index)`.
"""

from __future__ import annotations

import errno
import random
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import RunningBroker
from tests.fuzz.budget import CONNECTIONS, SEED
from tests.fuzz.mutate import chunks, mqtt_streams, mutate
from tests.mqtt.clients import wait_until
from tests.mqtt.malformed.harness import healthy
from tests.mqtt.malformed.wire import connect, subscribe
from thingshub.mqtt.server import BrokerConfig

SEEDS = mqtt_streams()


def one_connection(port: int, index: int) -> str:
    """Play one mutated stream; how it ended ("closed"), or what went wrong."""
    rng = random.Random(SEED * 1_000_003 + index)
    data = mutate(rng.choice(SEEDS), rng, SEEDS, rounds=rng.randint(1, 6))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            for piece in chunks(data, rng):
                sock.sendall(piece)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return "closed"  # the server closed first: fine
        except OSError as exc:
            if exc.errno == errno.ENOTCONN:  # closed first, seen at our shutdown
                return "closed"
            raise
        try:
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        except TimeoutError:
            return f"connection {index} neither closed nor answered in 10 s"
    return "closed"


class Listener(threading.Thread):
    """A 3.1.1 client subscribed to everything, reading until told to stop."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(connect(4, client_id="fuzz-listener") + subscribe(4, ("#", 2)))
        self.received = 0
        self.eof = False

    def run(self) -> None:
        try:
            while chunk := self.sock.recv(65536):
                self.received += len(chunk)
        except OSError:
            pass
        self.eof = True


def test_mutated_streams_over_many_connections(
    broker_factory: Callable[..., RunningBroker],
) -> None:
    b = broker_factory(config=BrokerConfig(max_packet_size=64 * 1024, connect_timeout=5))
    listener = Listener(b.port)
    listener.start()
    try:
        with ThreadPoolExecutor(16) as pool:
            outcomes = list(pool.map(lambda i: one_connection(b.port, i), range(CONNECTIONS)))
        problems = [o for o in outcomes if o != "closed"]
        assert not problems, problems[:10]
        wait_until(lambda: b.stats.connections == 1, timeout=15)  # the listener alone
        assert not listener.eof, "the listener was disconnected"
        healthy(b.port)
    finally:  # a failure must not leave its socket to a later test's collection
        listener.sock.close()
        listener.join(5)
