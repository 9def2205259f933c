"""Limits and options of the MQTT server, each with a default that protects the process.

Rules:
- Every limit here is enforced somewhere in `server/`; nothing is advisory.
- Times are seconds. `None` means "no limit" only where the spec has a
  "never" (session expiry), never for a resource.
"""

from __future__ import annotations

from dataclasses import dataclass
from ssl import SSLContext
from typing import Any

from thingshub.mqtt.protocol.lifetimes import NEVER

__all__ = ["NEVER", "BrokerConfig"]


@dataclass(slots=True)
class BrokerConfig:
    #: A connection that has not sent CONNECT within this many seconds is closed.
    connect_timeout: float = 10.0
    #: Largest packet accepted from a client (bytes, fixed header included).
    max_packet_size: int = 1024 * 1024
    #: Open connections beyond this are closed as they arrive.
    max_connections: int = 100_000
    #: Open connections from one host beyond this are closed as they arrive (0: no cap).
    max_connections_per_address: int = 0
    #: QoS 1/2 messages sent to a client and not yet acknowledged (per session);
    #: a 5.0 client's smaller Receive Maximum wins.
    max_inflight: int = 100
    #: QoS 1/2 messages held for a client beyond the in-flight window (per session).
    max_queued: int = 1000
    #: Bytes of payload held in that queue (per session).
    max_queued_bytes: int = 16 * 1024 * 1024
    #: Receive Maximum announced to 5.0 clients: QoS 1/2 PUBLISHes a client may
    #: have unacknowledged with us. Also the depth at which reading from any
    #: client pauses while its acknowledgements wait for the application.
    receive_maximum: int = 100
    #: QoS 1/2 messages the application may hold unacknowledged across all
    #: clients; beyond it, reading pauses until half of them are done.
    max_waiting_acks: int = 50_000
    #: Topic Alias Maximum announced to 5.0 clients.
    topic_alias_maximum: int = 64
    #: Longest keepalive granted to 5.0 clients (announced as Server Keep Alive
    #: when the client asks for more, or for none). 3.1.1 clients keep theirs.
    max_keepalive: int = 60
    #: Cap on any session's expiry interval; NEVER leaves it uncapped.
    max_session_expiry: int = NEVER
    #: Bytes waiting in one client's socket buffer beyond which a client that
    #: publishes to it stops being read (backpressure); a client that does not
    #: drain within `max_hold` seconds holds nobody up again until it does.
    write_high_water: int = 256 * 1024
    max_hold: float = 0.25
    #: Bytes waiting in one client's socket buffer beyond which QoS 0 messages to
    #: it are dropped (counted); QoS 1/2 wait in its session queue instead.
    max_outgoing_buffer: int = 16 * 1024 * 1024
    #: Retained messages kept at most (new ones are refused beyond it, counted).
    max_retained: int = 100_000
    #: How often timers (keepalive, connect timeout) are checked, in seconds.
    sweep_interval: float = 0.5
    #: Listen with SO_REUSEPORT: several processes share the port, the kernel
    #: spreads new connections over them (`serve --workers`, a cluster's nodes).
    reuse_port: bool = False

    def listen_options(self, ssl: SSLContext | None) -> dict[str, Any]:
        """`create_server`'s arguments for a listener, plain or over TLS. A TLS client
        has `connect_timeout` to finish its handshake, and again as long to send
        CONNECT once it has; the loop never waits on a handshake, so one that stalls
        delays nobody. Until its handshake is done a client is not counted against
        `max_connections`: the handshake timeout is what bounds it."""
        options: dict[str, Any] = {"backlog": 4096, "reuse_address": True}
        if self.reuse_port:  # several processes share the port (serve --workers)
            options["reuse_port"] = True
        if ssl is not None:
            options.update(ssl=ssl, ssl_handshake_timeout=self.connect_timeout)
        return options
