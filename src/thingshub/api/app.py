"""The FastAPI application: routes, error table, API key, metrics, health.

Rules:
- Everything under `/api` requires an API key, checked before the body is
  read (guard.py), and the role its route has in roles.py (403 when too
  weak; a product the key does not see is absent); `/healthz`, `/metrics`
  and the docs do not.
- A request body under `/api` is at most 1 MiB (413 beyond, counted as it is
  read, guard.py); a firmware upload at most `firmware_max_size` plus its
  form fields.
- `/mqtt` is MQTT over WebSocket for devices (the MQTT server's own ASGI
  application, given in the context): outside `/api`, so no API key;
  devices log in with their MQTT logins.
- The routes hold no platform's state: each request finds its platform's
  parts in its scope (served.py), so one set of routes serves every platform
  of a process.
"""

from __future__ import annotations

import functools

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.types import ASGIApp, Receive, Scope, Send

from thingshub import __version__
from thingshub.api import (
    cluster,
    commands,
    devices,
    errors,
    images,
    keys,
    onenet_devices,
    openapi,
    products,
    stream,
    telemetry,
    things,
    topology,
)
from thingshub.api import firmware as firmware_api
from thingshub.api import ota as ota_api
from thingshub.api.context import ApiContext
from thingshub.api.guard import RequestGuard
from thingshub.api.metrics import FunctionCollector, HttpMetrics
from thingshub.api.params import ApiRoute
from thingshub.api.schemas import ERRORS, ErrorOut
from thingshub.api.served import SERVED, Served, served
from thingshub.api.streamhub import EVENT_TYPES, StreamHub

#: Where devices speak MQTT over WebSocket.
MQTT_WEBSOCKET_PATH = "/mqtt"

DESCRIPTION = """\
The ThingsHub HTTP API for applications.

Every `/api` call needs an API key, sent as `Authorization: Bearer <key>`: the one
printed by `thingshub serve` (also stored in `<data-dir>/api-key`, an admin of
everything), or one made with `POST /api/v1/keys`, whose role (`reader`: every GET
and the stream; `operator`: also devices and acting on them; `admin`: everything)
and products limit it: a role too weak gets 403, another product is 404. Errors are JSON
objects with an `error` sentence. Lists are `{"items": [...], "next": cursor}`,
paged with `?limit=N&cursor=C`. Times are Unix milliseconds.

**Live stream** (WebSocket, not listed below): `GET /api/v1/stream?product=P&device=D&kinds=K,...`
with the key as `Authorization: Bearer <key>` or `?key=<key>` (a missing or wrong key
is refused at the handshake with 401). It sends JSON messages
`{"kind", "product_id", "device", "ts", "data"}` as things happen; `kinds` (default
all): `telemetry` (`data`: `{"ts", "values"}`, one message per reported time),
`attributes` (`{...}`), `event` (`{"method", "params"}`), `presence`
(`{"connectionState"}`), `image` (`{"version", "state"}`), `command`
(`{"cmd_id", "status", "family"}`), `ota` (`{"task_id", "state", "step"}`), `desired`
(`{"<id>": {"value", "version"} or null}`). A client
that reads too slowly loses the oldest messages and is told so with
`{"kind": "dropped", "count": N}`.

**MQTT over WebSocket** (for devices, not listed below): `/mqtt`, subprotocol `mqtt`,
binary frames; no API key, devices log in with their MQTT logins.
"""


class PlatformApi:
    """One platform's HTTP application: the process's routes (`routes_app`), with
    this platform's parts put in each request's scope (served.py), and its MQTT
    over WebSocket at `/mqtt`."""

    def __init__(self, app: FastAPI, platform: Served, mqtt_websocket: ASGIApp | None) -> None:
        self.app = app
        self.served = platform
        self.mqtt_websocket = mqtt_websocket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.mqtt_websocket is not None
            and scope["type"] == "websocket"
            and scope["path"] == MQTT_WEBSOCKET_PATH
        ):
            await self.mqtt_websocket(scope, receive, send)
            return
        scope[SERVED] = self.served
        await self.app(scope, receive, send)


def create_api(ctx: ApiContext, *, own_routes: bool = False) -> PlatformApi:
    """The platform's HTTP application. Its routes are the process's (made once:
    served.py says why), or with `own_routes` made for it alone: the console
    mounts its pages onto them."""
    registry = CollectorRegistry()
    for collect in ctx.collectors:
        registry.register(FunctionCollector(collect))
    hub = StreamHub(ctx.bus, EVENT_TYPES, ctx.stream_limits)
    registry.register(FunctionCollector(hub.metrics))
    ctx.keys.on_revoke(hub.revoke)
    platform = Served(ctx, HttpMetrics(registry), registry, hub)
    app = routes_app() if own_routes else _shared_routes()
    return PlatformApi(app, platform, ctx.mqtt_websocket)


@functools.cache
def _shared_routes() -> FastAPI:
    return routes_app()


def routes_app() -> FastAPI:
    """The routes, the error table, the key's guard and the API's description:
    everything of the application that is the same for every platform."""
    app = FastAPI(
        title="ThingsHub",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=[
            {"name": "keys", "description": "API keys with roles, limited to products."},
            {"name": "products", "description": "Products group devices."},
            {"name": "devices", "description": "Registered devices and their credentials."},
            {"name": "images", "description": "OneNET device images (device shadows)."},
            {"name": "commands", "description": "Calls to devices, waiting for the answer."},
            {
                "name": "thing model",
                "description": "OneNET thing models: properties, events, services, desired values.",
            },
            {"name": "telemetry", "description": "Telemetry, attributes and events reported."},
            {
                "name": "stream",
                "description": (
                    "`GET /api/v1/stream` (WebSocket): live events, filtered by `product`, "
                    "`device` and `kinds`; the key as a bearer header or `?key=`."
                ),
            },
            {
                "name": "ota",
                "description": (
                    "Firmware packages, OTA upgrade tasks, and the download devices use "
                    "(`/ota/download/...`: no API key, a signed token in the URL)."
                ),
            },
            {"name": "operations", "description": "Health and metrics."},
        ],
    )
    app.router.route_class = ApiRoute
    errors.install(app)
    openapi.install(app)
    app.add_middleware(RequestGuard)

    # The key is the guard's to check (before the body is read); openapi.py
    # states it on every /api operation. No per-route dependency repeats it:
    # each is solved anew on every request.
    routers = (
        keys,
        products,
        devices,
        topology,
        images,
        commands,
        telemetry,
        firmware_api,
        ota_api,
        cluster,
    )
    for router in routers:
        app.include_router(router.router)
    app.include_router(things.models)
    app.include_router(things.router)
    app.include_router(ota_api.download_router)  # the token in the URL admits devices
    app.include_router(onenet_devices.router)  # OneNET tokens admit devices
    app.include_router(stream.router)  # checks the key itself, at the handshake

    @app.get(
        "/api/v1/server",
        tags=["operations"],
        responses={401: ERRORS[401]},
    )
    async def server_info(request: Request) -> dict[str, object]:
        """What a client needs to know about this server (e.g. where devices connect)."""
        ctx = served(request.scope).ctx
        return {
            "version": __version__,
            "mqtt_port": ctx.mqtt_port,
            "mqtts_port": ctx.mqtts_port,
            "firmware_max_size": ctx.firmware.max_size if ctx.firmware is not None else None,
        }

    @app.get(
        "/healthz",
        tags=["operations"],
        responses={503: {"model": ErrorOut, "description": "Still starting"}},
    )
    async def healthz(request: Request) -> JSONResponse:
        if not served(request.scope).ctx.is_ready():
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics(request: Request) -> Response:
        registry = served(request.scope).registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
