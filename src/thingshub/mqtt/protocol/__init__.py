"""Sans-io MQTT: the protocol state of a connection and of what outlives it.

`Machine` is one connection's state (CONNECT, keepalive, topic aliases,
Receive Maximum, acknowledgement order); `lifetimes` says when a session and
its will end. Both take time as an argument and do no I/O: the asyncio server
(`mqtt/server`) moves the bytes and arms the timers.
"""

from thingshub.mqtt.protocol.lifetimes import NEVER, Departure, depart, session_expiry
from thingshub.mqtt.protocol.machine import (
    AUTHENTICATING,
    AWAITING_CONNECT,
    CLOSED,
    CONNECTED,
    Limits,
    Machine,
    State,
    Violation,
)

__all__ = [
    "AUTHENTICATING",
    "AWAITING_CONNECT",
    "CLOSED",
    "CONNECTED",
    "NEVER",
    "Departure",
    "Limits",
    "Machine",
    "State",
    "Violation",
    "depart",
    "session_expiry",
]
