"""How a call reaches its device: directly, through the gateways above it, or
through the node of the cluster holding its connection.

Rules:
- A sub-device is reached through its top gateway, down a `Route` of
  addresses; the message travels wrapped (`ViaGateway`), marked for a
  sub-gateway where the device has sub-devices of its own.
- A device not connected here is `Elsewhere`: the cluster (`RemoteCalls`)
  runs the operation on the node holding it, or it is offline.
"""

from __future__ import annotations

from dataclasses import dataclass

from thingshub.core.commands import Forwarded
from thingshub.core.errors import DeviceOffline, NotSubscribed
from thingshub.core.messages import AttributesGet, Call, Control, DeviceRef, Outbound, ViaGateway
from thingshub.core.model import Device
from thingshub.core.ports import RemoteCalls


class Elsewhere(Exception):
    """The device (or its top gateway `via`) is not connected here: it may be on
    another node of the cluster (`offline` if not)."""

    def __init__(self, remote: RemoteCalls, via: tuple[str, str], offline: DeviceOffline) -> None:
        super().__init__(offline.message)
        self.remote, self.via, self.offline = remote, via, offline

    async def run(self, op: Forwarded) -> object:
        return await self.remote.run(self.via, self.offline, op)


@dataclass(frozen=True, slots=True)
class Route:
    """The way from a top gateway down to a sub-device: the addresses, and
    whether the sub-device is a gateway of others."""

    path: tuple[str, ...]
    gateway: bool


def wrap(
    message: Call | Control | AttributesGet,
    route: Route | None,
    device: Device | None = None,
) -> Outbound:
    """The message, or the message on its way through a gateway down `route` to `device`."""
    if route is None:
        return message
    target = None if device is None else (device.product_id, device.name)
    return ViaGateway(route.path, message, target, route.gateway)


def ref(device: Device) -> DeviceRef:
    return DeviceRef(device.product_id, device.name, device.device_number)


def not_subscribed(topic: str) -> NotSubscribed:
    return NotSubscribed(f"the device is connected but not subscribed to {topic}")
