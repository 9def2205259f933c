"""`thingshub demo`: the platform, a demo product and simulated devices, in one command.

Rules:
- The platform runs in this process as `serve` runs it (console on), on a
  temporary data dir removed at the end, or on `--data-dir` (kept; the
  devices' secrets are kept there too, in `demo-devices.json`, so a second
  run reuses its devices).
- The fleet (`thingshub.device.fleet`) runs on the same loop, over real
  sockets: `--devices` devices of each family (OneNET with its image,
  ThingsPanel, the thing model) in the product `demo`, each sending a
  message every two seconds, so the console shows live data at once.
- It prints the console's address and the API key before the devices
  connect, and stops cleanly on Ctrl-C or after `--duration` seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from thingshub.cli.serve import fail, run_async, started
from thingshub.cli.simulate import console, ensure_devices, run_fleet, summary

PRODUCT = "demo"
FAMILIES = {"onenet": "onenet", "thingspanel": "panel", "thing-model": "thing"}


async def _demo(
    data_dir: Path, host: str, mqtt_port: int, http_port: int, devices: int, duration: float | None
) -> int:
    from thingshub.app import Platform
    from thingshub.config import Settings
    from thingshub.device.fleet import Fleet
    from thingshub.startup import StartupError

    settings = Settings(
        data_dir=data_dir,
        host=host,
        mqtt_port=mqtt_port,
        http_port=http_port,
        log_level="warning",
        ota_tick=1.0,
    )
    os.umask(0o077)
    platform = Platform(settings)
    try:
        await platform.start()
    except StartupError as exc:
        fail(str(exc))
        await platform.stop()
        return 1
    started()
    base = f"http://{host}:{platform.http_port}"
    print(f"ThingsHub demo ready: console at {base}/console/  (API docs at {base}/docs)")
    print(f"API key: {platform.api_key}", flush=True)
    print(
        f"Devices connect to mqtt://{host}:{platform.mqtt_port}; Ctrl-C stops the demo.", flush=True
    )
    try:
        secrets_file = data_dir / "demo-devices.json"
        known: dict[str, Any] = {}
        if secrets_file.exists():
            known = json.loads(secrets_file.read_text())
        headers = {"Authorization": f"Bearer {platform.api_key}"}
        specs = []
        for protocol, stem in FAMILIES.items():
            names = [f"{stem}-{i:03d}" for i in range(1, devices + 1)]
            specs += await ensure_devices(base, headers, PRODUCT, protocol, names, known)
        secrets_file.write_text(json.dumps(known))
        fleet = Fleet(
            f"mqtt://{host}:{platform.mqtt_port}", specs, rate=len(specs) / 2, api_url=base
        )
        title = f"ThingsHub demo: {len(specs)} devices, console at {base}/console/"
        stats, elapsed = await run_fleet(fleet, duration, title, live=console.is_terminal)
        print(summary(stats, elapsed), flush=True)
    finally:
        await platform.stop()
    print("ThingsHub demo stopped", flush=True)
    return 0


def demo(
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Keep the demo's data here [a temporary directory, removed at the end]."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    mqtt_port: Annotated[int, typer.Option(help="MQTT port, 0 = any.")] = 1883,
    http_port: Annotated[int, typer.Option(help="HTTP port (API and console), 0 = any.")] = 8080,
    devices: Annotated[
        int, typer.Option(min=1, max=1000, help="Simulated devices of each protocol family.")
    ] = 24,
    duration: Annotated[
        float | None, typer.Option(min=0, help="Seconds to run [until Ctrl-C].")
    ] = None,
) -> None:
    """Try ThingsHub in one command: the platform with its console, a demo product and
    simulated OneNET, ThingsPanel and thing-model devices sending live data."""
    directory = data_dir or Path(tempfile.mkdtemp(prefix="thingshub-demo-"))
    try:
        code = run_async(_demo(directory, host, mqtt_port, http_port, devices, duration))
    finally:
        if data_dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command()(demo)
