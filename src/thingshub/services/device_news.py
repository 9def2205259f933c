"""Devices registered on one node, put into the other nodes' login caches.

Rules:
- A node that registers a device tells the others (broadcast
  `device.created`) the device as it stored it, with the product access key
  it read for it; a node hearing it puts the device into its login cache
  (services/devices.py), so that the device's first login there needs no
  database lookup (in `serve --workers N`, N-1 logins in N were a lookup
  and a pool round trip: bench/README.md). A node that restarts warms the
  same cache from the database (`warm_cache`): the news only bring the
  nodes already running to that state.
- The news can be older than what a node heard since (two nodes' broadcasts
  have no order between them): a device deleted, changed or moved, or a
  product whose access key changed or that was deleted, is remembered for
  `RECENT_S` seconds (at most `MAX_RECENT` of them, the oldest forgotten
  first), and news of such a device are ignored: its first login reads the
  database, as without the news. A device's user name is drawn anew at each
  registration, so a deletion is remembered by it and never hides the news
  of a device registered again under the same name.
- A node whose cached product key differs from the one in the news ignores
  them (one of the two is stale; the lookup decides).
- The news carry the device's key and password hash as the database holds
  them: NATS is the cluster's own, trusted like its database. A message
  that is not a device is logged and ignored. One process alone has no
  peers: `created` costs one attribute test.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable

import orjson

from thingshub.core.model import Device
from thingshub.core.ports import Clock, Peers

log = logging.getLogger("thingshub.coherence")

TOPIC = "device.created"

#: How long a change is remembered against older news (broadcasts take ms).
RECENT_S = 30.0
#: At most this many changes remembered (a burst of deletions forgets the oldest).
MAX_RECENT = 100_000

#: What is remembered: ("d", product id, name), ("u", user name) or ("p", product id).
Mark = tuple[str, ...]


def encode(device: Device) -> bytes:
    return orjson.dumps(
        [
            device.product_id,
            device.name,
            device.device_number,
            device.key,
            device.username,
            device.password_hash,
            device.created_at,
            dict(device.tags),
            device.status,
            device.access_token,
            device.gateway,
            device.sub_address,
            device.product_key,
        ]
    )


def decode(data: bytes) -> Device:
    """The device in a message; `ValueError` if it is not one."""
    try:
        f = orjson.loads(data)
        pid, name, number, key, username, pw_hash, created, tags, status, token, gw, sub, pkey = f
        device = Device(
            product_id=pid,
            name=name,
            device_number=number,
            key=key,
            username=username,
            password_hash=pw_hash,
            created_at=created,
            tags=tags,
            status=status,
            access_token=token,
            gateway=None if gw is None else (gw[0], gw[1]),
            sub_address=sub,
            product_key=pkey,
        )
    except (orjson.JSONDecodeError, TypeError, ValueError, IndexError, KeyError) as exc:
        raise ValueError(f"not a device: {exc}") from exc
    strings = (pid, name, number, key, username, pw_hash, status)
    if not all(isinstance(s, str) for s in strings) or not isinstance(created, int):
        raise ValueError("not a device: a field of the wrong type")
    return device


class DeviceNews:
    def __init__(
        self,
        clock: Clock,
        fill: Callable[[Device], None],
        recent_s: float = RECENT_S,
        max_recent: int = MAX_RECENT,
    ) -> None:
        self.clock = clock
        self.fill = fill
        self.recent_ms = int(recent_s * 1000)
        self.max_recent = max_recent
        self.peers: Peers | None = None
        #: mark -> until when (monotonic ms) news touching it are ignored
        self._recent: OrderedDict[Mark, int] = OrderedDict()
        self.filled = 0
        self.ignored = 0

    def join(self, peers: Peers) -> None:
        """Tell `peers` of the devices registered here from now on, and hear theirs."""
        self.peers = peers
        peers.on_broadcast(TOPIC, self._heard)

    def created(self, device: Device) -> None:
        if self.peers is not None:
            self.peers.broadcast(TOPIC, encode(device))

    def changed(self, *marks: Mark) -> None:
        """These changed (here or elsewhere): older news of them are ignored."""
        if self.peers is None:
            return
        until = self.clock.monotonic_ms() + self.recent_ms
        recent = self._recent
        for mark in marks:
            recent[mark] = until
            recent.move_to_end(mark)
        while len(recent) > self.max_recent:
            recent.popitem(last=False)

    def _heard(self, data: bytes) -> None:
        try:
            device = decode(data)
        except ValueError:
            log.warning("ignored a %s message that is not a device: %r", TOPIC, data[:100])
            return
        if self._stale(device):
            self.ignored += 1
            return
        self.filled += 1
        self.fill(device)

    def _stale(self, device: Device) -> bool:
        recent = self._recent
        if not recent:
            return False
        now = self.clock.monotonic_ms()
        while recent:  # forget what has expired (oldest first)
            mark, until = next(iter(recent.items()))
            if until > now:
                break
            del recent[mark]
        return (
            ("d", device.product_id, device.name) in recent
            or ("u", device.username) in recent
            or ("p", device.product_id) in recent
        )
