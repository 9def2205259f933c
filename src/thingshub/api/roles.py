"""The one table of what every HTTP route requires, and the check of it.

Rules (interfaces.md, "API keys and roles"; field-protocols.md §6):
- Every route has an entry, `(method, path template) -> Need` or `PUBLIC`
  (no key: health, metrics, the devices' firmware download). `ApiRoute`
  (params.py) looks its route up when the app is built and refuses to
  build one without an entry, so a new route cannot ship unguarded; a test
  reads the table against the app's routes.
- GETs need `reader`; registering, deleting and acting on devices (image,
  commands, calls, attributes, control, tokens, desired values, topology,
  firmware, OTA tasks) `operator`; products, thing models and keys `admin`.
  Creating products and managing keys need a key that sees every product
  (core/access.py says why).
- The guard (guard.py) has put the caller's `Principal` in the ASGI scope
  before any body is read; `check` runs in the route's handler, after the
  path is matched and before the body or any dependency: a role too weak is
  403; a `{pid}` the key does not see is 404 with the very sentence of a
  product that does not exist (which every route under it answers then).
- No FastAPI dependency does this: each is solved anew on every request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from thingshub.core.access import ADMIN, OPERATOR, READER, Need, Principal
from thingshub.core.errors import Forbidden, NotFound, Unauthorized

#: Where the guard puts the caller's Principal in the ASGI scope.
PRINCIPAL = "thingshub.principal"

#: A route open without a key.
PUBLIC = None

_R = Need(READER)
_O = Need(OPERATOR)
_A = Need(ADMIN)
_EVERYWHERE = Need(ADMIN, everywhere=True)

_P = "/api/v1/products/{pid}"
_D = f"{_P}/devices/{{name}}"

ROUTES: Mapping[tuple[str, str], Need | None] = {
    # operations
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/api/v1/server"): _R,
    ("GET", "/api/v1/cluster"): _R,
    # keys
    ("POST", "/api/v1/keys"): _EVERYWHERE,
    ("GET", "/api/v1/keys"): _EVERYWHERE,
    ("DELETE", "/api/v1/keys/{key_id}"): _EVERYWHERE,
    # products
    ("POST", "/api/v1/products"): _EVERYWHERE,
    ("GET", "/api/v1/products"): _R,
    ("GET", _P): _R,
    ("PATCH", _P): _A,
    ("DELETE", _P): _A,
    ("POST", f"{_P}/access-key"): _A,
    # thing models
    ("PUT", f"{_P}/thing-model"): _A,
    ("GET", f"{_P}/thing-model"): _R,
    ("DELETE", f"{_P}/thing-model"): _A,
    # devices
    ("POST", f"{_P}/devices"): _O,
    ("GET", f"{_P}/devices"): _R,
    ("GET", _D): _R,
    ("DELETE", _D): _O,
    ("POST", f"{_D}/token"): _O,
    # topology
    ("GET", f"{_D}/sub-devices"): _R,
    ("PUT", f"{_D}/gateway"): _O,
    ("DELETE", f"{_D}/gateway"): _O,
    # images
    ("GET", f"{_D}/image"): _R,
    ("POST", f"{_D}/image"): _O,
    ("PATCH", f"{_D}/image"): _O,
    # calls
    ("POST", f"{_D}/commands"): _O,
    ("GET", f"{_D}/commands"): _R,
    ("POST", f"{_D}/calls"): _O,
    ("PUT", f"{_D}/attributes"): _O,
    ("POST", f"{_D}/attributes/get"): _O,
    ("POST", f"{_D}/control"): _O,
    # thing model calls and desired values
    ("POST", f"{_D}/properties"): _O,
    ("POST", f"{_D}/properties/get"): _O,
    ("POST", f"{_D}/services/{{identifier}}"): _O,
    ("GET", f"{_D}/desired"): _R,
    ("PATCH", f"{_D}/desired"): _O,
    # what devices reported
    ("GET", f"{_D}/telemetry/latest"): _R,
    ("GET", f"{_D}/telemetry"): _R,
    ("GET", f"{_D}/attributes"): _R,
    ("GET", f"{_D}/events"): _R,
    # firmware and OTA
    ("POST", f"{_P}/firmware"): _O,
    ("GET", f"{_P}/firmware"): _R,
    ("GET", f"{_P}/firmware/{{firmware_id}}"): _R,
    ("DELETE", f"{_P}/firmware/{{firmware_id}}"): _O,
    ("POST", f"{_P}/ota-tasks"): _O,
    ("GET", f"{_P}/ota-tasks"): _R,
    ("GET", f"{_P}/ota-tasks/{{task_id}}"): _R,
    ("POST", f"{_P}/ota-tasks/{{task_id}}/cancel"): _O,
    ("GET", "/ota/download/{task_id}/{device}"): PUBLIC,
    ("HEAD", "/ota/download/{task_id}/{device}"): PUBLIC,
    # OneNET's device APIs: a OneNET token admits the device (api/onenet_devices.py)
    **{
        (method, f"/{prefix}/{{pid}}/{{name}}{path}"): PUBLIC
        for prefix in ("ota", "fuse-ota")
        for method, path in (
            ("POST", "/version"),
            ("GET", "/version"),
            ("GET", "/check"),
            ("GET", "/{tid}/check"),
            ("GET", "/{tid}/download"),
            ("GET", "/{tid}/download/"),
            ("POST", "/{tid}/status"),
        )
    },
    ("POST", "/mqtt/v1/devices/reg"): PUBLIC,
}


class MissingRole(LookupError):
    """A route without an entry in ROUTES (raised when the app is built)."""


def need_of(method: str, path: str) -> Need | None:
    """The route's entry; MissingRole if it has none."""
    try:
        return ROUTES[(method, path)]
    except KeyError:
        raise MissingRole(
            f"{method} {path} has no entry in thingshub.api.roles.ROUTES: give it the role it needs"
        ) from None


def principal(scope: Mapping[str, Any]) -> Principal:
    """The caller of a request under /api (the guard put it there)."""
    found = scope.get(PRINCIPAL)
    if not isinstance(found, Principal):
        raise Unauthorized("a valid API key is required (Authorization: Bearer <key>)")
    return found


def product_absent(product_id: str) -> NotFound:
    return NotFound(f"product {product_id!r} does not exist")


def check(scope: Mapping[str, Any], need: Need) -> None:
    """Raise unless the caller may do this, on this product (see the module rules)."""
    caller = principal(scope)
    if not caller.may(need):
        if caller.may(Need(need.role)):  # the role suffices: its products do not
            raise Forbidden("this needs a key that is not limited to some products")
        raise Forbidden(f"this needs a key with the role {need.role}, not {caller.role}")
    if caller.products is None:
        return
    params: Mapping[str, str] = scope.get("path_params", {})
    pid = params.get("pid")
    if pid is not None and not caller.sees(pid):
        raise product_absent(pid)  # what a device route of a missing product says too


def check_gateway(scope: Mapping[str, Any], gateway: tuple[str, str] | None) -> None:
    """A gateway named in a body is absent to a key that does not see its product."""
    if gateway is not None and not principal(scope).sees(gateway[0]):
        raise NotFound(f"gateway {gateway[1]!r} of product {gateway[0]!r} does not exist")
