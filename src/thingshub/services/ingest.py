"""What devices report on ThingsPanel topics: telemetry, attributes, events.

Rules (protocols.md section 4; the payload rules are core/telemetry.py):
- A report is stored whole or not at all; the QoS 1 acknowledgement of a
  message leaves only once its rows are durable (the storage's group-commit
  writer batches many messages into one transaction and answers each when it
  has committed).
- A bad payload stores nothing; where the topic has a response topic, the
  device gets `result: 1` with the errcode and a sentence; it is counted; the
  connection stays up and the message is still acknowledged.
- A storage failure is the platform's, not the device's: the device gets
  `INTERNAL` where there is a response topic, and the message is NOT
  acknowledged (the error reaches the MQTT server, which closes a 3.1.1
  connection unacknowledged or answers 0x80 to 5.0), so the device resends.
- Attribute and event reports are answered on their response topics after
  the write; an event reply echoes `method` for a real-time event and omits
  it for a historical array.
- Accepted reports are announced on the bus (for the live stream, and for
  calls waiting on an attribute report), but only built when someone listens.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from thingshub.core import telemetry
from thingshub.core.errors import NotFound, ThingsHubError
from thingshub.core.events import AttributesReported, EventsReceived, TelemetryReceived
from thingshub.core.messages import (
    AttributesReport,
    DeviceRef,
    EventReport,
    ReportReply,
    TelemetryReport,
)
from thingshub.core.ports import (
    AttributeRepo,
    Clock,
    DeviceLink,
    EventBus,
    EventRepo,
    TelemetryRepo,
)

log = logging.getLogger("thingshub.ingest")


class IngestService:
    def __init__(
        self,
        points: TelemetryRepo,
        attributes: AttributeRepo,
        events: EventRepo,
        link: DeviceLink,
        clock: Clock,
        bus: EventBus,
        *,
        max_payload: int = telemetry.MAX_PAYLOAD,
    ) -> None:
        self.points = points
        self.attributes = attributes
        self.events = events
        self.link = link
        self.clock = clock
        self.bus = bus
        self.max_payload = max_payload
        #: Bad reports refused, by topic kind and errcode (for metrics).
        self.refused: Counter[tuple[str, str]] = Counter()
        self.stored_points = 0
        self.stored_messages = 0

    async def telemetry_report(self, ref: DeviceRef, report: TelemetryReport) -> None:
        now = self.clock.now_ms()
        try:
            points = telemetry.parse_telemetry(report.payload, now, self.max_payload)
        except telemetry.ReportError as exc:
            self._refused("telemetry", exc)
            return  # `devices/telemetry` has no response topic: counted, acknowledged
        try:
            await self.points.append(ref.product_id, ref.name, points)
        except NotFound:
            return  # the device was deleted meanwhile; its connection is being closed
        self.stored_points += len(points)
        self.stored_messages += 1
        if self.bus.wants(TelemetryReceived):
            self.bus.publish(TelemetryReceived(ref.product_id, ref.name, points, now))

    async def attribute_report(self, ref: DeviceRef, report: AttributesReport) -> None:
        now = self.clock.now_ms()
        try:
            values = telemetry.parse_attributes(report.payload, self.max_payload)
            await self.attributes.upsert(ref.product_id, ref.name, values, now)
        except ThingsHubError as exc:
            self._reply(ref, "attributes", report.message_id, self._failure("attributes", exc))
            if _platform_failure(exc):
                raise
            return
        self._reply(
            ref, "attributes", report.message_id, telemetry.response(True, now_s=now // 1000)
        )
        if self.bus.wants(AttributesReported):
            self.bus.publish(AttributesReported(ref.product_id, ref.name, values, now))

    async def event_report(self, ref: DeviceRef, report: EventReport) -> None:
        now = self.clock.now_ms()
        try:
            events, historical = telemetry.parse_event(report.payload, now, self.max_payload)
            await self.events.append(ref.product_id, ref.name, events)
        except ThingsHubError as exc:
            body = self._failure("event", exc)
            method = telemetry.event_method(report.payload)
            if method is not None:
                body["method"] = method
            self._reply(ref, "event", report.message_id, body)
            if _platform_failure(exc):
                raise
            return
        method = None if historical else events[0].method
        self._reply(
            ref,
            "event",
            report.message_id,
            telemetry.response(True, now_s=now // 1000, method=method),
        )
        if self.bus.wants(EventsReceived):
            self.bus.publish(EventsReceived(ref.product_id, ref.name, events, now))

    def _failure(self, kind: str, exc: ThingsHubError) -> dict[str, Any]:
        now_s = self.clock.now_ms() // 1000
        if isinstance(exc, telemetry.ReportError):
            self._refused(kind, exc)
            return telemetry.response(False, now_s=now_s, errcode=exc.errcode, message=exc.message)
        if isinstance(exc, NotFound):
            return telemetry.response(
                False, now_s=now_s, errcode="INTERNAL", message="the device no longer exists"
            )
        self.refused[(kind, "INTERNAL")] += 1
        return telemetry.response(
            False,
            now_s=now_s,
            errcode="INTERNAL",
            message="the platform could not store the report",
        )

    def _refused(self, kind: str, exc: telemetry.ReportError) -> None:
        self.refused[(kind, exc.errcode)] += 1

    def _reply(self, ref: DeviceRef, kind: str, message_id: str, body: dict[str, Any]) -> None:
        self.link.send(ref, ReportReply(kind, message_id, body))


def _platform_failure(exc: ThingsHubError) -> bool:
    return not isinstance(exc, telemetry.ReportError | NotFound)
