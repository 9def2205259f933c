"""The turn's output: what connections wrote during one turn of the event loop.

Rules:
- A connection's packets written during a turn leave at the turn's end in one
  `transport.write` (`flush_all`, scheduled by the turn's first write).
- The buffers are the connections' own (`_wbuf`, `_wbytes`): writing and
  flushing read them in place, no call per packet or per connection.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from thingshub.mqtt.server.delivery import BrokerStats


class Buffered(Protocol):
    """A connection as the output reads it."""

    transport: asyncio.Transport | None
    #: Packets written since the last flush; None when there are none.
    _wbuf: list[bytes] | None
    _wbytes: int


class Output:
    """The connections written to during this turn of the event loop: what each
    has leaves at the turn's end in one `transport.write`."""

    __slots__ = ("dirty", "loop", "scheduled", "stats")

    def __init__(self, loop: asyncio.AbstractEventLoop, stats: BrokerStats) -> None:
        self.loop = loop
        self.stats = stats
        self.dirty: list[Buffered] = []
        self.scheduled = False  # flush_all is due at the turn's end

    def flush_all(self) -> None:
        self.scheduled = False
        dirty = self.dirty
        self.dirty = []
        sent = 0
        for conn in dirty:  # Connection.flush written out
            buf = conn._wbuf
            transport = conn.transport
            if buf is None or transport is None:
                continue
            data = buf[0] if len(buf) == 1 else b"".join(buf)
            conn._wbuf = None
            conn._wbytes = 0
            sent += len(data)
            transport.write(data)
        self.stats.bytes_out += sent
