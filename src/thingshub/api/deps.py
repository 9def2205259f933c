"""The services a route needs, as FastAPI dependencies: routes declare them, never
look them up.

Rules:
- The composition root hands each platform's API one `ApiContext`, which
  every request carries in its scope (served.py: the routes are shared by
  the platforms of a process); routes read it only through this module. A
  route names what it uses by type (`commands: Commands`), so its
  dependencies show in its signature and a test can see what it touches.
- Every dependency is `async def`: FastAPI runs a plain `def` in a worker
  thread, a thread hop per dependency on every request (a third of the
  server's time at 2,000 calls/s). Each reads the request directly rather
  than depending on `context`: every level of dependencies is solved anew
  on every request.
- Firmware and OTA may be absent (a platform started without them): their
  routes answer 503 then.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from thingshub.api.context import ApiContext
from thingshub.api.served import served
from thingshub.core.errors import Unavailable
from thingshub.services.commands import CommandService
from thingshub.services.devices import DeviceService
from thingshub.services.firmware import FirmwareService
from thingshub.services.history import HistoryService
from thingshub.services.images import ImageService
from thingshub.services.keys import KeyService
from thingshub.services.nodes import NodeService
from thingshub.services.ota import OtaService
from thingshub.services.things import ThingService
from thingshub.services.topology import TopologyService


def _ctx(request: Request) -> ApiContext:
    return served(request.scope).ctx


async def context(request: Request) -> ApiContext:
    return _ctx(request)


Context = Annotated[ApiContext, Depends(context)]


async def _devices(request: Request) -> DeviceService:
    return _ctx(request).devices


async def _images(request: Request) -> ImageService:
    return _ctx(request).images


async def _commands(request: Request) -> CommandService:
    return _ctx(request).commands


async def _history(request: Request) -> HistoryService:
    return _ctx(request).history


async def _things(request: Request) -> ThingService:
    return _ctx(request).things


async def _topology(request: Request) -> TopologyService:
    return _ctx(request).topology


async def _keys(request: Request) -> KeyService:
    return _ctx(request).keys


async def _firmware(request: Request) -> FirmwareService:
    ctx = _ctx(request)
    if ctx.firmware is None:
        raise Unavailable("firmware packages are not available on this server")
    return ctx.firmware


async def _ota(request: Request) -> OtaService:
    ctx = _ctx(request)
    if ctx.ota is None:
        raise Unavailable("OTA is not available on this server")
    return ctx.ota


Devices = Annotated[DeviceService, Depends(_devices)]
Images = Annotated[ImageService, Depends(_images)]
Commands = Annotated[CommandService, Depends(_commands)]
History = Annotated[HistoryService, Depends(_history)]
Things = Annotated[ThingService, Depends(_things)]
Topology = Annotated[TopologyService, Depends(_topology)]
Firmware = Annotated[FirmwareService, Depends(_firmware)]
Ota = Annotated[OtaService, Depends(_ota)]
Keys = Annotated[KeyService, Depends(_keys)]


async def _nodes(request: Request) -> NodeService:
    ctx = _ctx(request)
    if ctx.nodes is None:
        raise Unavailable("the cluster's nodes are not known on this server")
    return ctx.nodes


Nodes = Annotated[NodeService, Depends(_nodes)]
