"""`thingshub serve` and `thingshub broker`: the long-running commands.

Rules:
- Long-running commands (`broker`, `serve`) print one line when ready,
  stop cleanly on SIGINT/SIGTERM and exit 0; a port that cannot be bound is
  a one-line error and exit code 1, never a traceback.
- This module and `app.py` are the only readers of settings (the workers of
  `--workers N` get theirs from their supervisor, cli/workers.py).
- `register` adds the commands to the root app (cli/__init__.py).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer

from thingshub.config import Settings, SettingsError, undump
from thingshub.config import load as load_settings
from thingshub.mqtt.hooks import OpenHooks
from thingshub.mqtt.server import Broker, BrokerConfig


def run_async(main: Coroutine[Any, Any, int]) -> int:
    """Run `main` on uvloop when it is installed, on asyncio otherwise, with the
    open-file limit raised first (every connection is a descriptor)."""
    from thingshub.startup import raise_open_file_limit

    raise_open_file_limit()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        runner = asyncio.Runner()
    with runner:
        return runner.run(main)


class StopSignal:
    """SIGINT/SIGTERM handling, installed before anything starts, so a signal that
    arrives while starting (or right after the ready line) is never lost."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(sig, self.event.set)

    async def wait(self) -> None:
        try:
            await self.event.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.loop.remove_signal_handler(sig)


#: Allocations between young collections once serving; CPython's default is 700.
GC_THRESHOLD = 50_000


def started() -> None:
    """Called once a server is ready, before it takes any load.

    A server keeps every connection's objects (transport, protocol, session)
    for as long as it is connected and makes them in bursts. At CPython's
    default thresholds a burst of connects ran a young collection every ~40
    connects and full collections that walked everything startup imported:
    ~18% of a connect's CPU in a py-spy profile of bench/mqtt_broker.py's
    connects. Freezing what startup made takes it out of every later
    collection, and collecting young objects less often (`GC_THRESHOLD`) keeps
    cycles collected at a fraction of the cost.

    Why 50,000 and not 10,000: under durable QoS 1 load the messages waiting
    for their commit (2,000 for 200 devices with 10 in flight) hold 10,000 to
    50,000 tracked objects, all alive and none in a cycle (bench/ingest_harness.py
    --cycles finds nothing for the collector to free). At 10,000 every young
    collection walked that whole set, and every tenth walked it again in the
    middle generation: 15% of the server's CPU per message. At 50,000 no
    collection runs in 40,000 such messages. Cyclic garbage (tracebacks, say)
    waits at most 50,000 allocations: a few MB.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD)


def fail(message: str) -> None:
    typer.echo(f"thingshub: error: {message}", err=True)


async def _broker(
    host: str, port: int, config: BrokerConfig, deny: list[str], tls: tuple[Path, Path] | None
) -> int:
    from thingshub.tls import TlsError, server_context

    stop = StopSignal()
    try:
        ssl = await asyncio.to_thread(server_context, *tls) if tls is not None else None
    except TlsError as exc:
        fail(str(exc))
        return 1
    broker = Broker(OpenHooks(set(deny)), config)
    try:
        bound = await broker.start(host, port, ssl=ssl)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        await broker.stop()
        return 1
    started()
    print(f"ThingsHub MQTT broker ready on {host}:{bound}{' (TLS)' if ssl else ''}", flush=True)
    await stop.wait()
    await broker.stop()
    print("ThingsHub MQTT broker stopped", flush=True)
    return 0


def broker(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port; 0 picks a free one.")] = 1883,
    deny_subscribe: Annotated[
        list[str] | None,
        typer.Option("--deny-subscribe", help="Refuse SUBSCRIBE to this filter (repeatable)."),
    ] = None,
    max_connections: Annotated[int, typer.Option(help="Open connections at most.")] = 100_000,
    max_packet_size: Annotated[int, typer.Option(help="Largest packet accepted, bytes.")] = 1 << 20,
    max_keepalive: Annotated[
        int, typer.Option(help="Longest keepalive granted to MQTT 5 clients, seconds.")
    ] = 60,
    max_inflight: Annotated[int, typer.Option(help="QoS 1/2 messages in flight per client.")] = 100,
    max_queued: Annotated[int, typer.Option(help="QoS 1/2 messages queued per client.")] = 1000,
    connect_timeout: Annotated[float, typer.Option(help="Seconds allowed to send CONNECT.")] = 10.0,
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate: with --tls-key, --port speaks TLS.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM key of --tls-cert.")] = None,
) -> None:
    """Run only the MQTT server, as an open general-purpose broker."""
    if (tls_cert is None) != (tls_key is None):
        fail("--tls-cert and --tls-key go together")
        raise typer.Exit(2)
    config = BrokerConfig(
        connect_timeout=connect_timeout,
        max_packet_size=max_packet_size,
        max_connections=max_connections,
        max_inflight=max_inflight,
        max_queued=max_queued,
        max_keepalive=max_keepalive,
    )
    tls = (tls_cert, tls_key) if tls_cert is not None and tls_key is not None else None
    code = run_async(_broker(host, port, config, deny_subscribe or [], tls))
    raise typer.Exit(code)


# ---------------------------------------------------------------- serve


async def _serve(settings: Settings) -> int:
    from thingshub.app import Platform
    from thingshub.startup import StartupError

    # Whatever this process writes (the database, its WAL, secrets, firmware,
    # the console's storage) is for the server's user alone; datadir.py also
    # tightens what an older version left readable.
    os.umask(0o077)
    stop = StopSignal()
    platform = Platform(settings)
    try:
        await platform.start()
    except StartupError as exc:
        fail(str(exc))
        await platform.stop()
        return 1
    if platform.api_key_generated:
        print(
            f"API key (shown once; saved to {settings.data_dir / 'api-key'}): {platform.api_key}",
            flush=True,
        )
    started()
    line = ready_line(settings.host, platform.mqtt_port, platform.mqtts_port, platform.http_port)
    print(line, flush=True)
    await stop.wait()
    print("ThingsHub stopping", flush=True)
    await platform.stop()
    print("ThingsHub stopped", flush=True)
    return 0


async def _supervise(settings: Settings, supervise: Any) -> int:
    """`serve --workers N`: cli/workers.py, with this module's signals and lines."""
    stop = StopSignal()  # installed before anything starts, as for one process

    class Lent:
        wait_for_stop = stop.wait
        fail = staticmethod(fail)
        ready_line = staticmethod(ready_line)

    code: int = await supervise(settings, Lent())
    return code


def ready_line(host: str, mqtt: int | None, mqtts: int | None, http: int) -> str:
    """Where devices and people connect, e.g. "ThingsHub ready: MQTT on 127.0.0.1:1883,
    MQTT over TLS on 127.0.0.1:8883, HTTP on https://127.0.0.1:8080 (API docs at /docs)";
    a listener that is off is left out."""
    parts = []
    if mqtt is not None:
        parts.append(f"MQTT on {host}:{mqtt}")
    if mqtts is not None:
        parts.append(f"MQTT over TLS on {host}:{mqtts}")
    parts.append(f"HTTP on {'https' if mqtts is not None else 'http'}://{host}:{http}")
    return f"ThingsHub ready: {', '.join(parts)} (API docs at /docs)"


def serve(
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory [env THINGSHUB_DATA_DIR; ./thingshub-data]")
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on [env THINGSHUB_HOST; 127.0.0.1]")
    ] = None,
    mqtt_port: Annotated[
        str | None,
        typer.Option(
            help="MQTT port, 0 = any, off = no plain MQTT [env THINGSHUB_MQTT_PORT; 1883]"
        ),
    ] = None,
    http_port: Annotated[
        int | None, typer.Option(help="HTTP port, 0 = any [env THINGSHUB_HTTP_PORT; 8080]")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="postgresql://... or a SQLite path [env THINGSHUB_DATABASE_URL]"),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(help="API key [env THINGSHUB_API_KEY; generated once]")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML file with settings [env THINGSHUB_CONFIG]")
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(help="debug, info, warning or error [env THINGSHUB_LOG_LEVEL]")
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(
            help="Base URL devices download firmware from [env THINGSHUB_PUBLIC_URL;"
            " http://{host}:{http-port}]"
        ),
    ] = None,
    console: Annotated[
        bool | None,
        typer.Option(
            "--console/--no-console", help="Web console at /console [env THINGSHUB_CONSOLE; on]"
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            help="PEM certificate: MQTT over TLS, and HTTPS [env THINGSHUB_TLS_CERT]",
        ),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="PEM key of --tls-cert [env THINGSHUB_TLS_KEY]")
    ] = None,
    mqtts_port: Annotated[
        int | None,
        typer.Option(help="MQTT over TLS port, 0 = any [env THINGSHUB_MQTTS_PORT; 8883]"),
    ] = None,
    nats_url: Annotated[
        str | None,
        typer.Option(
            help="Join a cluster through this NATS server, nats://host:port; needs a"
            " PostgreSQL --database-url [env THINGSHUB_NATS_URL]"
        ),
    ] = None,
    node_id: Annotated[
        str | None,
        typer.Option(
            help="This node's name, unique in the cluster [env THINGSHUB_NODE_ID;"
            " host name and MQTT port]"
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Node processes on this machine sharing the ports; more than 1 needs"
            " PostgreSQL [env THINGSHUB_WORKERS; 1]"
        ),
    ] = None,
) -> None:
    """Run the whole platform: MQTT server, HTTP API and storage, in one process."""
    options = {
        "data_dir": data_dir,
        "host": host,
        "mqtt_port": mqtt_port,
        "http_port": http_port,
        "database_url": database_url,
        "api_key": api_key,
        "log_level": log_level,
        "public_url": public_url,
        "console": console,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
        "mqtts_port": mqtts_port,
        "nats_url": nats_url,
        "node_id": node_id,
        "workers": workers,
    }
    from thingshub.cli.workers import WORKER_ENV, supervise

    worker = os.environ.get(WORKER_ENV)
    try:
        settings = undump(worker) if worker else load_settings(options, os.environ, config)
    except SettingsError as exc:
        fail(str(exc))
        raise typer.Exit(2) from None
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.workers > 1 and not worker:
        raise typer.Exit(run_async(_supervise(settings, supervise)))
    raise typer.Exit(run_async(_serve(settings)))


def register(app: typer.Typer) -> None:
    app.command()(broker)
    app.command()(serve)
