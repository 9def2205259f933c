"""The open connections of the server: counted, and capped in all and per address.

Rules:
- A socket is counted from `connection_made` until `connection_lost`; one
  beyond `max_connections`, or beyond `max_connections_per_address` from one
  host (0: no such cap), is refused as it arrives (closed at once, counted).
  The per-address cap keeps one host, or a flood from it, from taking every
  connection (and file descriptor) the server has.
- Once the server stops (`closed`), every socket is refused as it arrives:
  MQTT over WebSocket comes through the HTTP server, which goes on accepting
  for a moment after the broker stopped, and a device reconnecting then must
  see its connection end, not be served by a broker nobody will close.
- The host is the address the connection reports (for MQTT over WebSocket,
  the one the login throttle goes by); its port is left out.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from thingshub.mqtt.server.config import BrokerConfig
    from thingshub.mqtt.server.connection import Connection
    from thingshub.mqtt.server.delivery import BrokerStats


def host_of(address: str) -> str:
    """ "10.0.0.1:5000" -> "10.0.0.1", "::1:5000" -> "::1" (an address without a port stays)."""
    host, sep, port = address.rpartition(":")
    return host if sep and port.isdigit() else address


class Census:
    __slots__ = ("closed", "config", "open", "per_host", "stats")

    def __init__(self, config: BrokerConfig, stats: BrokerStats) -> None:
        self.config = config
        self.stats = stats
        self.open: set[Connection] = set()
        self.per_host: Counter[str] = Counter()
        self.closed = False

    def add(self, conn: Connection) -> bool:
        """A socket opened: False if it is one too many (it is closed at once)."""
        stats = self.stats
        if len(self.open) >= self.config.max_connections or self.closed:
            stats.connects_refused += 1
            return False
        cap = self.config.max_connections_per_address
        if cap:
            host = host_of(conn.address)
            if self.per_host[host] >= cap:
                stats.connects_refused += 1
                stats.connects_refused_per_address += 1
                return False
            self.per_host[host] += 1
        self.open.add(conn)
        stats.connections = len(self.open)
        stats.connections_total += 1
        return True

    def remove(self, conn: Connection) -> None:
        if conn not in self.open:
            return  # refused, or removed already
        self.open.discard(conn)
        self.stats.connections = len(self.open)
        if self.config.max_connections_per_address:
            host = host_of(conn.address)
            left = self.per_host[host] - 1
            if left > 0:
                self.per_host[host] = left
            else:
                del self.per_host[host]
