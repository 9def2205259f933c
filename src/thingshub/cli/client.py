"""How the client commands reach a running server, and how they print.

Rules:
- Where the server is: `--url`, else `THINGSHUB_URL`, else the `ports.json`
  of the data dir (`--data-dir` / `THINGSHUB_DATA_DIR`, default
  ./thingshub-data), else http://127.0.0.1:8080. The API key: `--api-key`,
  else `THINGSHUB_API_KEY`, else the data dir's `api-key` file.
- A server with TLS (its `ports.json` has `mqtts`) serves HTTPS: the data
  dir then gives https://localhost:PORT, the name `cert create` certificates
  are usually made for. The CA is httpx's: `SSL_CERT_FILE=ca.pem` for a
  private one.
- Output is a Rich table, or the API's JSON with `--json`. An API error is
  printed as its sentence and exits with status 1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    import httpx

console = Console()
err_console = Console(stderr=True)


class Api:
    def __init__(self, url: str | None, api_key: str | None, data_dir: Path | None) -> None:
        directory = data_dir or Path(os.environ.get("THINGSHUB_DATA_DIR", "./thingshub-data"))
        self.base = url or os.environ.get("THINGSHUB_URL") or self._from_ports(directory)
        key = api_key or os.environ.get("THINGSHUB_API_KEY") or self._from_file(directory)
        if not key:
            die("no API key: pass --api-key, set THINGSHUB_API_KEY, or run in the data dir")
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
            if "mqtts" in ports:
                return f"https://localhost:{int(ports['http'])}"
            return f"http://127.0.0.1:{int(ports['http'])}"
        except (OSError, ValueError, KeyError, TypeError):
            return "http://127.0.0.1:8080"

    @staticmethod
    def _from_file(directory: Path) -> str | None:
        try:
            return (directory / "api-key").read_text().strip() or None
        except OSError:
            return None

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The answer, whatever its status; exits when the server cannot be reached."""
        import httpx

        try:
            return self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            die(f"cannot reach ThingsHub at {self.base}: {exc}")

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON of a 2xx answer (None when empty); exits with the API's error."""
        response = self.request(method, path, **kwargs)
        if response.status_code >= 400:
            die(failure(response))
        if response.status_code == 204 or not response.content:
            return None
        return response.json()


def failure(response: httpx.Response) -> str:
    """An error answer as printed: the API's sentence and the HTTP status."""
    try:
        body = response.json()
        message = (body.get("error") if isinstance(body, dict) else None) or response.text
    except ValueError:
        message = response.text
    return f"{message} (HTTP {response.status_code})"


def die(message: str) -> NoReturn:
    err_console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def show(data: Any, as_json: bool, columns: list[str], title: str | None = None) -> None:
    if as_json:
        console.print_json(json.dumps(data))
        return
    rows = data if isinstance(data, list) else [data]
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*[cell(row.get(col)) for col in columns])
    console.print(table)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


def pages(api: Api, path: str, params: dict[str, Any], everything: bool) -> list[Any]:
    items: list[Any] = []
    while True:
        page = api.call("GET", path, params=params)
        items.extend(page["items"])
        if not everything or not page["next"]:
            return items
        params = {**params, "cursor": page["next"]}
