"""The options every client command shares, defined once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

UrlOpt = Annotated[str | None, typer.Option("--url", help="Server URL [env THINGSHUB_URL].")]
KeyOpt = Annotated[str | None, typer.Option("--api-key", help="API key [env THINGSHUB_API_KEY].")]
DirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Where to find ports.json and api-key.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the API's JSON.")]
