"""What the console is given by the composition root (app.py).

The console reuses the HTTP API's context (the services, the bus, the API key,
the token minter) rather than a second list of the same things, and adds what
only it needs. Nothing here is read from settings: app.py decides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from starlette.types import ASGIApp

from thingshub.api.context import ApiContext
from thingshub.console.meter import Meter


@dataclass
class ConsoleContext:
    #: The services and facts the HTTP API has.
    api: ApiContext
    #: The HTTP API application itself, called in-process where the console
    #: uses the API's contract rather than a service (OTA).
    http: ASGIApp
    #: Cumulative counters ("messages_in", "messages_out", "points"), sampled
    #: into per-minute rates for the fleet overview.
    counters: Callable[[], Mapping[str, int]]
    #: Where NiceGUI keeps the signed-in sessions (inside the data dir).
    storage_dir: Path
    #: Signs the session cookies; kept in the settings table, so sessions
    #: survive restarts and every process of one database agrees.
    secret: str
    #: The address devices connect to, when the server listens on a single one
    #: (for 0.0.0.0 the console shows the address the browser used).
    mqtt_host: str = "127.0.0.1"
    meter: Meter = field(default_factory=Meter)
