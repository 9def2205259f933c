"""What devices report: telemetry, attributes, events.

Rules:
- Reports arrive decoded and checked by their dialect; a malformed one
  arrives as `ReportRefused` and stores nothing: it is counted (by kind and
  the protocol's code), answered with that error where its protocol has an
  answer, and still acknowledged (the connection stays up).
- A report is stored whole or not at all; the QoS 1 acknowledgement of a
  message leaves only once its rows are durable (the storage's group-commit
  writer batches many messages into one transaction and answers each when it
  has committed).
- A storage failure is the platform's, not the device's: the device gets
  the failure answer where there is one, and the message is NOT
  acknowledged (the error reaches the MQTT server, which closes a 3.1.1
  connection unacknowledged or answers 0x80 to 5.0), so the device resends.
- Attribute and event reports are answered (`ReportAck`) after the write;
  an event's answer echoes its method for a real-time event and omits it
  for a historical batch.
- Accepted reports are announced on the bus (for the live stream, and for
  calls waiting on an attribute report), but only built when someone listens.
- Telemetry, the hot path, is handled without a coroutine (`telemetry_now`):
  the gateway hands the storage's own future to the MQTT server, which
  acknowledges as it resolves. With SQL storage that is a `Settlement`, one
  for the whole batch, which the MQTT server waits for once per connection;
  the counters of what was stored are counted by one waiter per settlement
  too (a device deleted meanwhile, or a failure, counts nothing). The bus
  announcement, only when someone listens as the report arrives, is the
  append's `then`, which the storage calls as the report is committed,
  before the acknowledgement's callback runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial

from thingshub.core.errors import NotFound, ThingsHubError
from thingshub.core.events import AttributesReported, EventsReceived, TelemetryReceived
from thingshub.core.messages import (
    AttributesReport,
    DeviceRef,
    EventReport,
    ReportAck,
    ReportRefused,
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
from thingshub.core.settlement import Settlement

log = logging.getLogger("thingshub.ingest")


#: The metrics label of a report refused or failed for the platform's own reasons.
INTERNAL = "INTERNAL"


#: A settlement, its reports' member numbers, their point counts.
Tally = tuple[Settlement, list[int], list[int]]


class IngestService:
    def __init__(
        self,
        points: TelemetryRepo,
        attributes: AttributeRepo,
        events: EventRepo,
        link: DeviceLink,
        clock: Clock,
        bus: EventBus,
    ) -> None:
        self.points = points
        self.attributes = attributes
        self.events = events
        self.link = link
        self.clock = clock
        self.bus = bus
        #: Bad reports refused, by kind and the protocol's code (for metrics).
        self.refused: Counter[tuple[str, str]] = Counter()
        self.stored_points = 0
        self.stored_messages = 0
        #: The settlement of telemetry counted last, with its reports' member
        #: numbers and point counts (one waiter a settlement, not a callback a report).
        self._tally: Tally | None = None

    async def telemetry_report(self, ref: DeviceRef, report: TelemetryReport) -> None:
        """`telemetry_now`, awaited (a future, never a settlement)."""
        points = report.points
        stored = self.points.append_now(ref.product_id, ref.name, points, self._then(ref, report))
        await self._counting(stored, len(points))

    def telemetry_now(
        self, ref: DeviceRef, report: TelemetryReport
    ) -> asyncio.Future[int | None] | Settlement:
        """Store a report: a future that resolves once it is durable, to 0 if
        the device was deleted meanwhile (its connection is being closed); or
        the storage's `Settlement` whose `last` member it is, decided alike."""
        points = report.points
        # `_then` written out: every message.
        then = partial(self._announce, ref, report) if self.bus.wants(TelemetryReceived) else None
        stored = self.points.append_settled(ref.product_id, ref.name, points, then)
        if isinstance(stored, Settlement):
            tally = self._tally
            if tally is None or tally[0] is not stored:
                self._tally = tally = (stored, [], [])
                stored.wait(partial(self._count, tally))
            tally[1].append(stored.last)
            tally[2].append(len(points))
            return stored
        return self._counting(stored, len(points))

    def _then(self, ref: DeviceRef, report: TelemetryReport) -> Callable[[], None] | None:
        """What follows a report's commit: its announcement, if someone listens now."""
        return partial(self._announce, ref, report) if self.bus.wants(TelemetryReceived) else None

    def _counting(self, stored: Awaitable[int | None], size: int) -> asyncio.Future[int | None]:
        """`stored` as a future that counts its report once it is durable."""
        future = stored if isinstance(stored, asyncio.Future) else asyncio.ensure_future(stored)
        if future.done():  # a storage without a writer: counted before anyone awaits it
            self._counted(size, future)
        else:  # before the awaiting task resumes: its wake-up is added after this
            future.add_done_callback(partial(self._counted, size))
        return future

    def _count(self, tally: Tally) -> None:
        """A settlement of telemetry is decided: count what it stored."""
        settlement, members, sizes = tally
        if self._tally is tally:
            self._tally = None
        if settlement.clean and settlement.missing is None:
            self.stored_messages += len(sizes)
            self.stored_points += sum(sizes)
            return
        for member, size in zip(members, sizes, strict=True):
            if settlement.done(member):
                self.stored_messages += 1
                self.stored_points += size

    def _counted(self, size: int, stored: asyncio.Future[int | None]) -> None:
        """A report's future is done: counted if it stored (None; 0 is a device gone)."""
        if not stored.cancelled() and stored.exception() is None and stored.result() is None:
            self.stored_messages += 1
            self.stored_points += size

    def _announce(self, ref: DeviceRef, report: TelemetryReport) -> None:
        """The report is durable (the storage calls it; never when nothing was stored)."""
        points = list(report.points)  # a `PointsAt` made into its points for the listeners
        self.bus.publish(TelemetryReceived(ref.product_id, ref.name, points, report.received_at))

    async def attribute_report(self, ref: DeviceRef, report: AttributesReport) -> None:
        now = report.received_at
        try:
            await self.attributes.upsert(ref.product_id, ref.name, report.values, now)
        except ThingsHubError as exc:
            self._failed(ref, "attributes", report.reply_to, exc, None)
            if not isinstance(exc, NotFound):  # NotFound: deleted meanwhile, nothing to redo
                raise
            return
        self.link.send(ref, ReportAck("attributes", report.reply_to, self.clock.now_ms()))
        if self.bus.wants(AttributesReported):
            self.bus.publish(AttributesReported(ref.product_id, ref.name, report.values, now))

    async def event_report(self, ref: DeviceRef, report: EventReport) -> None:
        method = None if report.historical else report.events[0].method
        try:
            await self.events.append(ref.product_id, ref.name, report.events)
        except ThingsHubError as exc:
            self._failed(ref, "event", report.reply_to, exc, method)
            if not isinstance(exc, NotFound):
                raise
            return
        self.link.send(ref, ReportAck("event", report.reply_to, self.clock.now_ms(), None, method))
        if self.bus.wants(EventsReceived):
            self.bus.publish(
                EventsReceived(ref.product_id, ref.name, report.events, report.received_at)
            )

    async def refused_report(self, ref: DeviceRef, report: ReportRefused) -> None:
        """Counted, answered with the error where the protocol answers, acknowledged."""
        self.refused[(report.kind, str(report.error.err_code or INTERNAL))] += 1
        if report.reply_to is not None:
            ack = ReportAck(
                report.kind,
                report.reply_to,
                self.clock.now_ms(),
                report.error,
                report.method,
                gateway=report.gateway,
            )
            self.link.send(ref, ack)

    def _failed(
        self, ref: DeviceRef, kind: str, reply_to: str, exc: ThingsHubError, method: str | None
    ) -> None:
        if not isinstance(exc, NotFound):
            self.refused[(kind, INTERNAL)] += 1
        self.link.send(ref, ReportAck(kind, reply_to, self.clock.now_ms(), exc, method))
