"""The gateway card of a device page: the gateway the device is reached through (a
link to its page) and its address there; binding it to a gateway, moving it,
or unbinding it.

Rules:
- Binding and unbinding are the topology service's, as `PUT/DELETE
  .../gateway` do: the tree's rules (no cycle, at most 5 levels, at most
  1,500 children) refuse with the API's sentence, shown under the form; an
  address a sibling holds is refused the same way.
- The card follows the device's topology events, so a binding made
  elsewhere (the API, a gateway registering it, another console) shows
  without a reload.
"""

from __future__ import annotations

from nicegui import ui

from thingshub.console import fmt
from thingshub.console.access import can
from thingshub.console.auth import current
from thingshub.console.context import ConsoleContext
from thingshub.console.devices import device_path
from thingshub.console.layout import card, tid
from thingshub.core.errors import NotFound, ThingsHubError
from thingshub.core.events import Event, TopologyChanged
from thingshub.core.model import Device

Key = tuple[str, str]


class GatewayPanel:
    def __init__(self, ctx: ConsoleContext, device: Device, products: list[str]) -> None:
        self.ctx = ctx
        self.pid = device.product_id
        self.name = device.name
        self.who = current(ctx)
        with card("Gateway", "router") as box:
            box.props(tid("gateway-card"))
            with ui.row().classes("items-center gap-2 w-full"):
                self.through = ui.label().classes("text-sm text-slate-600")
                self.link = ui.link("", "#").classes(
                    "text-sm text-primary font-medium no-underline th-mono"
                )
                self.link.props(tid("gateway-link"))
                self.address = ui.label().classes("text-sm text-slate-600 th-mono")
                self.address.props(tid("gateway-address"))
            #: Bind and unbind only for keys that may (access.py).
            self.edits = can(ctx, "device.gateway")
            if self.edits:
                self._form(products)
        self._show(device.gateway, device.sub_address)

    def _form(self, products: list[str]) -> None:
        with ui.row().classes("items-start gap-3 w-full"):
            self.product = (
                ui.input("Gateway's product", value=self.pid, autocomplete=products)
                .props("outlined dense " + tid("gateway-product"))
                .classes("min-w-[10rem]")
            )
            self.gateway = (
                ui.input("Gateway's name")
                .props("outlined dense " + tid("gateway-name"))
                .classes("min-w-[12rem]")
            )
            self.sub_address = (
                ui.input("Address (optional)")
                .props("outlined dense " + tid("gateway-sub-address"))
                .classes("w-40")
            )
        with ui.row().classes("items-center gap-3"):
            self.bind_button = ui.button("Bind", icon="link", on_click=self.bind).props(
                "unelevated " + tid("gateway-bind")
            )
            self.unbind_button = ui.button("Unbind", icon="link_off", on_click=self.unbind).props(
                "outline color=negative " + tid("gateway-unbind")
            )
        self.problem = ui.label().classes("text-negative text-sm").props(tid("gateway-problem"))

    async def bind(self) -> None:
        self.problem.set_text("")
        gateway = (self.product.value.strip() or self.pid, self.gateway.value.strip())
        address = self.sub_address.value.strip() or None
        try:
            if not self.who.sees(gateway[0]):  # absent to this key, as in the API
                raise NotFound(f"gateway {gateway[1]!r} of product {gateway[0]!r} does not exist")
            moved = await self.ctx.api.topology.bind(self.pid, self.name, gateway, address)
        except ThingsHubError as exc:
            self.problem.set_text(fmt.error(exc))
            return
        self._show(moved.gateway, moved.sub_address)

    async def unbind(self) -> None:
        self.problem.set_text("")
        try:
            await self.ctx.api.topology.unbind(self.pid, self.name)
        except ThingsHubError as exc:
            self.problem.set_text(fmt.error(exc))
            return
        self._show(None, None)

    def apply(self, batch: list[Event]) -> None:
        for event in batch:
            if isinstance(event, TopologyChanged) and (event.product_id, event.name) == (
                self.pid,
                self.name,
            ):
                self._show(event.gateway, event.sub_address)

    def _show(self, gateway: Key | None, sub_address: str | None) -> None:
        bound = gateway is not None
        self.link.set_visibility(bound)
        self.address.set_visibility(bound)
        if self.edits:
            self.unbind_button.set_visibility(bound)
            self.bind_button.set_text("Move" if bound else "Bind")
        if gateway is None:
            self.through.set_text("Connects by itself: no gateway.")
            return
        self.through.set_text("Reached through")
        self.link.set_text(gateway[1] if gateway[0] == self.pid else f"{gateway[1]} ({gateway[0]})")
        self.link.props(f'href="{device_path(*gateway)}"')
        self.address.set_text(
            f"at address {sub_address}" if sub_address else "with no address there"
        )
