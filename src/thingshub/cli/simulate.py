"""`thingshub simulate`: a fleet of simulated devices against a running server.

Rules:
- It is a client, as the other client commands: devices are registered over
  the HTTP API (client.py finds the server and its key) and run over MQTT
  with the device SDK (`thingshub.device.fleet`); it never loads the platform.
- Devices are named `{prefix}-{n:05d}`. The secrets a registration returns
  are shown only once, so they are kept in a credentials file (mode 0600,
  `--credentials`, default `./thingshub-sim-{product}.json`); a device that
  exists on the server but not in that file is a clear error.
- The live view (Rich) shows online devices, messages a second, calls
  answered, upgrades and errors; the run ends after `--duration` seconds or
  on Ctrl-C with one summary line.
- `run_fleet` is shared with `thingshub demo` (demo.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from thingshub.cli.client import Api, die
from thingshub.cli.options import DirOpt, KeyOpt, UrlOpt
from thingshub.device.fleet import PROFILES, PROTOCOLS, Fleet, Spec, Stats

console = Console()


async def ensure_devices(
    base_url: str,
    headers: dict[str, str],
    product: str,
    protocol: str,
    names: list[str],
    known: dict[str, dict[str, Any]],
) -> list[Spec]:
    """Register the devices of `names` that the server lacks; every device's Spec.

    `known` holds the secrets of devices registered before (and gets the new ones)."""
    import httpx

    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as http:
        r = await http.post("/api/v1/products", json={"id": product, "name": product})
        if r.status_code not in (201, 409):
            raise RuntimeError(f"cannot create product {product}: {r.text}")
        existing: set[str] = set()
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = await http.get(f"/api/v1/products/{product}/devices", params=params)
            if page.status_code != 200:
                raise RuntimeError(f"cannot list the devices of {product}: {page.text}")
            body = page.json()
            existing.update(d["name"] for d in body["items"])
            cursor = body.get("next")
            if not cursor:
                break
        lost = [n for n in names if n in existing and n not in known]
        if lost:
            raise RuntimeError(
                f"{len(lost)} devices (e.g. {lost[0]}) exist in {product} but their secrets "
                "are not in the credentials file: delete them, or pick another --prefix"
            )
        gate = asyncio.Semaphore(16)

        async def register(name: str) -> None:
            async with gate:
                r = await http.post(f"/api/v1/products/{product}/devices", json={"name": name})
                if r.status_code != 201:
                    raise RuntimeError(f"cannot register {name}: {r.text}")
                d = r.json()
                known[name] = {k: d[k] for k in ("device_number", "key", "username", "password")}

        await asyncio.gather(*(register(n) for n in names if n not in existing))
    return [Spec(protocol, product, n, **known[n]) for n in names]


def view(stats: Stats, title: str) -> Table:
    table = Table(title=title, show_header=True)
    for column in ("online", "messages/s", "sent", "calls answered", "upgrades", "errors"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{stats.online}/{stats.devices}",
        f"{stats.rate():.0f}",
        str(stats.sent),
        str(stats.calls),
        str(stats.upgrades),
        str(stats.errors),
    )
    return table


def summary(stats: Stats, elapsed: float) -> str:
    connected = f"{stats.connect_time:.1f} s" if stats.connect_time is not None else "not all"
    return (
        f"simulated {stats.devices} devices for {elapsed:.0f} s: all online in {connected}, "
        f"{stats.sent} messages ({stats.sent / max(elapsed, 1e-9):.0f}/s), "
        f"{stats.calls} calls answered, {stats.upgrades} upgrades, {stats.errors} errors"
    )


async def run_fleet(
    fleet: Fleet, duration: float | None, title: str, live: bool = True
) -> tuple[Stats, float]:
    """Run the fleet with the live view until `duration` or SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    running = asyncio.create_task(fleet.run(duration, stop))
    try:
        if live:
            with Live(view(fleet.stats, title), console=console, refresh_per_second=2) as screen:
                while not running.done():
                    await asyncio.wait([running], timeout=0.5)
                    screen.update(view(fleet.stats, title))
        stats = await running
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return stats, time.monotonic() - started


def websocket_url(base: str) -> str:
    """MQTT over WebSocket on the API's own port: where devices reach a server whose
    MQTT port is not known."""
    from urllib.parse import urlsplit

    parts = urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}/mqtt"


def simulate(
    product: Annotated[str, typer.Option(help="The product the devices belong to (made if new).")],
    devices: Annotated[int, typer.Option(min=1, help="How many devices to run.")] = 10,
    protocol: Annotated[
        str,
        typer.Option(
            help="onenet (token login, device image, commands, data points, OTA over"
            " OneNET's HTTP API), thingspanel (telemetry, attributes, events, commands, OTA)"
            " or thing-model (OneNET's properties, events and services, OTA)."
        ),
    ] = "thingspanel",
    rate: Annotated[
        float | None,
        typer.Option(
            min=0, help="Messages a second from the whole fleet [one a device every 10 s]."
        ),
    ] = None,
    duration: Annotated[
        float | None, typer.Option(min=0, help="Seconds to run [until Ctrl-C].")
    ] = None,
    profile: Annotated[
        str, typer.Option(help="Telemetry shape: sine (smooth waves) or walk (random walk).")
    ] = "sine",
    prefix: Annotated[str, typer.Option(help="Device names are PREFIX-00001, ...")] = "sim",
    mqtt_url: Annotated[
        str | None,
        typer.Option(
            help="Where devices connect: mqtt://host:port, mqtts://..., ws://host:port/mqtt"
            " [the data dir's MQTT port, else WebSocket on the API's port]."
        ),
    ] = None,
    credentials: Annotated[
        Path | None,
        typer.Option(
            help="Where the devices' secrets are kept between runs [./thingshub-sim-PRODUCT.json]."
        ),
    ] = None,
    connect_at_once: Annotated[
        int, typer.Option(min=1, help="Connects in progress at a time.")
    ] = 100,
    live: Annotated[bool, typer.Option(help="Show the live view (off: only the summary).")] = True,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    data_dir: DirOpt = None,
) -> None:
    """Simulate a fleet of devices: register the missing ones, connect them, send telemetry
    and events, answer calls, follow desired state and perform OTA upgrades."""
    if protocol not in PROTOCOLS:
        die(f"--protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
    if profile not in PROFILES:
        die(f"--profile must be one of {', '.join(PROFILES)}, not {profile!r}")
    api = Api(url, api_key, data_dir)
    headers = {"Authorization": api.client.headers["Authorization"]}
    api.client.close()
    broker = mqtt_url or _from_ports(api.base, data_dir) or websocket_url(api.base)
    path = credentials or Path(f"thingshub-sim-{product}.json")
    known: dict[str, dict[str, Any]] = {}
    if path.exists():
        try:
            known = json.loads(path.read_text())
        except ValueError:
            die(f"{path} is not a credentials file of thingshub simulate")
    names = [f"{prefix}-{i:05d}" for i in range(1, devices + 1)]
    try:
        specs = asyncio.run(ensure_devices(api.base, headers, product, protocol, names, known))
    except (RuntimeError, OSError) as exc:
        die(str(exc))
    finally:
        _save(path, known)
    fleet = Fleet(
        broker,
        specs,
        rate=devices / 10 if rate is None else rate,
        profile=profile,
        connect_at_once=connect_at_once,
        api_url=api.base,
    )
    title = f"{devices} {protocol} devices of {product} on {broker}"

    async def main() -> None:
        stats, elapsed = await run_fleet(fleet, duration, title, live)
        print(summary(stats, elapsed), flush=True)

    run_on_uvloop(main())


def run_on_uvloop(main: Any) -> None:
    """Run on uvloop where it is installed: a fleet's sockets are its hot path."""
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        runner = asyncio.Runner()
    with runner:
        runner.run(main)


def _from_ports(base: str, data_dir: Path | None) -> str | None:
    """mqtt://host:PORT from the data dir's ports.json, when it names the API's port."""
    from urllib.parse import urlsplit

    directory = data_dir or Path(os.environ.get("THINGSHUB_DATA_DIR", "./thingshub-data"))
    try:
        ports = json.loads((directory / "ports.json").read_text())
        host = urlsplit(base).hostname or "127.0.0.1"
        if "mqtt" in ports and int(ports["http"]) == urlsplit(base).port:
            return f"mqtt://{host}:{int(ports['mqtt'])}"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _save(path: Path, known: dict[str, dict[str, Any]]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(known, out)


def register(app: typer.Typer) -> None:
    app.command()(simulate)
