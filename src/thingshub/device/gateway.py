"""`ThingsPanelGateway`: a ThingsPanel gateway speaking for its sub-devices.

Rules (docs/protocols.md section 4.9):
- A gateway is a `ThingsPanelDevice` on the `gateway/...` topics: its own
  data goes in `gateway_data`, a sub-device's under `sub_device_data` by
  its `sub_address` (one level: sub-devices directly under this gateway).
- A command or attribute set names its target in the nested payload; the
  handler gets the sub-device's address (None for the gateway itself) as its
  first argument: `on_command(lambda address, method, params: ...)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from thingshub.device.base import call
from thingshub.device.thingspanel import ThingsPanelDevice, _json


class ThingsPanelGateway(ThingsPanelDevice):
    family = "gateway"

    async def send_telemetry(
        self,
        values: dict[str, Any] | None = None,
        qos: int = 1,
        *,
        sub_devices: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """The gateway's own values and its sub-devices' ({address: values})."""
        await self.client.publish(
            "gateway/telemetry", _json(_nest(values, sub_devices)), qos, self.timeout
        )

    async def send_sub_attributes(self, sub_devices: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return await self._reported("attributes", _nest(None, sub_devices))

    async def send_sub_event(
        self, address: str, method: str, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        event = {"method": method, "params": params or {}}
        return await self._reported("event", _nest(None, {address: event}))

    def on_command(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """`handler(address, method, params)`: address None for the gateway itself."""
        return super().on_command(handler)

    async def command(self, handler: Callable[..., Any], body: Any) -> Any:
        address, inner = _target(body)
        return await call(handler, address, str(inner.get("method", "")), inner.get("params", {}))


def _nest(own: dict[str, Any] | None, subs: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if own:
        body["gateway_data"] = own
    if subs:
        body["sub_device_data"] = subs
    return body


def _target(body: Any) -> tuple[str | None, dict[str, Any]]:
    if not isinstance(body, dict):
        raise ValueError("a gateway request is an object")
    if isinstance(body.get("gateway_data"), dict):
        return None, body["gateway_data"]
    for address, inner in (body.get("sub_device_data") or {}).items():
        return str(address), dict(inner)
    raise ValueError("the request names no target this gateway knows")
