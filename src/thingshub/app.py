"""The composition root: builds every part from `Settings` and runs them as one.

Rules:
- Start order: TLS files, data dir, storage (schema migrated), secrets,
  services, MQTT listeners, HTTP listener; only then `ports.json` and the
  ready line.
- Stop order: stop accepting (MQTT and HTTP), disconnect clients, stop
  background work, flush pending writes, close storage. A node of a cluster
  records its devices offline and announces them (relayed to the other
  nodes) before it leaves the nodes table and closes its NATS connection.
- A problem the operator can fix (a taken port, an unwritable data dir, an
  unreachable database) is a `StartupError` with one sentence, not a traceback.
- The HTTP server (uvicorn) runs in the same event loop; its own signal
  handling is off, because ours owns SIGINT/SIGTERM.
- TLS (`tls_cert`/`tls_key`): the files are checked first, before anything
  else starts (tls.py). MQTT over TLS listens on `mqtts_port` beside the
  plain listener (unless `mqtt_port` is off), and HTTP becomes HTTPS on
  `http_port`. A TLS handshake has the MQTT `connect_timeout` (MQTT) or the
  `http_head_timeout` (HTTP) to finish; handshakes run on the event loop
  without ever waiting on a client, so a stalled one delays nobody.
- `ports.json` names the listeners that are on: `mqtt`, `mqtts`, `http`
  (a listener that is off has no key).
- The workers of `serve --workers` and the nodes of a cluster listen with
  SO_REUSEPORT (`shares_ports`): processes of one machine share the ports,
  the kernel spreads new connections over them (startup.py).
- What a node of a cluster adds (NATS, calls to other nodes, takeover,
  coherent caches, the presence sweep) is wired by cluster.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from thingshub import cluster, datadir, metrics
from thingshub.api.app import PlatformApi, create_api
from thingshub.api.connections import uvicorn_limits
from thingshub.api.context import ApiContext
from thingshub.api.listener import HttpServer
from thingshub.api.streamhub import StreamLimits
from thingshub.api.websocket import WebSocketProtocol
from thingshub.bus.calls import ClusterCalls
from thingshub.bus.local import LocalBus
from thingshub.bus.nats import NatsBus
from thingshub.config import Settings
from thingshub.core.messages import (
    AttributesReport,
    CallAnswer,
    DataPoints,
    DataPointsRefused,
    DesiredDelete,
    DesiredGet,
    EventReport,
    GatewayReport,
    ImageGetRequest,
    ImageUpdateRefused,
    ImageUpdateRequest,
    OtaInformReply,
    OtaProgress,
    OtaProgressRefused,
    ReportRefused,
    SubRegisterRequest,
    TelemetryReport,
    ThingPost,
    ThingRefused,
)
from thingshub.core.ports import DeviceLink, EventBus, Storage
from thingshub.core.submessages import GatewayNote, SubRequest
from thingshub.dialects.onenet.token import make_token
from thingshub.dialects.registry import Registry, default_registry
from thingshub.gateway.hooks import DeviceGateway
from thingshub.mqtt.server import Broker, BrokerConfig
from thingshub.mqtt.server.websocket import MqttWebSocket
from thingshub.services import credentials
from thingshub.services.clock import SystemClock
from thingshub.services.commands import CommandService
from thingshub.services.devices import DeviceService
from thingshub.services.firmware import FirmwareService
from thingshub.services.gateway_requests import GatewayRequests
from thingshub.services.history import HistoryService
from thingshub.services.images import ImageService
from thingshub.services.ingest import IngestService
from thingshub.services.jobs import Jobs
from thingshub.services.keys import KeyService
from thingshub.services.nodes import NodeIdInUse, NodeService
from thingshub.services.onenet_ota import OneNetOta
from thingshub.services.ota import OtaService
from thingshub.services.presence import PresenceService
from thingshub.services.retention import RetentionService
from thingshub.services.subdevices import GatewayReports
from thingshub.services.sweep import PresenceSweep
from thingshub.services.things import ThingService
from thingshub.services.topology import TopologyService
from thingshub.startup import (
    StartupError,
    bind_http,
    default_node_id,
    public_url,
    shares_ports,
    warm,
)
from thingshub.storage import open_storage
from thingshub.tls import TlsError, server_context

if TYPE_CHECKING:
    from thingshub.console import Console

log = logging.getLogger("thingshub")

#: uvicorn's own limit on a WebSocket message (16 MiB), unless MQTT needs more.
WS_MAX_MESSAGE = 16 * 1024 * 1024


class Platform:
    def __init__(self, settings: Settings, dialects: Registry | None = None) -> None:
        self.settings = settings
        #: The device protocols spoken (OneNET and ThingsPanel unless given).
        self.dialects = dialects or default_registry()
        self.api_key = ""
        self.api_key_generated = False
        #: The bound ports; None for a listener that is off.
        self.mqtt_port: int | None = 0
        self.mqtts_port: int | None = None
        self.http_port = 0
        self._tls: ssl.SSLContext | None = None
        self.storage: Storage | None = None
        self.broker: Broker | None = None
        #: MQTT over WebSocket at /mqtt on the HTTP port.
        self.mqtt_websocket: MqttWebSocket | None = None
        self.gateway: DeviceGateway | None = None
        self.presence: PresenceService | None = None
        self.devices: DeviceService | None = None
        self.images: ImageService | None = None
        self.commands: CommandService | None = None
        self.things: ThingService | None = None
        self.ingest: IngestService | None = None
        self.topology: TopologyService | None = None
        self.gateway_requests: GatewayRequests | None = None
        self.gateway_reports: GatewayReports | None = None
        self.history: HistoryService | None = None
        self.retention: RetentionService | None = None
        self.firmware: FirmwareService | None = None
        self.ota: OtaService | None = None
        self.onenet_ota: OneNetOta | None = None
        self.keys: KeyService | None = None
        self._http: HttpServer | None = None
        self._http_task: asyncio.Task[None] | None = None
        self._ready = False
        self._warming: asyncio.Task[None] | None = None
        self.bus: LocalBus | NatsBus | None = None
        #: The cluster's message bus, when this node is one of several (NATS).
        self.nats: NatsBus | None = None
        self.nodes: NodeService | None = None
        #: The presence sweep of dead nodes (a node of a cluster only).
        self.sweep: PresenceSweep | None = None
        #: This node's cluster-wide jobs (services/jobs.py).
        self.jobs: Jobs | None = None
        #: Calls to devices connected to other nodes, and theirs to ours.
        self.cluster_calls: ClusterCalls | None = None
        self._console: Console | None = None

    # ------------------------------------------------------------ start

    async def start(self) -> None:
        s = self.settings
        if s.tls_cert is not None and s.tls_key is not None:
            try:
                self._tls = await asyncio.to_thread(server_context, s.tls_cert, s.tls_key)
            except TlsError as exc:
                raise StartupError(str(exc)) from exc
        try:
            data_dir = await asyncio.to_thread(datadir.prepare, s.data_dir)
        except datadir.DataDirError as exc:
            raise StartupError(str(exc)) from exc
        storage = open_storage(s.database_url, data_dir)
        try:
            await storage.open()
        except Exception as exc:
            raise StartupError(f"cannot open the database: {exc}") from exc
        self.storage = storage
        pepper = await storage.settings.set_if_absent("password_pepper", credentials.new_pepper())
        self.api_key, self.api_key_generated = datadir.api_key(data_dir, s.api_key)

        clock = SystemClock()
        self.keys = KeyService(storage.api_keys, storage.products, clock, self.api_key)
        await self.keys.start()
        node_id = s.node_id or default_node_id(s.mqtt_port or s.mqtts_port)
        # Locks are the database's (PostgreSQL: the server's, across schemas), the
        # cluster id tells its clusters apart: several can share one database.
        cluster_id = await storage.settings.set_if_absent("cluster_id", secrets.token_hex(6))
        scope = f"{cluster_id}:"
        jobs = self.jobs = Jobs(storage.locks, s.node_lease, scope)
        bus = self.bus = await cluster.start_bus(s.nats_url, cluster_id, node_id)
        self.nats = bus if isinstance(bus, NatsBus) else None
        self.devices = DeviceService(storage, clock, bus, pepper)
        self.presence = PresenceService(storage.devices, clock, bus, node=node_id)
        self.gateway = DeviceGateway(self.devices, self.presence, clock, bus, self.dialects)
        self.broker = Broker(
            self.gateway,
            BrokerConfig(
                max_connections=s.max_connections,
                max_connections_per_address=s.max_connections_per_address,
                max_packet_size=s.max_packet_size,
                max_keepalive=s.max_keepalive,
                connect_timeout=s.connect_timeout,
                reuse_port=shares_ports(s),
            ),
        )
        self.gateway.attach(self.broker)
        self.gateway.limit_publishes(s.device_publish_rate)
        stats = self.broker.stats
        self.nodes = NodeService(
            storage.nodes,
            storage.locks,
            clock,
            node_id,
            lease=s.node_lease,
            stats=lambda: (stats.connections, stats.messages_in),
            scope=scope,
        )
        try:
            await self.nodes.start()
        except NodeIdInUse as exc:
            self.nodes = None
            raise StartupError(str(exc)) from exc
        self.mqtt_websocket = MqttWebSocket(self.broker.connection)
        link, ota_link, self.cluster_calls = cluster.links(
            self.nats, storage, node_id, self.nodes, self.gateway
        )
        self.images = ImageService(storage.images, self.devices, self.presence, link, clock, bus)
        self.gateway.handle(ImageUpdateRequest, self.images.device_update)
        self.gateway.handle(ImageUpdateRefused, self.images.device_refused_update)
        self.gateway.handle(ImageGetRequest, self.images.device_get)
        self.gateway.on_device_subscribe(self.images.device_subscribed)
        self.commands = CommandService(
            storage.commands,
            self.devices,
            self.gateway,
            clock,
            bus,
            node=node_id,
            remote=self.cluster_calls,
        )
        if self.cluster_calls is not None:
            self.cluster_calls.serve(self.commands.run_forwarded)
        self.gateway.handle(CallAnswer, self.commands.answer)
        # One process alone fails every unfinished call (its id changes with
        # its port); a node of a cluster spares those of the other live nodes.
        live = [n.id for n in await self.nodes.nodes()] if self.nats is not None else []
        await self.commands.start(live)
        self.ingest = IngestService(
            storage.telemetry, storage.attributes, storage.events, self.gateway, clock, bus
        )
        self.gateway.handle(TelemetryReport, self.ingest.telemetry_now)
        self.gateway.handle(AttributesReport, self.ingest.attribute_report)
        self.gateway.handle(EventReport, self.ingest.event_report)
        self.gateway.handle(ReportRefused, self.ingest.refused_report)
        self.topology = TopologyService(self.devices, self.presence, self.gateway, clock, bus)
        self.gateway.handle(SubRegisterRequest, self.topology.register)
        self.gateway_reports = GatewayReports(
            self.topology,
            storage.telemetry,
            storage.attributes,
            storage.events,
            self.presence,
            self.gateway,
            clock,
            bus,
        )
        self.gateway.handle(GatewayReport, self.gateway_reports.report)
        self.things = ThingService(
            storage.thing_models,
            storage.desired,
            storage.telemetry,
            storage.events,
            self.devices,
            self.commands,
            self.gateway,
            clock,
            bus,
            topology=self.topology,
            presence=self.presence,
        )
        self.gateway_requests = GatewayRequests(
            self.topology, storage.events, self.presence, self.gateway, clock, bus
        )
        self.gateway.handle(SubRequest, self.gateway_requests.request)
        self.gateway.handle(GatewayNote, self.gateway_requests.note)
        for kind, handler in (
            (ThingPost, self.things.device_post_now),
            (ThingRefused, self.things.device_refused),
            (DesiredGet, self.things.desired_get),
            (DesiredDelete, self.things.desired_delete),
            (DataPoints, self.things.data_points),
            (DataPointsRefused, self.things.data_points_refused),
        ):
            self.gateway.handle(kind, handler)
        self.history = HistoryService(
            self.devices, storage.telemetry, storage.attributes, storage.events
        )
        self.retention = RetentionService(storage.products, storage.telemetry, clock, jobs)
        await self.retention.start()
        await self.presence.start(own_only=self.nats is not None)
        if self.nats is not None:
            await self._join_cluster(self.nats, clock, node_id)
        await self._start_ota(data_dir, clock, bus, jobs, ota_link)

        self.mqtt_port = await self._listen_mqtt(s.mqtt_port, None, "MQTT")
        if self._tls is not None:
            self.mqtts_port = await self._listen_mqtt(s.mqtts_port, self._tls, "MQTT over TLS")
        sock = bind_http(s.host, s.http_port, shared=shares_ports(s))
        self.http_port = sock.getsockname()[1]
        if self.ota is not None:  # devices are informed only once it is known
            scheme = "https" if self._tls is not None else "http"
            self.ota.public_url = public_url(s.public_url, s.host, self.http_port, scheme)
        ctx = ApiContext(
            devices=self.devices,
            presence=self.presence,
            images=self.images,
            commands=self.commands,
            things=self.things,
            history=self.history,
            topology=self.topology,
            firmware=self.firmware,
            ota=self.ota,
            onenet_ota=self.onenet_ota,
            bus=bus,
            api_key=self.api_key,
            keys=self.keys,
            tokens=make_token,
            mqtt_port=self.mqtt_port,
            mqtts_port=self.mqtts_port,
            collectors=[lambda: metrics.collect(self)],
            is_ready=lambda: self._ready,
            stream_limits=StreamLimits(s.stream_max_backlog, s.stream_stall_timeout),
            body_timeout=s.http_head_timeout,
            mqtt_websocket=self.mqtt_websocket,
            nodes=self.nodes,
        )
        api = create_api(ctx, own_routes=s.console)  # NiceGUI mounts onto its routes
        if s.console:
            self._console = await self._mount_console(api, ctx, data_dir)
        config = uvicorn.Config(
            api,
            lifespan="on" if s.console else "off",  # NiceGUI starts and stops with the lifespan
            access_log=False,
            log_level="warning",
            server_header=False,
            ws=WebSocketProtocol,
            # A WebSocket message holds at least one largest MQTT packet (/mqtt).
            ws_max_size=max(WS_MAX_MESSAGE, s.max_packet_size + 4096),
            **uvicorn_limits(s.max_http_connections, s.http_head_timeout),
        )
        self._http = HttpServer(config, self._tls, handshake_timeout=s.http_head_timeout)
        self._http_task = asyncio.get_running_loop().create_task(self._http.serve([sock]))
        while not self._http.listening:
            if self._http_task.done():
                self._http_task.result()
                raise StartupError("the HTTP server stopped while starting")
            await asyncio.sleep(0.01)
        await self.gateway.start()
        self._warming = asyncio.get_running_loop().create_task(warm(self.devices))
        ports = {"mqtt": self.mqtt_port, "mqtts": self.mqtts_port, "http": self.http_port}
        datadir.write_ports(data_dir, {k: v for k, v in ports.items() if v is not None})
        self._ready = True

    async def _join_cluster(self, nats: NatsBus, clock: SystemClock, node_id: str) -> None:
        """Takeover across nodes, caches coherent across nodes, the presence sweep."""
        assert self.gateway is not None and self.broker is not None and self.presence is not None
        assert self.devices is not None and self.keys is not None and self.nodes is not None
        assert self.images is not None and self.things is not None and self.jobs is not None
        syncs = (
            self.devices.sync,
            self.devices.news,
            self.keys.sync,
            self.images.sync,
            self.things.sync,
        )
        self.gateway.logins = cluster.logins(self.broker, self.presence, nats, clock, node_id)
        self.sweep = await cluster.join(nats, syncs, self.nodes, self.presence, self.jobs)

    async def _mount_console(self, api: PlatformApi, ctx: ApiContext, data_dir: Path) -> Console:
        from thingshub.console import ConsoleContext, mount_console

        assert self.storage is not None and self.broker is not None and self.ingest is not None
        assert self.things is not None
        secret = await self.storage.settings.set_if_absent("console_secret", secrets.token_hex(32))
        stats, ingest, things = self.broker.stats, self.ingest, self.things
        try:
            return mount_console(
                api.app,
                ConsoleContext(
                    api=ctx,
                    http=api,
                    counters=lambda: {
                        "messages_in": stats.messages_in,
                        "messages_out": stats.messages_out,
                        "points": ingest.stored_points + things.stored_points,
                    },
                    storage_dir=data_dir / "console",
                    secret=secret,
                    mqtt_host=self.settings.host,
                ),
            )
        except RuntimeError as exc:
            raise StartupError(str(exc)) from exc

    async def _listen_mqtt(
        self, port: int | None, tls: ssl.SSLContext | None, what: str
    ) -> int | None:
        """Start one MQTT listener (None: it is off); its bound port."""
        if port is None:
            return None
        assert self.broker is not None
        host = self.settings.host
        try:
            return await self.broker.start(host, port, ssl=tls)
        except OSError as exc:
            raise StartupError(
                f"cannot listen for {what} on {host}:{port}: {exc.strerror or exc}"
            ) from exc

    # ------------------------------------------------------------ stop

    async def stop(self) -> None:
        self._ready = False
        if self._warming is not None:
            self._warming.cancel()
        if self._http is not None:
            self._http.exit()
        if self.broker is not None:
            await self.broker.stop()
        if self._http_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._http_task, 10)
        holders = self.cluster_calls.holders if self.cluster_calls is not None else None
        for part in (
            self._console,
            self.gateway,
            self.images,
            self.commands,
            self.gateway_requests,
            self.ota,
            self.retention,
            self.sweep,
            self.presence,  # in a cluster, its devices' going is told before NATS closes
            self.keys,  # writes when keys were last used
            self.nodes,
            holders,
            self.nats,
        ):
            if part is not None:
                await part.stop()
        if self.storage is not None:
            await self.storage.close()

    async def _start_ota(
        self, data_dir: Path, clock: SystemClock, bus: EventBus, jobs: Jobs, link: DeviceLink
    ) -> None:
        """Firmware packages and OTA tasks (running tasks resume here)."""
        assert self.storage is not None and self.devices is not None and self.gateway is not None
        s = self.settings
        secret = await self.storage.settings.set_if_absent(
            "ota_download_secret", secrets.token_hex(32)
        )
        self.firmware = FirmwareService(
            self.storage.firmware,
            self.devices,
            clock,
            data_dir / "firmware",
            max_size=s.firmware_max_size,
        )
        await self.firmware.start()
        self.ota = OtaService(
            self.storage.ota,
            self.firmware,
            self.devices,
            link,
            clock,
            bus,
            jobs,
            secret=bytes.fromhex(secret),
            public_url="",
            tick=s.ota_tick,
            shared=self.nats is not None,
        )
        self.gateway.handle(OtaProgress, self.ota.device_progress)
        self.gateway.handle(OtaProgressRefused, self.ota.device_refused_progress)
        self.onenet_ota = OneNetOta(self.ota, self.devices)
        self.gateway.handle(OtaInformReply, self.onenet_ota.inform_reply)
        self.gateway.on_device_subscribe(self.ota.device_subscribed)
        await self.ota.start()
