"""`thingshub product ...` and `thingshub device ...`: the daily work, over the HTTP API.

Rules:
- These commands are HTTP clients of a running server; they never open the
  database.
- Where the server is: `--url`, else `THINGSHUB_URL`, else the `ports.json`
  of the data dir (`--data-dir` / `THINGSHUB_DATA_DIR`, default
  ./thingshub-data), else http://127.0.0.1:8080. The API key: `--api-key`,
  else `THINGSHUB_API_KEY`, else the data dir's `api-key` file.
- Output is a Rich table, or the API's JSON with `--json`. An API error is
  printed as its sentence and exits with status 1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    import httpx

console = Console()
err_console = Console(stderr=True)

product_app = typer.Typer(help="Create, list, show and delete products.", no_args_is_help=True)
device_app = typer.Typer(help="Create, list, show and delete devices.", no_args_is_help=True)

UrlOpt = Annotated[str | None, typer.Option("--url", help="Server URL [env THINGSHUB_URL].")]
KeyOpt = Annotated[str | None, typer.Option("--api-key", help="API key [env THINGSHUB_API_KEY].")]
DirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Where to find ports.json and api-key.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the API's JSON.")]


class Api:
    def __init__(self, url: str | None, api_key: str | None, data_dir: Path | None) -> None:
        directory = data_dir or Path(os.environ.get("THINGSHUB_DATA_DIR", "./thingshub-data"))
        self.base = url or os.environ.get("THINGSHUB_URL") or self._from_ports(directory)
        key = api_key or os.environ.get("THINGSHUB_API_KEY") or self._from_file(directory)
        if not key:
            _die("no API key: pass --api-key, set THINGSHUB_API_KEY, or run in the data dir")
        # Imported here, not with the module: `serve` and `broker` load this module
        # to register the commands and would carry httpx (0.24 s, 9 MiB) for nothing.
        import httpx

        self.client: httpx.Client = httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    @staticmethod
    def _from_ports(directory: Path) -> str:
        try:
            ports = json.loads((directory / "ports.json").read_text())
            return f"http://127.0.0.1:{int(ports['http'])}"
        except (OSError, ValueError, KeyError, TypeError):
            return "http://127.0.0.1:8080"

    @staticmethod
    def _from_file(directory: Path) -> str | None:
        try:
            return (directory / "api-key").read_text().strip() or None
        except OSError:
            return None

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            _die(f"cannot reach ThingsHub at {self.base}: {exc}")
        if response.status_code >= 400:
            try:
                message = response.json().get("error") or response.text
            except ValueError:
                message = response.text
            _die(f"{message} (HTTP {response.status_code})")
        if response.status_code == 204 or not response.content:
            return None
        return response.json()


def _die(message: str) -> None:
    err_console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def _show(data: Any, as_json: bool, columns: list[str], title: str | None = None) -> None:
    if as_json:
        console.print_json(json.dumps(data))
        return
    rows = data if isinstance(data, list) else [data]
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*[_cell(row.get(col)) for col in columns])
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


def _pages(api: Api, path: str, params: dict[str, Any], everything: bool) -> list[Any]:
    items: list[Any] = []
    while True:
        page = api.call("GET", path, params=params)
        items.extend(page["items"])
        if not everything or not page["next"]:
            return items
        params = {**params, "cursor": page["next"]}


# ---------------------------------------------------------------- products

PRODUCT_COLUMNS = ["id", "name", "created_at"]


@product_app.command("create")
def product_create(
    name: str,
    id: Annotated[str | None, typer.Option(help="Product id.")] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    data_dir: DirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a product."""
    body = {"name": name, **({"id": id} if id else {})}
    _show(
        Api(url, api_key, data_dir).call("POST", "/api/v1/products", json=body),
        as_json,
        PRODUCT_COLUMNS,
    )


@product_app.command("list")
def product_list(
    url: UrlOpt = None, api_key: KeyOpt = None, data_dir: DirOpt = None, as_json: JsonOpt = False
) -> None:
    """List every product."""
    items = _pages(Api(url, api_key, data_dir), "/api/v1/products", {"limit": 1000}, True)
    _show(items, as_json, PRODUCT_COLUMNS, title="Products")


@product_app.command("show")
def product_show(
    pid: str,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    data_dir: DirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one product."""
    _show(
        Api(url, api_key, data_dir).call("GET", f"/api/v1/products/{pid}"), as_json, PRODUCT_COLUMNS
    )


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
            _die(f"--tag {item!r} is not key=value")
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
        _show(created, True, [])
        return
    _show(
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
    items = _pages(
        Api(url, api_key, data_dir), f"/api/v1/products/{pid}/devices", params, all_pages
    )
    _show(items, as_json, DEVICE_COLUMNS, title=f"Devices of {pid}")


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
    _show(device, as_json, ["product_id", *DEVICE_COLUMNS, "created_at"])


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
        "port": server["mqtt_port"],
        "client_id": token["client_id"],
        "onenet_username": token["username"],
        "onenet_password": token["password"],
        "token_expires_at": token["expires_at"],
        "thingspanel_username": device["username"],
        "device_number": device["device_number"],
    }
    if as_json:
        _show(details, True, [])
        return
    table = Table(title=f"Connecting {name} of {pid}", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    for key, value in details.items():
        table.add_row(key, str(value))
    console.print(table)
    console.print(
        "OneNET login: client id, onenet_username, onenet_password. ThingsPanel login: "
        "thingspanel_username and the password shown when the device was created."
    )


def register(app: typer.Typer) -> None:
    app.add_typer(product_app, name="product")
    app.add_typer(device_app, name="device")
