"""Calls from applications to devices, synchronous and recorded.

Rules (the requests, ids and verdicts are core/commands.py's):
- One path for every protocol: `call` records a `CallRequest`, sends it as
  a `Call` and waits; `answer` takes every `CallAnswer`, judges it, tells
  the device the verdict (its dialect words it, or keeps quiet) and
  completes the waiting call.
- Every call is recorded before it is sent (status `sent`) and finished once
  (answered, timeout, failed, rejected); records survive restarts, and calls
  left `sent` by a stopped server are marked failed when it starts again.
  A record names the node that sent it: in a cluster a starting node fails
  only the calls no live node can still see through (its own, those of dead
  or stopped nodes, those of no node), never those another node waits for.
- A device that is offline fails the call at once (409), without sending;
  a device that goes offline while calls wait fails them at once (409), not
  after their timeout. A device that is connected but did not subscribe to
  the topic of the call fails it at once too: nobody would ever answer.
- The caller waits at most its timeout (504 after it). Each pending call is a
  future keyed by the command id; answers resolve it. Calls to one device,
  or to many, never wait for each other.
- A call sent without waiting (`send`: an asynchronous service, desired
  values pushed) stays `sent` until the device answers it, whenever that
  is, or until `async_expiry` (24 h) has passed: then it is `timeout`. It
  is not failed when the device goes offline: it may answer later.
- An answer longer than its protocol allows fails the call (400, with the
  protocol's code); one its dialect found unusable fails it too (502);
  unknown, late or repeated ones are counted and change nothing.
- An attribute get is answered by the device's next attribute report.
- A sub-device is reached through its top gateway (DeviceService.route):
  the call needs that gateway online and listening, whatever the
  sub-device's own presence; the request travels as `ViaGateway`, the
  gateway's answer completes it, and the gateway going offline fails it.
  A sub-device with sub-devices of its own (as stored when the call is
  made) is marked a gateway there, for dialects that address sub-gateways
  in a form of their own.
- In a cluster (`remote` given), a device (or top gateway) not connected to
  this node is looked for on the others: the whole operation runs on the
  node holding it (`remote.run`), which records the call and waits for the
  answer, so timeouts and errors are those of one node; offline everywhere
  is the same 409. An operation forwarded here runs with `here` set, and is
  never forwarded again. The local path costs nothing more: the cluster is
  asked only once this node has found the device offline.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from thingshub.core import commands as rules
from thingshub.core import cursors
from thingshub.core.commands import CallResult, Forwarded
from thingshub.core.errors import (
    AnswerTooLarge,
    BadDeviceAnswer,
    CommandTimeout,
    DeviceOffline,
    InvalidRequest,
)
from thingshub.core.events import AttributesReported, CommandFinished, Event, PresenceChanged
from thingshub.core.messages import (
    AnswerVerdict,
    AttributesGet,
    Call,
    CallAnswer,
    Control,
    DeviceRef,
)
from thingshub.core.model import CommandRecord, Device, Page
from thingshub.core.ports import Clock, CommandRepo, DeviceLink, EventBus, RemoteCalls
from thingshub.services.call_routes import Elsewhere, Route, not_subscribed, ref, wrap
from thingshub.services.devices import DeviceService
from thingshub.services.products import check_limit

log = logging.getLogger("thingshub.commands")


#: How long a call sent without waiting may be answered.
ASYNC_EXPIRY_S = 24 * 3600


@dataclass
class _Pending:
    record: CommandRecord
    future: asyncio.Future[CallAnswer]
    #: For a call nobody waits for: when it expires.
    expiry: asyncio.TimerHandle | None = None
    #: The connected device that answers it (the record's own, or its top gateway).
    via: tuple[str, str] | None = None


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
        *,
        async_expiry: float = ASYNC_EXPIRY_S,
        node: str | None = None,
        remote: RemoteCalls | None = None,
    ) -> None:
        self.repo = repo
        #: This node's id, written in every record (None: not recorded).
        self.node = node
        #: The other nodes of a cluster, for devices not connected here.
        self.remote = remote
        self.devices = devices
        self.link = link
        self.clock = clock
        self.bus = bus
        self.async_expiry = async_expiry
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: dict[tuple[str, str], _Pending] = {}  # by (family, id on the wire)
        self._by_device: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self._attribute_waits: dict[tuple[str, str], list[_AttributeWait]] = {}
        self.ignored: Counter[str] = Counter()
        bus.subscribe(self._on_event, [PresenceChanged, AttributesReported])

    async def start(self, live: Sequence[str] = ()) -> None:
        """Fail the calls left unfinished, but those of the `live` nodes of a
        cluster other than this one."""
        keep = [n for n in live if n != self.node]
        failed = await self.repo.fail_unfinished(self.clock.now_ms(), keep)
        if failed:
            log.info("%d command(s) left unanswered by the last run marked failed", failed)

    async def stop(self) -> None:
        """Calls sent without waiting stay `sent`; the next start marks them failed."""
        for pending in self._pending.values():
            if pending.expiry is not None:
                pending.expiry.cancel()
        for task in list(self._tasks):
            task.cancel()

    # ------------------------------------------------------------ calls

    async def call(
        self,
        product_id: str,
        name: str,
        request: rules.CallRequest,
        timeout: object = None,
        default_timeout: int = rules.DEFAULT_TIMEOUT,
        *,
        here: bool = False,
    ) -> CallResult:
        """Send `request` to the device and wait for its answer."""
        seconds = rules.check_timeout(timeout, default_timeout)
        try:
            device, via, route = await self._reach(product_id, name, request.addressed, here)
        except Elsewhere as away:
            op = Forwarded(rules.CALL, product_id, name, request, seconds)
            result = await away.run(op)
            assert isinstance(result, CallResult)
            return result
        return await self._call(device, via, route, request, seconds)

    async def send(
        self, product_id: str, name: str, request: rules.CallRequest, *, here: bool = False
    ) -> str:
        """Send `request` without waiting; the id of its record, which the
        device's answer completes later (see the module's rules)."""
        try:
            device, via, route = await self._reach(product_id, name, request.addressed, here)
        except Elsewhere as away:
            return str(await away.run(Forwarded(rules.SEND, product_id, name, request)))
        record, pending_key, message = await self._record(device, request)
        future: asyncio.Future[CallAnswer] = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()
        pending = _Pending(record, future, via=(via.product_id, via.name))
        self._pending[pending_key] = pending
        if not self.link.send(via, wrap(message, route, device)):
            self._pending.pop(pending_key, None)
            await self._finish(record, rules.FAILED, None, "the device is not subscribed")
            raise not_subscribed("the topic of its requests")
        pending.expiry = loop.call_later(self.async_expiry, self._expire, pending_key)
        future.add_done_callback(lambda f: self._later(self._settle(pending_key, f)))
        return record.cmd_id

    def _expire(self, pending_key: tuple[str, str]) -> None:
        pending = self._pending.get(pending_key)
        if pending is not None and not pending.future.done():
            pending.future.set_exception(CommandTimeout("no answer within the expiry"))

    async def _settle(
        self, pending_key: tuple[str, str], future: asyncio.Future[CallAnswer]
    ) -> None:
        """The end of a call nobody waits for: its record is finished here."""
        pending = self._pending.pop(pending_key, None)
        if pending is None:
            return
        if pending.expiry is not None:
            pending.expiry.cancel()
        exc = future.exception()
        if exc is None:
            await self._finish(pending.record, rules.ANSWERED, future.result().payload, None)
        elif isinstance(exc, CommandTimeout):
            await self._finish(pending.record, rules.TIMEOUT, None, "no answer within 24 h")
        else:
            detail = exc.message if isinstance(exc, BadDeviceAnswer) else str(exc)
            await self._finish(pending.record, rules.REJECTED, None, detail)

    def _later(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def get_attributes(
        self,
        product_id: str,
        name: str,
        keys: object,
        timeout: object = None,
        *,
        here: bool = False,
    ) -> dict[str, Any]:
        """Ask the device for attributes; the values of its next attribute report."""
        seconds = rules.check_timeout(timeout)
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            raise InvalidRequest("keys must be a list of attribute names ([] for all)")
        try:
            _, via, route = await self._reach(product_id, name, here=here)
        except Elsewhere as away:
            op = Forwarded(rules.ATTRIBUTES_GET, product_id, name, seconds=seconds, keys=keys)
            result = await away.run(op)
            assert isinstance(result, dict)
            return result
        wait = _AttributeWait(keys, asyncio.get_running_loop().create_future())
        key = (product_id, name)
        self._attribute_waits.setdefault(key, []).append(wait)
        try:
            if not self.link.send(via, wrap(AttributesGet(keys), route)):
                raise not_subscribed("the topic of attribute requests")
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

    async def control(
        self, product_id: str, name: str, values: object, *, here: bool = False
    ) -> None:
        """`devices/telemetry/control/...`: fire and forget."""
        if not isinstance(values, dict) or not values:
            raise InvalidRequest("the control values must be a non-empty JSON object")
        try:
            _, via, route = await self._reach(product_id, name, here=here)
        except Elsewhere as away:
            await away.run(Forwarded(rules.CONTROL, product_id, name, values=values))
            return
        if not self.link.send(via, wrap(Control(values), route)):
            raise not_subscribed("the topic of control values")

    async def _record(
        self, device: Device, request: rules.CallRequest
    ) -> tuple[CommandRecord, tuple[str, str], Call]:
        """The call's record (stored), the key of its pending entry, its message.
        Ids of the CLOCK style repeat over time, so their records get a unique
        id of their own."""
        now = self.clock.now_ms()
        in_use = {wire_id for family, wire_id in self._pending if family == request.family}
        wire_id = rules.new_call_id(request.id_style, now, in_use)
        cmd_id = wire_id
        if request.id_style != rules.RANDOM:
            cmd_id = f"{wire_id}-{rules.new_command_id()[:8]}"
        record = CommandRecord(
            cmd_id,
            device.product_id,
            device.name,
            request.family,
            request.kind,
            request.body,
            rules.SENT,
            now,
            sent_at=now,
            target=request.target,
            node=self.node,
        )
        await self.repo.add(record)
        message = Call(request.family, request.kind, wire_id, request.body, request.target)
        return record, (request.family, wire_id), message

    async def _call(
        self,
        device: Device,
        via: DeviceRef,
        route: Route | None,
        request: rules.CallRequest,
        seconds: int,
    ) -> CallResult:
        """Record, send (through `via`), and wait."""
        record, pending_key, message = await self._record(device, request)
        wire_id = message.call_id
        key = (via.product_id, via.name)  # its going offline fails the call
        future: asyncio.Future[CallAnswer] = asyncio.get_running_loop().create_future()
        self._pending[pending_key] = _Pending(record, future, via=key)
        self._by_device.setdefault(key, set()).add(pending_key)
        try:
            if not self.link.send(via, wrap(message, route, device)):
                await self._finish(record, rules.FAILED, None, "the device is not subscribed")
                raise not_subscribed("its command topic")
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
            await self._finish(record, rules.ANSWERED, answer.payload, None)
            return CallResult(wire_id, answer.payload, answer.body, record.cmd_id)
        finally:
            self._pending.pop(pending_key, None)
            ids = self._by_device.get(key)
            if ids is not None:
                ids.discard(pending_key)
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

    async def _reach(
        self, product_id: str, name: str, addressed: bool = True, here: bool = False
    ) -> tuple[Device, DeviceRef, Route | None]:
        """The device, the connected device that carries messages to it (itself
        or its top gateway), and the way down from that one (None: direct; no
        addresses needed when not `addressed`, see CallRequest). `Elsewhere`
        when that connected device may be on another node of the cluster."""
        device = await self.devices.get_device(product_id, name)
        if device.gateway is None:
            if not self.link.is_online(product_id, name):
                raise self._away(
                    device, here, f"device {name!r} of product {product_id!r} is offline"
                )
            return device, ref(device), None
        top, path = await self.devices.route(device, addressed=addressed)
        if not self.link.is_online(top.product_id, top.name):
            raise self._away(
                top,
                here,
                f"gateway {top.name!r} of product {top.product_id!r}, through which device"
                f" {name!r} is reached, is offline",
            )
        # Only a protocol that addresses the device by path words a sub-gateway apart.
        children = 0
        if addressed:
            children = await self.devices.storage.devices.count_children(product_id, name)
        return device, ref(top), Route(path, children > 0)

    def _away(self, via: Device, here: bool, offline: str) -> Exception:
        """The error of a device (or top gateway) `via` not connected here."""
        if self.remote is None or here:
            return DeviceOffline(offline)
        return Elsewhere(self.remote, (via.product_id, via.name), DeviceOffline(offline))

    async def run_forwarded(self, op: Forwarded) -> object:
        """An operation another node of the cluster forwarded here: run as ours,
        never forwarded again."""
        pid, name = op.product_id, op.name
        if op.op == rules.CALL and op.request is not None:
            return await self.call(pid, name, op.request, op.seconds, here=True)
        if op.op == rules.SEND and op.request is not None:
            return await self.send(pid, name, op.request, here=True)
        if op.op == rules.ATTRIBUTES_GET:
            return await self.get_attributes(pid, name, op.keys, op.seconds, here=True)
        if op.op == rules.CONTROL:
            await self.control(pid, name, op.values, here=True)
            return None
        raise InvalidRequest(f"unknown forwarded operation {op.op!r}")

    # ------------------------------------------------------------ answers from devices

    async def answer(self, ref: DeviceRef, answer: CallAnswer) -> None:
        """A device's answer to a call, whatever its protocol."""
        pending = self._pending.get((answer.family, answer.call_id))
        record = pending.record if pending is not None else None
        if record is None:
            record = await self.repo.get(answer.call_id)
        product_id, name = ref.product_id, ref.name
        if pending is not None and pending.via == (product_id, name):
            product_id, name = pending.record.product_id, pending.record.name  # its gateway
        verdict = rules.answer_verdict(
            record,
            pending=pending is not None and not pending.future.done(),
            size=len(answer.payload),
            limit=answer.limit,
            product_id=product_id,
            name=name,
            family=answer.family,
            kind=answer.kind,
            also=answer.also,
        )
        self.link.send(ref, AnswerVerdict(answer.family, answer.call_id, verdict))
        if verdict == rules.ACCEPTED:
            assert pending is not None
            if answer.problem is not None:
                pending.future.set_exception(
                    BadDeviceAnswer(answer.problem, err_code=answer.problem_code)
                )
            else:
                pending.future.set_result(answer)
            return
        self.ignored[verdict] += 1
        if verdict == rules.TOO_LARGE and pending is not None and answer.limit is not None:
            limit = answer.limit
            pending.future.set_exception(
                AnswerTooLarge(
                    f"the device's answer has {len(answer.payload)} bytes; at most "
                    f"{limit.max_size} are allowed",
                    err_code=limit.err_code,
                    err_msg=limit.err_msg,
                )
            )

    def _on_event(self, event: Event) -> None:
        if isinstance(event, PresenceChanged) and not event.online:
            key = (event.product_id, event.name)
            for pending_key in list(self._by_device.get(key, ())):
                pending = self._pending.get(pending_key)
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


def _encode_cursor(created_at: int, cmd_id: str) -> str:
    return cursors.command(created_at, cmd_id)


def _decode_cursor(cursor: str | None) -> tuple[int, str] | None:
    return cursors.before_command(cursor)
