"""`thingshub model ...`: a product's thing model (TSL), over the HTTP API.

Rules:
- These commands are HTTP clients of a running server (client.py says how
  they find it and print); they never open the database and never load the
  platform: the model is shown as the server's canonical document says it.
- `set` sends the file's JSON as it is (PUT .../thing-model) and prints the
  new revision; the server checks it, and a refused model is printed with
  the JSON pointer of its fault and exits with status 1, as does a file that
  cannot be read or is not JSON.
- `show` prints a table per section (properties, events, services), or the
  API's JSON with `--json`.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from thingshub.cli.client import Api, console, die, failure, show
from thingshub.cli.options import DirOpt, JsonOpt, KeyOpt, UrlOpt

model_app = typer.Typer(help="Set, show and delete a product's thing model.", no_args_is_help=True)

EVENT_STYLES = {"info": "cyan", "alert": "yellow", "error": "red"}
CALL_TYPES = {"s": "sync", "a": "async"}


def _path(pid: str) -> str:
    return f"/api/v1/products/{pid}/thing-model"


def read_document(file: Path) -> Any:
    """The JSON of a TSL file (UTF-8, a byte-order mark allowed); exits on a fault."""
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        die(f"cannot read {file}: {exc.strerror or exc}")
    except UnicodeDecodeError:
        die(f"{file} is not UTF-8 text (a TSL file is JSON)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        die(f"{file} is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})")


@model_app.command("set")
def model_set(
    pid: str,
    file: Annotated[Path, typer.Argument(help="A TSL file: JSON, as OneNET exports it.")],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    data_dir: DirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set (or replace) a product's thing model from a TSL file; prints its revision."""
    document = read_document(file)
    api = Api(url, api_key, data_dir)
    response = api.request("PUT", _path(pid), json=document)
    if response.status_code >= 400:
        body = _json(response)
        where = body.get("path") if isinstance(body, dict) else None
        if isinstance(where, str):
            pointer = where or "/"
            error = str(body.get("error") or "").removeprefix(f"{pointer}: ")
            die(f"the model is refused at {pointer}: {error} (HTTP {response.status_code})")
        die(failure(response))
    stored = response.json()
    if as_json:
        show(stored, True, [])
        return
    counts = ", ".join(
        f"{len(stored.get(k) or [])} {k}" for k in ("properties", "events", "services")
    )
    console.print(f"thing model of {pid} set: revision {stored['revision']} ({counts})")


@model_app.command("show")
def model_show(
    pid: str,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    data_dir: DirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a product's thing model: its properties, events and services."""
    stored = Api(url, api_key, data_dir).call("GET", _path(pid))
    if as_json:
        show(stored, True, [])
        return
    updated = datetime.fromtimestamp(stored["updated_at"] / 1000).strftime("%Y-%m-%d %H:%M:%S")
    console.print(f"Thing model of {pid}: revision {stored['revision']}, updated {updated}")
    properties = Table(title="Properties", title_justify="left")
    for column in ("identifier", "name", "type", "range / unit", "access"):
        properties.add_column(column)
    for p in stored.get("properties") or []:
        data_type = p.get("dataType") or {}
        properties.add_row(
            *_cells(
                p.get("identifier"),
                p.get("name"),
                type_text(data_type),
                range_text(data_type),
                p.get("accessMode"),
            )
        )
    events = Table(title="Events", title_justify="left")
    for column in ("identifier", "name", "type", "output"):
        events.add_column(column)
    for e in stored.get("events") or []:
        kind = _text(e.get("eventType"))
        identifier, name, output = _cells(
            e.get("identifier"), e.get("name"), params_text(e.get("outputData"))
        )
        events.add_row(identifier, name, Text(kind, style=EVENT_STYLES.get(kind, "")), output)
    services = Table(title="Services", title_justify="left")
    for column in ("identifier", "name", "call", "input", "output"):
        services.add_column(column)
    for s in stored.get("services") or []:
        services.add_row(
            *_cells(
                s.get("identifier"),
                s.get("name"),
                CALL_TYPES.get(str(s.get("callType")), _text(s.get("callType"))),
                params_text(s.get("input")),
                params_text(s.get("output")),
            )
        )
    for table in (properties, events, services):
        if table.row_count:
            console.print(table)
        else:
            console.print(f"{table.title}: none")


@model_app.command("delete")
def model_delete(
    pid: str, url: UrlOpt = None, api_key: KeyOpt = None, data_dir: DirOpt = None
) -> None:
    """Delete a product's thing model (what devices reported stays)."""
    Api(url, api_key, data_dir).call("DELETE", _path(pid))
    console.print(f"deleted the thing model of {pid}")


# ---------------------------------------------------------------- how types read


def _json(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _text(value: object) -> str:
    if value is None or value == "":
        return "-"
    return str(value)


def _cells(*values: object) -> list[Text]:
    """Cells taken as text, never as Rich markup (a model's names are anyone's)."""
    return [Text(_text(v)) for v in values]


def type_text(data_type: dict[str, Any]) -> str:
    kind = _text(data_type.get("type"))
    if kind == "array":
        specs = data_type.get("specs")
        specs = specs if isinstance(specs, dict) else {}
        item = specs["item"] if isinstance(specs.get("item"), dict) else specs
        return f"array<{_text(item.get('type'))}>"
    return kind


def range_text(data_type: dict[str, Any]) -> str:
    """What the type admits, as the model says it: bounds and unit, enum labels, lengths."""
    kind = data_type.get("type")
    specs = data_type.get("specs")
    if kind == "struct" and isinstance(specs, list):
        members = (
            f"{_text(m.get('identifier'))}: {type_text(m.get('dataType') or {})}" for m in specs
        )
        return "{" + ", ".join(members) + "}"
    if not isinstance(specs, dict):
        return "-"
    if kind in ("int32", "int64", "float", "double"):
        low, high = _bound(specs.get("min")), _bound(specs.get("max"))
        if low and high:
            bounds = f"{low} … {high}"
        else:
            bounds = f"≥ {low}" if low else f"≤ {high}" if high else ""
        return " ".join(part for part in (bounds, str(specs.get("unit") or "")) if part) or "-"
    if kind in ("enum", "bool") and specs:
        return ", ".join(f"{k}: {v}" for k, v in specs.items())
    if kind == "string" and specs.get("length"):
        return f"≤ {specs['length']} chars"
    if kind == "bitMap" and specs.get("length"):
        return f"{specs['length']} bits"
    if kind == "date":
        return "Unix time, ms"
    if kind == "array":
        size = specs.get("size", specs.get("length"))
        return f"≤ {size} items" if size is not None else "-"
    return "-"


def _bound(value: object) -> str:
    return "" if value in (None, "") else str(value)


def params_text(params: object) -> str:
    """A list of params, one per line: `identifier: type range`."""
    if not isinstance(params, list) or not params:
        return "-"
    lines = []
    for param in params:
        if not isinstance(param, dict):
            continue
        data_type = param.get("dataType") or {}
        shown = range_text(data_type)
        extra = "" if shown == "-" else f", {shown}"
        lines.append(f"{_text(param.get('identifier'))}: {type_text(data_type)}{extra}")
    return "\n".join(lines) or "-"


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")
