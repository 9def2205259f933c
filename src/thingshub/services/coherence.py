"""Caches kept coherent across the nodes of a cluster.

Rules:
- A service caching what the database holds (devices for logins, API keys,
  thing models, device images) owns one `CacheSync`: it calls `changed`
  after each change it stored, and the other nodes drop (or reload) what
  they cached of it on hearing so, within one broadcast's time (a few ms).
- One process alone has no peers: `changed` costs one attribute test.
- The change travels after it is stored, so a node that drops its entry and
  reads again reads the new value. Broadcasts are best effort (bus/nats.py):
  a change told while NATS is unreachable is not heard.
- A message is the changed thing's key parts, joined by newlines (ids and
  names never hold one, core/names.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from thingshub.core.ports import Peers

log = logging.getLogger("thingshub.coherence")


class CacheSync:
    def __init__(self, topic: str, drop: Callable[[list[str]], object]) -> None:
        self.topic = f"cache.{topic}"
        self.drop = drop
        self.peers: Peers | None = None

    def join(self, peers: Peers) -> None:
        """Tell `peers` of the changes from now on, and hear theirs."""
        self.peers = peers
        peers.on_broadcast(self.topic, self._heard)

    def changed(self, *key: str) -> None:
        if self.peers is not None:
            self.peers.broadcast(self.topic, "\n".join(key).encode())

    def _heard(self, data: bytes) -> None:
        try:
            key = data.decode().split("\n")
        except UnicodeDecodeError:
            log.warning("ignored a %s message that is not text", self.topic)
            return
        self.drop(key)
