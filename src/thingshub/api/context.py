"""What the HTTP API is given by the composition root (app.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client.core import Metric
from starlette.types import ASGIApp

from thingshub.api.streamhub import StreamLimits
from thingshub.core.ports import EventBus
from thingshub.services.commands import CommandService
from thingshub.services.devices import DeviceService
from thingshub.services.firmware import FirmwareService
from thingshub.services.history import HistoryService
from thingshub.services.images import ImageService
from thingshub.services.keys import KeyService
from thingshub.services.nodes import NodeService
from thingshub.services.onenet_ota import OneNetOta
from thingshub.services.ota import OtaService
from thingshub.services.presence import PresenceService
from thingshub.services.things import ThingService
from thingshub.services.topology import TopologyService


@dataclass
class ApiContext:
    devices: DeviceService
    presence: PresenceService
    images: ImageService
    commands: CommandService
    things: ThingService
    history: HistoryService
    topology: TopologyService
    bus: EventBus
    #: The serve key (the console signs in with it too; keys.authenticate knows it).
    api_key: str
    #: API keys with roles: authenticates every /api request and the stream.
    keys: KeyService
    #: Mints a OneNET token: (key, product id, device name, expiry s, method) -> token.
    tokens: Callable[[str, str, str, int, str], str]
    #: Extra metric families for /metrics (the MQTT server's, the gateway's, ...).
    collectors: list[Callable[[], Iterable[Metric]]] = field(default_factory=list)
    #: The ports devices connect to (for connection details): plain MQTT and
    #: MQTT over TLS, None for a listener that is off.
    mqtt_port: int | None = 0
    mqtts_port: int | None = None
    #: True once every part is up; /healthz answers 503 until then.
    is_ready: Callable[[], bool] = lambda: True
    #: Firmware packages and OTA tasks (None: the OTA routes answer 503).
    firmware: FirmwareService | None = None
    ota: OtaService | None = None
    #: OneNET's OTA API for devices (None: it answers errno 7).
    onenet_ota: OneNetOta | None = None
    #: When the live stream drops a client that does not read.
    stream_limits: StreamLimits = field(default_factory=StreamLimits)
    #: Longest silence inside a request body, in seconds (guard.py): 408 and closed.
    body_timeout: float = 15.0
    #: MQTT over WebSocket, served at `/mqtt` (None: not served).
    mqtt_websocket: ASGIApp | None = None
    #: This node's place in its cluster (a single process is a cluster of one).
    nodes: NodeService | None = None
