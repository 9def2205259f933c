"""Calls from applications to devices, synchronous and recorded.

Rules (protocols.md sections 3 and 4; the verdicts are core/commands.py):
- Every call is recorded before it is sent (status `sent`) and finished once
  (answered, timeout, failed, rejected); records survive restarts, and calls
  left `sent` by a stopped server are marked failed when it starts again.
- A device that is offline fails the call at once (409), without sending;
  a device that goes offline while calls wait fails them at once (409), not
  after their timeout. A device that is connected but did not subscribe to
  the topic of the call fails it at once too: nobody would ever answer.
- The caller waits at most its timeout (504 after it). Each pending call is a
  future keyed by the command id; answers resolve it. Calls to one device,
  or to many, never wait for each other.
- OneNET answers get the verdict of core/commands.answer_verdict on
  `.../accepted` or `.../rejected`; an over-long answer also fails the call
  (400, err_code 99). ThingsPanel answers (a JSON object, kept as sent)
  complete the call; unknown, late or repeated ones are counted and ignored.
- An attribute get is answered by the device's next attribute report.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from thingshub.core import commands as rules
from thingshub.core import cursors, telemetry
from thingshub.core.errors import (
    AnswerTooLarge,
    BadDeviceAnswer,
    CommandTimeout,
    DeviceOffline,
    InvalidRequest,
    ThingsHubError,
)
from thingshub.core.events import AttributesReported, CommandFinished, Event, PresenceChanged
from thingshub.core.jsontext import dumps
from thingshub.core.messages import (
    AttributesGet,
    CallAnswer,
    CommandAnswer,
    CommandAnswerReply,
    CommandRequest,
    Control,
    DeviceCall,
    DeviceRef,
)
from thingshub.core.model import CommandRecord, Device, Page
from thingshub.core.ports import Clock, CommandRepo, DeviceLink, EventBus
from thingshub.services.devices import DeviceService, check_limit

log = logging.getLogger("thingshub.commands")

ONENET, THINGSPANEL = "onenet", "thingspanel"


@dataclass
class _Pending:
    record: CommandRecord
    future: asyncio.Future[bytes]


@dataclass
class _AttributeWait:
    keys: list[str]
    future: asyncio.Future[dict[str, Any]] = field(default_factory=asyncio.Future)


class CommandService:
    def __init__(
        self,
        repo: CommandRepo,
        devices: DeviceService,
        link: DeviceLink,
        clock: Clock,
        bus: EventBus,
    ) -> None:
        self.repo = repo
        self.devices = devices
        self.link = link
        self.clock = clock
        self.bus = bus
        self._pending: dict[str, _Pending] = {}  # by command / message id
        self._by_device: dict[tuple[str, str], set[str]] = {}
        self._attribute_waits: dict[tuple[str, str], list[_AttributeWait]] = {}
        self.ignored: Counter[str] = Counter()
        bus.subscribe(self._on_event, [PresenceChanged, AttributesReported])

    async def start(self) -> None:
        failed = await self.repo.fail_unfinished(self.clock.now_ms())
        if failed:
            log.info("%d command(s) left unanswered by the last run marked failed", failed)

    # ------------------------------------------------------------ calls

    async def call_onenet(
        self, product_id: str, name: str, payload: bytes, timeout: object = None
    ) -> tuple[str, bytes]:
        """Send raw bytes on `cmd/request/{cmd_id}`; (cmd_id, the device's answer)."""
        seconds = rules.check_timeout(timeout)
        device = await self._online_device(product_id, name)
        cmd_id = rules.new_command_id()
        answer = await self._call(
            device, ONENET, "command", cmd_id, payload, seconds, CommandRequest(cmd_id, payload)
        )
        return cmd_id, answer

    async def call_thingspanel(
        self, product_id: str, name: str, method: object, params: object, timeout: object = None
    ) -> dict[str, Any]:
        """A ThingsPanel command {method, params}; the device's response object."""
        seconds = rules.check_timeout(timeout)
        if not isinstance(method, str) or not method:
            raise InvalidRequest("method must be a non-empty string")
        body: dict[str, Any] = {"method": method, "params": {} if params is None else params}
        return await self._thingspanel(product_id, name, "command", body, seconds)

    async def set_attributes(
        self, product_id: str, name: str, values: object, timeout: object = None
    ) -> dict[str, Any]:
        """`devices/attributes/set/...`; the device's response object."""
        seconds = rules.check_timeout(timeout)
        if not isinstance(values, dict) or not values:
            raise InvalidRequest("the attributes to set must be a non-empty JSON object")
        return await self._thingspanel(product_id, name, "attributes_set", values, seconds)

    async def get_attributes(
        self, product_id: str, name: str, keys: object, timeout: object = None
    ) -> dict[str, Any]:
        """Ask the device for attributes; the values of its next attribute report."""
        seconds = rules.check_timeout(timeout)
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            raise InvalidRequest("keys must be a list of attribute names ([] for all)")
        device = await self._online_device(product_id, name)
        wait = _AttributeWait(keys, asyncio.get_running_loop().create_future())
        key = (product_id, name)
        self._attribute_waits.setdefault(key, []).append(wait)
        try:
            if not self.link.send(_ref(device), AttributesGet(keys)):
                raise _not_subscribed("devices/attributes/get")
            return await asyncio.wait_for(asyncio.shield(wait.future), seconds)
        except TimeoutError:
            raise CommandTimeout(
                f"the device did not report attributes within {seconds} s"
            ) from None
        finally:
            waits = self._attribute_waits.get(key, [])
            if wait in waits:
                waits.remove(wait)
            if not waits:
                self._attribute_waits.pop(key, None)

    async def control(self, product_id: str, name: str, values: object) -> None:
        """`devices/telemetry/control/...`: fire and forget."""
        if not isinstance(values, dict) or not values:
            raise InvalidRequest("the control values must be a non-empty JSON object")
        device = await self._online_device(product_id, name)
        if not self.link.send(_ref(device), Control(values)):
            raise _not_subscribed("devices/telemetry/control")

    async def _thingspanel(
        self, product_id: str, name: str, kind: str, body: dict[str, Any], seconds: int
    ) -> dict[str, Any]:
        try:
            request = dumps(body)
        except (TypeError, ValueError):
            raise InvalidRequest("the request is not valid JSON") from None
        device = await self._online_device(product_id, name)
        message_id = rules.new_message_id(self.clock.now_ms(), self._pending)
        answer = await self._call(
            device,
            THINGSPANEL,
            kind,
            message_id,
            request,
            seconds,
            DeviceCall(kind, message_id, body),
        )
        return telemetry.parse_answer(answer)

    async def _call(
        self,
        device: Device,
        family: str,
        kind: str,
        wire_id: str,
        request: bytes,
        seconds: int,
        message: object,
    ) -> bytes:
        """Record, send, and wait. `wire_id` is the id on the topics; ThingsPanel's
        repeat over time, so their records get a unique id of their own."""
        now = self.clock.now_ms()
        cmd_id = wire_id if family == ONENET else f"{wire_id}-{rules.new_command_id()[:8]}"
        record = CommandRecord(
            cmd_id,
            device.product_id,
            device.name,
            family,
            kind,
            request,
            rules.SENT,
            now,
            sent_at=now,
        )
        await self.repo.add(record)
        key = (device.product_id, device.name)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[wire_id] = _Pending(record, future)
        self._by_device.setdefault(key, set()).add(wire_id)
        try:
            if not self.link.send(_ref(device), message):  # type: ignore[arg-type]
                await self._finish(record, rules.FAILED, None, "the device is not subscribed")
                raise _not_subscribed("its command topic")
            try:
                answer = await asyncio.wait_for(asyncio.shield(future), seconds)
            except TimeoutError:
                await self._finish(record, rules.TIMEOUT, None, f"no answer within {seconds} s")
                raise CommandTimeout(f"the device did not answer within {seconds} s") from None
            except DeviceOffline as exc:
                await self._finish(record, rules.FAILED, None, exc.message)
                raise
            except BadDeviceAnswer as exc:
                await self._finish(record, rules.REJECTED, None, exc.message)
                raise
            await self._finish(record, rules.ANSWERED, answer, None)
            return answer
        finally:
            self._pending.pop(wire_id, None)
            ids = self._by_device.get(key)
            if ids is not None:
                ids.discard(wire_id)
                if not ids:
                    del self._by_device[key]

    async def _finish(
        self, record: CommandRecord, status: str, response: bytes | None, detail: str | None
    ) -> None:
        now = self.clock.now_ms()
        answered = now if status == rules.ANSWERED else None
        await self.repo.finish(record.cmd_id, status, answered, response, detail)
        self.bus.publish(
            CommandFinished(
                record.product_id, record.name, record.cmd_id, record.family, status, now
            )
        )

    async def _online_device(self, product_id: str, name: str) -> Device:
        device = await self.devices.get_device(product_id, name)
        if not self.link.is_online(product_id, name):
            raise DeviceOffline(f"device {name!r} of product {product_id!r} is offline")
        return device

    # ------------------------------------------------------------ answers from devices

    async def onenet_answer(self, ref: DeviceRef, answer: CommandAnswer) -> None:
        pending = self._pending.get(answer.cmd_id)
        record = pending.record if pending is not None else None
        if record is None or record.family != ONENET:
            record = await self.repo.get(answer.cmd_id)
        usable = (
            pending is not None
            and not pending.future.done()
            and record is not None
            and record.family == ONENET
        )
        code = rules.answer_verdict(
            record,
            pending=usable,
            size=len(answer.payload),
            product_id=ref.product_id,
            name=ref.name,
        )
        if code is None:
            assert pending is not None
            pending.future.set_result(answer.payload)
            self.link.send(ref, CommandAnswerReply(answer.cmd_id))
            return
        if code == rules.ERR_TOO_LARGE and pending is not None:
            pending.future.set_exception(
                AnswerTooLarge(
                    f"the device's answer has {len(answer.payload)} bytes; less than "
                    f"{rules.MAX_ANSWER} are allowed",
                    err_code=code,
                    err_msg=rules.ERR_MSG[code],
                )
            )
        self.ignored[rules.ERR_MSG[code]] += 1
        self.link.send(
            ref,
            CommandAnswerReply(answer.cmd_id, {"err_code": code, "err_msg": rules.ERR_MSG[code]}),
        )

    async def thingspanel_answer(self, ref: DeviceRef, answer: CallAnswer) -> None:
        pending = self._pending.get(answer.message_id)
        record = pending.record if pending is not None else None
        if (
            pending is None
            or pending.future.done()
            or record is None
            or record.family != THINGSPANEL
            or record.kind != answer.kind
            or record.product_id != ref.product_id
            or record.name != ref.name
        ):
            self.ignored["unknown or late ThingsPanel answer"] += 1
            return
        try:
            telemetry.parse_answer(answer.payload)
        except ThingsHubError as exc:
            pending.future.set_exception(
                BadDeviceAnswer(f"the device's answer is not a response object: {exc.message}")
            )
            return
        pending.future.set_result(answer.payload)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, PresenceChanged) and not event.online:
            key = (event.product_id, event.name)
            for cmd_id in list(self._by_device.get(key, ())):
                pending = self._pending.get(cmd_id)
                if pending is not None and not pending.future.done():
                    pending.future.set_exception(
                        DeviceOffline("the device disconnected before it answered")
                    )
            for wait in self._attribute_waits.get(key, []):
                if not wait.future.done():
                    wait.future.set_exception(
                        DeviceOffline("the device disconnected before it reported")
                    )
        elif isinstance(event, AttributesReported):
            for wait in self._attribute_waits.get((event.product_id, event.name), []):
                if not wait.future.done():
                    wanted = wait.keys or list(event.values)
                    wait.future.set_result(
                        {k: event.values[k] for k in wanted if k in event.values}
                    )

    # ------------------------------------------------------------ records

    async def list_records(
        self, product_id: str, name: str, limit: int = 100, cursor: str | None = None
    ) -> Page[CommandRecord]:
        check_limit(limit)
        await self.devices.get_device(product_id, name)
        before = _decode_cursor(cursor)
        items = await self.repo.list(product_id, name, limit + 1, before)
        more = len(items) > limit
        items = items[:limit]
        last = items[-1] if items else None
        return Page(items, _encode_cursor(last.created_at, last.cmd_id) if more and last else None)


def _ref(device: Device) -> DeviceRef:
    return DeviceRef(device.product_id, device.name, device.device_number)


def _not_subscribed(topic: str) -> DeviceOffline:
    return DeviceOffline(f"the device is connected but not subscribed to {topic}")


def _encode_cursor(created_at: int, cmd_id: str) -> str:
    return cursors.command(created_at, cmd_id)


def _decode_cursor(cursor: str | None) -> tuple[int, str] | None:
    return cursors.before_command(cursor)
