"""The services a route needs, as FastAPI dependencies: routes declare them, never
look them up.

Rules:
- The composition root hands the API one `ApiContext` (app.state.ctx); this
  module is the only place that reads it. A route names what it uses by
  type (`commands: Commands`), so its dependencies show in its signature
  and a test can see what it touches.
- Every dependency is `async def`: FastAPI runs a plain `def` in a worker
  thread, a thread hop per dependency on every request (a third of the
  server's time at 2,000 calls/s).
- Firmware and OTA may be absent (a platform started without them): their
  routes answer 503 then.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from thingshub.api.context import ApiContext
from thingshub.core.errors import Unavailable
from thingshub.services.commands import CommandService
from thingshub.services.devices import DeviceService
from thingshub.services.firmware import FirmwareService
from thingshub.services.history import HistoryService
from thingshub.services.images import ImageService
from thingshub.services.ota import OtaService
from thingshub.services.things import ThingService
from thingshub.services.topology import TopologyService


async def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


Context = Annotated[ApiContext, Depends(context)]


async def _devices(ctx: Context) -> DeviceService:
    return ctx.devices


async def _images(ctx: Context) -> ImageService:
    return ctx.images


async def _commands(ctx: Context) -> CommandService:
    return ctx.commands


async def _history(ctx: Context) -> HistoryService:
    return ctx.history


async def _things(ctx: Context) -> ThingService:
    return ctx.things


async def _topology(ctx: Context) -> TopologyService:
    return ctx.topology


async def _firmware(ctx: Context) -> FirmwareService:
    if ctx.firmware is None:
        raise Unavailable("firmware packages are not available on this server")
    return ctx.firmware


async def _ota(ctx: Context) -> OtaService:
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
