"""What gateways say about their sub-devices and their tree, and what the platform
tells them, whatever the protocol (OneNET's `thing/sub/...` topics today).

Rules:
- A `SubRequest` is a gateway's request about one sub-device (log it in or
  out, bind or unbind it) or about its whole tree (list it: `device` None);
  it is answered as any thing-model request (`ThingReply` under its
  `request`), once its effect is durable.
- A binding or unbinding proves the gateway holds the sub-device's
  credentials: `credential` is its dialect's check of them, given the
  device (None: no such device) and the time; it gives the protocol's
  refusal (code, why), or None when they admit the device. The service
  never reads the credentials itself.
- A `GatewayNote` is a gateway's word that the platform only records (its
  result of a tree listing, its answer to a tree change).
- A `TopologyNotice` tells a gateway its complete list of sub-devices after
  an application changed its tree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from thingshub.core.model import Device

Key = tuple[str, str]

#: The requests' names (the wire's, OneNET's topics after `thing/`).
LOGIN, LOGOUT, TOPO_ADD, TOPO_DELETE, TOPO_GET = (
    "sub/login",
    "sub/logout",
    "sub/topo/add",
    "sub/topo/delete",
    "sub/topo/get",
)

#: A dialect's check of a sub-device's credentials: (code, why) if refused, None if admitted.
CredentialCheck = Callable[[Device | None, int], tuple[int, str] | None]


@dataclass(frozen=True, slots=True)
class SubRequest:
    """A gateway's request (`request`: its name on the wire, e.g. "sub/login")."""

    request: str
    request_id: str
    #: The sub-device it is about, (product id, name); None: the whole tree.
    device: Key | None
    credential: CredentialCheck | None = None


@dataclass(frozen=True, slots=True)
class GatewayNote:
    """A gateway's result or answer that is recorded, not acted on."""

    request: str
    request_id: str
    code: int | None
    msg: str | None


@dataclass(frozen=True, slots=True)
class TopologyNotice:
    """The gateway's sub-devices now, all of them (platform to gateway)."""

    request_id: str
    devices: tuple[Key, ...]
