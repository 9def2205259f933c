"""Takeover across the nodes of a cluster: a device's newest login wins wherever it is.

Rules:
- On one node the MQTT server keeps one connection and one session per
  device (its identity, mqtt/server/takeover.py). Across nodes, every login
  accepted here is told to the other nodes (broadcast `login`), stamped
  (login time in ms, node id, connection number); a node holding an older
  login of that device closes it as a takeover (MQTT 5: DISCONNECT 0x8E),
  ends its session there (the device holds one, on the node it logged in
  to), and does not announce the device offline (it is online on the other
  node: PresenceService.handed_over).
- Stamps order logins the same way on every node, whatever order the
  broadcasts arrive in: each node closes only its own logins older than one
  it hears of, so of two logins racing on two nodes the newer stays and the
  older is closed by its own node. A login accepted after hearing of another
  is stamped later than that one (the stamp's time never goes back below
  what was heard: a Lamport clock over milliseconds), so skewed clocks
  cannot make a later login lose.
- The logins told in one flush of the bus travel in one message (bus/frames.py):
  each is judged alone, by its stamp, as if it had come alone.
- Broadcasts are best effort: a login told while NATS is unreachable is not
  heard, and an older connection elsewhere stays until it closes.
"""

from __future__ import annotations

import logging

from thingshub.core.messages import DeviceRef
from thingshub.core.ports import Clock, Peers
from thingshub.mqtt.server import Broker
from thingshub.services.presence import PresenceService

log = logging.getLogger("thingshub.gateway")

TOPIC = "login"

#: When and where a connection logged in: (ms, node id, connection number).
Stamp = tuple[int, str, int]


class ClusterLogins:
    def __init__(
        self, broker: Broker, presence: PresenceService, peers: Peers, clock: Clock, node: str
    ) -> None:
        self.broker = broker
        self.presence = presence
        self.peers = peers
        self.clock = clock
        self.node = node
        #: identity -> the stamp of the connection holding it here
        self._held: dict[str, Stamp] = {}
        #: the latest login time heard of (this node's logins are stamped later)
        self._heard = 0
        self.taken_over = 0
        peers.on_broadcast(TOPIC, self._on_login)

    def logged_in(self, ref: DeviceRef, seq: int) -> None:
        """A connection of the device was accepted here (the MQTT server's on_connect)."""
        ms = max(self.clock.now_ms(), self._heard + 1)
        self._heard = ms
        identity = f"{ref.product_id}/{ref.name}"
        self._held[identity] = (ms, self.node, seq)
        self.peers.broadcast(TOPIC, f"{identity}\n{ms}\n{self.node}\n{seq}".encode())

    def logged_out(self, ref: DeviceRef, seq: int) -> None:
        identity = f"{ref.product_id}/{ref.name}"
        held = self._held.get(identity)
        if held is not None and held[2] == seq and held[1] == self.node:
            del self._held[identity]

    def _on_login(self, data: bytes) -> None:
        try:
            identity, ms_text, node, seq_text = data.decode().split("\n")
            stamp = (int(ms_text), node, int(seq_text))
            product_id, name = identity.split("/")
        except ValueError:
            log.warning("ignored a login broadcast that is not one: %r", data[:100])
            return
        self._heard = max(self._heard, stamp[0])
        held = self._held.get(identity)
        if held is not None and held > stamp:
            return  # the login here is the newer: the other node closes its own
        if self.broker.takeover.evict(identity):
            self.taken_over += 1
            log.info("%s logged in on node %s: its connection here is closed", identity, node)
        if held is not None:
            self._held.pop(identity, None)
            self.presence.handed_over(product_id, name, held[2])
