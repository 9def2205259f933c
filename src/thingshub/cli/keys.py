"""`thingshub key ...`: API keys with roles, over the HTTP API.

Rules:
- An HTTP client of a running server (client.py), with a key that sees every
  product and has the admin role (the serve key, found in the data dir, is one).
- `create` prints the new key once, on a line of its own, with a reminder
  that it is not shown again; `list` never shows secrets (the API has none
  to give).
"""

from __future__ import annotations

from typing import Annotated

import typer

from thingshub.cli.client import Api, console, pages, show
from thingshub.cli.options import DirOpt, JsonOpt, KeyOpt, UrlOpt

key_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)

COLUMNS = ["id", "name", "role", "products", "created_at", "last_used_at"]


@key_app.command("create")
def key_create(
    name: str,
    role: Annotated[
        str, typer.Option("--role", help="admin, operator or reader.", show_default=False)
    ],
    product: Annotated[
        list[str] | None,
        typer.Option("--product", help="Limit the key to this product (repeatable)."),
    ] = None,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    data_dir: DirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a key; it is printed once, and never shown again."""
    body: dict[str, object] = {"name": name, "role": role}
    if product:
        body["products"] = product
    made = Api(url, api_key, data_dir).call("POST", "/api/v1/keys", json=body)
    if as_json:
        show(made, True, COLUMNS)
        return
    scope = ", ".join(made["products"]) if made["products"] else "every product"
    console.print(f"made key {made['id']} ({made['role']}, {scope}); it is shown only now:")
    console.print(made["key"], markup=False, highlight=False, soft_wrap=True)


@key_app.command("list")
def key_list(
    url: UrlOpt = None, api_key: KeyOpt = None, data_dir: DirOpt = None, as_json: JsonOpt = False
) -> None:
    """List the keys (without their secrets; the serve key is not among them)."""
    items = pages(Api(url, api_key, data_dir), "/api/v1/keys", {"limit": 1000}, True)
    rows = [{**k, "products": ", ".join(k["products"] or ["every product"])} for k in items]
    show(items if as_json else rows, as_json, COLUMNS, title="API keys")


@key_app.command("revoke")
def key_revoke(
    key_id: Annotated[str, typer.Argument(metavar="ID")],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    data_dir: DirOpt = None,
) -> None:
    """Revoke a key: it stops working at once."""
    Api(url, api_key, data_dir).call("DELETE", f"/api/v1/keys/{key_id}")
    console.print(f"revoked key {key_id}")


def register(app: typer.Typer) -> None:
    app.add_typer(key_app, name="key")
