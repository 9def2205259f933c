"""The malformed-input table, played against a real server over sockets.

One row per rule of MQTT 3.1.1 and 5.0 that a server must enforce on input
(tests/mqtt/malformed/rows_*.py), for each protocol version the row states an
expectation for. All rows share one server, as in production a bad client
shares it with everyone else; after every row a new client must still connect,
subscribe and get a message. The server's limits are small where a row needs
to reach one quickly (Receive Maximum 5) and otherwise the defaults.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import RunningBroker, serve_in_thread
from tests.mqtt.malformed import rows_connect, rows_packets
from tests.mqtt.malformed.harness import Row, healthy, play
from thingshub.mqtt.server import Broker, BrokerConfig

ROWS = rows_connect.ROWS + rows_packets.ROWS
CASES = [pytest.param(row, v, id=row.id(v)) for row in ROWS for v in sorted(row.expect)]


@pytest.fixture(scope="module")
def server() -> Iterator[RunningBroker]:
    broker = Broker(None, BrokerConfig(receive_maximum=5))
    ports: list[int] = []

    async def boot() -> None:
        ports.append(await broker.start("127.0.0.1", 0))

    loop, thread = serve_in_thread("malformed-table", boot, broker.stop)
    yield RunningBroker(broker, loop, ports[0])
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@pytest.mark.parametrize(("row", "version"), CASES)
def test_row(server: RunningBroker, row: Row, version: int) -> None:
    play(server.port, row, version)
    healthy(server.port)


def test_every_row_names_its_rule_and_differs() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "two rows with the same name"
    assert all(row.rule and row.expect for row in ROWS)
