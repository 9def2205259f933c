"""The device page: who it is and how it connects, its thing model (properties,
calls, desired values), telemetry, image, calls, attributes and events, its
gateway and its sub-devices, all live.

Rules:
- One bus subscription for the page (live.py), for this device's events
  and those of the sub-devices its tree shows; each section applies its own
  kind.
- Connection details never show a stored secret: the key stays on the
  server; the console mints OneNET tokens with it, as the API's
  `POST .../token` does, and the ThingsPanel password was shown once at
  registration.
- A device that does not exist (or was deleted) is a page saying so, not an
  error.
- The thing model cards appear when the product has a model as the page
  opens (a model set later shows on the next visit).
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import RedirectResponse
from nicegui import ui

from thingshub.console import fmt
from thingshub.console.access import can, products_seen
from thingshub.console.auth import current, gate
from thingshub.console.context import ConsoleContext
from thingshub.console.device_commands import CommandPanel
from thingshub.console.device_data import AttributesPanel, EventsPanel
from thingshub.console.device_desired import DesiredPanel
from thingshub.console.device_gateway import GatewayPanel
from thingshub.console.device_image import ImagePanel
from thingshub.console.device_telemetry import TelemetryPanel
from thingshub.console.device_thing import ThingPanel
from thingshub.console.device_tree import SubDevicesPanel
from thingshub.console.layout import card, empty, frame, presence_chip, set_presence, tid
from thingshub.console.live import LiveFeed
from thingshub.core.errors import NotFound
from thingshub.core.events import (
    AttributesReported,
    CommandFinished,
    DesiredChanged,
    DeviceDeleted,
    Event,
    EventsReceived,
    ImageChanged,
    PresenceChanged,
    TelemetryReceived,
    TopologyChanged,
)
from thingshub.core.model import Device
from thingshub.services.scope import gateway_seen

LIVE_KINDS = [
    TelemetryReceived,
    AttributesReported,
    EventsReceived,
    PresenceChanged,
    ImageChanged,
    CommandFinished,
    DesiredChanged,
    TopologyChanged,
    DeviceDeleted,
]
TOKEN_LIFETIMES = {"1 hour": 3600, "1 day": 86400, "30 days": 30 * 86400, "1 year": 365 * 86400}
TICK_S = 5.0
#: Products suggested as a gateway's product (any id may be typed).
MAX_PRODUCTS = 1000


def _field(label: str, value: str, test_id: str | None = None) -> ui.label:
    ui.label(label).classes("text-sm text-slate-500")
    shown = ui.label(value).classes("th-mono text-sm break-all")
    if test_id:
        shown.props(tid(test_id))
    return shown


def connection_card(ctx: ConsoleContext, device: Device, host: str) -> None:
    pid, name = device.product_id, device.name
    with card("Connection", "cable"):
        with ui.grid(columns="auto 1fr").classes("gap-x-6 gap-y-1 items-center w-full"):
            if ctx.api.mqtt_port is not None:
                _field("MQTT server", f"{host}:{ctx.api.mqtt_port}", "mqtt-address")
            if ctx.api.mqtts_port is not None:
                _field("MQTT over TLS", f"{host}:{ctx.api.mqtts_port}", "mqtts-address")
            _field("Client id", name)
            _field("Device number", device.device_number)
        ui.separator()
        ui.label("OneNET login").classes("text-sm font-medium text-slate-600")
        with ui.grid(columns="auto 1fr").classes("gap-x-6 gap-y-1 items-center w-full"):
            _field("User name", pid)
            _field("Password", "a token signed with the device key")
            _field("Topics", f"$sys/{pid}/{name}/#")
        if can(ctx, "device.token"):  # minting needs an operator (access.py)
            with ui.row().classes("items-center gap-3 w-full"):
                lifetime = (
                    ui.select(list(TOKEN_LIFETIMES), value="1 day", label="Valid for")
                    .props("outlined dense")
                    .classes("w-32")
                )
                token = (
                    ui.input("Token")
                    .props("outlined dense readonly " + tid("token"))
                    .classes("flex-1 th-mono")
                )

                def mint() -> None:
                    expires_at = fmt.now_ms() // 1000 + TOKEN_LIFETIMES[lifetime.value]
                    token.set_value(ctx.api.tokens(device.key, pid, name, expires_at, "sha256"))
                    token.props(f"hint='expires {fmt.when(expires_at * 1000)}'")

                ui.button("Mint a token", icon="key", on_click=mint).props(
                    "unelevated dense " + tid("mint-token")
                )
        ui.separator()
        ui.label("ThingsPanel login").classes("text-sm font-medium text-slate-600")
        with ui.grid(columns="auto 1fr").classes("gap-x-6 gap-y-1 items-center w-full"):
            _field("User name", device.username, "tp-username")
            _field("Password", "shown once, when the device was registered")
            _field("Topics", f"devices/telemetry, devices/command/{device.device_number}/+")


def _host(ctx: ConsoleContext, request: Request) -> str:
    if ctx.mqtt_host in ("0.0.0.0", "::", ""):
        return request.url.hostname or ctx.mqtt_host
    return ctx.mqtt_host


def register(ctx: ConsoleContext) -> None:
    @ui.page("/products/{pid}/devices/{name}", title="Device · ThingsHub")
    async def device_page(request: Request, pid: str, name: str) -> RedirectResponse | None:
        if (denied := gate(ctx, request)) is not None:
            return denied
        who = current(ctx)
        device = await ctx.api.devices.find_device(pid, name) if who.sees(pid) else None
        if device is None:  # absent, or of a product the key does not see
            with frame("devices", f"Device {name}"), card():
                empty(f"There is no device {name!r} in product {pid!r}.")
                ui.link("Back to the devices", f"/devices?product={pid}")
            return None
        device = gateway_seen(who, device)  # another product's gateway is absent too
        state = await ctx.api.presence.get(pid, name)
        model = await ctx.api.things.model(pid)
        products = [p.id for p in (await products_seen(ctx, MAX_PRODUCTS)).items]
        ui.page_title(f"{name} · ThingsHub")

        with frame("devices", name, f"Product {pid} · device number {device.device_number}"):
            with ui.row().classes("items-center gap-3 -mt-3"):
                status = presence_chip(state.online).props(tid("device-status"))
                activity = ui.label().classes("text-sm text-slate-500")
                ui.link("← all devices", f"/devices?product={pid}").classes(
                    "text-sm text-primary no-underline ml-4"
                )
                ui.link(f"product {pid}", f"/products/{pid}").classes(
                    "text-sm text-primary no-underline"
                )
            with ui.grid(columns=2).classes("w-full gap-5"):
                with ui.column().classes("gap-5 min-w-0"):
                    connection_card(ctx, device, _host(ctx, request))
                    gateway = GatewayPanel(ctx, device, products)
                with ui.column().classes("gap-5 min-w-0"):
                    with card("Latest values", "speed") as latest_box:
                        pass
                    with card("Attributes", "tune"):
                        attributes = AttributesPanel(ctx, pid, name)
            tree = SubDevicesPanel(ctx, pid, name)
            thing = ThingPanel(ctx, pid, name, model) if model is not None else None
            desired = DesiredPanel(ctx, pid, name, model) if model is not None else None
            telemetry = TelemetryPanel(ctx, pid, name, latest_box)
            image = ImagePanel(ctx, pid, name)
            with ui.grid(columns=2).classes("w-full gap-5"):
                with card("Command history", "history") as history_box:
                    pass
                commands = CommandPanel(ctx, pid, name, history_box)
                history_box.move(target_index=-1)
            with card("Events", "notifications"):
                events = EventsPanel(ctx, pid, name)

        async def tick() -> None:
            current = await ctx.api.presence.get(pid, name)
            set_presence(status, current.online)
            activity.set_text(f"last activity {fmt.ago(current.last_activity)}")
            telemetry.tick()
            if thing is not None:
                thing.tick()
            await tree.tick()

        async def apply(batch: list[Event]) -> None:
            await tree.apply(batch)
            batch = [e for e in batch if e.product_id == pid and e.name == name]
            if any(isinstance(e, PresenceChanged) for e in batch):
                await tick()
            gateway.apply(batch)
            image.apply(batch)
            attributes.apply(batch)
            events.apply(batch)
            if thing is not None and desired is not None:
                thing.apply(batch)
                desired.apply(batch)
            await telemetry.apply(batch)
            await commands.apply(batch)

        def wanted(event: Event) -> bool:
            return (event.product_id == pid and event.name == name) or tree.wants(event)

        try:
            await tick()
            await telemetry.load()
            await image.load()
            await commands.load()
            await attributes.load()
            await events.load()
            await tree.load()
            if thing is not None and desired is not None:
                await thing.load()
                await desired.load()
        except NotFound:
            ui.notify("This device was just deleted.", type="warning")
            return None
        LiveFeed(ctx.api.bus, LIVE_KINDS, wanted, apply)
        ui.timer(TICK_S, tick)
        return None
