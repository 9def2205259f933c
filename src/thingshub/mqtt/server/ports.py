"""What the server's parts see of a client connection: the `Link` port.

Rules:
- Sessions, routing, delivery and takeover know a connection only through
  `Link`; the asyncio `Connection` (connection.py) implements it. So they
  never import the connection module, and the server's modules import each
  other without a cycle.
- A message on its way out is any `Outgoing`: a client's message, one queued
  in a session, or a retained one.
"""

from __future__ import annotations

from typing import Protocol

from thingshub.mqtt.codec.properties import Properties
from thingshub.mqtt.hooks import CloseReason


class Outgoing(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def properties(self) -> Properties: ...
    @property
    def expires_at(self) -> float | None: ...


class Link(Protocol):
    """A client connection, as sessions and delivery use it."""

    #: Numbers CONNECTs as they arrive: the higher is the newer login (takeover.py).
    seq: int
    #: Its socket buffer is above the high-water mark.
    write_paused: bool
    #: It held a publisher up for `max_hold` and did not drain: it holds nobody up.
    stuck: bool

    def buffered_out(self) -> int:
        """Bytes written to it and not yet sent."""
        ...

    def send_publish(
        self,
        msg: Outgoing,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        packet_id: int | None,
        dup: bool = False,
    ) -> bool:
        """Queue one PUBLISH to the client; False if it had to be dropped."""
        ...

    def send_pubrel(self, packet_id: int) -> None: ...

    def hold(self, slow: Link) -> None:
        """Stop reading from this client until `slow` has caught up."""
        ...

    def queue_drained(self) -> None:
        """Its session's queue emptied."""
        ...

    def close(
        self, reason: CloseReason, code: int | None = None, *, send_will: bool = True
    ) -> None: ...
