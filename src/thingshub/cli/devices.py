"""`thingshub product ...` and `thingshub device ...`: the daily work, over the HTTP API.

Rules:
- These commands are HTTP clients of a running server (client.py says how
  they find it and print); they never open the database.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.table import Table

from thingshub.cli.client import Api, console, die, pages, show
from thingshub.cli.options import DirOpt, JsonOpt, KeyOpt, UrlOpt

product_app = typer.Typer(
    help="Create, list, show, change and delete products.", no_args_is_help=True
)
device_app = typer.Typer(help="Create, list, show and delete devices.", no_args_is_help=True)

# ---------------------------------------------------------------- products

PRODUCT_COLUMNS = ["id", "name", "created_at", "gateway_auto_register", "dynamic_registration"]
#: `--gateway-auto-register/--no-...`: may its gateways create sub-devices (devices/register)?
AutoRegister = Annotated[
    bool | None,
    typer.Option(help="Let its gateways create sub-devices on devices/register."),
]
#: `--dynamic-registration/--no-...`: may devices register themselves (OneNET's API)?
DynamicRegistration = Annotated[
    bool | None,
    typer.Option(help="Let devices register themselves (OneNET's /mqtt/v1/devices/reg)."),
]


@product_app.command("create")
def product_create(
    name: str,
    id: Annotated[str | None, typer.Option(help="Product id.")] = None,
    gateway_auto_register: AutoRegister = None,
    dynamic_registration: DynamicRegistration = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    data_dir: DirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a product; its OneNET access key is shown this once."""
    body: dict[str, Any] = {"name": name, **({"id": id} if id else {})}
    if gateway_auto_register is not None:
        body["gateway_auto_register"] = gateway_auto_register
    if dynamic_registration is not None:
        body["dynamic_registration"] = dynamic_registration
    show(
        Api(url, api_key, data_dir).call("POST", "/api/v1/products", json=body),
        as_json,
        [*PRODUCT_COLUMNS, "access_key"],
    )


@product_app.command("list")
def product_list(
    url: UrlOpt = None, api_key: KeyOpt = None, data_dir: DirOpt = None, as_json: JsonOpt = False
) -> None:
    """List every product."""
    items = pages(Api(url, api_key, data_dir), "/api/v1/products", {"limit": 1000}, True)
    show(items, as_json, PRODUCT_COLUMNS, title="Products")


@product_app.command("show")
def product_show(
    pid: str,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    data_dir: DirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one product."""
    show(
        Api(url, api_key, data_dir).call("GET", f"/api/v1/products/{pid}"), as_json, PRODUCT_COLUMNS
    )


@product_app.command("set")
def product_set(
    pid: str,
    name: Annotated[str | None, typer.Option(help="A new name.")] = None,
    gateway_auto_register: AutoRegister = None,
    dynamic_registration: DynamicRegistration = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    data_dir: DirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a product's name or settings; those not given keep their values."""
    body: dict[str, Any] = {
        "name": name,
        "gateway_auto_register": gateway_auto_register,
        "dynamic_registration": dynamic_registration,
    }
    body = {k: v for k, v in body.items() if v is not None}
    if not body:
        die(
            "nothing to change: give --name, --[no-]gateway-auto-register"
            " or --[no-]dynamic-registration"
        )
    show(
        Api(url, api_key, data_dir).call("PATCH", f"/api/v1/products/{pid}", json=body),
        as_json,
        PRODUCT_COLUMNS,
    )


@product_app.command("rotate-key")
def product_rotate_key(
    pid: str,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    data_dir: DirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Give a product a new OneNET access key (shown this once); the old one
    stops working at once, for tokens and registrations signed with it."""
    answer = Api(url, api_key, data_dir).call("POST", f"/api/v1/products/{pid}/access-key")
    show(answer, as_json, ["access_key"])


@product_app.command("delete")
def product_delete(
    pid: str, url: UrlOpt = None, api_key: KeyOpt = None, data_dir: DirOpt = None
) -> None:
    """Delete a product (it must have no devices)."""
    Api(url, api_key, data_dir).call("DELETE", f"/api/v1/products/{pid}")
    console.print(f"deleted product {pid}")


# ---------------------------------------------------------------- devices

DEVICE_COLUMNS = [
    "name",
    "device_number",
    "username",
    "connectionState",
    "lastActivityTime",
    "tags",
]


def _tags(values: list[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    tags = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            die(f"--tag {item!r} is not key=value")
        tags[key] = value
    return tags


@device_app.command("create")
def device_create(
    pid: str,
    name: str,
    device_number: Annotated[str | None, typer.Option(help="ThingsPanel device number.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="key=value (repeatable).")] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    data_dir: DirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a device; its key and password are shown this once."""
    body: dict[str, Any] = {"name": name}
    if device_number:
        body["device_number"] = device_number
    if tags := _tags(tag):
        body["tags"] = tags
    created = Api(url, api_key, data_dir).call("POST", f"/api/v1/products/{pid}/devices", json=body)
    if as_json:
        show(created, True, [])
        return
    show(
        created,
        False,
        ["name", "device_number", "username", "password", "key"],
        title=f"Device {name} of {pid} (save the key and password: they are not shown again)",
    )


@device_app.command("list")
def device_list(
    pid: str,
    search: Annotated[str | None, typer.Option(help="Names or numbers containing this.")] = None,
    limit: Annotated[int, typer.Option(help="Devices per page.")] = 100,
    all_pages: Annotated[bool, typer.Option("--all", help="Fetch every page.")] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    data_dir: DirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List a product's devices with their connection state."""
    params: dict[str, Any] = {"limit": limit, **({"search": search} if search else {})}
    items = pages(Api(url, api_key, data_dir), f"/api/v1/products/{pid}/devices", params, all_pages)
    show(items, as_json, DEVICE_COLUMNS, title=f"Devices of {pid}")


@device_app.command("show")
def device_show(
    pid: str,
    name: str,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    data_dir: DirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one device."""
    device = Api(url, api_key, data_dir).call("GET", f"/api/v1/products/{pid}/devices/{name}")
    show(device, as_json, ["product_id", *DEVICE_COLUMNS, "created_at"])


@device_app.command("delete")
def device_delete(
    pid: str, name: str, url: UrlOpt = None, api_key: KeyOpt = None, data_dir: DirOpt = None
) -> None:
    """Delete a device: its connections close and its credentials stop working."""
    Api(url, api_key, data_dir).call("DELETE", f"/api/v1/products/{pid}/devices/{name}")
    console.print(f"deleted device {name} of {pid}")


@device_app.command("connect")
def device_connect(
    pid: str,
    name: str,
    expires_in: Annotated[int, typer.Option(help="Token lifetime in seconds.")] = 86400,
    method: Annotated[str, typer.Option(help="md5, sha1 or sha256.")] = "sha256",
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    data_dir: DirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Connection details for a device, with a fresh OneNET token."""
    api = Api(url, api_key, data_dir)
    device = api.call("GET", f"/api/v1/products/{pid}/devices/{name}")
    token = api.call(
        "POST",
        f"/api/v1/products/{pid}/devices/{name}/token",
        json={"expires_in": expires_in, "method": method},
    )
    server = api.call("GET", "/api/v1/server")
    host = urlsplit(api.base).hostname or "127.0.0.1"
    details = {
        "host": host,
        "port": server["mqtt_port"],  # None: plain MQTT is off
        "tls_port": server.get("mqtts_port"),  # None: no MQTT over TLS
        "client_id": token["client_id"],
        "onenet_username": token["username"],
        "onenet_password": token["password"],
        "token_expires_at": token["expires_at"],
        "thingspanel_username": device["username"],
        "device_number": device["device_number"],
    }
    if as_json:
        show(details, True, [])
        return
    table = Table(title=f"Connecting {name} of {pid}", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    for key, value in details.items():
        if value is not None:
            table.add_row(key, str(value))
    console.print(table)
    console.print(
        "OneNET login: client id, onenet_username, onenet_password. ThingsPanel login: "
        "thingspanel_username and the password shown when the device was created."
    )


def register(app: typer.Typer) -> None:
    app.add_typer(product_app, name="product")
    app.add_typer(device_app, name="device")
