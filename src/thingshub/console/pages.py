"""Registers every console page (each lives in its own module)."""

from __future__ import annotations

from thingshub.console import auth, device, devices, ota, overview, product, products
from thingshub.console.context import ConsoleContext


def register(ctx: ConsoleContext) -> None:
    auth.register(ctx)
    counts = overview.register(ctx)
    products.register(ctx, counts)
    product.register(ctx)
    devices.register(ctx, counts)
    device.register(ctx)
    ota.register(ctx)
