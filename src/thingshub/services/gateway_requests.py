"""What gateways ask about their sub-devices and their tree, and what the platform
tells them of it (OneNET's `thing/sub/...`; the wire is the thing dialect's).

Rules:
- A sub-device a gateway names must exist (else 1107) and, to log it in or
  out, be in the gateway's tree, at any level (else 307).
- Login makes the sub-device online, reached through the gateway's
  connection; logout makes it offline (presence.py). Data for it makes it
  online too (things.py).
- Binding (`sub/topo/add`) and unbinding (`sub/topo/delete`) need the
  sub-device's credentials, judged by the dialect (1103, 1104, 1106, 1107);
  then the tree's rules (topology.py): a device another gateway has, or a
  rule of the tree broken, is 313. Binding a child again and unbinding a
  device without a gateway are 200.
- `sub/topo/get` answers the gateway's children; its result, and the
  gateway's answer to a change of its tree, are recorded as events of the
  gateway (`method` the topic, `params` {"id", "code", "msg"}).
- An application's change of a tree (the API: binding, moving, unbinding,
  creating a device under a gateway) is sent to each gateway concerned that
  is online, with its complete list of children; changes the gateway made
  itself are not.
- Every answer leaves once its effect is durable; a storage failure is the
  platform's: 303, and the message is not acknowledged (the gateway sends it
  again).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from thingshub.core import commands as calls
from thingshub.core import thingmodel, topology
from thingshub.core.errors import Conflict, InvalidRequest, NotFound, ThingsHubError
from thingshub.core.events import Event, EventsReceived, TopologyChanged
from thingshub.core.messages import DeviceRef, ThingReply
from thingshub.core.model import DeviceEvent
from thingshub.core.ports import Clock, DeviceLink, EventBus, EventRepo
from thingshub.core.submessages import (
    LOGIN,
    LOGOUT,
    TOPO_ADD,
    GatewayNote,
    SubRequest,
    TopologyNotice,
)
from thingshub.services.presence import PresenceService
from thingshub.services.topology import Key, TopologyService

log = logging.getLogger("thingshub.gateways")


class Refused(Exception):
    def __init__(self, code: int, hint: str) -> None:
        super().__init__(hint)
        self.code = code
        self.hint = hint


class GatewayRequests:
    def __init__(
        self,
        topology_: TopologyService,
        events: EventRepo,
        presence: PresenceService,
        link: DeviceLink,
        clock: Clock,
        bus: EventBus,
    ) -> None:
        self.topology = topology_
        self.devices = topology_.devices
        self.events = events
        self.presence = presence
        self.link = link
        self.clock = clock
        self.bus = bus
        self._tasks: set[asyncio.Task[None]] = set()
        #: Requests refused, by code (for metrics).
        self.refused: dict[int, int] = {}
        bus.subscribe(self._on_event, [TopologyChanged])

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    # ------------------------------------------------------------ from gateways

    async def request(self, ref: DeviceRef, request: SubRequest) -> None:
        top = (ref.product_id, ref.name)
        data: Any = None
        try:
            if request.device is None:
                data = await self._children(top)
            elif request.request in (LOGIN, LOGOUT):
                await self._presence(top, request.request, request.device)
            else:
                await self._bind(top, request)
        except Refused as exc:
            self.refused[exc.code] = self.refused.get(exc.code, 0) + 1
            self.link.send(ref, ThingReply(request.request, request.request_id, exc.code, exc.hint))
            return
        except ThingsHubError:
            hint = "the platform could not store it"
            reply = ThingReply(request.request, request.request_id, thingmodel.INTERNAL_ERROR, hint)
            self.link.send(ref, reply)
            raise
        reply = ThingReply(request.request, request.request_id, thingmodel.SUCCESS, None, data)
        self.link.send(ref, reply)

    async def _children(self, top: Key) -> list[dict[str, str]]:
        children = await self.devices.storage.devices.children(*top, topology.MAX_CHILDREN)
        return [{"productID": c.product_id, "deviceName": c.name} for c in children]

    async def _presence(self, top: Key, request: str, key: Key) -> None:
        device = await self.devices.find_device(*key)
        if device is None:
            raise Refused(thingmodel.DEVICE_NOT_FOUND, f"{key[0]}/{key[1]} does not exist")
        if not await self.topology.below(device, top):
            raise Refused(
                thingmodel.INVALID_IDENTITY,
                f"{key[0]}/{key[1]} is not a sub-device of this gateway",
            )
        if request == LOGIN:
            self.presence.reached(*key, via=top)
        else:
            self.presence.detach(*key)

    async def _bind(self, top: Key, request: SubRequest) -> None:
        key = request.device
        assert key is not None and request.credential is not None
        device = await self.devices.find_device(*key)
        refusal = request.credential(device, self.clock.now_ms() // 1000)
        if refusal is not None:
            raise Refused(*refusal)
        try:
            if request.request == TOPO_ADD:
                await self.topology.adopt(top, key)
            else:
                await self.topology.release(top, key)
        except NotFound as exc:  # deleted meanwhile
            raise Refused(thingmodel.DEVICE_NOT_FOUND, exc.message) from None
        except (Conflict, InvalidRequest) as exc:  # another gateway's, or a rule of the tree
            raise Refused(thingmodel.BAD_REQUEST, exc.message) from None

    async def note(self, ref: DeviceRef, note: GatewayNote) -> None:
        """Recorded as an event of the gateway."""
        params = {"id": note.request_id, "code": note.code, "msg": note.msg}
        event = DeviceEvent(self.clock.now_ms(), note.request, params)
        try:
            await self.events.append(ref.product_id, ref.name, [event])
        except NotFound:
            return  # deleted meanwhile
        if self.bus.wants(EventsReceived):
            self.bus.publish(EventsReceived(ref.product_id, ref.name, [event], event.ts))

    # ------------------------------------------------------------ to gateways

    def _on_event(self, event: Event) -> None:
        if not isinstance(event, TopologyChanged) or event.by_gateway:
            return
        for gateway in {event.gateway, event.previous}:
            if gateway is not None and self.presence.is_connected(*gateway):
                task = asyncio.get_running_loop().create_task(self._tell(gateway))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _tell(self, gateway: Key) -> None:
        """Send the gateway its complete list of children (if it listens)."""
        try:
            device = await self.devices.find_device(*gateway)
            children = await self.devices.storage.devices.children(*gateway, topology.MAX_CHILDREN)
        except ThingsHubError:
            log.exception("the new sub-devices of %s/%s could not be read", *gateway)
            return
        if device is None:
            return
        ref = DeviceRef(device.product_id, device.name, device.device_number)
        request_id = calls.new_call_id(calls.CLOCK, self.clock.now_ms(), ())
        listed = tuple((c.product_id, c.name) for c in children)
        self.link.send(ref, TopologyNotice(request_id, listed))
