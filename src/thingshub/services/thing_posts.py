"""What devices post to their thing model: properties and events, checked, stored, replied.

Rules (the thing service's, services/things.py, of which this is a base):
- Every value is checked before anything is written: a post is stored whole
  or refused whole, and its reply (200, or the code of the first value that
  does not fit) names its request id.
- A post names the sender or, in `pack`/`history` posts, a device of its
  tree by `identity`; each device's rows are written together
  (subdevices.write_together).
- The reply (200) leaves once the post is durable, together with the
  PUBACK; a device deleted meanwhile is answered 303 and acknowledged; a
  storage failure is answered 303 and NOT acknowledged (the device resends).
  A success is not built when no connection holds any subscription
  (`DeviceLink.heard`): it would reach nobody.
- The common post (the sender's own properties, its product's model cached,
  every value fitting) is handled without a task (`device_post_now`): the
  storage's settlement (or future) goes to the MQTT server as it is; the
  reply and the bookkeeping of a post stored are the append's `then`, called
  as it commits, before the acknowledgement; a device deleted meanwhile or a
  failure is answered by one waiter per settlement (a future's: its done
  callback).
  Anything else (events, sub-devices, a model to load, a refusal) takes the
  coroutine, which decides it exactly as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING

from thingshub.core import thingchecks, thingmodel
from thingshub.core.errors import NotFound, ThingsHubError
from thingshub.core.events import EventsReceived, TelemetryReceived
from thingshub.core.messages import DeviceRef, ThingData, ThingPost, ThingRefused, ThingReply
from thingshub.core.model import DeviceEvent, Point, PointsAt
from thingshub.core.settlement import Settlement
from thingshub.core.thingvalues import ValuesAt
from thingshub.services import thing_checks as checks
from thingshub.services.subdevices import Rows, write_together
from thingshub.services.topology import Key

if TYPE_CHECKING:
    from thingshub.core.ports import DeviceLink, EventBus, EventRepo, TelemetryRepo
    from thingshub.services.devices import DeviceService
    from thingshub.services.presence import PresenceService
    from thingshub.services.topology import TopologyService


#: A settlement holding common posts: their member numbers, their senders and posts.
PostTally = tuple[Settlement, list[int], list[tuple[DeviceRef, ThingPost]]]


class ThingPosts:
    """The thing service's handling of posts (a base of `ThingService`, which has
    the attributes and the model cache declared here)."""

    if TYPE_CHECKING:
        topology: TopologyService | None
        presence: PresenceService | None
        points: TelemetryRepo
        events: EventRepo
        devices: DeviceService
        link: DeviceLink
        bus: EventBus
        stored_points: int
        _models: dict[str, thingmodel.ThingModel | None]
        _post_tally: PostTally | None

        async def model(self, product_id: str) -> thingmodel.ThingModel | None: ...
        def _property_checks(
            self, product_id: str, model: thingmodel.ThingModel | None
        ) -> dict[str, thingchecks.Check] | None: ...
        def _values_check(
            self, product_id: str, model: thingmodel.ThingModel | None
        ) -> thingchecks.ValuesCheck | None: ...
        def _reply_error(
            self, ref: DeviceRef, request: str, request_id: str, exc: checks.ThingError
        ) -> None: ...

    def device_post_now(
        self, ref: DeviceRef, post: ThingPost
    ) -> Awaitable[int | None] | Settlement:
        """The storage's future or settlement for the common post; `device_post` for
        any other."""
        product_id = ref.product_id
        sender = (product_id, ref.name)
        if product_id not in self._models:
            return self.device_post(ref, post)  # its model is loaded there
        model = self._models[product_id]
        points: Sequence[Point]
        data = post.data
        if len(data) == 1 and type(data[0].properties) is ValuesAt and data[0].identity is None:
            if data[0].events:
                return self.device_post(ref, post)
            posted = data[0].properties
            check_values = self._values_check(product_id, model)
            checked = (
                _free_values(posted.values) if check_values is None else check_values(posted.values)
            )
            if checked is None:
                return self.device_post(ref, post)  # refused there, with the same reply
            points = PointsAt(posted.ts or post.received_at, checked)
        else:
            compiled = self._property_checks(product_id, model)
            listed = _points(post, sender, model, compiled)
            if listed is None:
                return self.device_post(ref, post)
            points = listed
        then = partial(self._stored, ref, post, points)
        stored = self.points.append_settled(product_id, ref.name, points, then)
        if isinstance(stored, Settlement):
            tally = self._post_tally
            if tally is None or tally[0] is not stored:
                self._post_tally = tally = (stored, [], [])
                stored.wait(partial(self._settled, tally))
            tally[1].append(stored.last)
            tally[2].append((ref, post))
            return stored
        if not isinstance(stored, asyncio.Future):
            stored = asyncio.ensure_future(stored)
        stored.add_done_callback(partial(self._posted, ref, post))
        return stored

    def _stored(self, ref: DeviceRef, post: ThingPost, points: Sequence[Point]) -> None:
        """A common post is durable (the storage calls it): counted, replied, announced."""
        self.stored_points += len(points)
        if self.link.heard(ref):  # else it would reach nobody: not built
            self.link.send(ref, ThingReply(post.request, post.request_id, thingmodel.SUCCESS))
        if self.bus.wants(TelemetryReceived):
            self.bus.publish(
                TelemetryReceived(ref.product_id, ref.name, list(points), post.received_at)
            )

    def _posted(self, ref: DeviceRef, post: ThingPost, stored: asyncio.Future[int | None]) -> None:
        """A common post's future is done: a device deleted meanwhile (0) or a failure
        is answered 303 (success was `_stored`)."""
        if stored.cancelled():
            return
        error = stored.exception()
        if error is None and stored.result() is None:
            return
        if error is None or isinstance(error, ThingsHubError):
            problem = "device deleted" if error is None else "storage failed"
            self._reply_error(ref, post.request, post.request_id, checks.internal(problem))

    def _settled(self, tally: PostTally) -> None:
        """A settlement holding common posts is decided: those it did not store are
        answered 303 (a device deleted meanwhile, or a failure)."""
        settlement, members, posts = tally
        if self._post_tally is tally:
            self._post_tally = None
        if settlement.clean and settlement.missing is None:
            return
        missing = settlement.missing or ()
        for member, (ref, post) in zip(members, posts, strict=True):
            outcome = settlement.outcome(member)
            if member in missing:
                problem = "device deleted"
            elif isinstance(outcome, ThingsHubError):
                problem = "storage failed"
            else:
                continue
            self._reply_error(ref, post.request, post.request_id, checks.internal(problem))

    async def device_post(self, ref: DeviceRef, post: ThingPost) -> None:
        try:
            rows = await self._checked(ref, post)
        except checks.ThingError as exc:
            self._reply_error(ref, post.request, post.request_id, exc)
            return
        try:
            await write_together(self.points, self.events, rows)
        except NotFound:
            self._reply_error(ref, post.request, post.request_id, checks.internal("device deleted"))
            return
        except ThingsHubError:
            self._reply_error(ref, post.request, post.request_id, checks.internal("storage failed"))
            raise
        # Sent as soon as this handler has returned, so that the reply is written
        # together with the PUBACK, not a loop turn ahead of it in a write of its own.
        if self.link.heard(ref):  # else it would reach nobody: not built
            reply = ThingReply(post.request, post.request_id, thingmodel.SUCCESS)
            asyncio.get_running_loop().call_soon(self.link.send, ref, reply)
        now = post.received_at
        sender = (ref.product_id, ref.name)
        for key, (points, events) in rows.items():
            self.stored_points += len(points)
            if key != sender and self.presence is not None:
                self.presence.reached(*key, via=sender)
            if points and self.bus.wants(TelemetryReceived):
                self.bus.publish(TelemetryReceived(*key, points, now))
            if events and self.bus.wants(EventsReceived):
                self.bus.publish(EventsReceived(*key, events, now))

    async def _checked(self, ref: DeviceRef, post: ThingPost) -> dict[Key, Rows]:
        """Each device's rows (the sender first), every value checked."""
        sender = (ref.product_id, ref.name)
        rows: dict[Key, Rows] = {sender: ([], [])}
        for data in post.data:
            key = await self._owner(sender, data)
            points, events = rows.setdefault(key, ([], []))
            model = await self.model(key[0])
            compiled = self._property_checks(key[0], model)
            at = post.received_at
            for value in data.properties:
                checked = checks.property_value(model, value.identifier, value.value, compiled)
                points.append(Point(value.identifier, value.ts or at, checked))
            for value in data.events:
                params, kind = checks.event_value(model, value.identifier, value.value)
                events.append(DeviceEvent(value.ts or at, value.identifier, params, kind))
        return rows

    async def _owner(self, sender: Key, data: ThingData) -> Key:
        """Whose data it is: the sender's, or one of its sub-devices' (at any level)."""
        if data.identity is None or data.identity == sender:
            return sender
        device = await self.devices.find_device(*data.identity)
        if device is None or self.topology is None or not await self.topology.below(device, sender):
            product, name = data.identity
            raise checks.ThingError(
                thingmodel.INVALID_IDENTITY,
                f"{product}/{name} is neither this device nor one of its sub-devices",
            )
        return data.identity

    async def device_refused(self, ref: DeviceRef, message: ThingRefused) -> None:
        error = message.error
        code = error.err_code if isinstance(error.err_code, int) else thingmodel.BAD_REQUEST
        self._reply_error(
            ref, message.request, message.request_id, checks.ThingError(code, error.message)
        )


def _free_values(posted: Mapping[str, object]) -> dict[str, object] | None:
    """A property post's values as stored without a model (each a free value); None
    when one is refused."""
    checked: dict[str, object] = {}
    try:
        for name, value in posted.items():
            checked[name] = checks.property_value(None, name, value, None)
    except checks.ThingError:
        return None
    return checked


def _points(
    post: ThingPost,
    sender: Key,
    model: thingmodel.ThingModel | None,
    compiled: dict[str, thingchecks.Check] | None,
) -> list[Point] | None:
    """The common post's points, read value by value (a pack of the sender's own
    sections, or values with times of their own); None for anything else."""
    at = post.received_at
    points: list[Point] = []
    try:
        for data in post.data:
            if data.events or (data.identity is not None and data.identity != sender):
                return None
            for value in data.properties:
                checked = checks.property_value(model, value.identifier, value.value, compiled)
                points.append(Point(value.identifier, value.ts or at, checked))
    except checks.ThingError:
        return None
    return points or None
