"""The thing model: products' models, what devices post, calls to them, desired values.

Rules (the value rules are core/thingmodel/'s, the checks before anything is stored
or sent and their codes thing_checks.py's, the wire the thing dialect's):
- A product has at most one model; setting it checks the whole document
  (400 naming the JSON pointer of the fault) and raises its revision;
  replacing or deleting it never touches stored data. Models are cached per
  product and dropped from the cache when they change, on every node of a
  cluster (services/coherence.py).
- Posts: every value is checked before anything is written, so a post is
  stored whole or refused whole. With a model, an identifier it lacks is
  309 and a value that does not fit is 302; without one, any identifier
  and any value the platform can store is taken (a null never is: 302).
  Properties become telemetry points (the latest values follow the usual
  rule), events become event records (`method` = identifier, `params` =
  the value, a non-object one as {"value": v}, `type` from the model).
- A post names the sender or, in `pack`/`history` posts, a device by
  `identity`: the sender or a device of its tree, at any level (its data
  is checked against its own product's model, stored as its own, and makes
  it online through the sender's connection); anything else is 307. Every
  device's rows are written together (subdevices.write_together): the
  post is stored whole or not at all.
- The reply (200) leaves once the post is durable, as the handler returns,
  so that it shares the PUBACK's write; a storage failure is the
  platform's: 303, and the message is not acknowledged, so the device sends
  it again.
- Calls (property set and get, service invoke) go through the command
  service as family "thing", wait 5 s by default (1-30), and map its
  errors to OneNET's codes: offline 308, not subscribed 1022, no answer in
  time 306, an unusable answer 304. With a model, what is sent is checked
  first (309, 302; a read-only property cannot be set: 313). A service
  whose model says `callType` "a" (or, without a model, `async`) returns
  once published; its answer completes the record later.
- Desired values: set per property by applications (checked like a set),
  versioned (1, +1 per set, 1 again after a deletion), pushed to the
  device on `property/set` when it is online and listens (a `desired_push`
  record, nobody waits), and deleted by the device or an application.
- Everything stored is announced on the bus for the live stream.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from thingshub.core import commands as calls
from thingshub.core import thingchecks, thingmodel
from thingshub.core.errors import (
    DeviceOffline,
    NotFound,
    ThingsHubError,
    Unavailable,
)
from thingshub.core.events import DesiredChanged, TelemetryReceived
from thingshub.core.jsontext import dumps
from thingshub.core.messages import (
    DataPoints,
    DataPointsAck,
    DataPointsRefused,
    DesiredDelete,
    DesiredGet,
    DeviceRef,
    ThingReply,
)
from thingshub.core.model import DesiredValue, StoredModel
from thingshub.core.ports import (
    Clock,
    DesiredRepo,
    DeviceLink,
    EventBus,
    EventRepo,
    TelemetryRepo,
    ThingModelRepo,
)
from thingshub.services import thing_checks as checks
from thingshub.services.coherence import CacheSync
from thingshub.services.commands import CommandService
from thingshub.services.devices import DeviceService
from thingshub.services.presence import PresenceService
from thingshub.services.thing_posts import PostTally, ThingPosts
from thingshub.services.topology import TopologyService

log = logging.getLogger("thingshub.things")

FAMILY: Final = "thing"
PROPERTY_SET, PROPERTY_GET, SERVICE, DESIRED_PUSH = (
    "property_set",
    "property_get",
    "service",
    "desired_push",
)
DEFAULT_TIMEOUT: Final = 5

#: The key of refused legacy data points in `refused` (OneNET's one code for them).
DATA_POINTS_REFUSED = 98


class ThingService(ThingPosts):
    def __init__(
        self,
        models: ThingModelRepo,
        desired: DesiredRepo,
        points: TelemetryRepo,
        events: EventRepo,
        devices: DeviceService,
        commands: CommandService,
        link: DeviceLink,
        clock: Clock,
        bus: EventBus,
        *,
        max_points: int = thingmodel.MAX_POINTS,
        topology: TopologyService | None = None,
        presence: PresenceService | None = None,
    ) -> None:
        #: The tree (sub-devices' posts) and presence (data makes a sub-device online).
        self.topology = topology
        self.presence = presence
        self.models = models
        self.desired_values = desired
        self.points = points
        self.events = events
        self.devices = devices
        self.commands = commands
        self.link = link
        self.clock = clock
        self.bus = bus
        self.max_points = max_points
        self._models: dict[str, thingmodel.ThingModel | None] = {}
        #: The settlement of common posts answered last (thing_posts.py).
        self._post_tally: PostTally | None = None
        #: Each cached model's compiled property checks, with the model they were made for.
        self._checks: dict[
            str,
            tuple[thingmodel.ThingModel, dict[str, thingchecks.Check], thingchecks.ValuesCheck],
        ] = {}
        #: Requests refused, by code (for metrics).
        self.refused: dict[int, int] = {}
        #: Telemetry points stored from properties and data points (for metrics,
        #: added to ingest's: they are telemetry like any other).
        self.stored_points = 0
        #: The other nodes' caches, told of each model changed here.
        self.sync = CacheSync("model", lambda key: self.forget(key[0]))

    # ------------------------------------------------------------ models

    async def model(self, product_id: str) -> thingmodel.ThingModel | None:
        """The product's checked model (cached), None without one."""
        if product_id in self._models:
            return self._models[product_id]
        stored = await self.models.get(product_id)
        model = None
        if stored is not None:
            try:
                model = thingmodel.parse_model(stored.document, max_points=1 << 30)
            except thingmodel.ModelError:
                log.exception("the stored thing model of %s is not valid", product_id)
        self._models[product_id] = model
        return model

    async def get_model(self, product_id: str) -> StoredModel:
        await self.devices.get_product(product_id)
        stored = await self.models.get(product_id)
        if stored is None:
            raise NotFound(
                f"product {product_id!r} has no thing model",
                err_code=thingmodel.NO_MODEL,
                err_msg=thingmodel.CODES[thingmodel.NO_MODEL],
            )
        return stored

    async def set_model(self, product_id: str, document: object) -> StoredModel:
        await self.devices.get_product(product_id)
        model = thingmodel.parse_model(document, max_points=self.max_points)
        stored = await self.models.put(product_id, dict(model.document), self.clock.now_ms())
        self._models.pop(product_id, None)
        self.sync.changed(product_id)
        return stored

    async def delete_model(self, product_id: str) -> None:
        await self.devices.get_product(product_id)
        if not await self.models.delete(product_id):
            raise NotFound(
                f"product {product_id!r} has no thing model",
                err_code=thingmodel.NO_MODEL,
                err_msg=thingmodel.CODES[thingmodel.NO_MODEL],
            )
        self._models.pop(product_id, None)
        self.sync.changed(product_id)

    def _property_checks(
        self, product_id: str, model: thingmodel.ThingModel | None
    ) -> dict[str, thingchecks.Check] | None:
        """The compiled property checks of `model`, the product's (made once per model)."""
        if model is None:
            return None
        return self._compiled(product_id, model)[1]

    def _values_check(
        self, product_id: str, model: thingmodel.ThingModel | None
    ) -> thingchecks.ValuesCheck | None:
        """`model`'s checks of a post's values at once (thingchecks.values_check)."""
        if model is None:
            return None
        return self._compiled(product_id, model)[2]

    def _compiled(
        self, product_id: str, model: thingmodel.ThingModel
    ) -> tuple[thingmodel.ThingModel, dict[str, thingchecks.Check], thingchecks.ValuesCheck]:
        cached = self._checks.get(product_id)
        if cached is None or cached[0] is not model:
            checks = thingchecks.property_checks(model)
            cached = (model, checks, thingchecks.values_check(model, checks))
            self._checks[product_id] = cached
        return cached

    def forget(self, product_id: str) -> None:
        """Drop a cached model (another process changed it)."""
        self._models.pop(product_id, None)

    # ------------------------------------------------------------ from devices
    # (posts: thing_posts.py)

    async def desired_get(self, ref: DeviceRef, message: DesiredGet) -> None:
        request = "property/desired/get"
        try:
            model = await self.model(ref.product_id)
            if model is not None:
                for identifier in message.identifiers:
                    checks.known_property(model, identifier)
            stored = await self.desired_values.get(ref.product_id, ref.name)
        except checks.ThingError as exc:
            self._reply_error(ref, request, message.request_id, exc)
            return
        wanted = message.identifiers or tuple(stored)
        data = {
            k: {"value": stored[k].value, "version": stored[k].version}
            for k in wanted
            if k in stored
        }
        self.link.send(ref, ThingReply(request, message.request_id, thingmodel.SUCCESS, None, data))

    async def desired_delete(self, ref: DeviceRef, message: DesiredDelete) -> None:
        request = "property/desired/delete"
        try:
            model = await self.model(ref.product_id)
            if model is not None:
                for identifier in message.versions:
                    checks.known_property(model, identifier)
            deleted = await self.desired_values.delete_versions(
                ref.product_id, ref.name, message.versions
            )
        except checks.ThingError as exc:
            self._reply_error(ref, request, message.request_id, exc)
            return
        self.link.send(ref, ThingReply(request, message.request_id, thingmodel.SUCCESS))
        if deleted:
            self._desired_changed(ref.product_id, ref.name, dict.fromkeys(deleted))

    async def data_points(self, ref: DeviceRef, message: DataPoints) -> None:
        """Legacy data points: stored as telemetry, then accepted."""
        try:
            await self.points.append(ref.product_id, ref.name, message.points)
        except NotFound:
            return
        self.stored_points += len(message.points)
        self.link.send(ref, DataPointsAck(message.request_id))
        if self.bus.wants(TelemetryReceived):
            self.bus.publish(
                TelemetryReceived(ref.product_id, ref.name, message.points, message.received_at)
            )

    async def data_points_refused(self, ref: DeviceRef, message: DataPointsRefused) -> None:
        self.refused[DATA_POINTS_REFUSED] = self.refused.get(DATA_POINTS_REFUSED, 0) + 1
        self.link.send(ref, DataPointsAck(message.request_id, message.error))

    def _reply_error(
        self, ref: DeviceRef, request: str, request_id: str, exc: checks.ThingError
    ) -> None:
        self.refused[exc.code] = self.refused.get(exc.code, 0) + 1
        self.link.send(ref, ThingReply(request, request_id, exc.code, exc.message))

    # ------------------------------------------------------------ calls from applications

    async def set_properties(
        self, product_id: str, name: str, values_: object, timeout: object = None
    ) -> dict[str, Any]:
        await self.devices.get_device(product_id, name)
        if not isinstance(values_, dict) or not values_:
            raise checks.invalid(
                thingmodel.BAD_REQUEST, "the properties to set must be a non-empty object"
            )
        checked = await self._settable(product_id, values_)
        request = _request(PROPERTY_SET, checked)
        return await self._call(product_id, name, request, timeout)

    async def get_properties(
        self, product_id: str, name: str, identifiers: object, timeout: object = None
    ) -> dict[str, Any]:
        await self.devices.get_device(product_id, name)
        if not isinstance(identifiers, list) or not all(
            isinstance(i, str) and i for i in identifiers
        ):
            raise checks.invalid(
                thingmodel.BAD_REQUEST, "identifiers must be a list of property identifiers"
            )
        model = await self.model(product_id)
        wanted = list(identifiers)
        if model is not None:
            for identifier in wanted:
                checks.known_property(model, identifier, api=True)
            if not wanted:
                wanted = list(model.properties)
        request = _request(PROPERTY_GET, wanted)
        return await self._call(product_id, name, request, timeout)

    async def invoke(
        self,
        product_id: str,
        name: str,
        identifier: str,
        arguments: object,
        timeout: object = None,
        asynchronous: bool = False,
    ) -> dict[str, Any]:
        """A service call; {"call_id"} only when the service answers later."""
        await self.devices.get_device(product_id, name)
        if not isinstance(arguments, dict):
            raise checks.invalid(thingmodel.BAD_REQUEST, "a service's input is an object")
        model = await self.model(product_id)
        if model is not None:
            try:
                service = model.service(identifier)
                checked = thingmodel.check_params(service.input, arguments, identifier)
            except thingmodel.ValueRefused as exc:
                raise checks.invalid(checks.code_of(exc), exc.message) from None
            asynchronous = service.call_type == "a"
        else:
            checked = checks.free_values(arguments, identifier)
        request = _request(SERVICE, checked, identifier)
        if asynchronous:
            calls.check_timeout(timeout, DEFAULT_TIMEOUT)
            try:
                record_id = await self.commands.send(product_id, name, request)
            except ThingsHubError as exc:
                raise checks.call_error(exc) from None
            return {"call_id": record_id}
        return await self._call(product_id, name, request, timeout)

    async def _call(
        self, product_id: str, name: str, request: calls.CallRequest, timeout: object
    ) -> dict[str, Any]:
        try:
            result = await self.commands.call(product_id, name, request, timeout, DEFAULT_TIMEOUT)
        except ThingsHubError as exc:
            raise checks.call_error(exc) from None
        body = result.body or {}
        answer: dict[str, Any] = {
            "call_id": result.record_id,
            "id": result.call_id,
            "code": body.get("code"),
            "msg": body.get("msg"),
        }
        if request.kind != PROPERTY_SET:
            answer["data"] = body.get("data")
        return answer

    async def _settable(self, product_id: str, requested: Mapping[str, Any]) -> dict[str, Any]:
        model = await self.model(product_id)
        if model is None:
            return checks.free_values(requested, "")
        out: dict[str, Any] = {}
        for identifier, value in requested.items():
            prop = checks.known_property(model, identifier, api=True)
            if not prop.writable:
                raise checks.invalid(
                    thingmodel.BAD_REQUEST, f"{identifier}: the property is read-only"
                )
            try:
                out[identifier] = thingmodel.check(prop.data_type, value, identifier)
            except thingmodel.ValueRefused as exc:
                raise checks.invalid(checks.code_of(exc), exc.message) from None
        return out

    # ------------------------------------------------------------ desired values

    async def desired(self, product_id: str, name: str) -> dict[str, dict[str, Any]]:
        await self.devices.get_device(product_id, name)
        stored = await self.desired_values.get(product_id, name)
        return {k: _desired_view(v) for k, v in stored.items()}

    async def patch_desired(
        self, product_id: str, name: str, changes: object
    ) -> dict[str, dict[str, Any]]:
        """Set (a value) or delete (null) desired values; pushed to the device when it listens."""
        await self.devices.get_device(product_id, name)
        if not isinstance(changes, dict) or not changes:
            raise checks.invalid(thingmodel.BAD_REQUEST, "desired values are a non-empty object")
        sets = {k: v for k, v in changes.items() if v is not None}
        checked = await self._settable(product_id, sets) if sets else {}
        model = await self.model(product_id)
        for identifier in changes:
            if model is not None:
                checks.known_property(model, identifier, api=True)
        wanted = {k: checked.get(k) for k in changes}
        result = await self.desired_values.change(product_id, name, wanted, self.clock.now_ms())
        self._desired_changed(product_id, name, result)
        pushed = {k: v.value for k, v in result.items() if v is not None}
        # In a cluster it may be connected to another node: the command service finds out.
        online = self.commands.remote is not None or self.link.is_online(product_id, name)
        if pushed and online:
            request = _request(DESIRED_PUSH, pushed)
            try:
                await self.commands.send(product_id, name, request)
            except DeviceOffline:  # offline or not listening: it asks with desired/get
                log.debug("desired values of %s/%s not pushed: offline", product_id, name)
            except Unavailable as exc:  # on a node out of reach now: the same
                log.warning("desired values of %s/%s not pushed: %s", product_id, name, exc)
        return await self.desired(product_id, name)

    def _desired_changed(
        self, product_id: str, name: str, changed: Mapping[str, DesiredValue | None]
    ) -> None:
        if self.bus.wants(DesiredChanged):
            data = {
                k: (None if v is None else {"value": v.value, "version": v.version})
                for k, v in changed.items()
            }
            self.bus.publish(DesiredChanged(product_id, name, data, self.clock.now_ms()))


# ---------------------------------------------------------------- helpers


def _request(kind: str, value: object, target: str | None = None) -> calls.CallRequest:
    """A thing call: its id in OneNET's short decimal form, a sub-device named by
    its ids (its gateway's `sub/...` topics), never by addresses."""
    return calls.CallRequest(FAMILY, kind, dumps(value), calls.CLOCK, target, addressed=False)


def _desired_view(value: DesiredValue) -> dict[str, Any]:
    return {"value": value.value, "version": value.version, "ts": value.ts}
