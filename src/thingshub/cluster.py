"""The wiring of a node of a cluster: what `app.py` adds when `nats_url` is set.

Rules:
- A single process gets the in-process bus and reaches devices through its
  gateway alone; nothing here runs for it, so it keeps its exact paths.
- A node joins through NATS (an unreachable NATS is a `StartupError`), under
  the cluster id kept in its database; devices connected to other nodes are
  reached through `ClusterCalls` (the OTA rollout counts a device it cannot
  place as offline, the others as online, see bus/calls.py); logins, caches
  and the presence sweep are joined last, once every service exists.
"""

from __future__ import annotations

from collections.abc import Iterable

from thingshub.bus.calls import ClusterCalls, ClusterLink, Holders
from thingshub.bus.local import LocalBus
from thingshub.bus.nats import NatsBus
from thingshub.core.errors import Unavailable
from thingshub.core.ports import Clock, DeviceLink, Storage
from thingshub.gateway.cluster import ClusterLogins
from thingshub.gateway.hooks import DeviceGateway
from thingshub.mqtt.server import Broker
from thingshub.services.coherence import CacheSync
from thingshub.services.device_news import DeviceNews
from thingshub.services.jobs import Jobs
from thingshub.services.nodes import NodeService
from thingshub.services.presence import PresenceService
from thingshub.services.sweep import PresenceSweep
from thingshub.startup import StartupError


async def start_bus(url: str | None, cluster_id: str, node_id: str) -> LocalBus | NatsBus:
    """The in-process bus, or with a NATS `url` this node's link to the cluster."""
    if url is None:
        return LocalBus()
    nats = NatsBus(url, cluster_id, node_id)
    try:
        await nats.start()
    except Unavailable as exc:
        raise StartupError(str(exc)) from exc
    return nats


def links(
    nats: NatsBus | None,
    storage: Storage,
    node_id: str,
    nodes: NodeService,
    gateway: DeviceGateway,
) -> tuple[DeviceLink, DeviceLink, ClusterCalls | None]:
    """The links of the services to devices (the gateway's, or through the
    cluster's nodes), the OTA rollout's, and the cluster's calls."""
    if nats is None:
        return gateway, gateway, None
    calls = ClusterCalls(nats, Holders(storage.devices, nats, node_id, nodes.nodes), gateway)
    return (
        ClusterLink(gateway, calls, unknown_online=True),
        ClusterLink(gateway, calls, unknown_online=False),
        calls,
    )


def logins(
    broker: Broker, presence: PresenceService, nats: NatsBus, clock: Clock, node_id: str
) -> ClusterLogins:
    """Takeover across nodes: a device's newest login wins wherever it is."""
    return ClusterLogins(broker, presence, nats, clock, node_id)


async def join(
    nats: NatsBus,
    syncs: Iterable[CacheSync | DeviceNews],
    nodes: NodeService,
    presence: PresenceService,
    jobs: Jobs,
) -> PresenceSweep:
    """Caches kept coherent across nodes (and filled with the devices registered
    elsewhere), and the presence sweep (started)."""
    for sync in syncs:
        sync.join(nats)
    sweep = PresenceSweep(nodes, presence, jobs)
    await sweep.start()
    return sweep
