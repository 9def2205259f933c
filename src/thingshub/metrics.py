"""The platform's own metrics: counters the parts keep, read when `/metrics` is scraped.

Rules:
- Nothing is counted here: the MQTT server, the gateway, ingest, OTA and the
  bus keep their own counters (plain integers on their hot paths); this
  module only turns them into Prometheus families, once per scrape.
- HTTP's own metrics (requests by route and status) are api/metrics.py's.
- The storage writer's outage counters are read off the storage when it has
  one (SQLite and PostgreSQL do; the memory store has nothing to go away).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from thingshub.bus.calls import ClusterCalls
from thingshub.bus.nats import NatsBus
from thingshub.gateway.hooks import DeviceGateway
from thingshub.mqtt.server import Broker
from thingshub.mqtt.server.websocket import MqttWebSocket
from thingshub.services.ingest import IngestService
from thingshub.services.ota import OtaService
from thingshub.services.subdevices import GatewayReports
from thingshub.services.things import ThingService
from thingshub.storage.sql.batch import GroupCommit


class Bus(Protocol):
    def handler_count(self) -> int: ...


class Parts(Protocol):
    """The parts whose counters are read (the platform has them, once started)."""

    broker: Broker | None
    mqtt_websocket: MqttWebSocket | None
    gateway: DeviceGateway | None

    @property
    def bus(self) -> Bus | None: ...

    @property
    def nats(self) -> NatsBus | None: ...

    @property
    def cluster_calls(self) -> ClusterCalls | None: ...

    ingest: IngestService | None
    ota: OtaService | None

    @property
    def storage(self) -> object: ...

    things: ThingService | None
    gateway_reports: GatewayReports | None


def collect(platform: Parts) -> Iterable[Metric]:
    """Every family of the platform's parts, read when /metrics is scraped."""
    broker, gateway = platform.broker, platform.gateway
    if broker is None or gateway is None:
        return []
    st = broker.stats
    conns = GaugeMetricFamily("thingshub_mqtt_connections", "Open MQTT connections.")
    conns.add_metric([], st.connections)
    logins = CounterMetricFamily("thingshub_device_logins", "Device logins.", labels=["result"])
    logins.add_metric(["ok"], gateway.logins_ok)
    for reason, n in gateway.logins_failed.items():
        logins.add_metric([f"failed_{reason}"], n)
    msg_in = CounterMetricFamily(
        "thingshub_messages_in", "Messages from devices.", labels=["family"]
    )
    for fam, n in gateway.messages_in.items():
        msg_in.add_metric([fam], n)
    msg_out = CounterMetricFamily(
        "thingshub_messages_out", "Messages to devices.", labels=["family"]
    )
    for fam, n in gateway.messages_out.items():
        msg_out.add_metric([fam], n)
    mqtt = CounterMetricFamily("thingshub_mqtt_events", "MQTT server counters.", labels=["event"])
    for name in (
        "connections_total",
        "connects_refused",
        "connects_refused_per_address",
        "protocol_errors",
        "messages_in",
        "messages_out",
        "bytes_in",
        "bytes_out",
        "denied_publish",
        "denied_subscribe",
        "dropped_offline_qos0",
        "dropped_slow_consumer",
        "dropped_queue_full",
        "dropped_too_large",
        "dropped_expired",
        "hook_errors",
    ):
        mqtt.add_metric([name], getattr(st, name))
    limited = CounterMetricFamily(
        "thingshub_publish_rate_limited",
        "Device messages refused over the device's publish rate (device_publish_rate).",
    )
    limited.add_metric([], gateway.rate_limited)
    families: list[Metric] = [conns, logins, msg_in, msg_out, mqtt, limited]
    if platform.mqtt_websocket is not None:
        families += _websocket_metrics(platform.mqtt_websocket)
    if platform.bus is not None:
        handlers = GaugeMetricFamily("thingshub_bus_handlers", "Event bus subscriptions.")
        handlers.add_metric([], platform.bus.handler_count())
        families.append(handlers)
    if platform.nats is not None:
        families += _cluster_metrics(platform.nats)
    if platform.cluster_calls is not None:
        families += _cluster_call_metrics(platform.cluster_calls)
    if platform.ingest is not None:
        refused = CounterMetricFamily(
            "thingshub_reports_refused",
            "Device reports refused as malformed.",
            labels=["kind", "errcode"],
        )
        for (kind, errcode), n in platform.ingest.refused.items():
            refused.add_metric([kind, errcode], n)
        points = CounterMetricFamily("thingshub_points_stored", "Telemetry points durably stored.")
        stored = platform.ingest.stored_points
        if platform.things is not None:  # thing-model properties and data points are telemetry too
            stored += platform.things.stored_points
        points.add_metric([], stored)
        families += [refused, points]
    if platform.gateway_reports is not None:
        skipped = CounterMetricFamily(
            "thingshub_gateway_nodes_skipped",
            "Nodes of gateways' reports skipped for an unknown sub-device address.",
        )
        skipped.add_metric([], platform.gateway_reports.skipped)
        families.append(skipped)
    if platform.ota is not None:
        families += _ota_metrics(platform.ota)
    writer = getattr(platform.storage, "writer", None)
    if isinstance(writer, GroupCommit):  # SQLite and PostgreSQL (not the memory store)
        families += _writer_metrics(writer)
    families += _sqlite_memory_metrics(platform.storage)
    if platform.things is not None:
        things = CounterMetricFamily(
            "thingshub_thing_requests_refused",
            "Thing-model requests and data points refused, by OneNET code (98: data points).",
            labels=["code"],
        )
        for code, n in platform.things.refused.items():
            things.add_metric([str(code)], n)
        families.append(things)
    return families


def _websocket_metrics(endpoint: MqttWebSocket) -> list[Metric]:
    st = endpoint.stats
    conns = GaugeMetricFamily(
        "thingshub_mqtt_websocket_connections",
        "Open MQTT-over-WebSocket connections (also counted in thingshub_mqtt_connections).",
    )
    conns.add_metric([], st.connections)
    events = CounterMetricFamily(
        "thingshub_mqtt_websocket_events", "MQTT-over-WebSocket counters.", labels=["event"]
    )
    for name in ("connections_total", "refused_subprotocol", "text_frames"):
        events.add_metric([name], getattr(st, name))
    return [conns, events]


def _ota_metrics(ota: OtaService) -> list[Metric]:
    ignored = CounterMetricFamily(
        "thingshub_ota_progress_ignored",
        "OTA progress reports that changed nothing, by reason.",
        labels=["reason"],
    )
    for reason, n in ota.ignored.items():
        ignored.add_metric([reason], n)
    accepted = CounterMetricFamily(
        "thingshub_ota_progress_accepted", "OTA progress reports that moved a task along."
    )
    accepted.add_metric([], ota.accepted)
    informs = CounterMetricFamily("thingshub_ota_informs", "OTA informs sent to devices.")
    informs.add_metric([], ota.informs)
    downloads = CounterMetricFamily(
        "thingshub_ota_downloads", "Firmware download requests, by result.", labels=["result"]
    )
    for result, n in ota.downloads.items():
        downloads.add_metric([result], n)
    running = GaugeMetricFamily("thingshub_ota_running_tasks", "OTA tasks running.")
    running.add_metric([], ota.running_count)
    return [ignored, accepted, informs, downloads, running]


def _writer_metrics(writer: GroupCommit) -> list[Metric]:
    """Outages of the database, as the writer rides them out (storage/sql/batch.py)."""
    outages = CounterMetricFamily(
        "thingshub_storage_outages", "Times the database went away (stopped, lost, disk full)."
    )
    outages.add_metric([], writer.stats.outages)
    down = GaugeMetricFamily("thingshub_storage_outage", "1 while the database is away.")
    down.add_metric([], 0 if writer.outage is None else 1)
    held = GaugeMetricFamily(
        "thingshub_storage_held_writes",
        "Device reports held now, unacknowledged, until the database is back.",
    )
    held.add_metric([], writer.stats.held)
    return [outages, down, held]


def _sqlite_memory_metrics(storage: object) -> list[Metric]:
    """SQLite's own heap and the bound of its page caches (storage/sqlite/memory.py):
    RSS that grows towards the bound with the database is a cache filling, not a leak."""
    used = getattr(storage, "memory_used", None)
    value = used() if callable(used) else None
    if not isinstance(value, int):  # not SQLite, or a Python whose SQLite cannot be read
        return []
    heap = GaugeMetricFamily("thingshub_sqlite_memory_bytes", "Memory SQLite holds now.")
    heap.add_metric([], value)
    limit = GaugeMetricFamily(
        "thingshub_sqlite_cache_limit_bytes", "Bytes SQLite's page caches may grow to."
    )
    limit.add_metric([], getattr(storage, "cache_limit", 0))
    return [heap, limit]


def _cluster_metrics(nats: NatsBus) -> list[Metric]:
    """The link of this node to the cluster's NATS: up or not, and what it relayed."""
    up = GaugeMetricFamily("thingshub_cluster_nats_connected", "1 while NATS is reachable.")
    up.add_metric([], 1 if nats.connected else 0)
    relay = CounterMetricFamily(
        "thingshub_cluster_relayed", "Events and broadcasts sent to other nodes.", labels=["result"]
    )
    relay.add_metric(["sent"], nats.relayed)
    relay.add_metric(["dropped"], nats.dropped)
    return [up, relay]


def _cluster_call_metrics(calls: ClusterCalls) -> list[Metric]:
    forwarded = CounterMetricFamily(
        "thingshub_cluster_forwarded",
        "Operations on devices sent to the node holding them.",
        labels=["kind"],
    )
    forwarded.add_metric(["call"], calls.forwarded)
    forwarded.add_metric(["message"], calls.messages)
    return [forwarded]
