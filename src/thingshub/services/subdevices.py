"""What gateways report for themselves and their sub-devices.

Rules:
- A gateway's report arrives decoded and checked whole by its dialect
  (`GatewayReport`: one node per device, each with its path of addresses
  below the sender). Each path is resolved level by level among the
  children of the node above it (TopologyService.resolve); a node whose
  address is unknown is skipped and counted, and the answer's message names
  it, as ThingsPanel does.
- Every device's rows are submitted together, so the storage's group-commit
  writer takes them into one batch and the QoS 1 acknowledgement leaves once
  all are durable. A storage failure is the platform's: the gateway gets the
  failure answer and no acknowledgement (it sends again), as for a direct
  report (ingest.py). Telemetry is ONE write of every node's points
  (`append_devices_settled`: one member of the storage's settlement, awaited
  once), not a write, a member and an outcome per node: the write's value
  names each device deleted meanwhile (skipped, as if unknown) or refused.
- Data for a sub-device makes it online, reached through the sender's
  connection (presence.py); each device's data is announced on the bus under
  its own ids, so the live stream and waiting attribute gets see sub-devices
  as any other device.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from functools import partial

from thingshub.core.errors import NotFound, ThingsHubError
from thingshub.core.events import AttributesReported, EventsReceived, TelemetryReceived
from thingshub.core.messages import DeviceRef, GatewayReport, NodeData, ReportAck
from thingshub.core.model import DeviceEvent, Point
from thingshub.core.ports import (
    AttributeRepo,
    Clock,
    DeviceLink,
    EventBus,
    EventRepo,
    TelemetryRepo,
)
from thingshub.core.settlement import Settlement
from thingshub.services.presence import PresenceService
from thingshub.services.topology import Key, TopologyService

#: Unknown addresses named in one answer (the rest are counted).
NAMED = 10

#: One device's rows of a message: its points and its events.
Rows = tuple[list[Point], list[DeviceEvent]]


async def write_together(
    points: TelemetryRepo, events: EventRepo, rows: Mapping[Key, Rows]
) -> None:
    """Every device's rows submitted at once, so that the storage's group-commit
    writer takes them into one transaction: durable together when this
    returns, or (a storage failure) none of them. Raises the failure (a
    platform's before a NotFound: a device deleted meanwhile)."""
    writes: list[Awaitable[None]] = []
    for key, (new_points, new_events) in rows.items():
        if new_points:
            writes.append(points.append(*key, new_points))
        if new_events:
            writes.append(events.append(*key, new_events))
    if len(writes) == 1:  # the common post: one device's points. A task for it
        await writes[0]  # (what gather makes) would cost every message for nothing
        return
    outcomes = await asyncio.gather(*writes, return_exceptions=True)
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    failures.sort(key=lambda exc: isinstance(exc, NotFound))
    if failures:
        raise failures[0]


class GatewayReports:
    def __init__(
        self,
        topology: TopologyService,
        points: TelemetryRepo,
        attributes: AttributeRepo,
        events: EventRepo,
        presence: PresenceService,
        link: DeviceLink,
        clock: Clock,
        bus: EventBus,
    ) -> None:
        self.topology = topology
        self.points = points
        self.attributes = attributes
        self.events = events
        self.presence = presence
        self.link = link
        self.clock = clock
        self.bus = bus
        #: Nodes skipped for an unknown address (for metrics).
        self.skipped = 0
        self.stored_nodes = 0

    async def report(self, ref: DeviceRef, report: GatewayReport) -> None:
        top = (ref.product_id, ref.name)
        resolved: list[tuple[Key, NodeData]] = []
        unknown: list[str] = []
        nodes = report.nodes
        keys = await self.topology.resolve_all(top, [node.path for node in nodes])
        for node, key in zip(nodes, keys, strict=True):
            if key is None:
                unknown.append("/".join(node.path))
            else:
                resolved.append((key, node))
        outcomes: list[object] | None
        if report.kind == "telemetry":
            outcomes = await self._telemetry(resolved)
        else:
            at = report.received_at
            stores = [self._store(report.kind, key, node, at) for key, node in resolved]
            outcomes = await asyncio.gather(*stores, return_exceptions=True)
        failure: ThingsHubError | None = None
        stored = resolved  # every node, unless an outcome says otherwise
        if outcomes is not None:
            stored = []
            for (key, node), outcome in zip(resolved, outcomes, strict=True):
                if isinstance(outcome, NotFound) or outcome == 0:  # deleted meanwhile: unknown
                    unknown.append("/".join(node.path))
                elif isinstance(outcome, ThingsHubError):
                    failure = failure or outcome
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    stored.append((key, node))
        self.skipped += len(unknown)
        if failure is not None:
            self._answer(ref, report, failure, None)
            raise failure
        self.stored_nodes += len(stored)
        self.presence.reached_all([key for key, _ in stored], top)  # the sender's own: not
        self._announce(report, stored)
        self._answer(ref, report, None, _skipped(unknown))

    async def _telemetry(self, resolved: list[tuple[Key, NodeData]]) -> list[object] | None:
        """Each node's outcome, as `gather` of a write each would give: None once
        durable, 0 for a device deleted meanwhile, or the failure; or None for
        all of them: every one durable (the common message, looked at no
        further). Every node's points are ONE write (`append_devices_settled`:
        one member of the storage's open settlement, or the storage's future),
        awaited once; its value names the devices not stored, one by one."""
        if not resolved:
            return None
        stored = self.points.append_devices_settled(
            [(key[0], key[1], node.points) for key, node in resolved]
        )
        value: object
        try:
            if isinstance(stored, Settlement):
                member = stored.last  # read now: the next append moves it
                decided: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                stored.wait(partial(_decided, decided))
                await decided
                decision = stored.outcome(member)
                if isinstance(decision, BaseException):
                    raise decision
                value = stored.value(member)
            else:
                value = await stored
        except Exception as exc:  # the write's failure: every node's, as each write's was
            return [exc] * len(resolved)
        if value is None:
            return None
        assert isinstance(value, tuple) and len(value) == len(resolved)
        return list(value)

    def _store(self, kind: str, key: Key, node: NodeData, now: int) -> Awaitable[int | None]:
        if kind == "attributes":
            assert node.attributes is not None
            return self.attributes.upsert(*key, node.attributes, now)
        return self.events.append(*key, node.events)

    def _announce(self, report: GatewayReport, stored: list[tuple[Key, NodeData]]) -> None:
        """Each stored node's data on the bus, under its device's ids (asked once
        a report whether anyone listens, not once a node)."""
        at = report.received_at
        publish = self.bus.publish
        if report.kind == "telemetry":
            if self.bus.wants(TelemetryReceived):
                for key, node in stored:
                    publish(TelemetryReceived(*key, list(node.points), at))
        elif report.kind == "attributes":
            if self.bus.wants(AttributesReported):
                for key, node in stored:
                    assert node.attributes is not None
                    publish(AttributesReported(*key, node.attributes, at))
        elif self.bus.wants(EventsReceived):
            for key, node in stored:
                publish(EventsReceived(*key, list(node.events), at))

    def _answer(
        self,
        ref: DeviceRef,
        report: GatewayReport,
        error: ThingsHubError | None,
        note: str | None,
    ) -> None:
        if report.reply_to is None:
            return
        ack = ReportAck(
            report.kind, report.reply_to, self.clock.now_ms(), error, gateway=True, note=note
        )
        self.link.send(ref, ack)


def _decided(future: asyncio.Future[None]) -> None:
    """A settlement's waiter: its awaiting report goes on (unless it was cancelled)."""
    if not future.done():
        future.set_result(None)


def _skipped(unknown: list[str]) -> str | None:
    if not unknown:
        return None
    named = ", ".join(unknown[:NAMED]) + (", ..." if len(unknown) > NAMED else "")
    noun = "address" if len(unknown) == 1 else "addresses"
    return f"{len(unknown)} unknown sub-device {noun} skipped: {named}"
