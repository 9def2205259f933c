"""Client-chosen strings in the server's log lines: escaped, so a client id with a
newline cannot forge a line (nor a terminal escape hide one)."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import RunningBroker
from tests.mqtt.clients import RawClient
from thingshub.mqtt.codec import Disconnect
from thingshub.mqtt.logs import printable

FORGED = "x\n2026-01-01 00:00:00,000 ERROR thingshub.mqtt: forged\x1b[2K\u2028"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("sensor-1", "sensor-1"),
        ("temp/°C/漢字", "temp/°C/漢字"),
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("line\u2028sep\x85", "line\\u2028sep\\x85"),
        ("back\\slash", "back\\\\slash"),
        ("nul\x00", "nul\\x00"),
    ],
)
def test_printable(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert printable(text).isprintable()


def assert_no_control_characters(caplog: pytest.LogCaptureFixture, needle: str) -> None:
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("thingshub")]
    assert any(needle in line for line in lines), lines  # the line was logged at all
    assert all(line.isprintable() for line in lines), lines


def test_a_client_id_cannot_forge_a_log_line(
    broker: RunningBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="thingshub")
    raw = RawClient(broker.port, 5)
    assert raw.connect(FORGED).reason_code == 0
    raw.send_bytes(b"\x00\x00")  # a protocol error, logged with the client id
    assert raw.wait_closed() == [Disconnect(0x81)]
    assert_no_control_characters(caplog, "forged")
